//! The `main` of every service binary: the `health` subcommand, then the service's own
//! configuration and its run on a multi-threaded runtime.

use std::future::Future;
use std::time::Duration;

/// Runs a service binary. `health [ADDR]` probes `GET /health` on ADDR, else on `$health_env`,
/// else on `health_default`, and exits 0 or 1 (an image's HEALTHCHECK: images have no shell
/// and no curl). Anything else parses `C` from the command line and environment (a bad flag
/// exits with clap's usage code, 2) and runs `main` until it returns.
pub fn run<C, F, Fut, E>(health_env: &str, health_default: &str, main: F) -> Result<(), Error>
where
    C: clap::Parser,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(code) = health_subcommand(health_env, health_default) {
        std::process::exit(code);
    }
    let config = C::parse();
    tokio::runtime::Runtime::new()
        .map_err(Error::Runtime)?
        .block_on(main(config))
        .map_err(|e| Error::Service(e.into()))
}

/// Why a service binary stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The async runtime could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The service itself failed; its error says why.
    #[error(transparent)]
    Service(Box<dyn std::error::Error + Send + Sync>),
}

/// Handles `<service> health [ADDR]`, the probe an image's HEALTHCHECK runs (images have no
/// shell and no curl): GET /health on ADDR, else on `$env_var`, else on `default`. Returns
/// the exit code to use (0 healthy, 1 not) when the first argument is `health`, `None`
/// otherwise, so the binary goes on to parse its normal configuration.
fn health_subcommand(env_var: &str, default: &str) -> Option<i32> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("health") {
        return None;
    }
    let addr = args
        .next()
        .or_else(|| std::env::var(env_var).ok())
        .unwrap_or_else(|| default.to_string());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unhealthy: cannot start a runtime: {e}");
            return Some(1);
        }
    };
    match runtime.block_on(crate::ops::probe(&addr, Duration::from_secs(2))) {
        Ok(()) => {
            println!("healthy: {addr}");
            Some(0)
        }
        Err(e) => {
            eprintln!("unhealthy: {}", crate::telemetry::Chain(&e));
            Some(1)
        }
    }
}
