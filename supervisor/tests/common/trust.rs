//! A root certificate that a browser trusts the way a user's machine would: an NSS database
//! (`certutil`, from Debian's `libnss3-tools`) holding the root as a CA for TLS servers. Both
//! Chromium (`$HOME/.pki/nssdb`) and Firefox (its profile directory) verify servers against
//! such a database, so a test proves the certificate chain without turning verification off.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;

/// Makes an NSS database (`sql:` format, no password) in `dir` unless one is there already,
/// and adds the first certificate of the PEM file `root` to it under `nickname`, as a CA
/// trusted to issue TLS server certificates (trust `C,,`). Panics naming the step that failed.
pub fn trust_root(dir: &Path, nickname: &str, root: &Path) {
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("creating {} for an NSS database: {e}", dir.display()));
    let mut db = OsString::from("sql:");
    db.push(dir);
    let (db, arg) = (db.as_os_str(), OsStr::new);
    if !dir.join("cert9.db").exists() {
        let create = [arg("-N"), arg("-d"), db, arg("--empty-password")];
        certutil(&create, "create the NSS database");
    }
    let add = [
        arg("-A"),
        arg("-d"),
        db,
        arg("-n"),
        arg(nickname),
        arg("-t"),
        arg("C,,"),
        arg("-a"),
        arg("-i"),
        root.as_os_str(),
    ];
    certutil(&add, &format!("add {} as a trusted root", root.display()));
    let list = [arg("-L"), arg("-d"), db, arg("-n"), arg(nickname)];
    let listed = certutil(&list, "list the root it added");
    assert!(
        listed.contains("Trusted CA"),
        "the NSS database in {} does not trust {nickname} as a CA after adding it:\n{listed}",
        dir.display()
    );
}

/// Runs `certutil` with `args`; panics with its output unless it succeeds. Returns stdout.
fn certutil(args: &[&OsStr], what: &str) -> String {
    let out = Command::new("certutil")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("certutil could not run to {what} (install libnss3-tools): {e}")
        });
    assert!(
        out.status.success(),
        "certutil failed to {what} ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
