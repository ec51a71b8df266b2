//! Clients of the stack: the streamer (`ghost publish`), the viewer (`ghost watch`) and the
//! load generator (`ghost bench`), all on the same QUIC protocol as real users.

pub mod bench;
pub mod publish;
pub mod watch;
