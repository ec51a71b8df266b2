//! The stack's certificates and rustls configurations.
//!
//! `ghost up` makes, once, in the stack's state directory: a private CA (`ca.pem`), and one
//! server certificate signed by it (`server.pem`, `server.key`) for the names ingest and relays
//! answer to ([`SERVER_NAMES`]). Every client (publisher, viewer, a relay subscribing at
//! ingest) verifies the server against that CA; there is no accept-any-certificate path.
//!
//! Relays get a certificate of their own (`relay.pem`, `relay.key`), because browsers reach
//! them: a browser verifies a certificate from a private CA only by its hash (WebTransport's
//! `serverCertificateHashes`), and only an ECDSA one valid for at most 14 days. So the relay
//! certificate lives [`RELAY_CERT_LIFETIME`] and the supervisor issues the next one
//! [`RELAY_CERT_RENEW_BEFORE`] its end ([`Files::ensure_relay`]); relays pick the new files up
//! for new connections while the ones open go on. An operator's own certificate (from a
//! public CA, which browsers verify by name) is kept as it is and never renewed here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// The relays' certificate chain: short-lived from the stack's CA, or the operator's.
    pub relay_cert: PathBuf,
    /// The relays' private key.
    pub relay_key: PathBuf,
}

impl Files {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            relay_cert: dir.join("relay.pem"),
            relay_key: dir.join("relay.key"),
        }
    }

    /// Issues the relays' certificate from the stack's CA where there is none, or where the
    /// one there ends within [`RELAY_CERT_RENEW_BEFORE`] of `now`. An operator's certificate
    /// (not issued by this CA) is left alone. Returns what it found or did.
    pub fn ensure_relay(&self, now: SystemTime) -> Result<RelayCert> {
        if self.relay_cert.exists() && self.relay_key.exists() {
            let (ours, not_after) = self.relay_cert_state()?;
            if !ours {
                return Ok(RelayCert::Operator);
            }
            if not_after > now + RELAY_CERT_RENEW_BEFORE {
                return Ok(RelayCert::Valid { not_after });
            }
        }
        let not_after = self.renew_relay(now)?;
        Ok(RelayCert::Issued { not_after })
    }

    /// Issues the relays' next certificate from the stack's CA now, valid from `now` (less an
    /// hour, for clocks that disagree); returns its end.
    pub fn renew_relay(&self, now: SystemTime) -> Result<SystemTime> {
        let ca_pem = std::fs::read_to_string(&self.ca)
            .with_context(|| format!("reading {}", self.ca.display()))?;
        let ca_key = std::fs::read_to_string(&self.ca_key)
            .with_context(|| format!("reading {}", self.ca_key.display()))?;
        let issued = issue_relay(&ca_pem, &ca_key, now).context("issuing the relay certificate")?;
        // Key first, then the certificate, each replaced whole: a relay reloading in between
        // sees an old pair or a mismatched one, which it refuses and retries, never a torn file.
        write_private(&self.relay_key.with_extension("key.new"), &issued.key)?;
        std::fs::rename(self.relay_key.with_extension("key.new"), &self.relay_key)
            .with_context(|| format!("writing {}", self.relay_key.display()))?;
        let chain = self.relay_cert.with_extension("pem.new");
        std::fs::write(&chain, format!("{}{}", issued.cert, ca_pem))
            .with_context(|| format!("writing {}", chain.display()))?;
        std::fs::rename(&chain, &self.relay_cert)
            .with_context(|| format!("writing {}", self.relay_cert.display()))?;
        Ok(issued.not_after)
    }

    /// Whether the relays' certificate is the operator's rather than one from the stack's CA.
    pub fn relay_cert_is_public(&self) -> Result<bool> {
        let (ours, _) = self.relay_cert_state()?;
        Ok(!ours)
    }

    /// Whether the relays' certificate on disk was issued by the stack's CA, and its end.
    fn relay_cert_state(&self) -> Result<(bool, SystemTime)> {
        let pem = std::fs::read(&self.relay_cert)
            .with_context(|| format!("reading {}", self.relay_cert.display()))?;
        let ca =
            std::fs::read(&self.ca).with_context(|| format!("reading {}", self.ca.display()))?;
        relay_cert_state(&pem, &ca)
            .with_context(|| format!("reading {}", self.relay_cert.display()))
    }

    /// Puts an operator's certificate chain and key in place of the relays' own, after
    /// checking that they load and match.
    pub fn install_relay(&self, cert: &Path, key: &Path) -> Result<()> {
        let identity = Identity::load(cert, key)?;
        server_config(&identity, &[])
            .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
        let key_pem =
            std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
        write_private(&self.relay_key, &key_pem)?;
        std::fs::copy(cert, &self.relay_cert)
            .with_context(|| format!("copying {}", cert.display()))?;
        Ok(())
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

/// How long a relay certificate from the stack's CA is valid: under the 14 days browsers
/// accept for a certificate pinned by hash, with a day to spare for clocks that disagree.
pub const RELAY_CERT_LIFETIME: Duration = Duration::from_secs(13 * 24 * 3600);
/// A relay certificate is renewed once it has less than this left, so a relay that misses
/// a renewal still has days, not minutes, to pick the next one up.
pub const RELAY_CERT_RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The relays' certificate, as [`Files::ensure_relay`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCert {
    /// Issued now by the stack's CA.
    Issued {
        /// Its end.
        not_after: SystemTime,
    },
    /// From the stack's CA and far enough from its end.
    Valid {
        /// Its end.
        not_after: SystemTime,
    },
    /// The operator's own, never renewed here.
    Operator,
}

