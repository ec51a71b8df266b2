//! The browser harness itself, apart from a stack: Chromium and Firefox reach `ghost.test`
//! on loopback and trust a root only through an NSS database, for HTTPS pages and for
//! WebTransport, while a certificate for the same name from another root is refused.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::browser::{Browser, Options};
use common::firefox::Firefox;
use identity::Identity;
use serde_json::Value;

/// The made-up public name, resolved to loopback inside the browsers only.
const NAME: &str = "ghost.test";
const PAGE: &str = "<!doctype html><title>harness</title><p>served as ghost.test</p>";
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the page reports about itself.
const FACTS: &str = "({href: location.href, secure: window.isSecureContext, \
    webtransport: typeof WebTransport, videodecoder: typeof VideoDecoder})";

/// A WebTransport session to `port` at [`NAME`]: "ready", or why it failed.
fn webtransport(port: u16) -> String {
    format!(
        "(async () => {{ const wt = new WebTransport('https://{NAME}:{port}/'); \
         try {{ await wt.ready; wt.close(); return 'ready'; }} \
         catch (e) {{ return 'failed: ' + e.message; }} }})()"
    )
}

/// Two roots, each with a certificate for [`NAME`] served over HTTPS and over WebTransport
/// on 127.0.0.1; the browsers are given the first one's root only.
struct Servers {
    trusted: Served,
    other: Served,
    dir: tempfile::TempDir,
}

struct Served {
    https: Https,
    webtransport: WebTransportServer,
}

impl Servers {
    fn start() -> Servers {
        let dir = tempfile::Builder::new()
            .prefix("ghost-harness-")
            .tempdir()
            .expect("temp dir");
        let served = |name: &str| {
            let identity = issue(dir.path(), name);
            Served {
                https: Https::start(&identity),
                webtransport: WebTransportServer::start(&identity),
            }
        };
        let (trusted, other) = (served("trusted"), served("other"));
        Servers {
            trusted,
            other,
            dir,
        }
    }

    fn options(&self) -> Options {
        Options {
            loopback_names: vec![NAME.to_string()],
            trusted_root: Some(self.dir.path().join("trusted.pem")),
        }
    }

    fn profile(&self, browser: &str) -> PathBuf {
        self.dir.path().join(browser)
    }
}

/// Makes a root `name` (`name.pem`) in `dir` and a server certificate for [`NAME`] from it.
fn issue(dir: &Path, name: &str) -> Identity {
    // A new key and a certificate for it: self-signed, or from the root given by `extra`.
    let openssl = |key: &str, cert: &str, subject: &str, extra: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-nodes", "-days", "1", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:P-256"])
            .args(["-keyout", key, "-out", cert, "-subj", subject])
            .args(extra)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl making {cert}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (root, root_key) = (format!("{name}.pem"), format!("{name}.key"));
    let (leaf, leaf_key) = (format!("{name}-leaf.pem"), format!("{name}-leaf.key"));
    let root_extensions = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    let subject = format!("/CN=Ghost harness {name} root");
    openssl(&root_key, &root, &subject, &root_extensions);
    let san = format!("subjectAltName=DNS:{NAME}");
    let leaf_extensions = [
        "-CA",
        &root,
        "-CAkey",
        &root_key,
        "-addext",
        &san,
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-addext",
        "basicConstraints=CA:FALSE",
    ];
    openssl(&leaf_key, &leaf, &format!("/CN={NAME}"), &leaf_extensions);
    let read = |file: &str| std::fs::read(dir.join(file)).expect("read what openssl wrote");
    let chain = dir.join(format!("{name}-chain.pem"));
    std::fs::write(&chain, [read(&leaf), read(&root)].concat()).expect("write the chain");
    Identity::load(&chain, &dir.join(leaf_key)).expect("the server's identity")
}

