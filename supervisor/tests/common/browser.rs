//! Headless Chromium driven over the DevTools protocol (one WebSocket, flattened sessions),
//! for tests that watch a page for a while and read what it measured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use super::netns::Namespace;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running browser; killed on drop, with the processes it started.
pub struct Browser {
    child: tokio::process::Child,
    socket: Socket,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&self.child);
    }
}

/// Kills the process group that `child` leads (it was spawned with `process_group(0)`).
pub(super) fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Connects to the DevTools WebSocket at `url`, from inside `namespace` where the browser runs
/// in one (its DevTools listener is on that namespace's loopback).
async fn devtools(url: &str, namespace: Option<&Namespace>) -> Socket {
    let Some(namespace) = namespace else {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("DevTools WebSocket");
        return socket;
    };
    let parsed = url::Url::parse(url).expect("DevTools URL");
    let addrs = parsed.socket_addrs(|| None).expect("DevTools address");
    let tcp = namespace
        .run(|| std::net::TcpStream::connect(&addrs[..]))
        .expect("connect to DevTools in the namespace");
    tcp.set_nonblocking(true).expect("non-blocking");
    let tcp = tokio::net::TcpStream::from_std(tcp).expect("tokio stream");
    let (socket, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("DevTools WebSocket");
    socket
}

/// A page (tab) of the browser.
pub struct Page {
    session: String,
}

/// How a test's browser reaches a stack at a public name and trusts its certificate, as a
/// user's would: by name resolution and a root in the browser's NSS database, never by
/// turning certificate checks off. [`super::firefox::Firefox`] takes the same.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Names the browser resolves to 127.0.0.1 whatever DNS says (`ghost.test`), for TCP
    /// and QUIC (HTTP/3, WebTransport) alike.
    pub loopback_names: Vec<String>,
    /// A root certificate (PEM) the browser trusts to issue TLS server certificates.
    pub trusted_root: Option<PathBuf>,
}

/// The nickname of [`Options::trusted_root`] in a browser's NSS database.
pub const ROOT_NICKNAME: &str = "ghost-test-root";

impl Browser {
    /// Starts `binary` headless with a profile in `profile`.
    pub async fn start(binary: &str, profile: &Path) -> Browser {
        Browser::start_with(binary, profile, &Options::default()).await
    }

    /// Starts `binary` headless with a profile in `profile` and `options`. Chromium on Linux
    /// reads the user's NSS database at `$HOME/.pki/nssdb`, so with a trusted root it runs
    /// with `HOME` at `profile/home`, which holds a database of its own with that root.
    pub async fn start_with(binary: &str, profile: &Path, options: &Options) -> Browser {
        Browser::launch(binary, profile, options, None).await
    }

    /// As [`Browser::start_with`], with the browser inside `namespace`: it reaches only what
    /// the test forwards into that network namespace, and the test reaches it there.
    pub async fn start_in(
        binary: &str,
        profile: &Path,
        options: &Options,
        namespace: &Namespace,
    ) -> Browser {
        Browser::launch(binary, profile, options, Some(namespace)).await
    }

    async fn launch(
        binary: &str,
        profile: &Path,
        options: &Options,
        namespace: Option<&Namespace>,
    ) -> Browser {
        let mut command = tokio::process::Command::new(binary);
        if let Some(root) = &options.trusted_root {
            let home = profile.join("home");
            super::trust::trust_root(&home.join(".pki/nssdb"), ROOT_NICKNAME, root);
            // Chromium verifies a QUIC server's chain like any other, then refuses one that
            // ends at a root outside its built-in store; this lifts that last rule, for
            // WebTransport alone, and the chain must still reach the trusted root.
            command
                .env("HOME", home)
                .arg("--webtransport-developer-mode");
        }
        if !options.loopback_names.is_empty() {
            // The network service's one resolver serves TCP and QUIC connections alike.
            let rules: Vec<String> = options
                .loopback_names
                .iter()
                .map(|name| format!("MAP {name} 127.0.0.1"))
                .collect();
            command.arg(format!("--host-resolver-rules={}", rules.join(",")));
        }
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A process group of its own, which drop ends whole: a helper left running a
            // moment after the browser writes into a profile its test is removing.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match namespace {
            // A process starts in the network namespace of the thread that starts it.
            Some(namespace) => {
                let runtime = tokio::runtime::Handle::current();
                namespace.run(|| {
                    let _entered = runtime.enter();
                    command.spawn()
                })
            }
            None => command.spawn(),
        }
        .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read chromium") {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited before listening");
        })
        .await
        .expect("chromium listening in time");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let socket = tokio::time::timeout(Duration::from_secs(20), devtools(&url, namespace))
            .await
            .expect("DevTools WebSocket in time");
        Browser {
            child,
            socket,
            next_id: 1,
        }
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("DevTools answered in time")
                .expect("DevTools open")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == json!(id) {
                assert!(v["error"].is_null(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab.
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await;
        let id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": id, "flatten": true}),
            )
            .await;
        Page {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        }
    }

    /// Loads `url` in `page` and waits for its load event. An error is Chromium's
    /// (`net::ERR_CERT_AUTHORITY_INVALID` for a certificate from a root it does not trust).
    pub async fn navigate(&mut self, page: &Page, url: &str) -> Result<(), String> {
        let navigated = self
            .call(Some(&page.session), "Page.navigate", json!({"url": url}))
            .await;
        if let Some(error) = navigated["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Err(error.to_string());
        }
        // The answer comes once the new document is committed, before it has loaded.
        self.eval(
            page,
            "new Promise(loaded => document.readyState === 'complete' ? loaded() \
             : addEventListener('load', () => loaded(), {once: true}))",
        )
        .await;
        Ok(())
    }

    /// Runs `source` in every document `page` loads from now on, before the page's own
    /// scripts (a clock shifted on purpose, say).
    pub async fn on_new_document(&mut self, page: &Page, source: &str) {
        self.call(Some(&page.session), "Page.enable", json!({}))
            .await;
        self.call(
            Some(&page.session),
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": source}),
        )
        .await;
    }

    /// Makes `page` the visible tab, as a viewer's is: Chromium defers loading media (a
    /// `<video>`'s source) in a page that was never shown.
    pub async fn bring_to_front(&mut self, page: &Page) {
        self.call(Some(&page.session), "Page.bringToFront", json!({}))
            .await;
    }

    /// A PNG of what `page` shows now.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("PNG data"))
            .expect("base64")
    }

    /// Evaluates `expression` in `page` and returns its JSON value; a promise is awaited
    /// and its value returned.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        result["result"]["value"].clone()
    }
}
