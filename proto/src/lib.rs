//! gRPC contracts of Ghost Stream, generated from `proto/ghost/*.proto` at build time.

#![forbid(unsafe_code)]
#![allow(missing_docs)] // generated code

/// The control plane: streams, relay directory, assignments.
pub mod control {
    tonic::include_proto!("ghost.control.v1");
}

/// The supervisor's capacity API.
pub mod supervisor {
    tonic::include_proto!("ghost.supervisor.v1");
}
