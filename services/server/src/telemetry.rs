//! The tracing subscriber, installed once per binary. Libraries only emit events.

/// Log output format: human-readable lines, or one JSON object per line (for containers and
/// log shippers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Plain text.
    #[default]
    Text,
    /// JSON lines.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// Installs the global subscriber writing to stderr. `RUST_LOG` overrides `default_filter`.
/// A second call (tests starting several services in one process) is a no-op.
pub fn init(format: LogFormat, default_filter: &str) {
    init_with_writer(format, default_filter, std::io::stderr);
}

/// [`init`], writing to `writer` (a log file of the binary's own) instead of stderr.
pub fn init_with_writer<W>(format: LogFormat, default_filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// An error followed by each of its sources, as `outer: inner: innermost`: how the timeline,
/// the logs and the CLI show a failure, so no cause is left out of what the user reads.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
