//! Stream keys: the operator's gate for publishing.
//!
//! An operator makes one key per stream name (`ghost keys add NAME`) and hands it to the
//! streamer, who pastes it into OBS (RTMP) or passes it to `ghost publish --key`. Ingest asks
//! a [`Gate`] about every publisher: on a stack that requires keys, only a publisher with the
//! key of a name goes live, and only under that name.
//!
//! A [`KeyStore`] is a directory holding one file, `keys.json`: for each name, the SHA-256 of
//! its key and when it was made. The key itself is shown once, when made, and never stored:
//! a copy of the file gives nobody the right to publish. Writers replace the file by rename
//! (a temporary file beside it, mode 0600, then `rename`), so a reader sees the old file or
//! the new one, never half of one. That is also why ingest's container mounts the
//! directory and not the file: a file mount keeps showing the replaced file, a directory
//! mount shows the new one. Writers take an exclusive lock on a lock file in the directory,
//! so two `ghost keys add` at once both land; readers take none.

#![forbid(unsafe_code)]

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use api::keys::KeyEntry;

/// The file of the store's directory that holds the keys' hashes.
pub const FILE: &str = "keys.json";
/// The lock file writers hold while they read, change and replace [`FILE`].
const LOCK: &str = ".keys.lock";
/// Where a writer puts the new file before renaming it over [`FILE`].
const TEMP: &str = ".keys.json.tmp";
/// The format of [`FILE`] this version reads and writes.
const VERSION: u32 = 1;
/// Every key starts with this, so a key pasted in the wrong place is recognisable.
const PREFIX: &str = "gs_";
/// Random bytes in a key: 160 bits, 32 characters of base32.
const KEY_BYTES: usize = 20;
/// RFC 4648 base32, lower case: no padding needed for 20 bytes, and no 0/O or 1/l to confuse.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// What can go wrong with a key store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The key file is not JSON of the expected shape.
    #[error("{} is not a valid stream key file; fix it or move it away", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// The key file was written by a version with another format.
    #[error("{} has format version {found}, this version reads version {VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The name is not a valid stream name.
    #[error("invalid stream name: {0}")]
    InvalidName(String),
    /// The name has a key already; one key per name.
    #[error(
        "stream {0:?} already has a key; run `ghost keys remove {shell}` first, or \
         `ghost keys add --rotate {shell}` to replace it",
        shell = shell_word(.0)
    )]
    Exists(String),
}

impl Error {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// `keys.json` as stored.
#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    version: u32,
    keys: Vec<Stored>,
}

impl Default for KeysFile {
    fn default() -> KeysFile {
        KeysFile {
            version: VERSION,
            keys: Vec::new(),
        }
    }
}

/// One key as stored: its hash, never the key.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    /// SHA-256 of the key's text, lower-case hex.
    sha256: String,
    /// RFC 3339, UTC, seconds.
    created_at: String,
}

