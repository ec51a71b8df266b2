//! The stack's certificates and rustls configurations.
//!
//! `ghost up` makes, once, in the stack's state directory: a private CA (`ca.pem`), and one
//! server certificate signed by it (`server.pem`, `server.key`) for the names ingest and relays
//! answer to ([`SERVER_NAMES`]). Every client (publisher, viewer, a relay subscribing at
//! ingest) verifies the server against that CA; there is no accept-any-certificate path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// TLS server name of the ingest gateway.
pub const INGEST_NAME: &str = "ingest.ghost";
/// TLS server name of every relay.
pub const RELAY_NAME: &str = "relay.ghost";
/// Names (and addresses) the server certificate is issued for.
pub const SERVER_NAMES: &[&str] = &[INGEST_NAME, RELAY_NAME, "localhost", "127.0.0.1", "::1"];

/// Paths of the stack's TLS files inside a directory.
#[derive(Debug, Clone)]
pub struct Files {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The CA's private key (kept so more certificates can be issued later).
    pub ca_key: PathBuf,
    /// Server certificate chain (leaf, then CA).
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
}

impl Files {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// Makes the CA and the server certificate unless all files already exist.
    pub fn ensure(&self) -> Result<()> {
        if [&self.ca, &self.ca_key, &self.cert, &self.key]
            .iter()
            .all(|p| p.exists())
        {
            return Ok(());
        }
        if let Some(dir) = self.ca.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let generated = generate().context("generating certificates")?;
        write_private(&self.ca_key, &generated.ca_key)?;
        write_private(&self.key, &generated.key)?;
        std::fs::write(&self.ca, &generated.ca)
            .with_context(|| format!("writing {}", self.ca.display()))?;
        std::fs::write(&self.cert, format!("{}{}", generated.cert, generated.ca))
            .with_context(|| format!("writing {}", self.cert.display()))?;
        Ok(())
    }
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// PEM texts of a freshly made CA and server certificate.
pub struct Generated {
    /// CA certificate.
    pub ca: String,
    /// CA private key: it can sign any certificate, so it is written with mode 0600.
    pub ca_key: String,
    /// Server certificate (leaf only).
    pub cert: String,
    /// Server key.
    pub key: String,
}

/// Makes a CA and a server certificate for [`SERVER_NAMES`] (ECDSA P-256).
pub fn generate() -> Result<Generated> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Ghost Stream stack CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        SERVER_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Ghost Stream server");
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca: ca_pem,
        ca_key: ca_key_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A server's certificate chain and key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads a PEM chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity> {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!("{} holds no certificate", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading {}", key.display()))?;
        Ok(Identity { chain, key })
    }

    /// Loads the server identity from the stack's files.
    pub fn from_files(files: &Files) -> Result<Identity> {
        Identity::load(&files.cert, &files.key)
    }

    /// SHA-256 of the leaf certificate, lower-case hex: what a pinning client compares.
    pub fn leaf_sha256(&self) -> String {
        self.chain
            .first()
            .map(|c| sha256_hex(c))
            .unwrap_or_default()
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 server config offering `alpns`.
pub fn server_config(identity: &Identity, alpns: &[&[u8]]) -> Result<rustls::ServerConfig> {
    let key = identity.key.clone_key();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), key)
        .context("server certificate and key do not match")?;
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3 client config that trusts only the CA in `ca_pem` and offers `alpn`.
pub fn client_config(ca_pem: &Path, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| {
            format!(
                "reading the stack's CA certificate {} (is the stack up? `ghost up` makes it)",
                ca_pem.display()
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", ca_pem.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("adding {} to trusted roots", ca_pem.display()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Verifies a server by the SHA-256 of its certificate instead of a CA: for a viewer that has
/// no copy of the stack's CA but got the relay's certificate hash from the viewer gateway (the
/// same trust model as WebTransport's `serverCertificateHashes`). The handshake signature is
/// still checked against that certificate, so only the holder of its key passes.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
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
        anyhow::bail!("{sha256:?} is not a SHA-256 in hex");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_made_once_and_load() {
        let dir = std::env::temp_dir().join(format!("ghost-tls-test-{}", std::process::id()));
        let files = Files::in_dir(&dir);
        files.ensure().expect("generate");
        let first = std::fs::read(&files.cert).expect("cert");
        files.ensure().expect("second call keeps files");
        assert_eq!(first, std::fs::read(&files.cert).expect("cert"));
        let id = Identity::from_files(&files).expect("load");
        assert_eq!(id.chain.len(), 2);
        assert_eq!(id.leaf_sha256().len(), 64);
        server_config(&id, &[b"x"]).expect("server config");
        client_config(&files.ca, b"x").expect("client config");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pin_accepts_its_certificate_only() {
        use rustls::client::danger::ServerCertVerifier;
        let a = generate().expect("a");
        let b = generate().expect("b");
        let cert_of = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        let (cert_a, cert_b) = (cert_of(&a.cert), cert_of(&b.cert));
        let pin = Pinned {
            sha256: sha256_hex(&cert_a),
            provider: provider(),
        };
        let name = rustls::pki_types::ServerName::try_from(RELAY_NAME).expect("name");
        let now = rustls::pki_types::UnixTime::now();
        assert!(
            pin.verify_server_cert(&cert_a, &[], &name, &[], now)
                .is_ok()
        );
        assert!(
            pin.verify_server_cert(&cert_b, &[], &name, &[], now)
                .is_err()
        );
        assert!(pinned_client_config("not hex", b"x").is_err());
        assert!(pinned_client_config(&sha256_hex(&cert_a), b"x").is_ok());
    }
}
