//! Pieces of every service binary's command line.

use std::time::Duration;

/// Handles `<service> health [ADDR]`, the probe an image's HEALTHCHECK runs (images have no
/// shell and no curl): GET /health on ADDR, else on `$env_var`, else on `default`. Returns
/// the exit code to use (0 healthy, 1 not) when the first argument is `health`, `None`
/// otherwise, so the binary goes on to parse its normal configuration.
pub fn health_subcommand(env_var: &str, default: &str) -> Option<i32> {
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
            eprintln!("unhealthy: {e:#}");
            Some(1)
        }
    }
}
