//! `ghost.toml` and the `GHOST_*` environment: the settings of `ghost up` from a file and
//! from variables as well as from flags, and `ghost config show|init`.
//!
//! The flags of [`UpArgs`] are the one list of settings. Each long flag is a key (its name
//! with `_` for `-`) and an environment variable (`GHOST_` and the key in capitals), found by
//! walking the clap command, so a new flag is a new key with nothing else to edit. Only the
//! flags that describe one invocation rather than the stack are left out ([`PER_INVOCATION`]).
//!
//! Strength: flag > environment > file > default. clap parses every layer. A first parse,
//! with the settings' `requires` and `conflicts_with` relaxed, tells from
//! [`ArgMatches::value_source`] which settings a flag or a variable gave; each of the file's
//! values is checked on its own by its flag's value parser (so a bad one is reported at its
//! line), and the file's values for the other settings are handed to the real parse as if
//! they were flags. Rules across settings (`--acme-email` needs `--acme`) then hold across
//! the layers too.
//!
//! The file is `--config FILE` (`-c`, `GHOST_CONFIG`), else `ghost.toml` in the state
//! directory when there is one. Only `ghost up` and `ghost config show` read it and the
//! variables: `ghost up -d` hands the daemon every setting as a flag, so the daemon runs with
//! what `up` resolved, whatever the file says by then. (`GHOST_RELAY_CAPACITY` is also the
//! relay binary's own variable, with the same meaning; the supervisor gives each relay its
//! `--capacity` flag, which wins there.)

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::builder::{BoolishValueParser, Resettable};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::args::{Cli, Cmd, ConfigCmd, Effective, Setting, ShowArgs, Source};
use crate::exit;
use orchestrator::stack::{StateDir, default_state_dir};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "ghost.toml";

/// Flags of `ghost up` that say how this one command runs, not how the stack is: `detach`
/// (a service manager runs the same file in the foreground that an operator runs with `-d`)
/// and `config` (the file itself). Neither is a key nor a `GHOST_*` setting of the stack.
pub const PER_INVOCATION: &[&str] = &["detach", "config"];

/// Columns of `ghost config init`'s comments.
const WIDTH: usize = 96;

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::Env { var } => write!(f, "env {var}"),
            Source::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// Why the command line, the environment and the file do not make a `ghost` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// clap's own: an unknown flag, a bad value, `--help`, `--version`.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or holds an unknown key or a bad value.
    #[error(transparent)]
    File(#[from] FileError),
    /// Settings that do not go together, some of them from the file.
    #[error("{source}")]
    Layered {
        /// The file.
        path: PathBuf,
        /// The keys the file gave, with their lines.
        keys: Vec<(String, usize)>,
        /// clap's refusal.
        source: clap::Error,
    },
}

/// A refusal pointing into the file.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column (characters), from 1.
    pub column: usize,
    /// What is wrong, with a suggestion where there is one.
    pub message: String,
}

impl Error {
    /// Tells the user (stderr; `--help` and `--version` on stdout, as clap does) and returns
    /// the exit code: clap's own (0 for help, 2 for usage), 2 for the file.
    pub fn report(&self) -> i32 {
        match self {
            Error::Cli(e) => {
                let _ = e.print();
                e.exit_code()
            }
            Error::Layered { path, keys, source } => {
                let _ = source.print();
                let keys: Vec<String> = keys
                    .iter()
                    .map(|(key, line)| format!("{key} (line {line})"))
                    .collect();
                eprintln!(
                    "ghost: with settings from {}: {}",
                    path.display(),
                    keys.join(", ")
                );
                exit::USAGE
            }
            other => {
                eprintln!("ghost: {other}");
                exit::USAGE
            }
        }
    }
}

/// One setting: a long flag of `ghost up`.
#[derive(Debug, Clone)]
struct Key {
    /// The flag as clap defines it (help, default, value parser).
    arg: Arg,
    /// `relay_capacity`.
    name: String,
    /// `relay-capacity`.
    long: String,
    /// `GHOST_RELAY_CAPACITY`.
    env: String,
}

impl Key {
    fn of(arg: &Arg) -> Option<Key> {
        let long = arg.get_long()?.to_string();
        let name = long.replace('-', "_");
        Some(Key {
            env: format!("GHOST_{}", name.to_ascii_uppercase()),
            arg: arg.clone(),
            name,
            long,
        })
    }