/// Whether the leaf in `pem` was issued by the CA in `ca_pem`, and when it ends.
fn relay_cert_state(pem: &[u8], ca_pem: &[u8]) -> Result<(bool, SystemTime)> {
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .context("no certificate")?
        .context("not PEM")?;
    let ca = CertificateDer::from_pem_slice(ca_pem).context("the CA is not PEM")?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).context("not X.509")?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca).context("the CA is not X.509")?;
    // Signed by this CA's key: names alone do not tell two stacks' CAs apart.
    let ours =
        leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok();
    let end = leaf.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(end).unwrap_or(0));
    Ok((ours, not_after))
}

/// A relay certificate and key from the stack's CA, valid from an hour before `now` (clocks
/// disagree) for [`RELAY_CERT_LIFETIME`] in all.
struct IssuedRelay {
    cert: String,
    key: String,
    not_after: SystemTime,
}

fn issue_relay(ca_pem: &str, ca_key_pem: &str, now: SystemTime) -> Result<IssuedRelay> {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let ca_key = KeyPair::from_pem(ca_key_pem).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).context("reading the CA")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        SERVER_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Ghost Stream relay");
    // Whole seconds: that is all a certificate holds, so the end reads back the same.
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let not_before =
        SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs().saturating_sub(3600));
    let not_after = not_before + RELAY_CERT_LIFETIME;
    params.not_before = time::OffsetDateTime::from(not_before);
    params.not_after = time::OffsetDateTime::from(not_after);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(IssuedRelay {
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after,
    })
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

