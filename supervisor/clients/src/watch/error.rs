//! Why watching failed, and the outcome an error carries for the CLI.

use transport::quic;

use crate::exit::{Exit, Outcome};

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An outcome with an exit code of its own: refused, lost, no such stream.
    #[error(transparent)]
    Exit(#[from] Exit),
    /// The viewer gateway could not be reached.
    #[error("asking the viewer gateway at {gateway}")]
    Gateway {
        /// The gateway's URL.
        gateway: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway's answer is not a join.
    #[error("reading the gateway's answer")]
    GatewayAnswer(#[source] reqwest::Error),
    /// The join ticket the gateway gave is not hex.
    #[error("ticket is not hex")]
    TicketNotHex(#[source] Option<std::num::ParseIntError>),
    /// The relay's address does not resolve.
    #[error(transparent)]
    Resolve(#[from] quic::ResolveError),
    /// The TLS configuration could not be built (CA file, pinned hash).
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The relay's server name is not one TLS takes.
    #[error("server name {name:?}")]
    ServerName {
        /// The name the gateway gave.
        name: String,
        /// Why it is not one.
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// A QUIC endpoint could not be set up.
    #[error(transparent)]
    Endpoint(#[from] quic::EndpointError),
    /// The network lab could not be entered.
    #[error("entering the network lab")]
    LabEnter(#[source] netlab::Error),
    /// No UDP socket could be made in the network lab.
    #[error("making a UDP socket in the network lab")]
    LabSocket(#[source] std::io::Error),
    /// The TLS configuration has no cipher suite QUIC can use.
    #[error("a QUIC client configuration")]
    QuicConfig(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// Called outside a tokio runtime.
    #[error("QUIC needs a tokio runtime")]
    NoRuntime,
    /// quinn could not start on the lab's socket.
    #[error("a QUIC endpoint in the network lab")]
    LabEndpoint(#[source] std::io::Error),
    /// The connection could not even start (a bad address or server name).
    #[error("connecting to the relay")]
    Connect(#[source] quinn::ConnectError),
    /// The relay's address is no URL's host and port.
    #[error("relay address {addr}")]
    RelayAddress {
        /// The address the gateway gave.
        addr: String,
        /// Why.
        #[source]
        source: url::ParseError,
    },
    /// The session stream failed.
    #[error(transparent)]
    Session(#[from] quic::SessionError),
    /// The relay answered the join with another message than `Init`.
    #[error("the relay answered the join with something else")]
    UnexpectedAnswer,
    /// The media could not be written out.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
    /// The delay histogram could not be made.
    #[error("latency histogram")]
    Histogram(#[source] hdrhistogram::CreationError),
}

impl Outcome for Error {
    fn exit(&self) -> Option<&Exit> {
        match self {
            Error::Exit(e) => Some(e),
            _ => None,
        }
    }
}