    /// A switch (`--public`): no value on the command line, `true`/`false` in the file.
    fn is_switch(&self) -> bool {
        !self.arg.get_action().takes_values()
    }

    /// The flag with its environment variable. A switch's variable reads as
    /// `true/false/yes/no/on/off/1/0`, as operators write them in unit files.
    fn with_env(&self, arg: Arg) -> Arg {
        let arg = arg.env(self.env.clone());
        if self.is_switch() {
            arg.value_parser(BoolishValueParser::new())
        } else {
            arg
        }
    }

    /// The command-line words that give `value`; none for a switch that is off.
    fn words(&self, value: &Value) -> Vec<OsString> {
        match value {
            Value::Switch(false) => Vec::new(),
            Value::Switch(true) => vec![format!("--{}", self.long).into()],
            // One word: a value that starts with `-` stays a value.
            Value::Text(text) => vec![format!("--{}={text}", self.long).into()],
        }
    }

    /// Whether `ghost up` takes this flag with `value` and no other flag.
    fn alone(&self, value: &str) -> bool {
        Cli::command()
            .try_get_matches_from([
                "ghost".to_string(),
                "up".into(),
                format!("--{}={value}", self.long),
            ])
            .is_ok()
    }

    /// Whether this flag's own value parser takes `text`; why not if it does not.
    fn check(&self, text: &str) -> Result<(), String> {
        // The flag alone: rules that name other flags are checked by the real parse.
        let arg = self
            .arg
            .clone()
            .requires(Resettable::Reset)
            .conflicts_with(Resettable::Reset);
        Command::new(FILE_NAME)
            .no_binary_name(true)
            .arg(arg)
            .try_get_matches_from([format!("--{}={text}", self.long)])
            .map(drop)
            .map_err(|e| why(&e))
    }
}

/// A value from the file, as the command line would give it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Switch(bool),
    Text(String),
}

/// What clap says about a value, without its usage and `--help` lines.
fn why(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(cause) = std::error::Error::source(e) {
        return cause.to_string();
    }
    let mut why = String::new();
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        why = format!("possible values: {}", valid.join(", "));
    }
    if let Some(ContextValue::String(suggested)) = e.get(ContextKind::SuggestedValue) {
        let _ = write!(why, "; did you mean {suggested:?}?");
    }
    if why.is_empty() {
        // clap's first line, without its "error: ".
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        why = first.trim_start_matches("error: ").to_string();
    }
    why
}

/// The keys: every long flag of `ghost up` but its per-invocation ones.
fn keys() -> Vec<Key> {
    let mut cli = Cli::command();
    // Built, the flags have all their defaults (a switch's `false`).
    cli.build();
    let Some(up) = cli.find_subcommand("up") else {
        return Vec::new();
    };
    up.get_arguments()
        .filter(|arg| {
            !arg.is_global_set()
                && !PER_INVOCATION.contains(&arg.get_id().as_str())
                && !matches!(
                    arg.get_action(),
                    ArgAction::Help
                        | ArgAction::HelpShort
                        | ArgAction::HelpLong
                        | ArgAction::Version
                )
        })
        .filter_map(Key::of)
        .collect()
}

/// The key names (`relays`, `relay_capacity`, …), in the order of `ghost up --help`.
pub fn key_names() -> Vec<String> {
    keys().into_iter().map(|k| k.name).collect()
}

/// `ghost`'s command line, each setting of `ghost up` and `ghost config show` with its
/// `GHOST_*` variable. Help, the manual and completions come from it too.
pub fn command() -> Command {
    let keys = keys();
    settings_mut(Cli::command(), &keys, |key, arg| key.with_env(arg)).mut_subcommands(|sub| {
        match sub.get_name() {
            // `ghost up`'s flags, but `-d`: show shows, it starts nothing.
            "config" => sub.mut_subcommands(|sub| match sub.get_name() {
                "show" => sub.mut_arg("detach", |arg| arg.hide(true)),
                _ => sub,
            }),
            _ => sub,
        }
    })
}

