//! `ghost keys`: the operator makes, lists and removes stream keys in the state directory's
//! `keys/` ([`streamkeys::KeyStore`]). Ingest reads that directory on every publish, so
//! these commands need no running daemon, and take effect at once on a running stack.

use anyhow::Result;
use streamkeys::{self, KeyStore, shell_word};

use crate::exit::{self, Exit};
use orchestrator::stack::{StackFile, StateDir};

/// Ingest's RTMP port by default; stack.json does not name the RTMP listener's address.
const RTMP_PORT: u16 = 1935;

/// What `ghost keys` does.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Makes a stream key for NAME and prints it with the settings OBS needs. The key is
    /// shown only this once: the state directory keeps only its hash.
    Add {
        /// The stream name the key publishes under.
        name: String,
        /// Replace NAME's key if it has one (the old key stops working at once).
        #[arg(long)]
        rotate: bool,
    },
    /// Names that have a key, and when each key was made (never the keys themselves).
    List {
        /// A JSON array of `{"name","created_at"}`.
        #[arg(long)]
        json: bool,
    },
    /// Removes NAME's key: publishers presenting it are refused from now on (a stream
    /// already live stays live).
    Remove {
        /// The stream name.
        name: String,
    },
}

/// Runs `cmd` on the keys of `state`.
pub fn run(state: &StateDir, cmd: KeysCmd) -> Result<i32> {
    let store = state.keys();
    match cmd {
        KeysCmd::Add { name, rotate } => add(state, &store, &name, rotate),
        KeysCmd::List { json } => list(&store, json),
        KeysCmd::Remove { name } => {
            if !store.remove(&name)? {
                return Err(Exit::new(exit::FAILURE, format!("stream {name:?} has no key")).into());
            }
            out!("removed the key of {name:?}; publishers presenting it are refused from now on");
            Ok(exit::OK)
        }
    }
}

fn add(state: &StateDir, store: &KeyStore, name: &str, rotate: bool) -> Result<i32> {
    let made = if rotate {
        store.rotate(name)
    } else {
        store.add(name)
    };
    let key = match made {
        Ok(key) => key,
        Err(e @ streamkeys::Error::InvalidName(_)) => {
            return Err(Exit::new(exit::USAGE, e.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let stack = state.read().ok();
    print!("{}", obs_settings(name, &rtmp_server(stack.as_ref()), &key));
    if let Some(stack) = stack
        && !stack.require_keys
    {
        eprintln!(
            "ghost: note: the running stack does not require keys; `ghost up --require-keys` \
             (or --public) makes them the only way to publish"
        );
    }
    Ok(exit::OK)
}

/// What `ghost keys add` prints: the key, once, as OBS asks for it and as `ghost publish`
/// takes it.
fn obs_settings(name: &str, server: &str, key: &str) -> String {
    format!(
        "Stream key for {name:?}, shown only this once (keep it secret):\n\
         \n\
         OBS: Settings > Stream, Service: Custom...\n  \
         Server: {server}\n  \
         Stream key: {key}\n\
         \n\
         ghost: ghost publish --name {shell} --key {key} --input -\n",
        shell = shell_word(name),
    )
}

/// OBS's "Server" field: `rtmp://HOST:PORT/live`, the port the stack's ingest listens on
/// (1935 by default).
fn rtmp_server(stack: Option<&StackFile>) -> String {
    let port = stack
        .and_then(|s| s.rtmp_addr.parse::<std::net::SocketAddr>().ok())
        .map_or(RTMP_PORT, |a| a.port());
    format!("rtmp://{}:{port}/live", rtmp_host(stack))
}

/// The host streamers reach ingest at: the stack's advertised host; else loopback for a
/// running stack that listens only there; else this host's name.
fn rtmp_host(stack: Option<&StackFile>) -> String {
    if let Some(host) = stack.and_then(|s| s.advertise_host.clone()) {
        return host;
    }
    if stack.is_some_and(|s| !s.public) {
        return "127.0.0.1".into();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn list(store: &KeyStore, json: bool) -> Result<i32> {
    let entries = store.list()?;
    if json {
        out!("{}", serde_json::to_string(&entries)?);
        return Ok(exit::OK);
    }
    out!("{:<32} CREATED", "NAME");
    for e in &entries {
        out!("{:<32} {}", e.name, e.created_at);
    }
    if entries.is_empty() {
        eprintln!("ghost: no stream keys yet; make one with `ghost keys add NAME`");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(public: bool, advertise_host: Option<&str>) -> StackFile {
        StackFile {
            runtime: orchestrator::runtime::Backend::Process,
            supervisor_pid: 1,
            supervisor_url: "http://127.0.0.1:7070".into(),
            gateway_url: "http://127.0.0.1:8080".into(),
            ingest_addr: "127.0.0.1:4433".into(),
            rtmp_addr: "127.0.0.1:1936".into(),
            control_url: "http://127.0.0.1:7000".into(),
            supervisor_ports: (7070, 7071),
            public,
            advertise_host: advertise_host.map(Into::into),
            require_keys: public,
            viewer_url: None,
            certificate: String::new(),
        }
    }

    #[test]
    fn the_settings_name_obs_fields() {
        let text = obs_settings("my show", "rtmp://live.example:1935/live", "gs_abc");
        assert!(
            text.contains("\n  Server: rtmp://live.example:1935/live\n"),
            "{text}"
        );
        assert!(text.contains("\n  Stream key: gs_abc\n"), "{text}");
        assert!(
            text.contains("ghost publish --name 'my show' --key gs_abc"),
            "{text}"
        );
    }

    #[test]
    fn the_host_is_the_advertised_one_else_where_the_stack_listens() {
        let advertised = stack(true, Some("live.example"));
        assert_eq!(rtmp_host(Some(&advertised)), "live.example");
        assert_eq!(rtmp_host(Some(&stack(false, None))), "127.0.0.1");
        // A public stack without an advertised host, or none running: this host's name.
        assert!(!rtmp_host(Some(&stack(true, None))).is_empty());
        assert!(!rtmp_host(None).is_empty());
        // The port is the one ingest listens on.
        assert_eq!(
            rtmp_server(Some(&stack(false, None))),
            "rtmp://127.0.0.1:1936/live"
        );
        assert!(rtmp_server(None).ends_with(":1935/live"));
    }
}
