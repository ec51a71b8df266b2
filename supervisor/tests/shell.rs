//! The shell completions and the manual page as a user installs them: bash completes
//! `ghost u` to `up` and `ghost up --ac` to the ACME flags through the generated script, and
//! `man` renders the generated page.

use std::process::Command;

const GHOST: &str = env!("CARGO_BIN_EXE_ghost");

/// What bash's completion function offers for the words `line` (the last one being typed).
fn complete(line: &[&str]) -> Vec<String> {
    let words = line.join(" ");
    let script = format!(
        "source <(\"$GHOST\" completions bash) && COMP_WORDS=({words}) && COMP_CWORD={} && \
         COMP_LINE='{words}' && COMP_POINT=${{#COMP_LINE}} && _ghost ghost && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        line.len() - 1
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("GHOST", GHOST)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    let commands = complete(&["ghost", "u"]);
    assert!(commands.contains(&"up".to_string()), "{commands:?}");
    let flags = complete(&["ghost", "up", "--acme"]);
    for flag in ["--acme", "--acme-directory", "--acme-email", "--acme-root"] {
        assert!(flags.contains(&flag.to_string()), "{flag} not in {flags:?}");
    }
    assert!(!complete(&["ghost", "d"]).contains(&"daemon".to_string()));
}

#[test]
fn the_manual_page_renders() {
    let page = Command::new(GHOST).arg("man").output().expect("ghost man");
    assert!(page.status.success());
    assert!(String::from_utf8_lossy(&page.stdout).contains(".TH ghost 1"));
    // Where man itself is installed, it renders the page without a complaint.
    let dir = std::env::temp_dir().join(format!("ghost-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("ghost.1");
    std::fs::write(&file, &page.stdout).expect("write");
    if let Ok(out) = Command::new("man")
        .arg(&file)
        .env("MANPAGER", "cat")
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            assert!(text.contains("ghost-up"), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
