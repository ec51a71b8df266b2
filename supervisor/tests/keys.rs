//! `ghost keys add/list/remove`, the real binary on a temporary state directory with no
//! stack running: what the operator sees, what lands in `keys/keys.json`, and that ingest's
//! gate, reading the same directory, agrees.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use api::keys::KeyEntry;
use streamkeys::{Gate, KeyStore, Refusal};

const GHOST: &str = env!("CARGO_BIN_EXE_ghost");

fn ghost(state: &Path, args: &[&str]) -> Output {
    let out = Command::new(GHOST)
        .arg("--state-dir")
        .arg(state)
        .arg("keys")
        .args(args)
        // A key from the test's own environment must not leak into these runs.
        .env_remove("GHOST_STREAM_KEY")
        .output()
        .expect("run ghost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "ghost keys {args:?} panicked: {stderr}"
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The key `ghost keys add` printed, from its OBS field.
fn printed_key(out: &Output) -> String {
    let text = stdout(out);
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Stream key: "))
        .unwrap_or_else(|| panic!("no stream key field in {text}"));
    line.to_string()
}

fn listed(state: &Path) -> Vec<KeyEntry> {
    let out = ghost(state, &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON array of keys")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn keys_are_made_listed_and_removed_without_a_stack() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");

    let out = ghost(&state, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(&state), []);

    // Made: shown once, as OBS asks for it.
    let out = ghost(&state, &["add", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let key = printed_key(&out);
    assert!(key.starts_with("gs_") && key.len() >= 3 + 26, "{key}");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Server: "))
        .unwrap_or_else(|| panic!("no server field in {text}"));
    assert!(
        server.starts_with("rtmp://") && server.ends_with(":1935/live"),
        "{server}"
    );
    assert!(
        text.contains(&format!("ghost publish --name alice --key {key} ")),
        "{text}"
    );

    // Stored: the hash only, owner-only.
    let dir = state.join("keys");
    let file = dir.join("keys.json");
    let stored = std::fs::read_to_string(&file).expect("keys.json");
    assert!(
        !stored.contains(&key),
        "the key itself is in keys.json: {stored}"
    );
    assert!(stored.contains("\"alice\""), "{stored}");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir), 0o700);

    // Ingest's gate, on the same directory, knows the key at once.
    let gate = Gate::new(Some(KeyStore::new(&dir)), true);
    assert_eq!(
        gate.authorize(Some("alice"), Some(&key)).expect("admitted"),
        "alice"
    );
    assert_eq!(
        gate.authorize(Some(&key), Some(&key)).expect("RTMP"),
        "alice"
    );
    assert!(matches!(
        gate.authorize(Some("bob"), Some(&key)),
        Err(Refusal::OtherName { .. })
    ));

    // One key per name.
    let out = ghost(&state, &["add", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ghost keys remove alice"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(
        KeyStore::new(&dir).name_for(&key).expect("read"),
        Some("alice".into()),
        "a refused add leaves the key as it was"
    );

    // Listed: names and times, never keys.
    let out = ghost(&state, &["add", "bob"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bob = printed_key(&out);
    let out = ghost(&state, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("alice") && text.contains("bob"), "{text}");
    assert!(!text.contains(&key) && !text.contains(&bob), "{text}");
    let entries = listed(&state);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    for e in &entries {
        assert!(humantime::parse_rfc3339(&e.created_at).is_ok(), "{e:?}");
    }

    // Rotated: the old key stops working, the new one works.
    let out = ghost(&state, &["add", "--rotate", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated = printed_key(&out);
    assert_ne!(rotated, key);
    assert!(matches!(
        gate.authorize(Some("alice"), Some(&key)),
        Err(Refusal::WrongKey)
    ));
    assert_eq!(
        gate.authorize(Some("alice"), Some(&rotated))
            .expect("new key"),
        "alice"
    );

    // Removed: refused from then on; removing again says there is nothing to remove.
    let out = ghost(&state, &["remove", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(matches!(
        gate.authorize(Some("alice"), Some(&rotated)),
        Err(Refusal::WrongKey)
    ));
    let out = ghost(&state, &["remove", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no key"), "{}", stderr(&out));
    let names: Vec<String> = listed(&state).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["bob"]);
    assert_eq!(mode(&file), 0o600, "a rewrite keeps the file owner-only");
}

#[test]
fn bad_names_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let long = "x".repeat(wire::limits::MAX_NAME + 1);
    for bad in ["", "a\tb", long.as_str()] {
        let out = ghost(tmp.path(), &["add", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid stream name"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(listed(tmp.path()), []);
}

#[test]
fn a_malformed_key_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("keys");
    std::fs::create_dir_all(&dir).expect("keys dir");
    std::fs::write(dir.join("keys.json"), "{ not json").expect("write");
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["add", "alice"],
        &["remove", "alice"],
    ] {
        let out = ghost(tmp.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("keys.json") && err.contains("not a valid stream key file"),
            "{args:?}: {err}"
        );
    }
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read_to_string(dir.join("keys.json")).expect("read"),
        "{ not json"
    );
}
