//! Runs the Ghost Stream stack: what the supervisor daemon is made of, apart from its
//! command line.
//!
//! - [`services`]: the table of services, their ports, files and flags, and the [`services::Spec`]
//!   of one instance;
//! - [`policy`]: the supervisor's rules (restarts with back-off, scaling, draining), pure
//!   functions of events and time;
//! - [`actor`]: performs what the policy decides through a [`runtime`] and keeps the stack's
//!   status;
//! - [`runtime`]: where instances run: local processes, Docker, or Docker Swarm;
//! - [`stack`]: the state directory and the stack file that `ghost up` writes and every other
//!   command reads;
//! - [`certificate`] and [`acme`]: the certificate the stack presents, its own or an ACME CA's,
//!   obtained and renewed;
//! - [`metrics`]: the supervisor's own Prometheus metrics;
//! - [`logfile`]: log files rotated by size (the process runtime's and the daemon's).

#![forbid(unsafe_code)]

pub mod acme;
pub mod actor;
pub mod certificate;
pub mod instance;
pub mod logfile;
pub mod metrics;
pub mod policy;
pub mod runtime;
pub mod services;
pub mod stack;
