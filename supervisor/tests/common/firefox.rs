//! Headless Firefox (Debian's `firefox-esr`) driven over WebDriver BiDi, the same shape as
//! [`super::browser::Browser`]: open a page, evaluate scripts in it, take screenshots.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

pub use super::browser::Options;
use super::browser::{ROOT_NICKNAME, kill_group};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long Firefox may take to start, or to answer one command (a navigation included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Firefox; killed on drop, with its content processes.
pub struct Firefox {
    child: tokio::process::Child,
    socket: Socket,
    next_id: u64,
}

/// A page (a browsing context: a tab) of the browser.
pub struct Page {
    context: String,
}

/// The preferences (`user.js`) for a run with `options`: what a test needs on, whatever
/// this release's defaults are, and nothing that weakens certificate checks.
fn prefs(options: &Options) -> Vec<(&'static str, Value)> {
    let mut prefs = vec![
        // DNS over HTTPS would bypass the loopback names; keep every lookup local.
        ("network.trr.mode", json!(5)),
        // The loopback names resolve to 127.0.0.1 only, as in Chromium, not to ::1 first.
        ("network.dns.disableIPv6", json!(true)),
        // On by default in this release; kept on should a later one change that.
        ("network.http.http3.enable", json!(true)),
        ("network.webtransport.enabled", json!(true)),
        ("dom.media.webcodecs.enabled", json!(true)),
        // Headless pages play media, with sound, without a user's gesture.
        ("media.autoplay.default", json!(0)),
    ];
    if !options.loopback_names.is_empty() {
        let names = options.loopback_names.join(",");
        prefs.push(("network.dns.localDomains", json!(names)));
    }
    if options.trusted_root.is_some() {
        // Firefox verifies an HTTP/3 server's chain like any other, then drops the
        // connection if it ends at a root outside its built-in store; WebTransport has no
        // TCP to fall back to. The chain must still reach the trusted root.
        prefs.push((
            "network.http.http3.disable_when_third_party_roots_found",
            json!(false),
        ));
    }
    prefs
}

impl Firefox {
    /// Starts `binary` headless in the profile directory `profile` (made if missing) with
    /// `options`: the loopback names through `network.dns.localDomains`, the trusted root
    /// in the profile's own NSS database (`cert9.db`), which Firefox verifies servers with.
    pub async fn start(binary: &str, profile: &Path, options: &Options) -> Firefox {
        std::fs::create_dir_all(profile)
            .unwrap_or_else(|e| panic!("creating the profile {}: {e}", profile.display()));
        let user_js: String = prefs(options)
            .iter()
            .map(|(name, value)| format!("user_pref({name:?}, {value});\n"))
            .collect();
        let path = profile.join("user.js");
        std::fs::write(&path, user_js)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        if let Some(root) = &options.trusted_root {
            super::trust::trust_root(profile, ROOT_NICKNAME, root);
        }
        let mut child = tokio::process::Command::new(binary)
            .args(["--headless", "--no-remote", "--remote-debugging-port=0"])
            .arg("--profile")
            .arg(profile)
            .arg("about:blank")
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            // Its own process group, so that drop ends the content processes with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let mut seen = Vec::new();
            while let Some(line) = lines.next_line().await.expect("read firefox's stderr") {
                if let Some(url) = line.strip_prefix("WebDriver BiDi listening on ") {
                    return url.trim().to_string();
                }
                seen.push(line);
            }
            panic!(
                "firefox exited before WebDriver BiDi listened:\n{}",
                seen.join("\n")
            );
        })
        .await
        .expect("firefox's WebDriver BiDi listening in time");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio::time::timeout(
            ANSWER_TIMEOUT,
            tokio_tungstenite::connect_async(format!("{url}/session")),
        )
        .await
        .expect("WebDriver BiDi WebSocket in time")
        .expect("WebDriver BiDi WebSocket");
        let mut firefox = Firefox {
            child,
            socket,
            next_id: 1,
        };
        firefox
            .call("session.new", json!({"capabilities": {}}))
            .await
            .unwrap_or_else(|e| panic!("starting a WebDriver BiDi session: {e}"));
        firefox
    }

    /// Sends one command and returns its result, or the error it was answered with.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to WebDriver BiDi");
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method} answered in time"))
                .expect("WebDriver BiDi open")
                .expect("WebDriver BiDi frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("WebDriver BiDi JSON");
            if v["id"] == json!(id) {
                return match v["type"].as_str() {
                    Some("success") => Ok(v["result"].clone()),
                    _ => Err(format!("{method}: {}: {}", v["error"], v["message"])),
                };
            }
        }
    }

    /// Opens `url` in a new tab and waits for its load event; panics if it fails to load.
    pub async fn open(&mut self, url: &str) -> Page {
        let created = self
            .call("browsingContext.create", json!({"type": "tab"}))
            .await
            .unwrap_or_else(|e| panic!("opening a tab: {e}"));
        let page = Page {
            context: created["context"]
                .as_str()
                .expect("browsing context")
                .to_string(),
        };
        if let Err(e) = self.navigate(&page, url).await {
            panic!("loading {url}: {e}");
        }
        page
    }

    /// Loads `url` in `page` and waits for its load event. An error (a certificate the
    /// profile does not trust: `SEC_ERROR_UNKNOWN_ISSUER`) is Firefox's message.
    pub async fn navigate(&mut self, page: &Page, url: &str) -> Result<(), String> {
        self.call(
            "browsingContext.navigate",
            json!({"context": page.context, "url": url, "wait": "complete"}),
        )
        .await
        .map(drop)
    }

    /// A PNG of what `page` shows now.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call(
                "browsingContext.captureScreenshot",
                json!({"context": page.context}),
            )
            .await
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("PNG data"))
            .expect("base64")
    }

    /// Evaluates `expression` in `page` and returns its value as JSON (as `JSON.stringify`
    /// would make it, `undefined` as null); a promise is awaited and its value returned.
    /// Panics if the script throws or the promise rejects.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let evaluated = self
            .call(
                "script.evaluate",
                json!({
                    "expression": expression,
                    "target": {"context": page.context},
                    "awaitPromise": true,
                    "resultOwnership": "none",
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("evaluating `{expression}`: {e}"));
        assert!(
            evaluated["type"] == "success",
            "`{expression}` threw: {}",
            evaluated["exceptionDetails"]["text"]
        );
        remote_to_json(&evaluated["result"])
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        kill_group(&self.child);
    }
}