/// Applies `f` to every setting's flag of `ghost up` and `ghost config show`.
fn settings_mut(cli: Command, keys: &[Key], f: impl Fn(&Key, Arg) -> Arg) -> Command {
    let each = |cmd: Command| {
        keys.iter().fold(cmd, |cmd, key| {
            cmd.mut_arg(key.arg.get_id(), |arg| f(key, arg))
        })
    };
    // mut_subcommands keeps the order of `ghost --help`.
    cli.mut_subcommands(|sub| match sub.get_name() {
        "up" => each(sub),
        "config" => sub.mut_subcommands(|sub| match sub.get_name() {
            "show" => each(sub),
            _ => sub,
        }),
        _ => sub,
    })
}

/// The matches of the subcommand that takes the settings (`up`, `config show`), if any.
fn settings_of(matches: &ArgMatches) -> Option<&ArgMatches> {
    match matches.subcommand()? {
        ("up", up) => Some(up),
        ("config", config) => match config.subcommand()? {
            ("show", show) => Some(show),
            _ => None,
        },
        _ => None,
    }
}

/// Parses `ghost`'s command line (`args`, the program name first) over the environment and
/// the config file: the [`Cli`] to run, `ghost config show`'s [`Effective`] filled in.
pub fn parse<I, T>(args: I) -> Result<Cli, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let keys = keys();
    let mut strict = command();
    let relaxed = settings_mut(strict.clone(), &keys, |_, arg| {
        arg.requires(Resettable::Reset)
            .conflicts_with(Resettable::Reset)
    });
    let first = match relaxed.try_get_matches_from(&args) {
        Ok(m) => m,
        // What the relaxed parse refuses the real one refuses too, in its own words.
        Err(relaxed) => {
            return Err(match strict.try_get_matches_from_mut(&args) {
                Err(e) => e.into(),
                Ok(_) => relaxed.into(),
            });
        }
    };
    let Some(given) = settings_of(&first) else {
        // Only `up` and `config show` were relaxed: this parse is the real one.
        return Ok(Cli::from_arg_matches(&first)?);
    };

    let path_of = |id: &str| given.try_get_one::<PathBuf>(id).ok().flatten().cloned();
    let file = match path_of("config") {
        Some(path) => Some(read(&path)?),
        None => {
            let state = path_of("state_dir").unwrap_or_else(default_state_dir);
            let path = state.join(FILE_NAME);
            if path.exists() {
                Some(read(&path)?)
            } else {
                None
            }
        }
    };
    let mut from_file: HashMap<&str, usize> = HashMap::new();
    let mut words = Vec::new();
    if let Some((path, text)) = &file {
        for (key, value, line) in parse_file(path, text, &keys)? {
            let id = key.arg.get_id().as_str();
            if matches!(
                given.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            from_file.insert(id, line);
            words.extend(key.words(&value));
        }
    }

    let all: Vec<OsString> = args.iter().cloned().chain(words).collect();
    let matches = match strict.try_get_matches_from_mut(all) {
        Ok(m) => m,
        Err(source) => {
            return Err(match &file {
                Some((path, _)) if !from_file.is_empty() => {
                    let mut keys: Vec<(String, usize)> = keys
                        .iter()
                        .filter_map(|k| {
                            let line = from_file.get(k.arg.get_id().as_str())?;
                            Some((k.name.clone(), *line))
                        })
                        .collect();
                    keys.sort_by_key(|(_, line)| *line);
                    Error::Layered {
                        path: path.clone(),
                        keys,
                        source,
                    }
                }
                _ => source.into(),
            });
        }
    };
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Cmd::Config(ConfigCmd::Show(show)), Some(settings)) =
        (&mut cli.command, settings_of(&matches))
    {
        let path = file.as_ref().map(|(path, _)| path.clone());
        show.effective = Effective {
            settings: keys
                .iter()
                .map(|key| setting(key, settings, path.as_deref(), &from_file))
                .collect(),
            file: path,
        };
    }
    Ok(cli)
}

