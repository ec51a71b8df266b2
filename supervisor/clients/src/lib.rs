//! Clients of a Ghost Stream stack: the streamer ([`publish`], `ghost publish`), the viewer
//! ([`watch`], `ghost watch`) and the load generator ([`bench`], `ghost bench`), on the same
//! protocols as real users. Their errors carry the outcome a script branches on ([`exit`]).

#![forbid(unsafe_code)]

pub mod bench;
pub mod exit;
pub mod publish;
pub mod watch;
