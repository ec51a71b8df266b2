//! A public stack's certificate from an ACME CA, end to end: Pebble (Debian's `pebble`, a
//! test ACME CA) on loopback validates `ghost up --public --acme`'s http-01 challenge on the
//! stack's own plain-HTTP port and issues the certificate; the gateway serves the watch page
//! over HTTPS with it and relays serve it to WebTransport, so headless Chromium and Firefox,
//! trusting Pebble's root through their NSS databases and resolving `ghost.test` to
//! 127.0.0.1, play a real ffmpeg stream at `https://ghost.test:PORT/`. A certificate for a
//! bare IP address is renewed while a viewer watches; issuance that cannot succeed says why
//! and leaves nothing behind.
//!
//! Pebble listens on fixed ports (its configuration names them, and the challenge port must
//! be the stack's): each test has its own range, `PORTS_*` below.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{GHOST, Stack, TEST_TIMEOUT};
use serde_json::Value;

/// Pebble's ports for one test: ACME API, management, its DNS server, the DNS server's
/// management, and the stack's HTTP and HTTPS ports (the challenge port is the stack's).
struct Ports {
    acme: u16,
    management: u16,
    dns: u16,
    http: u16,
    https: u16,
}

const PORTS_NAME: Ports = Ports {
    acme: 14110,
    management: 15110,
    dns: 18110,
    http: 18180,
    https: 18143,
};
const PORTS_IP: Ports = Ports {
    acme: 14120,
    management: 15120,
    dns: 18120,
    http: 18280,
    https: 18243,
};
const PORTS_FAILURE: Ports = Ports {
    acme: 14130,
    management: 15130,
    dns: 18130,
    http: 18380,
    https: 18343,
};

/// A running Pebble with its DNS server, killed when dropped.
struct Pebble {
    dir: tempfile::TempDir,
    _children: Vec<tokio::process::Child>,
    directory: String,
    management: SocketAddr,
}

impl Pebble {
    /// Starts Pebble validating http-01 on `http_port`, issuing certificates valid for
    /// `validity`; `None` (the test skips) where Pebble is not installed, outside CI.
    async fn start(ports: &Ports, http_port: u16, validity: Duration) -> Option<Pebble> {
        if !installed("pebble") {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs Pebble (the test command installs it)"
            );
            eprintln!("skipped: Pebble not installed (the README's test command installs it)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ghost-pebble-")
            .tempdir()
            .expect("temp dir");
        // Pebble's own API needs a certificate from a CA the stack is told to trust
        // (--acme-root), as an operator would for a test CA.
        api_certificate(dir.path());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", ports.acme),
            "managementListenAddress": format!("127.0.0.1:{}", ports.management),
            "certificate": dir.path().join("api.pem"),
            "privateKey": dir.path().join("api.key"),
            "httpPort": http_port,
            "tlsPort": 0,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        // Every name resolves to 127.0.0.1 for Pebble, and to no IPv6 address.
        let dns = tokio::process::Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{}", ports.dns)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", ports.dns + 1)])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble-challtestsrv");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("pebble log");
        let pebble = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{}", ports.dns)])
            // Deterministic: no random validation delays, no rejected nonces, and every
            // order validated afresh (no reuse of an earlier authorization).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble");
        let management: SocketAddr = ([127, 0, 0, 1], ports.management).into();
        for port in [ports.acme, ports.management] {
            listening(([127, 0, 0, 1], port).into()).await;
        }
        Some(Pebble {
            directory: format!("https://127.0.0.1:{}/dir", ports.acme),
            management,
            _children: vec![dns, pebble],
            dir,
        })
    }

    /// The root that trusts Pebble's own API (`--acme-root`).
    fn api_root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Pebble's issuing root, made when it started, in a PEM file.
    async fn root(&self) -> PathBuf {
        let (status, _, body, _) = https_get(
            self.management,
            "localhost",
            &self.api_root(),
            "/roots/0",
            None,
        )
        .await;
        assert!(status.contains(" 200"), "Pebble's root: {status}");
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, body).expect("write Pebble's root");
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