fn certified(cert: &Path, key: &Path) -> Result<(Arc<rustls::sign::CertifiedKey>, String)> {
    let identity = Identity::load(cert, key)?;
    let signing = provider()
        .key_provider
        .load_private_key(identity.key.clone_key())
        .with_context(|| format!("loading the key {}", key.display()))?;
    let certified = rustls::sign::CertifiedKey::new(identity.chain.clone(), signing);
    certified
        .keys_match()
        .with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
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

    fn temp_files(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("ghost-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = Files::in_dir(&dir);
        files.ensure().expect("stack CA");
        files
    }

    /// Verifies `cert`'s chain against the stack's CA at `at`, as a native client would.
    fn verifies(files: &Files, at: SystemTime) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(&files.ca).expect("ca");
        roots.add(ca).expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .expect("verifier");
        let id = Identity::load(&files.relay_cert, &files.relay_key).expect("relay identity");
        let name = rustls::pki_types::ServerName::try_from(RELAY_NAME).expect("name");
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).expect("epoch");
        verifier
            .verify_server_cert(
                &id.chain[0],
                &id.chain[1..],
                &name,
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(secs),
            )
            .map(|_| ())
    }

    #[test]
    fn relay_certificates_fit_browsers_and_are_renewed_before_their_end() {
        let files = temp_files("relay");
        let now = SystemTime::now();
        let RelayCert::Issued { not_after } = files.ensure_relay(now).expect("issue") else {
            panic!("no relay certificate was issued");
        };
        let lifetime = not_after.duration_since(now).expect("ends later");
        assert!(
            lifetime <= Duration::from_secs(14 * 24 * 3600),
            "{lifetime:?}"
        );
        verifies(&files, now).expect("the stack's CA vouches for it");
        let first = Identity::load(&files.relay_cert, &files.relay_key)
            .expect("load")
            .leaf_sha256();
        // Fresh: kept as it is.
        assert_eq!(
            files
                .ensure_relay(now + Duration::from_secs(3600))
                .expect("check"),
            RelayCert::Valid { not_after }
        );
        // Within a week of its end: the next one, valid from then on.
        let later = now + RELAY_CERT_LIFETIME - RELAY_CERT_RENEW_BEFORE;
        assert!(matches!(
            files.ensure_relay(later).expect("renew"),
            RelayCert::Issued { .. }
        ));
        let second = Identity::load(&files.relay_cert, &files.relay_key)
            .expect("load")
            .leaf_sha256();
        assert_ne!(first, second, "a new certificate, hence a new hash");
        verifies(&files, later + Duration::from_secs(6 * 24 * 3600)).expect("still valid");
        let _ = std::fs::remove_dir_all(files.ca.parent().expect("dir"));
    }

    #[test]
    fn a_reloading_certificate_takes_a_renewal_and_refuses_a_torn_one() {
        let files = temp_files("reload");
        let now = SystemTime::now();
        files.ensure_relay(now).expect("issue");
        let reloading = Reloading::load(&files.relay_cert, &files.relay_key).expect("load");
        let first = reloading.leaf_sha256();
        assert!(!reloading.reload().expect("same files"), "nothing new yet");
        let later = now + RELAY_CERT_LIFETIME - RELAY_CERT_RENEW_BEFORE;
        files.ensure_relay(later).expect("renew");
        assert!(reloading.reload().expect("renewed files"));
        let second = reloading.leaf_sha256();
        assert_ne!(first, second);
        // A key that is not the certificate's (a renewal half written): kept the one in use.
        std::fs::write(&files.relay_key, generate().expect("other").key).expect("key");
        assert!(reloading.reload().is_err());
        assert_eq!(reloading.leaf_sha256(), second);
        let _ = std::fs::remove_dir_all(files.ca.parent().expect("dir"));
    }

    #[test]
    fn an_operators_certificate_is_kept_and_never_renewed() {
        let files = temp_files("operator");
        let elsewhere = temp_files("operator-source");
        let operator = generate().expect("another CA's certificate");
        std::fs::write(&elsewhere.relay_cert, &operator.cert).expect("cert");
        std::fs::write(&elsewhere.relay_key, &operator.key).expect("key");
        files
            .install_relay(&elsewhere.relay_cert, &elsewhere.relay_key)
            .expect("install");
        let far = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
        assert_eq!(files.ensure_relay(far).expect("check"), RelayCert::Operator);
        assert_eq!(
            std::fs::read_to_string(&files.relay_cert).expect("kept"),
            operator.cert
        );
        // A key that is not the certificate's is refused.
        std::fs::write(&elsewhere.relay_key, generate().expect("other").key).expect("key");
        assert!(
            files
                .install_relay(&elsewhere.relay_cert, &elsewhere.relay_key)
                .is_err()
        );
        for f in [&files, &elsewhere] {
            let _ = std::fs::remove_dir_all(f.ca.parent().expect("dir"));
        }
    }

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