/// HTTPS on 127.0.0.1 answering every request with [`PAGE`]; stopped on drop.
struct Https {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Https {
    fn start(identity: &Identity) -> Https {
        let config = identity::server_config(identity, &[b"http/1.1"]).expect("TLS config");
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind HTTPS");
        let addr = listener.local_addr().expect("HTTPS address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(tcp) = tcp {
                    let config = config.clone();
                    std::thread::spawn(move || answer(tcp, config));
                }
            }
        });
        Https { addr, stop }
    }

    fn url(&self) -> String {
        format!("https://{NAME}:{}/", self.addr.port())
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// Answers one connection's first request with [`PAGE`]; a refused handshake ends it.
fn answer(tcp: std::net::TcpStream, config: Arc<quinn::rustls::ServerConfig>) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = quinn::rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = quinn::rustls::StreamOwned::new(conn, tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{PAGE}",
        PAGE.len()
    );
    let _ = tls.write_all(response.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// WebTransport on 127.0.0.1 accepting every session; its tasks end on drop.
struct WebTransportServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl WebTransportServer {
    fn start(identity: &Identity) -> WebTransportServer {
        use transport::quic;
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let endpoint = quic::server(addr, identity, &[quic::ALPN_H3], quic::Windows::SENDER)
            .expect("WebTransport endpoint");
        let port = endpoint.local_addr().expect("WebTransport address").port();
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every session's.
            let mut sessions = tokio::task::JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                sessions.spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    if let Ok(session) = transport::peer::accept_webtransport(conn).await {
                        session.closed().await;
                    }
                });
            }
        });
        WebTransportServer { port, task }
    }
}

impl Drop for WebTransportServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a browser showed: the trusted page's facts, both WebTransport sessions, and the
/// error loading the page whose certificate is from the other root.
#[derive(Debug)]
struct Seen {
    facts: Value,
    webtransport_trusted: Value,
    webtransport_other: Value,
    other_page: Result<(), String>,
}

impl Seen {
    /// Checks what `browser` showed; `refusal` is in its error for the other root's page.
    fn check(&self, servers: &Servers, browser: &str, refusal: &str) {
        eprintln!("{browser}: {self:?}");
        let facts = &self.facts;
        assert_eq!(
            facts["href"],
            servers.trusted.https.url(),
            "{browser}: {facts}"
        );
        assert_eq!(facts["secure"], true, "{browser}: {facts}");
        assert_eq!(facts["webtransport"], "function", "{browser}: {facts}");
        assert_eq!(facts["videodecoder"], "function", "{browser}: {facts}");
        assert_eq!(self.webtransport_trusted, "ready", "{browser}");
        assert!(
            self.webtransport_other
                .as_str()
                .is_some_and(|s| s.starts_with("failed")),
            "{browser} took a WebTransport server's certificate from another root: {:?}",
            self.webtransport_other
        );
        assert!(
            self.other_page.as_ref().is_err_and(|e| e.contains(refusal)),
            "{browser} loaded a page whose certificate is from another root, or failed \
             otherwise: {:?}",
            self.other_page
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_trusts_the_given_root_only() {
    let Some(binary) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TIMEOUT, async {
        let servers = Servers::start();
        let profile = servers.profile("chromium");
        let mut browser = Browser::start_with(binary, &profile, &servers.options()).await;
        let page = browser.open("about:blank").await;
        let url = servers.trusted.https.url();
        if let Err(e) = browser.navigate(&page, &url).await {
            panic!("chromium refused {url}: {e}");
        }
        let seen = Seen {
            facts: browser.eval(&page, FACTS).await,
            webtransport_trusted: browser
                .eval(&page, &webtransport(servers.trusted.webtransport.port))
                .await,
            webtransport_other: browser
                .eval(&page, &webtransport(servers.other.webtransport.port))
                .await,
            other_page: browser.navigate(&page, &servers.other.https.url()).await,
        };
        seen.check(&servers, "chromium", "ERR_CERT_AUTHORITY_INVALID");
    })
    .await
    .expect("chromium checked in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn firefox_trusts_the_given_root_only() {
    let Some(binary) = common::firefox() else {
        return;
    };
    tokio::time::timeout(TIMEOUT, async {
        let servers = Servers::start();
        let profile = servers.profile("firefox");
        let mut firefox = Firefox::start(binary, &profile, &servers.options()).await;
        let page = firefox.open(&servers.trusted.https.url()).await;
        let seen = Seen {
            facts: firefox.eval(&page, FACTS).await,
            webtransport_trusted: firefox
                .eval(&page, &webtransport(servers.trusted.webtransport.port))
                .await,
            webtransport_other: firefox
                .eval(&page, &webtransport(servers.other.webtransport.port))
                .await,
            other_page: firefox.navigate(&page, &servers.other.https.url()).await,
        };
        let png = firefox.screenshot(&page).await;
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        seen.check(&servers, "firefox", "SEC_ERROR_UNKNOWN_ISSUER");
    })
    .await
    .expect("firefox checked in time");
}
