//! WebKit, Safari's engine, as Debian ships it: WebKitGTK's MiniBrowser on an Xvfb display of
//! its own, driven over W3C WebDriver (HTTP and JSON) through `WebKitWebDriver`. The same
//! shape as [`super::browser::Browser`]: load a page, evaluate scripts in it, take
//! screenshots. One session, so one page, per browser.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::browser::kill_group;

/// How long Xvfb, the driver or the browser may take to start, or to answer one command (a
/// navigation included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// What it takes to run WebKit here: the driver, the browser it starts, a display server.
#[derive(Debug, Clone)]
pub struct Tools {
    pub driver: &'static str,
    pub minibrowser: PathBuf,
    pub xvfb: &'static str,
}

/// WebKit's tools where installed (the test command installs Debian's `webkit2gtk-driver`,
/// which brings the MiniBrowser, and `xvfb`); `None` lets a test skip on a developer machine
/// without them, and CI (which sets `CI`) fails instead.
pub fn installed() -> Option<Tools> {
    let runs = |program: &str| {
        std::process::Command::new(program)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let tools = match minibrowser() {
        Some(minibrowser) if runs("WebKitWebDriver") && runs("Xvfb") => Some(Tools {
            driver: "WebKitWebDriver",
            minibrowser,
            xvfb: "Xvfb",
        }),
        _ => None,
    };
    if tools.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs WebKitWebDriver, WebKitGTK's MiniBrowser and Xvfb (the test command \
             installs them)"
        );
        eprintln!(
            "skipped: no WebKitWebDriver, MiniBrowser or Xvfb installed (the README's test \
             command installs them)"
        );
    }
    tools
}

/// WebKitGTK's MiniBrowser, which Debian keeps in the library's own directory of its
/// architecture (`/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser`).
fn minibrowser() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .flat_map(|arch| {
            ["webkit2gtk-4.1", "webkit2gtk-4.0"]
                .map(|api| arch.path().join(api).join("MiniBrowser"))
        })
        .find(|path| path.is_file())
}

