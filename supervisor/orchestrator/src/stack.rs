//! The stack's state directory and `stack.json`, through which every `ghost` command finds
//! the running stack.
//!
//! Layout of the state directory (default `$XDG_STATE_HOME/ghost-stream`, else
//! `~/.local/state/ghost-stream`; `--state-dir` or `GHOST_STATE_DIR` to change):
//! `ca/` (the CA key, which only the supervisor reads), `tls/` (the CA certificate and one
//! directory per service with its own certificates, see [`identity::Pki`]),
//! `ticket.key`, `keys/` (stream keys, see [`streamkeys`]), `stack.json`, `logs/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the state directory or its files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No stack is up here: `stack.json` cannot be read.
    #[error(
        "no running stack found ({}: {error}); start one with `ghost up -d`",
        path.display()
    )]
    NoStack {
        /// Where the stack file was looked for.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// The admin token cannot be read: most often, another user ran `ghost up`.
    #[error(
        "cannot read the admin token {} ({error}): admin commands are for the user who ran `ghost up`",
        path.display()
    )]
    AdminToken {
        /// The token's file.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// `stack.json` is not the JSON of a stack file.
    #[error("parsing {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// A file or directory operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`writing`, `creating`).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The stack file could not be put into JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The stream keys' directory.
    #[error(transparent)]
    Keys(#[from] streamkeys::Error),
    /// ACME's directory.
    #[error(transparent)]
    Acme(#[from] crate::acme::Error),
    /// The stack's CA or a service's TLS files.
    #[error(transparent)]
    Pki(#[from] identity::Error),
}

/// A file operation `action` on `path` failed.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("ghost-stream");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/state/ghost-stream");
    }
    std::env::temp_dir().join("ghost-stream")
}

/// Which runtime a stack runs on: saved in the stack file by `ghost up`, read by every
/// command that must reach the stack's instances (`ghost down`, `ghost logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Local processes ([`crate::runtime::process::ProcessRuntime`]).
    Process,
    /// Containers of one Docker engine ([`crate::runtime::docker::DockerRuntime`]).
    Docker,
    /// Relays as Swarm services over the swarm's nodes ([`crate::runtime::swarm::SwarmRuntime`]).
    Swarm,
}

impl Backend {
    /// Its name, as the stack file, the status JSON and the status page write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Docker => "docker",
            Backend::Swarm => "swarm",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the running stack's endpoints are, as seen from this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackFile {
    /// Which runtime runs it.
    pub runtime: Backend,
    /// The supervisor daemon's pid.
    pub supervisor_pid: u32,
    /// Supervisor HTTP (status page and API), e.g. `http://127.0.0.1:7070`.
    pub supervisor_url: String,
    /// Viewer gateway, e.g. `http://127.0.0.1:8080`.
    pub gateway_url: String,
    /// Ingest QUIC address, e.g. `127.0.0.1:4433`.
    pub ingest_addr: String,
    /// Ingest RTMP address, e.g. `127.0.0.1:1935` (empty from a stack that predates it).
    #[serde(default)]
    pub rtmp_addr: String,
    /// Control gRPC, e.g. `http://127.0.0.1:7000`.
    pub control_url: String,
    /// The supervisor's own ports (HTTP, gRPC), reused by a supervisor restarted after a
    /// crash so the services it adopts still reach it.
    #[serde(default)]
    pub supervisor_ports: (u16, u16),
    /// Whether the public services listen on all addresses (`--public`).
    #[serde(default)]
    pub public: bool,
    /// The host name streamers and viewers use to reach this host (`--advertise-host`).
    #[serde(default)]
    pub advertise_host: Option<String>,
    /// Whether publishers need a stream key (`--require-keys`, implied by `--public`).
    #[serde(default)]
    pub require_keys: bool,
    /// The address browsers open on a stack that serves HTTPS, `https://NAME[:PORT]/`.
    #[serde(default)]
    pub viewer_url: Option<String>,
    /// Which certificate relays (and the gateway's HTTPS) serve, in words.
    #[serde(default)]
    pub certificate: String,
}

