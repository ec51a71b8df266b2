//! Clients of a Ghost Stream stack: the streamer ([`publish`], `ghost publish`), the viewer
//! ([`watch`], `ghost watch`) and the load generator ([`bench`], `ghost bench`; [`lab`], across impaired network paths), on the same
//! protocols as real users. Their errors carry the outcome a script branches on ([`exit`]).

#![forbid(unsafe_code)]

pub mod bench;
pub mod chart;
pub mod exit;
pub mod lab;
pub mod publish;
pub mod timing;
pub mod watch;

use exit::Outcome;

/// The exit code `error` itself carries, if any: an [`exit::Exit`]'s, or that of the one in a
/// client's error. Callers look along an error's chain of causes for the first one that
/// carries a code; none means [`exit::FAILURE`]. Here, above the clients, so that `exit`
/// depends on none of them.
pub fn exit_code_in(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let exit = if let Some(e) = error.downcast_ref::<exit::Exit>() {
        Some(e)
    } else if let Some(e) = error.downcast_ref::<watch::Error>() {
        e.exit()
    } else if let Some(e) = error.downcast_ref::<publish::Error>() {
        e.exit()
    } else if let Some(e) = error.downcast_ref::<bench::Error>() {
        e.exit()
    } else if let Some(e) = error.downcast_ref::<lab::Error>() {
        e.exit()
    } else {
        None
    };
    exit.map(|e| e.code)
}