/// `key`'s value in `matches`, and where it came from.
fn setting(
    key: &Key,
    matches: &ArgMatches,
    file: Option<&Path>,
    from_file: &HashMap<&str, usize>,
) -> Setting {
    let id = key.arg.get_id().as_str();
    let value = if key.is_switch() {
        matches
            .try_get_one::<bool>(id)
            .ok()
            .flatten()
            .map(bool::to_string)
    } else {
        matches.try_get_raw(id).ok().flatten().map(|raw| {
            raw.map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    let source = match (from_file.get(id), file) {
        (Some(&line), Some(path)) => Source::File {
            path: path.to_path_buf(),
            line,
        },
        _ => match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag {
                flag: format!("--{}", key.long),
            },
            Some(ValueSource::EnvVariable) => Source::Env {
                var: key.env.clone(),
            },
            _ => Source::Default,
        },
    };
    Setting {
        key: key.name.clone(),
        value,
        source,
    }
}

fn read(path: &Path) -> Result<(PathBuf, String), Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((path.to_path_buf(), text)),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The file's settings, in the file's order, each checked: its key known, its value taken
/// by the flag's value parser.
fn parse_file<'k>(
    path: &Path,
    text: &str,
    keys: &'k [Key],
) -> Result<Vec<(&'k Key, Value, usize)>, FileError> {
    type Table = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;
    let at = |offset: usize, message: String| {
        let (line, column) = position(text, offset);
        FileError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let table: Table = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, format!("not TOML: {}", e.message().trim_end()))
    })?;
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut settings = Vec::new();
    for (name, value) in entries {
        let Some(key) = keys.iter().find(|k| k.name == *name.get_ref()) else {
            return Err(at(name.span().start, unknown(name.get_ref(), keys)));
        };
        let bad = |why: String| {
            at(
                value.span().start,
                format!("bad value {} for {}: {why}", value.get_ref(), key.name),
            )
        };
        let parsed = match (value.get_ref(), key.is_switch()) {
            (toml::Value::Boolean(b), true) => Value::Switch(*b),
            (_, true) => return Err(bad("expected true or false".into())),
            (toml::Value::String(s), false) => Value::Text(s.clone()),
            (toml::Value::Integer(i), false) => Value::Text(i.to_string()),
            (toml::Value::Float(f), false) => Value::Text(f.to_string()),
            (toml::Value::Boolean(b), false) => Value::Text(b.to_string()),
            (toml::Value::Datetime(d), false) => Value::Text(d.to_string()),
            (toml::Value::Array(_), false) => {
                return Err(bad("expected one value, not an array".into()));
            }
            (toml::Value::Table(_), false) => {
                return Err(bad(
                    "expected a value, not a table (keys are not grouped)".into()
                ));
            }
        };
        if let Value::Text(text) = &parsed {
            key.check(text).map_err(bad)?;
        }
        settings.push((key, parsed, position(text, name.span().start).0));
    }
    Ok(settings)
}

/// "unknown key", with the key meant where one is close.
fn unknown(name: &str, keys: &[Key]) -> String {
    // `relay-capacity`, `--relays`, `RELAYS`: the key, written as a flag or a variable.
    let plain = name
        .trim_start_matches('-')
        .trim_start_matches("GHOST_")
        .replace('-', "_")
        .to_ascii_lowercase();
    let close = keys.iter().find(|k| k.name == plain).or_else(|| {
        keys.iter()
            .map(|k| (strsim::jaro(&plain, &k.name), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k)
    });
    match close {
        Some(k) => format!("unknown key {name:?}; did you mean {:?}?", k.name),
        None => format!(
            "unknown key {name:?}; the keys are `ghost up`'s flags with `_` for `-` \
             (`ghost config init -c -` lists them)"
        ),
    }
}

/// Line and column (from 1, in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// A value as TOML: a switch's or a number's bare, anything else quoted.
fn toml_value(text: &str, switch: bool) -> String {
    if switch || text.parse::<i64>().is_ok() {
        text.to_string()
    } else {
        toml::Value::String(text.to_string()).to_string()
    }
}

/// `ghost config init`'s file: every key with its help, set to its default (commented out
/// where it has none).
pub fn template() -> String {
    let mut file = String::new();
    let intro = "The settings of `ghost up`. Each key is a `ghost up` flag's long name with `_` \
                 for `-`, and also an environment variable, GHOST_ and the key in capitals. A flag \
                 wins over a variable, a variable over this file, this file over the defaults. \
                 `ghost up` reads the state directory's ghost.toml, or the file of `-c FILE`; \
                 `ghost config show` prints the settings in effect and where each came from.";
    comment(&mut file, intro);
    for key in keys() {
        file.push('\n');
        let mut help = key
            .arg
            .get_help()
            .map(ToString::to_string)
            .unwrap_or_default();
        // clap drops the full stop of a one-sentence help.
        if !help.is_empty() && !help.ends_with('.') {
            help.push('.');
        }
        comment(&mut file, &help);
        let possible: Vec<String> = key
            .arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !possible.is_empty() && !key.is_switch() {
            comment(&mut file, &format!("One of: {}.", possible.join(", ")));
        }
        comment(&mut file, &format!("--{}, {}", key.long, key.env));
        let default: Vec<String> = key
            .arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        match default.as_slice() {
            [one] => {
                // A key that needs another (`acme_directory` needs `acme`) is refused on its
                // own, as its flag is: it waits, commented out, for the one it needs.
                let alone = key.is_switch() || key.alone(one);
                let _ = writeln!(
                    file,
                    "{}{} = {}",
                    if alone { "" } else { "# " },
                    key.name,
                    toml_value(one, key.is_switch())
                );
            }
            _ => {
                let placeholder = key
                    .arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| key.name.to_ascii_uppercase(), ToString::to_string);
                let _ = writeln!(file, "# {} = {:?}", key.name, placeholder);
            }
        }
    }
    file
}

