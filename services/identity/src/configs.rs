//! rustls configurations: servers (fixed, reloading, verifying clients), clients (verifying
//! the stack's CA, or pinning a certificate by its hash).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::*;

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 server config offering `alpns`.
pub fn server_config(identity: &Identity, alpns: &[&[u8]]) -> Result<rustls::ServerConfig> {
    let key = identity.key.clone_key();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), key)
        .map_err(|source| Error::Mismatch {
            what: "server certificate and key do not match",
            source,
        })?;
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// The CA in the PEM file `ca_pem` as a root store, the only one a party of the stack trusts.
pub(super) fn roots(ca_pem: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_pem)
        .map_err(|source| Error::NoCa {
            path: ca_pem.to_path_buf(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            what: format!("parsing {}", ca_pem.display()),
            source,
        })?;
    for cert in certs {
        roots.add(cert).map_err(|source| Error::Trust {
            path: ca_pem.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// A TLS 1.3 server config offering `alpns` that asks clients for a certificate from the
/// CA in `ca_pem` without requiring one: a client presenting one that the CA did not issue
/// fails the handshake, one presenting none gets in, and the server decides per connection
/// from [`crate::peer::peer_role`] what it may do (ingest: publishers present none, relays
/// theirs).
pub fn server_config_verifying_clients(
    identity: &Identity,
    alpns: &[&[u8]],
    ca_pem: &Path,
) -> Result<rustls::ServerConfig> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(Error::Verifier)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|source| Error::Mismatch {
            what: "server certificate and key do not match",
            source,
        })?;
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// A server certificate that follows its files: [`Reloading::reload`] takes a new pair once
/// it is in place, and every handshake after that presents it, while connections already
/// open go on untouched (their certificate only mattered at their handshake).
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, String)>,
}

impl Reloading {
    /// Loads the pair at `cert` and `key`; they must match.
    pub fn load(cert: &Path, key: &Path) -> Result<Reloading> {
        let (certified, sha256) = certified(cert, key)?;
        Ok(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: std::sync::RwLock::new((certified, sha256)),
        })
    }

    /// Takes the pair now in the files if it differs from the one in use. `Ok(true)` when it
    /// did; an error (a missing file, a key that is not the certificate's, as while a
    /// renewal is half written) leaves the one in use in place.
    pub fn reload(&self) -> Result<bool> {
        let (certified, sha256) = certified(&self.cert, &self.key)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.1 == sha256 {
            return Ok(false);
        }
        *current = (certified, sha256);
        Ok(true)
    }

    /// Looks at the files every `every` (at least 100 ms) and takes a new pair for new
    /// connections, calling `renewed` after each change; an unreadable pair (a renewal half
    /// written) keeps the one in use until the next look. Runs until dropped.
    pub async fn follow(&self, every: Duration, mut renewed: impl FnMut(&Reloading)) {
        let every = every.max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(true) => renewed(self),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    error = %chain(&error),
                    "certificate not reloaded; keeping the one in use"
                ),
            }
        }
    }

    /// SHA-256 of the leaf certificate in use, hex: what browsers pin.
    pub fn leaf_sha256(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for Reloading {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// `error` and its sources, joined by `: `, as one log field.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn certified(cert: &Path, key: &Path) -> Result<(Arc<rustls::sign::CertifiedKey>, String)> {
    let identity = Identity::load(cert, key)?;
    let signing = provider()
        .key_provider
        .load_private_key(identity.key.clone_key())
        .map_err(|source| Error::Key {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = rustls::sign::CertifiedKey::new(identity.chain.clone(), signing);
    certified.keys_match().map_err(|source| Error::NotTheKey {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })?;
    Ok((Arc::new(certified), identity.leaf_sha256()))
}

/// A TLS 1.3 server config offering `alpns` whose certificate follows `reloading`.
pub fn reloading_server_config(
    reloading: Arc<Reloading>,
    alpns: &[&[u8]],
) -> Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(reloading);
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// The viewer gateway's HTTPS config: TLS 1.2 and 1.3 (browsers and every HTTP client of
/// the last decade), HTTP/2 and HTTP/1.1 by ALPN, the certificate following `reloading`.
pub fn https_server_config(reloading: Arc<Reloading>) -> Result<rustls::ServerConfig> {
    web_server_config(reloading, &[b"h2", b"http/1.1"])
}

/// A relay's `wss://` config: as [`https_server_config`], HTTP/1.1 only (a WebSocket's
/// upgrade is an HTTP/1.1 request).
pub fn websocket_server_config(reloading: Arc<Reloading>) -> Result<rustls::ServerConfig> {
    web_server_config(reloading, &[b"http/1.1"])
}

fn web_server_config(reloading: Arc<Reloading>, alpns: &[&[u8]]) -> Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(reloading);
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3 client config that trusts only the CA in `ca_pem` and offers `alpn`.
pub fn client_config(ca_pem: &Path, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// As [`client_config`], presenting `identity` (a client certificate naming a role) to
/// servers that ask.
pub fn client_config_as(
    ca_pem: &Path,
    alpn: &[u8],
    identity: &Identity,
) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|source| Error::Mismatch {
            what: "client certificate and key do not match",
            source,
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Verifies a server by the SHA-256 of its certificate instead of a CA: for a viewer that has
/// no copy of the stack's CA but got the relay's certificate hash from the viewer gateway (the
/// same trust model as WebTransport's `serverCertificateHashes`). The handshake signature is
/// still checked against that certificate, so only the holder of its key passes.
#[derive(Debug)]
pub(super) struct Pinned {
    pub(super) sha256: String,
    pub(super) provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = sha256_hex(end_entity);
        if got.eq_ignore_ascii_case(&self.sha256) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate SHA-256 {got} is not the pinned {}",
                self.sha256
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client config that accepts only the server certificate whose SHA-256 (hex) is
/// `sha256`, offering `alpn`.
pub fn pinned_client_config(sha256: &str, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotSha256(sha256.to_string()));
    }
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            sha256: sha256.to_string(),
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