fn installed(binary: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA and a certificate from it for Pebble's API (`localhost`, `127.0.0.1`), by openssl.
fn api_certificate(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=ghost test ACME API CA",
    ];
    run(&[&ca[..], &key, &["-keyout", "ca.key", "-out", "ca.pem"]].concat());
    let csr = [
        "req",
        "-subj",
        "/CN=pebble",
        "-keyout",
        "api.key",
        "-out",
        "api.csr",
    ];
    run(&[&csr[..], &key].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "api.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "api.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Waits until something accepts TCP connections at `addr`.
async fn listening(addr: SocketAddr) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing listens at {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTPS GET to `addr` as `name`, trusting only `root` (and only TLS `version` when
/// given): the status line, the headers, the body, and the leaf certificate the server
/// presented.
async fn https_get(
    addr: SocketAddr,
    name: &str,
    root: &Path,
    path: &str,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> (String, String, Vec<u8>, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(root).expect("root PEM") {
        roots.add(cert.expect("root cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match version {
        Some(v) => vec![v],
        None => rustls::DEFAULT_VERSIONS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name =
        rustls::pki_types::ServerName::try_from(name.to_string()).expect("server name");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls =
        tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
            .await
            .expect("TLS handshake in time")
            .unwrap_or_else(|e| panic!("TLS handshake with {name} at {addr}: {e}"));
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .to_vec();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .ok();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body_at = head.len() + 4;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let body = response.get(body_at..).unwrap_or_default().to_vec();
    (status.to_string(), headers.to_lowercase(), body, leaf)
}

/// The names (DNS) and addresses (IP) a certificate is for.
fn identities(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => out.push((*n).to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    out.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string());
                }
                _ => {}
            }
        }
    }
    out
}

/// The leaf certificate a relay presents over QUIC at `addr`, verified against `root` for
/// `name`, as a browser's WebTransport does with a public certificate.
async fn relay_leaf(addr: SocketAddr, name: &str, root: &Path) -> Vec<u8> {
    let endpoint = transport::quic::client(
        root,
        transport::quic::ALPN_VIEW,
        transport::quic::Windows::RECEIVER,
    )
    .expect("client endpoint");
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(addr, name).expect("connect"),
    )
    .await
    .expect("QUIC handshake in time")
    .unwrap_or_else(|e| panic!("QUIC handshake with the relay as {name}: {e}"));
    let identity = conn.peer_identity().expect("peer identity");
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .expect("certificates");
    conn.close(0u32.into(), b"done");
    certs.first().expect("leaf").to_vec()
}

fn sha256(der: &[u8]) -> String {
    identity::sha256_hex(der)
}

/// `ghost up -d` with `flags` in a new state directory, timed; the stack and how long its
/// `up` took (issuance included).
fn up(flags: &[&str], env: &[(&str, &str)]) -> (Stack, Duration) {
    let started = Instant::now();
    let stack = Stack::up_with_env("process", flags, env);
    (stack, started.elapsed())
}

/// The stream key `ghost keys add name` printed.
fn key(stack: &Stack, name: &str) -> String {
    let out = stack
        .ghost()
        .args(["keys", "add", name])
        .output()
        .expect("keys add");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find(|w| w.starts_with("gs_"))
        .unwrap_or_else(|| panic!("no key in {text}"))
        .to_string()
}

async fn join(stack: &Stack, stream: &str) -> api::gateway::Join {
    stack
        .http
        .post(format!("{}/streams/{stream}/join", stack.file.gateway_url))
        .send()
        .await
        .expect("join")
        .json()
        .await
        .expect("join answer")
}

/// Polls `$browser.eval($page, $expr)` until `$check` holds, or panics after `$within`;
/// how long it took. (A macro: the two browsers' drivers are different types.)
macro_rules! until {
    ($browser:expr, $page:expr, $expr:expr, $within:expr, $what:expr, $check:expr) => {{
        let started = Instant::now();
        loop {
            let v: Value = $browser.eval($page, $expr).await;
            if ($check)(&v) {
                break started.elapsed();
            }
            assert!(started.elapsed() < $within, "{}: the page shows {v}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// The page at `$url` in `$browser` draws its first picture within `$within`, then at
/// least 90% of the 150 frames sent in 5 s; prints what it measured, and keeps a screenshot
/// where `GHOST_BROWSER_SCREENSHOT` names a directory.
macro_rules! plays {
    ($browser:expr, $page:expr, $url:expr, $name:expr, $within:expr) => {{
        let picture = until!($browser, $page, MEASURED, $within, format!("{}: no picture over HTTPS", $name), |v: &Value| rendered(v) > 0.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        $browser.eval($page, "window.ghost.reset()").await;
        let before = $browser.eval($page, MEASURED).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = $browser.eval($page, MEASURED).await;
        let drawn = rendered(&after) - rendered(&before);
        println!(
            "acme (name): {} at {}: picture after {:.0} ms; {drawn} of 150 frames drawn in 5 s; delay p50 {} ms, p99 {} ms",
            $name,
            $url,
            common::ms(picture),
            after["delay"]["p50"],
            after["delay"]["p99"]
        );
        assert!(drawn >= 135.0, "{}: {drawn} of 150 frames drawn: {after}", $name);
        if let Some(dir) = std::env::var_os("GHOST_BROWSER_SCREENSHOT") {
            let png = $browser.screenshot($page).await;
            let file = format!("https-{}.png", $name.to_lowercase());
            std::fs::write(Path::new(&dir).join(file), png).expect("screenshot");
        }
    }};
}

const MEASURED: &str = "JSON.parse(JSON.stringify(window.ghost || {}))";

fn rendered(v: &Value) -> f64 {
    v["rendered"].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_gets_a_certificate_and_plays_over_https_in_chromium_and_firefox() {
    let ports = &PORTS_NAME;
    let Some(pebble) = Pebble::start(ports, ports.http, Duration::from_secs(3600)).await else {
        return;
    };
    let Some(chromium) = common::chromium() else {
        return;
    };
    if !common::ffmpeg_available() {
        return;
    }
    let firefox = common::firefox();
    tokio::time::timeout(TEST_TIMEOUT * 2, async {
        let (http, https) = (ports.http.to_string(), ports.https.to_string());
        let api_root = pebble.api_root();
        let (stack, took) = up(
            &[
                "--relays",
                "1",
                "--public",
                "--advertise-host",
                "ghost.test",
                "--acme",
                "--acme-directory",
                &pebble.directory,
                "--acme-root",
                api_root.to_str().expect("path"),
                "--http-port",
                &http,
                "--https-port",
                &https,
            ],
            &[],
        );
        println!(
            "acme (name): `ghost up -d --acme` with a certificate from Pebble ready in {:.2} s",
            took.as_secs_f64()
        );
        assert_eq!(
            stack.file.viewer_url.as_deref(),
            Some(format!("https://ghost.test:{https}/").as_str())
        );
        let root = pebble.root().await;
        let gateway: SocketAddr = ([127, 0, 0, 1], ports.https).into();

        // The gateway's HTTPS: Pebble's certificate for the name, TLS 1.3 and 1.2, HSTS.
        let (status, headers, _, leaf) =
            https_get(gateway, "ghost.test", &root, "/health", None).await;
        assert!(status.contains(" 200"), "{status}");
        assert!(
            headers.contains("strict-transport-security: max-age="),
            "{headers}"
        );
        assert_eq!(identities(&leaf), ["ghost.test"]);
        let (status, ..) = https_get(
            gateway,
            "ghost.test",
            &root,
            "/streams",
            Some(&rustls::version::TLS12),
        )
        .await;
        assert!(status.contains(" 200"), "TLS 1.2: {status}");
        // This host's own tools still reach the API over plain HTTP.
        let streams = stack
            .streams()
            .await
            .expect("streams over plain HTTP from the host");
        assert!(streams.is_empty());

        // A stream; the join answer names the relay by the certificate's name, and the relay
        // presents the same certificate.
        let key = key(&stack, "demo");
        let (id, _ffmpeg, _publisher) = stack
            .go_live_with_key("demo", "libopus", None, Some(&key))
            .await;
        let joined = join(&stack, &id).await;
        assert!(joined.cert_public, "{joined:?}");
        let port = joined
            .relay_addr
            .strip_prefix("ghost.test:")
            .unwrap_or_else(|| panic!("relay not named: {}", joined.relay_addr));
        let relay: SocketAddr = format!("127.0.0.1:{port}").parse().expect("relay addr");
        assert_eq!(relay_leaf(relay, "ghost.test", &root).await, leaf);

        // Chromium: the page plays over HTTPS at the name, and says what plain HTTP lacks.
        let options = common::browser::Options {
            loopback_names: vec!["ghost.test".into()],
            trusted_root: Some(root.clone()),
        };
        let url = format!("https://ghost.test:{https}/watch/{id}");
        let mut browser = common::browser::Browser::start_with(
            chromium,
            &stack.dir.path().join("chromium"),
            &options,
        )
        .await;
        // Before the HTTPS visit: once a browser has seen HSTS at the name, it never asks
        // for plain HTTP there again.
        let plain = browser
            .open(&format!("http://ghost.test:{http}/watch/{id}"))
            .await;
        let said = until!(
            browser,
            &plain,
            "document.body.innerText",
            Duration::from_secs(10),
            "the plain-HTTP page at the name",
            |v: &Value| v.as_str().is_some_and(|t| t.contains("https"))
        );
        let text = browser.eval(&plain, "document.body.innerText").await;
        let link = format!("https://ghost.test:{https}/watch/{id}");
        assert!(
            text.as_str().unwrap_or_default().contains(&link),
            "the page does not link {link}: {text}"
        );
        assert!(
            !text.as_str().unwrap_or_default().contains("cannot play"),
            "the page blames the browser: {text}"
        );
        println!(
            "acme (name): plain HTTP at the name says, after {:.0} ms: {text}",
            common::ms(said)
        );
        let page = browser.open(&url).await;
        plays!(browser, &page, &url, "Chromium", Duration::from_secs(20));
        let measured = browser.eval(&page, MEASURED).await;
        assert_eq!(measured["state"], "live");
        assert_eq!(measured["carrier"], "webtransport", "{measured}");
        // The same page over WebSocket, as on a network without UDP (the page remembers
        // WebSocket won): `wss://` to the relay, its ACME certificate verified by name.
        browser
            .eval(
                &page,
                "localStorage.setItem('ghost-carrier', `websocket ${Date.now()}`)",
            )
            .await;
        let over_tcp = browser.open(&url).await;
        plays!(
            browser,
            &over_tcp,
            &url,
            "Chromium over wss",
            Duration::from_secs(20)
        );
        let measured = browser.eval(&over_tcp, MEASURED).await;
        assert_eq!(measured["carrier"], "websocket", "{measured}");
        drop(browser);

        // Firefox, over WebDriver BiDi, the same page.
        if let Some(firefox) = firefox {
            let mut browser = common::firefox::Firefox::start(
                firefox,
                &stack.dir.path().join("firefox"),
                &options,
            )
            .await;
            let page = browser.open(&url).await;
            plays!(browser, &page, &url, "Firefox", Duration::from_secs(30));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Pebble said:\n{}", pebble.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_gets_a_certificate_renewed_while_a_viewer_watches() {
    let ports = &PORTS_IP;
    // 30 s certificates: renewed with a third left, 20 s after issuance.
    let Some(pebble) = Pebble::start(ports, ports.http, Duration::from_secs(30)).await else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (http, https) = (ports.http.to_string(), ports.https.to_string());
        let api_root = pebble.api_root();
        let (stack, took) = up(
            &[
                "--relays", "1", "--public", "--advertise-host", "127.0.0.1", "--acme",
                "--acme-directory", &pebble.directory,
                "--acme-root", api_root.to_str().expect("path"),
                "--http-port", &http, "--https-port", &https,
            ],
            &[("GHOST_RELAY_CERT_CHECK", "500ms"), ("GHOST_GATEWAY_CERT_CHECK", "500ms")],
        );
        let issued = Instant::now();
        println!("acme (IP): `ghost up -d --acme` for 127.0.0.1 ready in {:.2} s", took.as_secs_f64());
        let root = pebble.root().await;
        let gateway: SocketAddr = ([127, 0, 0, 1], ports.https).into();
        let (status, _, _, first) = https_get(gateway, "127.0.0.1", &root, "/health", None).await;
        assert!(status.contains(" 200"), "{status}");
        assert_eq!(identities(&first), ["127.0.0.1"]);

        // A viewer watches across the renewal.
        let key = key(&stack, "renewal");
        let stop = tokio_util::sync::CancellationToken::new();
        let options = clients::publish::Options {
            ingest: stack.file.ingest_addr.clone(),
            ca: stack.state.ca(),
            name: "renewal".into(),
            key: Some(key),
            source: clients::publish::Source::Synthetic {
                fps: 30,
                frame_size: 2000,
                group: 30,
                duration: None,
            },
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let publisher = tokio::spawn(clients::publish::publish(options, stop.clone(), move |id| {
            let _ = tx.send(id.to_string());
        }));
        let id = rx.await.expect("live");
        let watching = Duration::from_secs(30);
        let viewer = stack.watch(&id, Some(watching), None, stop.clone());
        let first_join = join(&stack, &id).await;
        assert_eq!(first_join.cert_sha256, sha256(&first));

        // The renewal: the gateway, then new viewers, get the next certificate.
        let renewed = loop {
            let (_, _, _, leaf) = https_get(gateway, "127.0.0.1", &root, "/health", None).await;
            if leaf != first {
                break leaf;
            }
            assert!(issued.elapsed() < Duration::from_secs(45), "no renewal within 45 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!(
            "acme (IP): renewed certificate served {:.1} s after issuance (30 s lifetime)",
            issued.elapsed().as_secs_f64()
        );
        assert_eq!(identities(&renewed), ["127.0.0.1"]);
        let relay_joined = loop {
            let j = join(&stack, &id).await;
            if j.cert_sha256 == sha256(&renewed) {
                break j;
            }
            assert!(issued.elapsed() < Duration::from_secs(50), "relays kept the old certificate");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let relay: SocketAddr = relay_joined.relay_addr.parse().expect("relay addr");
        assert_eq!(relay_leaf(relay, "127.0.0.1", &root).await, renewed);

        // A viewer from elsewhere joins through the gateway's HTTPS, as `ghost watch
        // --gateway https://HOST` does, trusting the CA's root as a public one would be.
        // Over QUIC, and over WebSocket, which is `wss://` to the relay (with its ACME
        // certificate, pinned by the hash the gateway gave) since the gateway is https.
        let root_cert = reqwest::Certificate::from_pem(&std::fs::read(&root).expect("root"))
            .expect("root certificate");
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root_cert)
            .build()
            .expect("client");
        for transport in [
            clients::watch::Transport::Native,
            clients::watch::Transport::WebSocket,
        ] {
            let over_https = clients::watch::Options {
                gateway: format!("https://127.0.0.1:{https}"),
                stream: id.clone(),
                ca: stack.dir.path().join("no-such-ca.pem"),
                duration: Some(Duration::from_secs(2)),
                read_delay: None,
                output: None,
                transport,
                endpoint: None,
                http: http.clone(),
                measure_from_us: None,
                clock_skew_us: 0,
            };
            let remote = clients::watch::watch(over_https, stop.clone())
                .await
                .expect("a viewer joined over HTTPS");
            println!(
                "acme (IP): a {transport:?} viewer joined through https://127.0.0.1:{https}: {} frames in 2 s",
                remote.frames
            );
            assert!(remote.frames >= 30, "{transport:?}: {remote:?}");
        }

        let summary = viewer.await.expect("viewer").expect("viewer summary");
        let expected = 30.0 * watching.as_secs_f64();
        println!(
            "acme (IP): the viewer across the renewal: {} frames of about {expected:.0}, {} skipped groups, end {:?}",
            summary.frames, summary.skipped_groups, summary.end_reason
        );
        assert_eq!(summary.skipped_groups, 0, "{summary:?}");
        assert_eq!(
            summary.end_reason,
            api::client::EndReason::Duration,
            "{summary:?}"
        );
        assert!(summary.frames as f64 >= expected * 0.95, "{summary:?}");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Pebble said:\n{}", pebble.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_that_cannot_succeed_says_why_and_leaves_nothing() {
    let ports = &PORTS_FAILURE;
    // Pebble validates on a port where nothing answers: the stack's is another one.
    let Some(pebble) = Pebble::start(ports, ports.http + 1, Duration::from_secs(3600)).await else {
        return;
    };
    let api_root = pebble.api_root();
    let api_root = api_root.to_str().expect("path");
    let (http, https) = (ports.http.to_string(), ports.https.to_string());
    let unreachable = format!("https://127.0.0.1:{}/dir", ports.dns + 5);
    for (what, directory, expect) in [
        (
            "CA unreachable",
            unreachable.as_str(),
            vec!["could not be used", unreachable.as_str()],
        ),
        (
            "challenge port closed",
            pebble.directory.as_str(),
            vec!["http-01", "ghost.test", &http, "onnection refused"],
        ),
    ] {
        let dir = tempfile::Builder::new()
            .prefix("ghost-test-")
            .tempdir()
            .expect("temp dir");
        let started = Instant::now();
        let out = tokio::time::timeout(
            TEST_TIMEOUT,
            tokio::process::Command::new(GHOST)
                .arg("--state-dir")
                .arg(dir.path())
                .args([
                    "up",
                    "-d",
                    "--runtime",
                    "process",
                    "--ephemeral-ports",
                    "--public",
                ])
                .args([
                    "--advertise-host",
                    "ghost.test",
                    "--acme",
                    "--acme-directory",
                    directory,
                ])
                .args([
                    "--acme-root",
                    api_root,
                    "--http-port",
                    &http,
                    "--https-port",
                    &https,
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("ghost up gave up in time")
        .expect("run ghost up");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "acme ({what}): exit {} after {:.2} s: {}",
            out.status,
            took.as_secs_f64(),
            stderr.trim()
        );
        assert!(!out.status.success(), "{what}: ghost up succeeded");
        assert!(took < Duration::from_secs(60), "{what}: took {took:?}");
        for needle in expect {
            assert!(
                stderr.contains(needle),
                "{what}: {needle:?} not in {stderr}"
            );
        }
        // Nothing half-made: no stack, no certificate, no challenge left, the port free.
        let state = orchestrator::stack::StateDir::new(dir.path());
        assert!(state.read().is_err(), "{what}: a stack file was left");
        assert!(
            !dir.path().join("acme/cert.pem").exists(),
            "{what}: a certificate"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("acme/challenges"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: challenges left: {left:?}");
        tokio::net::TcpListener::bind(("0.0.0.0", ports.http))
            .await
            .unwrap_or_else(|e| panic!("{what}: the HTTP port is still held: {e}"));
    }
}