/// Appends `text` as `# ` lines of at most [`WIDTH`] columns.
fn comment(file: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
            file.push_str(&line);
            file.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    file.push_str(&line);
    file.push('\n');
}

/// Runs `ghost config …`.
pub fn run(state: &StateDir, cmd: ConfigCmd) -> Result<i32> {
    match cmd {
        ConfigCmd::Show(args) => show(state, &args),
        ConfigCmd::Init { config, force } => {
            let path = config.unwrap_or_else(|| state.root().join(FILE_NAME));
            init(&path, force)
        }
    }
}

fn show(state: &StateDir, args: &ShowArgs) -> Result<i32> {
    let effective = &args.effective;
    if args.json {
        out!("{}", serde_json::to_string(effective)?);
    } else {
        match &effective.file {
            Some(path) => out!("config file: {}", path.display()),
            None => out!(
                "config file: none ({} does not exist)",
                state.root().join(FILE_NAME).display()
            ),
        }
        let width = |f: fn(&Setting) -> usize, title: &str| {
            effective
                .settings
                .iter()
                .map(f)
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        };
        let key_width = width(|s| s.key.len(), "KEY");
        let value_width = width(|s| s.value.as_deref().map_or(1, str::len), "VALUE");
        out!("\n{:<key_width$}  {:<value_width$}  SOURCE", "KEY", "VALUE");
        for s in &effective.settings {
            out!(
                "{:<key_width$}  {:<value_width$}  {}",
                s.key,
                s.value.as_deref().unwrap_or("-"),
                s.source
            );
        }
    }
    // What `ghost up` would refuse beyond one flag's own value.
    crate::args::settings(state, &args.up)?;
    Ok(exit::OK)
}

