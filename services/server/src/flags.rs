//! A typed command line, rendered: the supervisor starts each service with the flags of a
//! value of the very type the service parses them into (each service's `Wiring`, flattened
//! into its `Config`), so a flag renamed, added or retyped on one side cannot silently
//! disagree with the other.
//!
//! [`render`] walks the clap arguments of the type (their ids, long names and actions) and
//! takes each one's value from the value's serde form: a field is an argument of the same
//! id, a nested struct is a flattened group. A serialized field without an argument, or an
//! argument clap cannot spell, is an [`Error`], never a silently dropped flag.

use std::collections::BTreeMap;

use clap::{ArgAction, Args, Command};
use serde::Serialize;
use serde_json::Value;

/// Why a value could not be rendered as flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its serde form failed (a path that is not UTF-8, for one).
    #[error("serializing the flags: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Its serde form is not a struct of named fields.
    #[error("the flags' type does not serialize as a struct")]
    NotAStruct,
    /// A field that no argument of the type takes.
    #[error("field `{0}` is not a flag of the command")]
    NotAFlag(String),
    /// Two fields, in different groups, of one name.
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    /// An argument with a value but no `--long` name to give it by.
    #[error("flag `{0}` has no long name")]
    NoLongName(String),
    /// A value the argument's action cannot take (a list for a single value, a struct).
    #[error("flag `--{flag}` cannot take {value}")]
    Value {
        /// The flag's long name.
        flag: String,
        /// The value, as serde gave it.
        value: String,
    },
}

/// `value`'s command line: `--long value` per field that is set, in the order the type
/// declares its arguments; a set boolean flag alone; a list as the flag repeated; an unset
/// option left out (the service's default applies).
pub fn render<T: Args + Serialize>(value: &T) -> Result<Vec<String>, Error> {
    let Value::Object(fields) = serde_json::to_value(value)? else {
        return Err(Error::NotAStruct);
    };
    let mut leaves = BTreeMap::new();
    flatten(fields, &mut leaves)?;
    let command = T::augment_args(Command::new("render"));
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        let Some(value) = leaves.remove(arg.get_id().as_str()) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let long = arg
            .get_long()
            .ok_or_else(|| Error::NoLongName(arg.get_id().to_string()))?;
        let flag = format!("--{long}");
        let wrong = |value: &Value| Error::Value {
            flag: long.to_string(),
            value: value.to_string(),
        };
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, Value::Bool(true)) | (ArgAction::SetFalse, Value::Bool(false)) => {
                out.push(flag)
            }
            (ArgAction::SetTrue | ArgAction::SetFalse, Value::Bool(_)) => {}
            (ArgAction::Append, Value::Array(items)) => {
                for item in items {
                    let text = scalar(&item).ok_or_else(|| wrong(&item))?;
                    out.extend([flag.clone(), text]);
                }
            }
            (ArgAction::Set | ArgAction::Append, value) => {
                let text = scalar(&value).ok_or_else(|| wrong(&value))?;
                out.extend([flag, text]);
            }
            (_, value) => return Err(wrong(&value)),
        }
    }
    match leaves.into_keys().next() {
        Some(field) => Err(Error::NotAFlag(field)),
        None => Ok(out),
    }
}

/// Parses `args` (without the program's name) as the flags of `T` alone: what a service
/// makes of a rendered command line, for tests that render and parse back.
pub fn parse<T: Args>(args: &[String]) -> Result<T, clap::Error> {
    let command = T::augment_args(Command::new("parse").no_binary_name(true));
    T::from_arg_matches(&command.try_get_matches_from(args)?)
}

/// The fields of nested structs (flattened groups) merged into one map of leaves.
fn flatten(
    fields: serde_json::Map<String, Value>,
    out: &mut BTreeMap<String, Value>,
) -> Result<(), Error> {
    for (name, value) in fields {
        match value {
            Value::Object(group) => flatten(group, out)?,
            leaf => {
                if out.insert(name.clone(), leaf).is_some() {
                    return Err(Error::Duplicate(name));
                }
            }
        }
    }
    Ok(())
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use serde::Serialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
    struct Inner {
        /// A path.
        #[arg(long = "tls-dir")]
        dir: Option<PathBuf>,
        /// A switch.
        #[arg(long)]
        require: bool,
    }

    #[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
    struct Flags {
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: SocketAddr,
        #[arg(long)]
        capacity: u32,
        #[command(flatten)]
        inner: Inner,
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[arg(long)]
        advertise: Option<String>,
    }

    fn flags() -> Flags {
        Flags {
            listen: "0.0.0.0:4500".parse().expect("addr"),
            capacity: 7,
            inner: Inner {
                dir: Some("/tls".into()),
                require: true,
            },
            origins: vec!["https://a".into(), "https://b".into()],
            advertise: None,
        }
    }

    #[test]
    fn renders_in_declaration_order_and_parses_back() {
        let value = flags();
        let args = render(&value).expect("renders");
        assert_eq!(
            args,
            [
                "--listen",
                "0.0.0.0:4500",
                "--capacity",
                "7",
                "--tls-dir",
                "/tls",
                "--require",
                "--origin",
                "https://a",
                "--origin",
                "https://b"
            ]
        );
        assert_eq!(parse::<Flags>(&args).expect("parses"), value);
    }

    #[test]
    fn unset_options_and_false_switches_are_left_out() {
        let value = Flags {
            inner: Inner {
                dir: None,
                require: false,
            },
            origins: Vec::new(),
            ..flags()
        };
        let args = render(&value).expect("renders");
        assert_eq!(args, ["--listen", "0.0.0.0:4500", "--capacity", "7"]);
        assert_eq!(parse::<Flags>(&args).expect("parses"), value);
    }

    #[test]
    fn a_field_without_a_flag_is_an_error() {
        #[derive(clap::Args, Serialize)]
        struct Extra {
            #[arg(long)]
            listen: u16,
            #[arg(skip)]
            hidden: u16,
        }
        let err = render(&Extra {
            listen: 1,
            hidden: 2,
        })
        .expect_err("hidden is no flag");
        assert!(
            matches!(err, Error::NotAFlag(ref f) if f == "hidden"),
            "{err}"
        );
    }
}