/// The stream keys of a stack, in a directory (see the [module](self) for why a directory).
///
/// Every call reads the file again: it is tiny, and a key added to a running stack then
/// works at once. A missing directory or file holds no keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// The store in `dir`. Touches nothing on disk.
    pub fn new(dir: impl Into<PathBuf>) -> KeyStore {
        KeyStore { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key file, `keys.json` in the directory.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Makes the directory (mode 0700) where missing, and narrows an existing one to 0700.
    pub fn create_dir(&self) -> Result<(), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(Error::io("creating", &self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(Error::io("setting the mode of", &self.dir))
    }

    /// Makes a key for `name` and returns it: the only time it is shown. Fails with
    /// [`Error::Exists`] when `name` has a key already (see [`KeyStore::rotate`]).
    pub fn add(&self, name: &str) -> Result<String, Error> {
        self.put(name, false)
    }

    /// Makes a new key for `name`, replacing the one it had, if any: the old key stops
    /// working for new publishers at once (one already live stays live).
    pub fn rotate(&self, name: &str) -> Result<String, Error> {
        self.put(name, true)
    }

    /// Removes `name`'s key; `false` when it had none.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        if !self.dir.exists() {
            return Ok(false);
        }
        let _lock = self.lock()?;
        let mut file = self.read()?;
        let before = file.keys.len();
        file.keys.retain(|k| k.name != name);
        if file.keys.len() == before {
            return Ok(false);
        }
        self.write(&file)?;
        Ok(true)
    }

    /// The names that have a key, with when it was made, by name. Never the keys.
    pub fn list(&self) -> Result<Vec<KeyEntry>, Error> {
        let mut entries: Vec<KeyEntry> = self
            .read()?
            .keys
            .into_iter()
            .map(|k| KeyEntry {
                name: k.name,
                created_at: k.created_at,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The name `key` belongs to, if it is one of the store's keys. Whitespace around the
    /// key (a careless paste) is ignored.
    pub fn name_for(&self, key: &str) -> Result<Option<String>, Error> {
        // Hashes are compared, not keys: how long a comparison takes tells nothing about a
        // key, only about a hash nobody can invert.
        let hash = digest(key.trim());
        Ok(self
            .read()?
            .keys
            .into_iter()
            .find(|k| k.sha256 == hash)
            .map(|k| k.name))
    }

    fn put(&self, name: &str, replace: bool) -> Result<String, Error> {
        validate_name(name)?;
        self.create_dir()?;
        let _lock = self.lock()?;
        let mut file = self.read()?;
        let existing = file.keys.iter().position(|k| k.name == name);
        if existing.is_some() && !replace {
            return Err(Error::Exists(name.to_string()));
        }
        let key = new_key();
        let stored = Stored {
            name: name.to_string(),
            sha256: digest(&key),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        match existing {
            Some(i) => file.keys[i] = stored,
            None => file.keys.push(stored),
        }
        file.keys.sort_by(|a, b| a.name.cmp(&b.name));
        self.write(&file)?;
        Ok(key)
    }

    /// Holds the writers' lock until dropped.
    fn lock(&self) -> Result<Flock<fs::File>, Error> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io("opening", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("locking", &path)(errno.into()))
    }

    fn read(&self) -> Result<KeysFile, Error> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeysFile::default()),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        let file: KeysFile = serde_json::from_slice(&bytes).map_err(|source| Error::Malformed {
            path: path.clone(),
            source,
        })?;
        if file.version != VERSION {
            return Err(Error::Version {
                path,
                found: file.version,
            });
        }
        Ok(file)
    }

    /// Replaces the key file atomically. The caller holds the lock.
    fn write(&self, file: &KeysFile) -> Result<(), Error> {
        let path = self.path();
        let temp = self.dir.join(TEMP);
        let mut text = serde_json::to_vec_pretty(file)
            .map_err(|e| Error::io("encoding", &path)(io::Error::other(e)))?;
        text.push(b'\n');
        // A temporary file left by a writer that died is stale: the lock is ours now. It is
        // made anew so that its mode is 0600 whatever the old one's was.
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &temp)(e)),
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(Error::io("creating", &temp))?;
        out.write_all(&text)
            .and_then(|()| out.sync_all())
            .map_err(Error::io("writing", &temp))?;
        fs::rename(&temp, &path).map_err(Error::io("replacing", &path))?;
        // The rename is durable once the directory is.
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("syncing", &self.dir))
    }
}

/// Checks `name` as control checks stream names, so a key is never made for a name no
/// stream can have.
fn validate_name(name: &str) -> Result<(), Error> {
    wire::limits::check_stream_name(name).map_err(|bad| Error::InvalidName(format!("it {bad}")))
}