/// Paths inside a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// TLS files: the CA certificate and each service's directory.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The CA key's directory, never given to a service.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// The stack's CA and each service's certificates.
    pub fn pki(&self) -> identity::Pki {
        identity::Pki::new(&self.tls_dir(), &self.ca_dir())
    }

    /// The CA clients trust.
    pub fn ca(&self) -> PathBuf {
        self.pki().ca()
    }

    /// The TLS directory of `role`: all of the stack's TLS files that service is given.
    pub fn tls_dir_of(&self, role: identity::Role) -> PathBuf {
        self.pki().dir(role)
    }

    /// The join-ticket key shared by control and relays.
    pub fn ticket_key(&self) -> PathBuf {
        self.root.join("ticket.key")
    }

    /// The admin token: made afresh by every supervisor start, readable by its owner only;
    /// the CLI presents it on every admin request.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// Writes a new random admin token (mode 0600, replaced whole) and returns it.
    pub fn new_admin_token(&self) -> Result<String, Error> {
        use std::io::Write;
        let token: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = self.admin_token();
        let tmp = path.with_extension("token.new");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&tmp)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("writing", &path))?;
        Ok(token)
    }

    /// Reads the admin token the running supervisor made.
    pub fn read_admin_token(&self) -> Result<String, Error> {
        let path = self.admin_token();
        let token =
            std::fs::read_to_string(&path).map_err(|error| Error::AdminToken { path, error })?;
        Ok(token.trim().to_string())
    }

    /// The stream keys' directory, which ingest reads (mounted read-only in a container).
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The stream keys.
    pub fn keys(&self) -> streamkeys::KeyStore {
        streamkeys::KeyStore::new(self.keys_dir())
    }

    /// Service logs.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// ACME's account, certificate and challenge responses.
    pub fn acme(&self) -> crate::acme::Files {
        crate::acme::Files::in_dir(self.root.join("acme"))
    }

    /// `stack.json`: where every `ghost` command finds the running stack.
    pub fn stack_file(&self) -> PathBuf {
        self.root.join("stack.json")
    }

    /// Makes the directory, the CA and every service's TLS files (moving an earlier layout
    /// over), the ticket key and the stream keys' directory (mode 0700; a container mounts
    /// it, so it must exist) where missing.
    pub fn prepare(&self) -> Result<(), Error> {
        std::fs::create_dir_all(self.logs()).map_err(io("creating", &self.logs()))?;
        self.keys().create_dir()?;
        // The gateway's container mounts the challenge directory: it must exist.
        self.acme().create()?;
        self.pki().ensure(std::time::SystemTime::now())?;
        let key = self.ticket_key();
        if !key.exists() {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let bytes: [u8; 32] = rand::random();
            options
                .open(&key)
                .and_then(|mut f| f.write_all(&bytes))
                .map_err(io("writing", &key))?;
        }
        Ok(())
    }

    /// Reads `stack.json`; a clear error when no stack is up.
    pub fn read(&self) -> Result<StackFile, Error> {
        let path = self.stack_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => return Err(Error::NoStack { path, error }),
        };
        serde_json::from_str(&text).map_err(|source| Error::Parse { path, source })
    }

    /// Writes `stack.json` atomically.
    pub fn write(&self, stack: &StackFile) -> Result<(), Error> {
        let path = self.stack_file();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(stack)?).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("writing", &path))
    }

    /// Removes `stack.json`.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(self.stack_file());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_written_as_before_and_an_unknown_one_is_refused() {
        for backend in [Backend::Process, Backend::Docker, Backend::Swarm] {
            let json = serde_json::to_string(&backend).expect("json");
            assert_eq!(json, format!("\"{backend}\""));
            let back: Backend = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, backend);
        }
        assert!(serde_json::from_str::<Backend>("\"kubernetes\"").is_err());
    }
}
