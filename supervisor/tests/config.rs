//! ghost.toml, `GHOST_*` and `ghost config show|init`: the real binary on a temporary state
//! directory. Which layer wins, what a typo or a bad value in the file says, that `config
//! init` writes the defaults, and that a stack runs with what `config show` prints.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use supervisor::args::{Effective, Setting, Source};
use supervisor::config::FILE_NAME;

use common::{GHOST, Stack};

/// `ghost --state-dir STATE ARGS…` with none of the test's own `GHOST_*` variables, and `env`.
fn ghost(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(GHOST);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("GHOST_") {
            cmd.env_remove(var);
        }
    }
    let out = cmd
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run ghost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "ghost {args:?} panicked: {stderr}"
    );
    out
}

/// `ghost config show --json ARGS…`, which must succeed.
fn show(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Effective {
    let out = ghost(
        state,
        &[&["config", "show", "--json"][..], args].concat(),
        env,
    );
    assert!(
        out.status.success(),
        "config show {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("config show --json")
}

fn get<'e>(effective: &'e Effective, key: &str) -> &'e Setting {
    effective
        .settings
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no {key} in {effective:?}"))
}

fn value<'e>(effective: &'e Effective, key: &str) -> Option<&'e str> {
    get(effective, key).value.as_deref()
}

/// The refusal of a file: exit 2, nothing on stdout, the message on stderr.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "not a usage error: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn a_file_a_variable_and_a_flag_each_win_in_turn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path();
    let file = state.join(FILE_NAME);

    let none = show(state, &[], &[]);
    assert_eq!(none.file, None);
    assert_eq!(value(&none, "relay_capacity"), Some("200"));
    assert_eq!(get(&none, "relay_capacity").source, Source::Default);
    assert_eq!(value(&none, "advertise_host"), None);

    std::fs::write(
        &file,
        "# the stack's own\nrelays = 3\nrelay_capacity = 50\n",
    )
    .expect("write");
    let from_file = show(state, &[], &[]);
    assert_eq!(from_file.file.as_deref(), Some(file.as_path()));
    assert_eq!(value(&from_file, "relay_capacity"), Some("50"));
    assert_eq!(
        get(&from_file, "relay_capacity").source,
        Source::File {
            path: file.clone(),
            line: 3
        }
    );

    let env = [("GHOST_RELAY_CAPACITY", "60")];
    let from_env = show(state, &[], &env);
    assert_eq!(value(&from_env, "relay_capacity"), Some("60"));
    assert_eq!(
        get(&from_env, "relay_capacity").source,
        Source::Env {
            var: "GHOST_RELAY_CAPACITY".into()
        }
    );
    // The file still gives what the variable does not.
    assert_eq!(value(&from_env, "relays"), Some("3"));

    let from_flag = show(state, &["--relay-capacity", "70"], &env);
    assert_eq!(value(&from_flag, "relay_capacity"), Some("70"));
    assert_eq!(
        get(&from_flag, "relay_capacity").source,
        Source::Flag {
            flag: "--relay-capacity".into()
        }
    );

    // A switch from a variable, as a unit file writes it; `-c` names another file.
    let other = state.join("other.toml");
    std::fs::write(&other, "relays = 4\n").expect("write");
    let other_arg = other.to_str().expect("utf-8");
    let switched = show(
        state,
        &["-c", other_arg],
        &[("GHOST_EPHEMERAL_PORTS", "yes")],
    );
    assert_eq!(switched.file.as_deref(), Some(other.as_path()));
    assert_eq!(value(&switched, "relays"), Some("4"));
    assert_eq!(value(&switched, "relay_capacity"), Some("200"));
    assert_eq!(value(&switched, "ephemeral_ports"), Some("true"));

    // The table names each source.
    let out = ghost(state, &["config", "show"], &env);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("file {}:2", file.display())),
        "{table}"
    );
    assert!(table.contains("env GHOST_RELAY_CAPACITY"), "{table}");
}

#[test]
fn a_typo_in_a_key_names_the_file_the_line_and_the_key_meant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, "relays = 2\nrelay_capacty = 50\n").expect("write");
    let stderr = refused(&ghost(dir.path(), &["config", "show"], &[]));
    assert!(
        stderr.contains(&format!(
            "{}:2:1: unknown key \"relay_capacty\"",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean \"relay_capacity\"?"),
        "{stderr}"
    );
    // `ghost up` refuses the same file before it starts anything.
    let stderr = refused(&ghost(
        dir.path(),
        &["up", "-d", "--runtime", "process"],
        &[],
    ));
    assert!(
        stderr.contains(&format!("{}:2:1", file.display())),
        "{stderr}"
    );
    assert!(!dir.path().join("stack.json").exists());
}

