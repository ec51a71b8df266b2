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