fn init(path: &Path, force: bool) -> Result<i32> {
    let text = template();
    if path == Path::new("-") {
        use std::io::Write as _;
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(exit::stdout_error)?;
        return Ok(exit::OK);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(exit::Exit::new(
                exit::USAGE,
                format!("{} exists; --force replaces it", path.display()),
            )
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
    };
    use std::io::Write as _;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    out!("wrote {}", path.display());
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(args: &[&str]) -> Result<Effective, Error> {
        let cli = parse([&["ghost", "config", "show"][..], args].concat())?;
        match cli.command {
            Cmd::Config(ConfigCmd::Show(show)) => Ok(show.effective),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    fn get<'e>(effective: &'e Effective, key: &str) -> &'e Setting {
        effective
            .settings
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("no {key}"))
    }

    #[test]
    fn the_keys_are_up_s_flags_but_the_per_invocation_ones() {
        let names = key_names();
        for key in [
            "runtime",
            "relays",
            "max_relays",
            "relay_capacity",
            "public",
            "advertise_host",
            "acme",
            "acme_email",
            "http_port",
            "relay_memory",
            "log_max_files",
        ] {
            assert!(names.iter().any(|n| n == key), "{key} missing: {names:?}");
        }
        for not in ["detach", "config", "help", "state_dir", "ca"] {
            assert!(!names.iter().any(|n| n == not), "{not} is a key");
        }
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let (_dir, path) = file("relays = 3\nrelay_capacity = 50\n");
        let path_arg = path.to_str().expect("utf-8");
        let e = show(&["-c", path_arg, "--relays", "4"]).expect("parse");
        assert_eq!(e.file.as_deref(), Some(path.as_path()));
        let relays = get(&e, "relays");
        assert_eq!(relays.value.as_deref(), Some("4"));
        assert_eq!(
            relays.source,
            Source::Flag {
                flag: "--relays".into()
            }
        );
        let capacity = get(&e, "relay_capacity");
        assert_eq!(capacity.value.as_deref(), Some("50"));
        assert_eq!(capacity.source, Source::File { path, line: 2 });
        assert_eq!(get(&e, "max_relays").source, Source::Default);
    }

    #[test]
    fn rules_across_settings_hold_across_layers() {
        // --acme-email needs --acme: the file may give one and the flag the other.
        let (_dir, path) = file("public = true\nadvertise_host = \"a.example\"\nacme = true\n");
        let path_arg = path.to_str().expect("utf-8");
        let e = show(&["-c", path_arg, "--acme-email", "ops@a.example"]).expect("parse");
        assert_eq!(get(&e, "acme").value.as_deref(), Some("true"));
        let (_dir, path) = file("acme_email = \"ops@a.example\"\n");
        let path_arg = path.to_str().expect("utf-8");
        match show(&["-c", path_arg]) {
            Err(Error::Layered { keys, .. }) => {
                assert_eq!(keys, vec![("acme_email".to_string(), 1)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_point_into_the_file() {
        for (text, line, column, says) in [
            (
                "relays = 2\nrelay_capacty = 5\n",
                2,
                1,
                "did you mean \"relay_capacity\"",
            ),
            (
                "\nrelay-capacity = 5\n",
                2,
                1,
                "did you mean \"relay_capacity\"",
            ),
            ("zzz = 1\n", 1, 1, "ghost config init"),
            ("relays = \"two\"\n", 1, 10, "bad value \"two\" for relays"),
            ("relays = true\n", 1, 10, "for relays"),
            ("public = \"yes\"\n", 1, 10, "expected true or false"),
            ("runtime = \"dockr\"\n", 1, 11, "did you mean \"docker\""),
            ("log_max_size = \"lots\"\n", 1, 16, "256MiB"),
            ("relays = [1]\n", 1, 10, "not an array"),
            ("relays = \n", 1, 10, "not TOML"),
        ] {
            let (_dir, path) = file(text);
            let path_arg = path.to_str().expect("utf-8");
            match show(&["-c", path_arg]) {
                Err(Error::File(e)) => {
                    assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
                    assert!(e.message.contains(says), "{text:?}: {e}");
                    assert!(
                        e.to_string()
                            .starts_with(&format!("{}:{line}:", path.display()))
                    );
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_template_parses_back_to_the_defaults() {
        let (_dir, path) = file(&template());
        let path_arg = path.to_str().expect("utf-8");
        let from_file = show(&["-c", path_arg]).expect("the template parses");
        let (_empty, nothing) = file("");
        let defaults = show(&["-c", nothing.to_str().expect("utf-8")]).expect("parse");
        assert_eq!(from_file.settings.len(), key_names().len());
        for (a, b) in from_file.settings.iter().zip(&defaults.settings) {
            assert_eq!((&a.key, &a.value), (&b.key, &b.value));
            // Every key is written, set or commented out.
            assert!(template().contains(&format!("{} = ", a.key)), "{}", a.key);
        }
        assert!(matches!(
            get(&from_file, "relays").source,
            Source::File { .. }
        ));
    }

    #[test]
    fn other_commands_parse_as_before() {
        let cli = parse(["ghost", "status", "--json"]).expect("parse");
        assert!(matches!(cli.command, Cmd::Status { json: true }));
        // No ghost.toml there: up's own rules, without a file.
        let state = tempfile::tempdir().expect("temp dir");
        let state = state.path().to_str().expect("utf-8");
        assert!(matches!(
            parse(["ghost", "--state-dir", state, "up", "--relays", "x"]),
            Err(Error::Cli(_))
        ));
        assert!(matches!(
            parse(["ghost", "--state-dir", state, "up", "--acme-email", "a@b"]),
            Err(Error::Cli(_))
        ));
    }
}