/// A running WebKit: Xvfb, the driver and the browser it started; all killed on drop, also
/// when a test fails.
pub struct WebKit {
    xvfb: tokio::process::Child,
    driver: tokio::process::Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`, where every command of the session goes.
    session: String,
}

impl WebKit {
    /// Starts Xvfb on a free display, the driver on a free port, and a browser session in
    /// it: a MiniBrowser window filling the display.
    pub async fn start(tools: &Tools) -> WebKit {
        // `-displayfd 1`: Xvfb picks a free display itself and writes its number to stdout
        // once it takes connections.
        let mut xvfb = tokio::process::Command::new(tools.xvfb)
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x1024x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tools.xvfb));
        let mut lines = BufReader::new(xvfb.stdout.take().expect("Xvfb's stdout")).lines();
        let display = tokio::time::timeout(ANSWER_TIMEOUT, lines.next_line())
            .await
            .expect("Xvfb ready in time")
            .expect("read Xvfb's stdout")
            .expect("Xvfb exited before it took connections");
        // `--port=0`: the driver binds a free port itself, and says nothing about it.
        let driver = tokio::process::Command::new(tools.driver)
            .arg("--port=0")
            .env("DISPLAY", format!(":{}", display.trim()))
            .env("GDK_BACKEND", "x11")
            .env_remove("WAYLAND_DISPLAY")
            // Its own process group, which the browsers it starts share: drop ends them all.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tools.driver));
        let mut webkit = WebKit {
            xvfb,
            driver,
            http: reqwest::Client::new(),
            session: String::new(),
        };
        let port = webkit.driver_port().await;
        let created = webkit
            .call(
                reqwest::Method::POST,
                &format!("http://127.0.0.1:{port}/session"),
                Some(json!({"capabilities": {"alwaysMatch": {
                    "webkitgtk:browserOptions": {
                        "binary": tools.minibrowser,
                        "args": ["--automation"],
                    },
                }}})),
            )
            .await
            .unwrap_or_else(|e| panic!("starting a WebDriver session: {e}"));
        let id = created["sessionId"].as_str().expect("session id");
        webkit.session = format!("http://127.0.0.1:{port}/session/{id}");
        // The whole display, so that a screenshot shows the page below its picture too.
        webkit
            .command(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({"x": 0, "y": 0, "width": 1280, "height": 1024})),
            )
            .await;
        webkit
    }

    /// The port the driver listens on, read from the kernel: the TCP socket in LISTEN state
    /// among the driver's own file descriptors.
    async fn driver_port(&self) -> u16 {
        let pid = self.driver.id().expect("the driver runs");
        let started = Instant::now();
        loop {
            if let Some(port) = listening_port(pid) {
                return port;
            }
            assert!(
                started.elapsed() < ANSWER_TIMEOUT,
                "WebKitWebDriver never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one command and returns its value, or the error it was answered with.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, url).timeout(ANSWER_TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| format!("{url}: {status}, not JSON: {e}"))?;
        let value = answer["value"].clone();
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{}: {}", value["error"], value["message"]))
        }
    }

    /// A command of this session (`path` after its id: "/url", say).
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        self.call(method, &url, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// Loads `url` and waits for its load event; an error is WebKit's.
    pub async fn navigate(&self, url: &str) -> Result<(), String> {
        let command = format!("{}/url", self.session);
        self.call(reqwest::Method::POST, &command, Some(json!({"url": url})))
            .await
            .map(drop)
    }

    /// Runs `body` as a function's body in the page (WebDriver's Execute Script: `return`
    /// gives the value, which must survive a JSON round trip).
    pub async fn execute(&self, body: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": body, "args": []})),
        )
        .await
    }

    /// Evaluates `expression` in the page and returns its value as `JSON.stringify` makes
    /// it (`undefined` as null); a promise is awaited and its value returned. Panics if the
    /// script throws or the promise rejects.
    pub async fn eval(&self, expression: &str) -> Value {
        // Through a string, so that any value comes back whatever the driver can serialize
        // (an object holding a function, such as `window.ghost`).
        let script = format!(
            "const done = arguments[arguments.length - 1];
             Promise.resolve().then(() => ({expression})).then(
               (v) => done(JSON.stringify({{ ok: v === undefined ? null : v }})),
               (e) => done(JSON.stringify({{ error: String(e && e.stack || e) }})));"
        );
        let answer = self
            .command(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({"script": script, "args": []})),
            )
            .await;
        let answer: Value = serde_json::from_str(answer.as_str().expect("a JSON string"))
            .expect("the script's JSON");
        assert!(
            answer["error"].is_null(),
            "`{expression}` threw: {}",
            answer["error"]
        );
        answer["ok"].clone()
    }

    /// A PNG of what the page shows now.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("PNG data"))
            .expect("base64")
    }

    /// Ends the session, which closes the browser; drop ends everything anyway.
    pub async fn quit(self) {
        let session = self.session.clone();
        if let Err(e) = self.call(reqwest::Method::DELETE, &session, None).await {
            eprintln!("webkit: deleting the WebDriver session: {e}");
        }
    }
}

impl Drop for WebKit {
    fn drop(&mut self) {
        kill_group(&self.driver);
        // Asked to stop, Xvfb removes its lock file and socket; killed, it leaves them.
        if let Some(pid) = self.xvfb.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let asked = Instant::now();
            while matches!(self.xvfb.try_wait(), Ok(None))
                && asked.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The TCP port `pid` listens on, from the sockets among its file descriptors and the
/// kernel's table of TCP sockets (IPv4, then IPv6).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["tcp", "tcp6"].iter().find_map(|table| {
        let table = std::fs::read_to_string(
            Path::new("/proc")
                .join(pid.to_string())
                .join("net")
                .join(table),
        )
        .ok()?;
        // `sl local_address rem_address st … inode`: state 0A is LISTEN.
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
    })
}
