//! What can go wrong with the stack's certificates: files, PEM and X.509, keys that do not
//! match, issuance, and rustls refusing a configuration.

use std::io;
use std::path::PathBuf;

use rustls::pki_types::pem;

/// An error of the stack's certificates or TLS configurations. The text says what was being
/// done with which file; the source, kept chained, says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, `creating`, ...).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Renaming a file into place failed.
    #[error("moving {} to {}", from.display(), to.display())]
    Move {
        /// The file being moved.
        from: PathBuf,
        /// Where it was going.
        to: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The stack's CA certificate cannot be read: most often, the stack was never set up.
    #[error(
        "reading the stack's CA certificate {} (is the stack up? `ghost up` makes it)",
        path.display()
    )]
    NoCa {
        /// Where it was looked for.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: pem::Error,
    },
    /// Text that is not the PEM expected.
    #[error("{what}")]
    Pem {
        /// What was being parsed.
        what: String,
        /// The parser's error.
        #[source]
        source: pem::Error,
    },
    /// PEM text holding no certificate at all.
    #[error("{what}")]
    NoCertificate {
        /// Which text.
        what: &'static str,
    },
    /// A certificate that is not X.509.
    #[error("{what}")]
    X509 {
        /// Which certificate.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    /// A certificate chain and a key that do not belong together.
    #[error("{what}")]
    Mismatch {
        /// Which pair.
        what: &'static str,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// A key file whose key rustls cannot sign with.
    #[error("loading the key {}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// A key file that holds another certificate's key (as while a renewal is half written).
    #[error("{} is not the key of {}", key.display(), cert.display())]
    NotTheKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// An operator's certificate and key that do not match.
    #[error("the certificate and key do not match")]
    Unmatched(#[source] Box<Error>),
    /// A CA certificate that rustls does not take as a trusted root.
    #[error("adding {} to trusted roots", path.display())]
    Trust {
        /// The CA file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The verifier of clients' certificates could not be built.
    #[error("building the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused a configuration.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// Making a key or a certificate failed.
    #[error(transparent)]
    Generate(#[from] rcgen::Error),
    /// The stack's CA certificate or key cannot be used to issue.
    #[error("{what}")]
    Ca {
        /// Which of the two.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// Issuing a certificate failed.
    #[error("{what}")]
    Issue {
        /// Which certificate.
        what: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The system clock is set before 1970, so no validity period can be written.
    #[error("the clock is before 1970")]
    Clock(#[source] std::time::SystemTimeError),
    /// The CA key is in both its old and its new place, and the two differ: which one is
    /// the CA's is for the operator to say.
    #[error(
        "two different CA keys: {} and {}; remove the one that is not the CA of {}",
        old.display(),
        new.display(),
        ca.display()
    )]
    TwoCaKeys {
        /// The key in the TLS directory (the earlier layout).
        old: PathBuf,
        /// The key in the CA's own directory.
        new: PathBuf,
        /// The CA certificate.
        ca: PathBuf,
    },
    /// A certificate file that cannot be read as one.
    #[error("reading {}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A certificate and key pair that cannot be loaded.
    #[error("{} and {}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A pinned certificate hash that is not a SHA-256 in hex.
    #[error("{0:?} is not a SHA-256 in hex")]
    NotSha256(String),
}

impl Error {
    /// A closure making an [`Error::Io`] for `action` on `path`, for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> Error + use<> {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
