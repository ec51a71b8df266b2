//! How `ghost logs` prints a line: `relay-1  | …` as `docker compose logs` does (names
//! padded to one width, a colour per service on a terminal), or one JSON [`Entry`] per line.
//!
//! Services log as tracing writes: text lines under the process runtime (with the terminal
//! colours tracing adds, which are kept for a terminal and dropped otherwise) and one JSON
//! object per line in a container, which is printed as the text line it stands for, so the
//! output reads the same whatever the runtime.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::time::SystemTime;

use anyhow::Result;
use serde_json::Value;

use super::{Entry, Line};
use crate::exit;

/// Colours given to services in turn (ANSI SGR codes), as `docker compose` does; red is
/// left for what services colour themselves.
const PALETTE: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// `text` without its terminal escape sequences (CSI `ESC [ … final`, and two-byte ones).
pub(super) fn strip_ansi(text: &str) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // A two-byte escape ends with the byte after ESC; a CSI one at its final byte.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        }
    }
    Cow::Owned(out)
}

/// When a log line says it was written: the RFC 3339 time a tracing text line starts with,
/// or a tracing JSON line's `timestamp`.
pub(super) fn timestamp(text: &str) -> Option<SystemTime> {
    let text = strip_ansi(text);
    let text = text.trim_start();
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).ok()?;
        return humantime::parse_rfc3339_weak(value.get("timestamp")?.as_str()?).ok();
    }
    let first = text.split_whitespace().next()?;
    if first.len() < 19 || !first.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    humantime::parse_rfc3339_weak(first).ok()
}

/// The text line tracing would have written for a JSON one (`--log-format json`, as
/// containers log): `TIME LEVEL span{field=…}: target: message field=…`. None for any
/// other line.
pub(super) fn tracing_json(text: &str) -> Option<String> {
    if !text.starts_with('{') {
        return None;
    }
    let Value::Object(event) = serde_json::from_str(text).ok()? else {
        return None;
    };
    let level = event.get("level")?.as_str()?;
    let field = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default();
    let mut out = format!("{} {level:>5} ", field("timestamp"));
    if let Some(Value::Array(spans)) = event.get("spans") {
        for span in spans {
            let Value::Object(span) = span else {
                continue;
            };
            let name = span.get("name").and_then(Value::as_str).unwrap_or("span");
            let fields = fields(span.iter().filter(|(k, _)| *k != "name"));
            if fields.is_empty() {
                out.push_str(&format!("{name}:"));
            } else {
                out.push_str(&format!("{name}{{{}}}:", fields.trim_start()));
            }
        }
        if !spans.is_empty() {
            out.push(' ');
        }
    }
    out.push_str(&format!("{}: {}", field("target"), field("message")));
    const SHOWN: [&str; 6] = ["timestamp", "level", "target", "message", "span", "spans"];
    out.push_str(&fields(
        event.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())),
    ));
    Some(out)
}

/// ` key=value` for each field: strings as they are, anything else as JSON.
fn fields<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        match value {
            Value::String(s) => out.push_str(&format!(" {key}={s}")),
            other => out.push_str(&format!(" {key}={other}")),
        }
    }
    out
}

/// Prints lines of several services on stdout.
#[derive(Debug)]
pub(super) struct Printer {
    json: bool,
    colour: bool,
    /// The longest name so far: every prefix is padded to it.
    width: usize,
    colours: HashMap<String, &'static str>,
}

impl Printer {
    /// JSON lines, or text with the services' names (in colour when `colour`).
    pub(super) fn new(json: bool, colour: bool) -> Printer {
        Printer {
            json,
            colour,
            width: 0,
            colours: HashMap::new(),
        }
    }

    /// Makes room for `service`'s name, and gives it the next colour.
    pub(super) fn add(&mut self, service: &str) {
        self.width = self.width.max(service.len());
        let next = PALETTE[self.colours.len() % PALETTE.len()];
        self.colours.entry(service.to_string()).or_insert(next);
    }

    /// `line` of `service` as printed.
    pub(super) fn format(&self, service: &str, line: &Line) -> Result<String> {
        if self.json {
            let entry = Entry {
                service: service.to_string(),
                timestamp: line
                    .at
                    .map(|t| humantime::format_rfc3339_micros(t).to_string()),
                line: strip_ansi(&line.text).into_owned(),
            };
            return Ok(serde_json::to_string(&entry)?);
        }
        let text = match tracing_json(&line.text) {
            Some(rendered) => Cow::Owned(rendered),
            None if self.colour => Cow::Borrowed(line.text.as_str()),
            None => strip_ansi(&line.text),
        };
        let width = self.width;
        Ok(match self.colours.get(service).filter(|_| self.colour) {
            Some(colour) => format!("\x1b[{colour}m{service:<width$} |\x1b[0m {text}"),
            None => format!("{service:<width$} | {text}"),
        })
    }