/// A new random key: the prefix and 160 bits from the operating system's generator, as
/// base32, safe in a URL and in OBS's stream key field.
fn new_key() -> String {
    let bytes: [u8; KEY_BYTES] = rand::random();
    format!("{PREFIX}{}", base32(&bytes))
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name` as one shell word, for the `ghost` commands shown to the operator: as it is when
/// it holds nothing a shell treats specially, else single-quoted.
pub fn shell_word(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,".contains(c));
    if plain {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', r"'\''"))
    }
}

/// Why a publisher may not go live. The text is for the streamer: ingest sends it back as
/// the refusal's reason.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Keys are required and the publisher presented none.
    #[error(
        "this server needs a stream key to publish; ask its operator for one, and give it \
         in OBS's stream key field or with `ghost publish --key`"
    )]
    MissingKey,
    /// The key presented is none of the store's.
    #[error("this stream key is not valid here; check it, or ask the operator for a new one")]
    WrongKey,
    /// The key is valid, for another name than the one asked for.
    #[error(
        "this stream key belongs to another stream name: it publishes as {owner:?}, not \
         {asked:?}"
    )]
    OtherName {
        /// The name the publisher asked for.
        asked: String,
        /// The name the key belongs to.
        owner: String,
    },
    /// Keys are not required and the publisher gave no name (an empty RTMP stream key).
    #[error("no stream name given (over RTMP, the stream key field names the stream)")]
    NoName,
    /// The key file cannot be read. The source says why, for the operator's log; the
    /// streamer is told only to try again.
    #[error("stream keys cannot be checked on this server right now; try again later")]
    Unavailable(#[source] Error),
}

impl Refusal {
    /// The close code that reports this refusal to a QUIC publisher.
    pub fn code(&self) -> wire::Code {
        match self {
            Refusal::MissingKey | Refusal::WrongKey | Refusal::OtherName { .. } => {
                wire::Code::Unauthorized
            }
            Refusal::NoName => wire::Code::Protocol,
            Refusal::Unavailable(_) => wire::Code::Internal,
        }
    }
}

/// Ingest's decision on a publisher: which name it goes live under, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    store: Option<KeyStore>,
    required: bool,
}

impl Gate {
    /// A gate over `store` (`None`: no keys at all) that, when `required`, admits only
    /// publishers with a valid key.
    pub fn new(store: Option<KeyStore>, required: bool) -> Gate {
        Gate { store, required }
    }

    /// Whether a publisher needs a valid key.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The stream name a publisher goes live under, given the `name` it asked for and the
    /// `key` it presented (an empty one counts as none).
    ///
    /// - A key of the store: its name. A `name` that differs is refused
    ///   ([`Refusal::OtherName`]): a key never publishes under someone else's name.
    /// - Otherwise, with keys required: refused, [`Refusal::MissingKey`] without a key,
    ///   [`Refusal::WrongKey`] with one the store does not know.
    /// - Otherwise: `name`, whatever key came with it.
    ///
    /// RTMP has a single field, the stream key in the URL: its caller passes it as both
    /// `name` and `key`. A `name` equal to `key` is therefore not a name of its own: a
    /// known key publishes as its name, and, without keys required, an unknown one is
    /// taken as the stream name.
    ///
    /// Reads the key file (a few hundred bytes) unless no key was presented.
    pub fn authorize(&self, name: Option<&str>, key: Option<&str>) -> Result<String, Refusal> {
        let key = key.map(str::trim).filter(|k| !k.is_empty());
        let name = name.filter(|n| !n.is_empty());
        let single_field = name.is_some() && name == key;
        let owner = match (key, &self.store) {
            (Some(key), Some(store)) => store.name_for(key).map_err(Refusal::Unavailable)?,
            _ => None,
        };
        if let Some(owner) = owner {
            return match name {
                Some(asked) if !single_field && asked != owner => Err(Refusal::OtherName {
                    asked: asked.to_string(),
                    owner,
                }),
                _ => Ok(owner),
            };
        }
        if self.required {
            return Err(match key {
                None => Refusal::MissingKey,
                Some(_) => Refusal::WrongKey,
            });
        }
        match (name, key) {
            (Some(name), _) => Ok(name.to_string()),
            (None, Some(_)) => Err(Refusal::WrongKey),
            (None, None) => Err(Refusal::NoName),
        }
    }
}

/// The stream-key flags of the service that takes publishers (ingest); a [`Gate`] is built
/// from them. Their serde names are their clap ids, so the supervisor renders them as
/// ingest parses them (`server::flags`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Flags {
    /// Directory of the stream keys (`keys.json`, made by `ghost keys add`). Read on every
    /// publish, so a key added to a running stack works at once. Without it, there are no
    /// keys.
    #[serde(rename = "keys_dir")]
    #[arg(
        id = "keys_dir",
        long = "keys-dir",
        env = "GHOST_INGEST_KEYS_DIR",
        value_name = "DIR"
    )]
    pub dir: Option<PathBuf>,
    /// Admit only publishers presenting the key of their stream name (`--public` stacks).
    /// Needs `--keys-dir`.
    #[serde(rename = "require_keys")]
    #[arg(
        id = "require_keys",
        long = "require-keys",
        env = "GHOST_INGEST_REQUIRE_KEYS",
        requires_if("true", "keys_dir")
    )]
    pub require: bool,
}

impl From<&Flags> for Gate {
    fn from(flags: &Flags) -> Gate {
        Gate::new(flags.dir.clone().map(KeyStore::new), flags.require)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KeyStore::new(dir.path().join("keys"));
        (dir, store)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn base32_is_rfc_4648_in_lower_case() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(&[0xff; 5]), "77777777");
    }

    #[test]
    fn keys_are_long_random_and_url_safe() {
        let a = new_key();
        let b = new_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + 32);
        assert!(a.starts_with(PREFIX));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{a}"
        );
    }

    #[test]
    fn a_key_added_is_found_and_only_its_hash_is_stored() {
        let (_tmp, store) = store();
        let key = store.add("alice").expect("add");
        assert_eq!(store.name_for(&key).expect("read"), Some("alice".into()));
        assert_eq!(
            store.name_for(&format!(" {key}\n")).expect("read"),
            Some("alice".into())
        );
        assert_eq!(store.name_for("gs_nope").expect("read"), None);
        let text = fs::read_to_string(store.path()).expect("file");
        assert!(!text.contains(&key), "plaintext key in {text}");
        assert!(
            !text.contains(&key[PREFIX.len()..]),
            "plaintext key in {text}"
        );
        assert!(text.contains(&digest(&key)));
        assert!(text.contains("\"alice\""));
    }

    #[test]
    fn the_file_is_0600_and_the_directory_0700() {
        let (_tmp, store) = store();
        store.add("alice").expect("add");
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.path()), 0o600);
        // A directory made too open is narrowed.
        fs::set_permissions(store.dir(), fs::Permissions::from_mode(0o755)).expect("chmod");
        store.create_dir().expect("create");
        assert_eq!(mode(store.dir()), 0o700);
    }

    #[test]
    fn names_are_quoted_for_the_shell_where_needed() {
        assert_eq!(shell_word("alice-2"), "alice-2");
        assert_eq!(shell_word("my show"), "'my show'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
    }

    #[test]
    fn one_key_per_name() {
        let (_tmp, store) = store();
        let first = store.add("alice").expect("add");
        let err = store.add("alice").expect_err("second key");
        assert!(matches!(err, Error::Exists(ref n) if n == "alice"));
        let text = err.to_string();
        assert!(text.contains("ghost keys remove alice"), "{text}");
        assert!(text.contains("--rotate"), "{text}");
        assert_eq!(store.name_for(&first).expect("read"), Some("alice".into()));

        let spaced = Error::Exists("my show".into()).to_string();
        assert!(spaced.contains("ghost keys remove 'my show'"), "{spaced}");
    }

    #[test]
    fn rotate_replaces_the_key() {
        let (_tmp, store) = store();
        let old = store.add("alice").expect("add");
        let new = store.rotate("alice").expect("rotate");
        assert_ne!(old, new);
        assert_eq!(store.name_for(&old).expect("read"), None);
        assert_eq!(store.name_for(&new).expect("read"), Some("alice".into()));
        assert_eq!(store.list().expect("list").len(), 1);
        // Rotating a name without a key makes its first one.
        let bob = store.rotate("bob").expect("rotate");
        assert_eq!(store.name_for(&bob).expect("read"), Some("bob".into()));
    }

    #[test]
    fn remove_and_list() {
        let (_tmp, store) = store();
        assert_eq!(store.list().expect("empty"), []);
        assert!(!store.remove("alice").expect("no dir yet"));
        store.add("carol").expect("add");
        let alice = store.add("alice").expect("add");
        let names: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["alice", "carol"]);
        let created = &store.list().expect("list")[0].created_at;
        assert!(humantime::parse_rfc3339(created).is_ok(), "{created}");

        assert!(store.remove("alice").expect("remove"));
        assert!(!store.remove("alice").expect("again"));
        assert_eq!(store.name_for(&alice).expect("read"), None);
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn names_are_checked_like_stream_names() {
        let (_tmp, store) = store();
        for bad in ["", "a\nb", &"x".repeat(wire::limits::MAX_NAME + 1)] {
            assert!(
                matches!(store.add(bad), Err(Error::InvalidName(_))),
                "{bad:?}"
            );
        }
        store
            .add(&"x".repeat(wire::limits::MAX_NAME))
            .expect("longest name");
        store.add("my show: part 2").expect("spaces are fine");
    }

    #[test]
    fn the_file_is_replaced_by_rename_not_rewritten() {
        let (_tmp, store) = store();
        store.add("alice").expect("add");
        // A reader holding the old file keeps reading the old file: the new one is another
        // inode, renamed into place, so nobody ever reads half of one.
        let old = fs::File::open(store.path()).expect("open");
        let old_text = fs::read_to_string(store.path()).expect("read");
        store.add("bob").expect("add");
        let mut held = String::new();
        std::io::Read::read_to_string(&mut &old, &mut held).expect("read old");
        assert_eq!(held, old_text);
        assert!(!held.contains("bob"));
        assert!(
            fs::read_to_string(store.path())
                .expect("new")
                .contains("bob")
        );
        assert!(!store.dir().join(TEMP).exists());
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let (_tmp, store) = store();
        store.create_dir().expect("dir");
        fs::write(store.dir().join(TEMP), "half a file").expect("stale");
        fs::set_permissions(store.dir().join(TEMP), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        store.add("alice").expect("add");
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn writers_at_once_lose_nothing() {
        let (_tmp, store) = store();
        store.create_dir().expect("dir");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || store.add(&format!("s{i}")).expect("add"))
            })
            .collect();
        let keys: Vec<String> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(store.list().expect("list").len(), 8);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(store.name_for(key).expect("read"), Some(format!("s{i}")));
        }
    }

    #[test]
    fn a_malformed_file_is_a_clear_error() {
        let (_tmp, store) = store();
        store.create_dir().expect("dir");
        for text in [
            "",
            "{",
            "[]",
            "{\"version\":1}",
            "{\"version\":1,\"keys\":[{}]}",
        ] {
            fs::write(store.path(), text).expect("write");
            let err = store.list().expect_err(text);
            assert!(matches!(err, Error::Malformed { .. }), "{text}: {err:?}");
            assert!(err.to_string().contains("keys.json"), "{err}");
            assert!(store.name_for("gs_x").is_err());
            assert!(
                store.add("alice").is_err(),
                "a broken file is not overwritten"
            );
        }
        fs::write(store.path(), "{\"version\":9,\"keys\":[]}").expect("write");
        assert!(matches!(store.list(), Err(Error::Version { found: 9, .. })));
    }

    #[test]
    fn an_unreadable_store_is_an_io_error() {
        let (_tmp, store) = store();
        // The directory's place is taken by a file: nothing under it can be read.
        fs::write(store.dir(), "not a directory").expect("write");
        assert!(matches!(store.list(), Err(Error::Io { .. })));
    }

    fn gate(required: bool) -> (tempfile::TempDir, Gate, String) {
        let (tmp, store) = store();
        let key = store.add("alice").expect("add");
        (tmp, Gate::new(Some(store), required), key)
    }

    #[test]
    fn a_valid_key_publishes_as_its_name() {
        for required in [true, false] {
            let (_tmp, gate, key) = gate(required);
            assert_eq!(
                gate.authorize(Some("alice"), Some(&key)).expect("ok"),
                "alice"
            );
            assert_eq!(gate.authorize(None, Some(&key)).expect("ok"), "alice");
            // RTMP: the key is the one field, passed as both.
            assert_eq!(gate.authorize(Some(&key), Some(&key)).expect("ok"), "alice");
        }
    }

    #[test]
    fn a_valid_key_for_another_name_is_refused() {
        for required in [true, false] {
            let (_tmp, gate, key) = gate(required);
            let refusal = gate
                .authorize(Some("bob"), Some(&key))
                .expect_err("someone else's name");
            assert!(
                matches!(&refusal, Refusal::OtherName { asked, owner } if asked == "bob" && owner == "alice")
            );
            assert_eq!(refusal.code(), wire::Code::Unauthorized);
            assert!(refusal.to_string().contains("another stream name"));
        }
    }

    #[test]
    fn required_keys_refuse_a_missing_key() {
        let (_tmp, gate, _) = gate(true);
        for key in [None, Some(""), Some("  ")] {
            let refusal = gate.authorize(Some("alice"), key).expect_err("no key");
            assert!(matches!(refusal, Refusal::MissingKey), "{key:?}");
            assert_eq!(refusal.code(), wire::Code::Unauthorized);
        }
        assert!(matches!(
            gate.authorize(None, None),
            Err(Refusal::MissingKey)
        ));
        // RTMP with an empty stream key field.
        assert!(matches!(
            gate.authorize(Some(""), Some("")),
            Err(Refusal::MissingKey)
        ));
    }

    #[test]
    fn required_keys_refuse_a_wrong_key() {
        let (_tmp, gate, _) = gate(true);
        for (name, key) in [
            (Some("alice"), "gs_wrong"),
            (None, "gs_wrong"),
            (Some("gs_wrong"), "gs_wrong"),
        ] {
            let refusal = gate.authorize(name, Some(key)).expect_err("wrong key");
            assert!(matches!(refusal, Refusal::WrongKey), "{name:?}");
            assert_eq!(refusal.code(), wire::Code::Unauthorized);
        }
    }

    #[test]
    fn required_keys_without_a_store_admit_nobody() {
        let gate = Gate::new(None, true);
        assert!(matches!(
            gate.authorize(Some("alice"), None),
            Err(Refusal::MissingKey)
        ));
        assert!(matches!(
            gate.authorize(Some("alice"), Some("gs_x")),
            Err(Refusal::WrongKey)
        ));
        // A store whose directory does not exist holds no keys.
        let gate = Gate::new(Some(KeyStore::new("/nonexistent/ghost-keys")), true);
        assert!(matches!(
            gate.authorize(Some("alice"), Some("gs_x")),
            Err(Refusal::WrongKey)
        ));
    }

    #[test]
    fn keys_not_required_publish_under_the_name() {
        let (_tmp, gate, _) = gate(false);
        assert_eq!(gate.authorize(Some("bob"), None).expect("ok"), "bob");
        assert_eq!(gate.authorize(Some("bob"), Some("")).expect("ok"), "bob");
        // A key the store does not know is ignored.
        assert_eq!(
            gate.authorize(Some("bob"), Some("gs_x")).expect("ok"),
            "bob"
        );
        // RTMP: an unknown key is the stream name.
        assert_eq!(
            gate.authorize(Some("my-show"), Some("my-show"))
                .expect("ok"),
            "my-show"
        );
        // Without any store.
        let gate = Gate::new(None, false);
        assert_eq!(
            gate.authorize(Some("bob"), Some("gs_x")).expect("ok"),
            "bob"
        );
    }

    #[test]
    fn keys_not_required_still_need_a_name() {
        let (_tmp, gate, _) = gate(false);
        let refusal = gate.authorize(None, None).expect_err("no name");
        assert!(matches!(refusal, Refusal::NoName));
        assert_eq!(refusal.code(), wire::Code::Protocol);
        assert!(matches!(
            gate.authorize(Some(""), Some("")),
            Err(Refusal::NoName)
        ));
        assert!(matches!(
            gate.authorize(None, Some("gs_x")),
            Err(Refusal::WrongKey)
        ));
    }

    #[test]
    fn an_unreadable_store_refuses_publishers_with_a_key() {
        for required in [true, false] {
            let (_tmp, store) = store();
            store.create_dir().expect("dir");
            fs::write(store.path(), "garbage").expect("write");
            let gate = Gate::new(Some(store), required);
            let refusal = gate
                .authorize(Some("alice"), Some("gs_x"))
                .expect_err("cannot check");
            assert!(matches!(
                refusal,
                Refusal::Unavailable(Error::Malformed { .. })
            ));
            assert_eq!(refusal.code(), wire::Code::Internal);
            // The streamer is not told where the operator's files are.
            assert!(!refusal.to_string().contains("keys.json"));
        }
    }

    #[test]
    fn a_key_added_to_a_running_gate_works_at_once() {
        let (_tmp, store) = store();
        let gate = Gate::new(Some(store.clone()), true);
        assert!(gate.authorize(Some("alice"), None).is_err());
        let key = store.add("alice").expect("add");
        assert_eq!(
            gate.authorize(Some("alice"), Some(&key)).expect("ok"),
            "alice"
        );
        store.remove("alice").expect("remove");
        assert!(matches!(
            gate.authorize(Some("alice"), Some(&key)),
            Err(Refusal::WrongKey)
        ));
    }

    #[test]
    fn the_gate_is_built_from_the_flags() {
        let keys = crate::Flags {
            dir: Some("k".into()),
            require: true,
        };
        let gate = Gate::from(&keys);
        assert!(gate.required());
        assert_eq!(gate, Gate::new(Some(KeyStore::new("k")), true));
    }
}