#[test]
fn a_bad_value_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(FILE_NAME);
    for (text, at, says) in [
        ("relays = \"two\"\n", "1:10", "bad value \"two\" for relays"),
        (
            "\n\nrelay_memory = \"lots\"\n",
            "3:16",
            "a size such as 256MiB",
        ),
        ("runtime = \"dockr\"\n", "1:11", "did you mean \"docker\"?"),
        ("public = 1\n", "1:10", "expected true or false"),
    ] {
        std::fs::write(&file, text).expect("write");
        let stderr = refused(&ghost(dir.path(), &["config", "show"], &[]));
        assert!(
            stderr.contains(&format!("{}:{at}: ", file.display())),
            "{text:?}: {stderr}"
        );
        assert!(stderr.contains(says), "{text:?}: {stderr}");
    }
}

#[test]
fn config_init_writes_the_defaults_and_keeps_an_existing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let file = state.join(FILE_NAME);
    let defaults = show(&state, &[], &[]);

    let out = ghost(&state, &["config", "init"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("config init wrote the state directory's");
    assert!(text.contains("# Relays to start."), "{text}");
    assert!(text.contains("\nrelays = 2\n"), "{text}");

    // Read back (from the state directory, as `ghost up` does), it is the defaults.
    let written = show(&state, &[], &[]);
    assert_eq!(written.file.as_deref(), Some(file.as_path()));
    assert_eq!(written.settings.len(), defaults.settings.len());
    for (w, d) in written.settings.iter().zip(&defaults.settings) {
        assert_eq!((&w.key, &w.value), (&d.key, &d.value));
        assert!(
            text.contains(&format!("{} = ", w.key)),
            "{} is not in the file",
            w.key
        );
    }
    assert!(matches!(
        get(&written, "relays").source,
        Source::File { .. }
    ));

    // Kept without --force.
    std::fs::write(&file, "relays = 5\n").expect("write");
    let stderr = refused(&ghost(&state, &["config", "init"], &[]));
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(value(&show(&state, &[], &[]), "relays"), Some("5"));
    let out = ghost(&state, &["config", "init", "--force"], &[]);
    assert!(out.status.success());
    assert_eq!(value(&show(&state, &[], &[]), "relays"), Some("2"));

    // `-c -` prints it.
    let out = ghost(&state, &["config", "init", "-c", "-"], &[]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
}

#[test]
fn the_stack_runs_with_what_config_show_prints() {
    let dir = tempfile::Builder::new()
        .prefix("ghost-test-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(
        dir.path().join(FILE_NAME),
        "relays = 3\nmax_relays = 5\nrelay_capacity = 50\n",
    )
    .expect("write");
    // Stack::up_in runs `ghost up -d --runtime process --ephemeral-ports`; it is taken down
    // when dropped, also when an assertion fails.
    let flags = ["--runtime", "process", "--ephemeral-ports"];
    let stack = Stack::up_in(dir, "process", &[], &[]);
    let shown = show(stack.dir.path(), &flags, &[]);
    let out = stack
        .ghost()
        .args(["status", "--json"])
        .output()
        .expect("ghost status");
    assert!(out.status.success());
    let status: api::status::Status = serde_json::from_slice(&out.stdout).expect("status json");
    for (key, running) in [
        ("relays", status.relays_wanted),
        ("max_relays", status.max_relays),
        ("relay_capacity", status.relay_capacity),
    ] {
        assert_eq!(
            value(&shown, key),
            Some(running.to_string().as_str()),
            "{key}"
        );
        assert!(
            matches!(get(&shown, key).source, Source::File { .. }),
            "{key}"
        );
    }
    assert_eq!(status.relays_wanted, 3);
    assert_eq!(status.relay_capacity, 50);
    assert_eq!(value(&shown, "runtime"), Some(status.runtime.as_str()));
    let relays = status
        .services
        .iter()
        .filter(|s| s.kind == api::status::Kind::Relay)
        .count();
    assert_eq!(relays, 3, "{:?}", status.services);
}