/// A WebDriver BiDi remote value (serialized with the defaults: objects in full) as plain
/// JSON: numbers JSON cannot hold (NaN, infinities) become null, as do `undefined` and
/// values with no JSON form (functions, nodes, an object seen before); a bigint becomes its
/// digits, a date its ISO string, a map an object, a set an array.
fn remote_to_json(v: &Value) -> Value {
    let value = &v["value"];
    match v["type"].as_str() {
        Some("string" | "boolean" | "date") => value.clone(),
        Some("number") => match value {
            Value::Number(_) => value.clone(),
            Value::String(s) if s == "-0" => json!(0),
            _ => Value::Null,
        },
        Some("bigint") => value.clone(),
        Some("array" | "set") => match value.as_array() {
            Some(items) => items.iter().map(remote_to_json).collect(),
            None => Value::Null,
        },
        Some("object" | "map") => match value.as_array() {
            Some(entries) => {
                let mut object = Map::new();
                for entry in entries {
                    let key = match &entry[0] {
                        Value::String(s) => s.clone(),
                        other => match remote_to_json(other) {
                            Value::String(s) => s,
                            key => key.to_string(),
                        },
                    };
                    object.insert(key, remote_to_json(&entry[1]));
                }
                Value::Object(object)
            }
            None => Value::Null,
        },
        _ => Value::Null,
    }
}