    /// Prints `lines`, each of the service named beside it. A reader that went away is
    /// [`exit::StdoutClosed`].
    pub(super) fn print<'a>(
        &mut self,
        lines: impl IntoIterator<Item = (&'a str, &'a Line)>,
    ) -> Result<()> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (service, line) in lines {
            if !self.colours.contains_key(service) {
                self.add(service);
            }
            writeln!(out, "{}", self.format(service, line)?).map_err(exit::stdout_error)?;
        }
        out.flush().map_err(exit::stdout_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\x1b[2m2025-06-01T12:00:00.123456Z\x1b[0m \x1b[32m INFO\x1b[0m \
                        \x1b[2mrelay\x1b[0m\x1b[2m:\x1b[0m viewer refused \x1b[3mcode\x1b[0m\x1b[2m=\x1b[0m\"unauthorized\"";

    fn line(text: &str) -> Line {
        let at = timestamp(text);
        Line {
            at,
            order: at.unwrap_or(std::time::UNIX_EPOCH),
            text: text.into(),
        }
    }

    #[test]
    fn terminal_colours_are_stripped_and_the_time_read_through_them() {
        assert_eq!(
            strip_ansi(TEXT),
            "2025-06-01T12:00:00.123456Z  INFO relay: viewer refused code=\"unauthorized\""
        );
        assert!(matches!(strip_ansi("plain"), Cow::Borrowed("plain")));
        assert_eq!(
            timestamp(TEXT),
            Some(humantime::parse_rfc3339("2025-06-01T12:00:00.123456Z").expect("time"))
        );
        assert_eq!(timestamp("thread 'main' panicked at src/main.rs:3:5"), None);
        assert_eq!(timestamp("12 viewers"), None);
    }

    #[test]
    fn a_json_tracing_line_reads_as_the_text_line_it_stands_for() {
        let json = r#"{"timestamp":"2025-06-01T12:00:00.123456Z","level":"INFO","message":"viewer refused","code":"unauthorized","reason":"join ticket is for stream \"x\"","target":"relay","spans":[{"name":"viewer","peer":"127.0.0.1:5000"}]}"#;
        assert_eq!(
            tracing_json(json).as_deref(),
            Some(
                "2025-06-01T12:00:00.123456Z  INFO viewer{peer=127.0.0.1:5000}: relay: viewer refused code=unauthorized reason=join ticket is for stream \"x\""
            )
        );
        assert_eq!(
            timestamp(json),
            Some(humantime::parse_rfc3339("2025-06-01T12:00:00.123456Z").expect("time"))
        );
        // The readiness line and plain text are not tracing's.
        assert_eq!(
            tracing_json(r#"{"ready":"relay","quic":"127.0.0.1:1"}"#),
            None
        );
        assert_eq!(tracing_json("{not json"), None);
    }

    #[test]
    fn names_are_padded_to_the_longest_and_coloured_only_on_a_terminal() {
        let mut plain = Printer::new(false, false);
        plain.add("relay-1");
        plain.add(super::super::SUPERVISOR);
        let l = line(TEXT);
        assert_eq!(
            plain.format("relay-1", &l).expect("format"),
            "relay-1    | 2025-06-01T12:00:00.123456Z  INFO relay: viewer refused code=\"unauthorized\""
        );
        let mut coloured = Printer::new(false, true);
        coloured.add("relay-1");
        coloured.add("relay-2");
        let text = coloured.format("relay-2", &line("hello")).expect("format");
        assert_eq!(text, "\x1b[33mrelay-2 |\x1b[0m hello");
        // A container's JSON line is shown as text.
        let json = line(
            r#"{"timestamp":"2025-06-01T12:00:00Z","level":"WARN","message":"lost","target":"relay"}"#,
        );
        assert_eq!(
            plain.format("relay-1", &json).expect("format"),
            "relay-1    | 2025-06-01T12:00:00Z  WARN relay: lost"
        );
    }

    #[test]
    fn json_lines_carry_the_service_the_time_where_known_and_the_plain_line() {
        let printer = Printer::new(true, true);
        let text = printer.format("relay-1", &line(TEXT)).expect("format");
        let entry: Entry = serde_json::from_str(&text).expect("an entry");
        assert_eq!(
            entry,
            Entry {
                service: "relay-1".into(),
                timestamp: Some("2025-06-01T12:00:00.123456Z".into()),
                line: strip_ansi(TEXT).into_owned(),
            }
        );
        let untimed = printer
            .format("supervisor", &line("panicked"))
            .expect("format");
        assert_eq!(untimed, r#"{"service":"supervisor","line":"panicked"}"#);
    }
}
