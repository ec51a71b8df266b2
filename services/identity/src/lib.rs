//! Who is who in a Ghost Stream stack: its certificates, the roles they name, the rustls
//! configurations built from them, and how a server tells who is calling. Kept apart from the
//! data path (`transport`) so that control and the viewer gateway, which move no media, use
//! certificates without it.
//!
//! `ghost up` makes, once, a private CA whose key only the supervisor holds ([`Pki`]), and
//! for each service a directory of its own holding the CA certificate and that service's
//! certificates and keys, nothing else ([`Files`]): a container mounts its directory and so
//! never sees another service's key or the CA's.
//!
//! Each service has its own identities ([`Role`]):
//! - a **server** certificate for the name it answers to: ingest ([`INGEST_NAME`]), control
//!   ([`CONTROL_NAME`]) and the supervisor's capacity API ([`SUPERVISOR_NAME`]); relays have
//!   theirs apart (below);
//! - a **client** certificate naming its role (a URI `urn:ghost-stream:service:<role>` in its
//!   subject alternative names, for client authentication only), which it presents where a
//!   server must know who calls: a relay subscribing at ingest, every service calling
//!   control, control calling the supervisor. [`peer::client_role`] reads the role back from
//!   a certificate the CA vouched for.
//!
//! Every client verifies the server against the CA; there is no accept-any-certificate path.
//!
//! Relays' server certificate (`relay.pem`, `relay.key`) is apart because browsers reach
//! them: a browser verifies a certificate from a private CA only by its hash (WebTransport's
//! `serverCertificateHashes`), and only an ECDSA one valid for at most 14 days. So it lives
//! [`RELAY_CERT_LIFETIME`] and the supervisor issues the next one [`RELAY_CERT_RENEW_BEFORE`]
//! its end ([`Pki::ensure_relay`]); relays pick the new files up for new connections while
//! the ones open go on. An operator's own certificate (from a public CA, which browsers
//! verify by name) is kept as it is and never renewed here. A viewer holds that certificate's
//! hash, never a key, and no server certificate names a role: it opens nothing but a relay.
//!
//! - [`Pki`]: the CA on disk, issuance, renewal and file modes;
//! - rustls configs: [`server_config`], [`client_config`], [`Reloading`] and the others;
//! - [`peer`]: who is calling, by certificate or by address;
//! - [`Error`]: what can go wrong with any of it.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

mod configs;
mod error;
pub mod peer;
mod pki;

pub use configs::*;
pub use error::Error;
pub use pki::*;

/// What this crate's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// TLS server name of the ingest gateway.
pub const INGEST_NAME: &str = "ingest.ghost";
/// TLS server name of every relay.
pub const RELAY_NAME: &str = "relay.ghost";
/// TLS server name of control's gRPC.
pub const CONTROL_NAME: &str = "control.ghost";
/// TLS server name of the supervisor's capacity API (gRPC), which control calls.
pub const SUPERVISOR_NAME: &str = "supervisor.ghost";
/// Names every server certificate carries beside its service's own, for tools on this host.
const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// What a client certificate's URI names its role with: this, then [`Role::as_str`].
pub const ROLE_URI_PREFIX: &str = "urn:ghost-stream:service:";

/// Who a certificate of the stack belongs to: one of its services, or the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The control plane.
    Control,
    /// The ingest gateway.
    Ingest,
    /// A relay (all relays share one identity: they are interchangeable).
    Relay,
    /// The viewer gateway.
    Gateway,
    /// The supervisor, and the operator's `ghost` commands on its host.
    Supervisor,
}

impl Role {
    /// Every role, in the order their directories are made.
    pub const ALL: [Role; 5] = [
        Role::Control,
        Role::Ingest,
        Role::Relay,
        Role::Gateway,
        Role::Supervisor,
    ];

    /// Its name: in the certificate's URI and as its directory's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Ingest => "ingest",
            Role::Relay => "relay",
            Role::Gateway => "gateway",
            Role::Supervisor => "supervisor",
        }
    }

    /// The URI its client certificate carries.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    pub(crate) fn from_uri(uri: &str) -> Option<Role> {
        let name = uri.strip_prefix(ROLE_URI_PREFIX)?;
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The name its server certificate from the stack's CA is issued for (`server.pem`);
    /// `None` for a role that serves no TLS with one (relays have `relay.pem` instead).
    pub fn server_name(self) -> Option<&'static str> {
        match self {
            Role::Control => Some(CONTROL_NAME),
            Role::Ingest => Some(INGEST_NAME),
            Role::Supervisor => Some(SUPERVISOR_NAME),
            Role::Relay | Role::Gateway => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Paths of one service's TLS files inside its directory: the CA certificate and its own
/// certificates and keys. Which of them exist depends on the service ([`Role`]).
#[derive(Debug, Clone)]
pub struct Files {
    /// The CA certificate every party trusts.
    pub ca: PathBuf,
    /// The service's server certificate chain (leaf, then CA): ingest's, control's.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The relays' server certificate chain: short-lived from the stack's CA, or the
    /// operator's.
    pub relay_cert: PathBuf,
    /// The relays' private key.
    pub relay_key: PathBuf,
    /// The certificate chain for the stack's public name (ACME's or the operator's), which
    /// the viewer gateway serves over HTTPS; absent on a stack without one.
    pub https_cert: PathBuf,
    /// Its private key.
    pub https_key: PathBuf,
    /// The service's client certificate chain, naming its role.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
}

impl Files {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            relay_cert: dir.join("relay.pem"),
            relay_key: dir.join("relay.key"),
            https_cert: dir.join("https.pem"),
            https_key: dir.join("https.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// Whether the relays' certificate is the operator's rather than one from the stack's CA.
    pub fn relay_cert_is_public(&self) -> Result<bool> {
        let (ours, _) = self.relay_cert_state()?;
        Ok(!ours)
    }

    /// Whether the relays' certificate on disk was issued by the stack's CA, and its end.
    fn relay_cert_state(&self) -> Result<(bool, SystemTime)> {
        cert_state(&self.relay_cert, &self.ca)
    }

    /// The service's server identity (`server.pem`, `server.key`).
    pub fn server_identity(&self) -> Result<Identity> {
        Identity::load(&self.cert, &self.key)
    }

    /// The service's client identity (`client.pem`, `client.key`).
    pub fn client_identity(&self) -> Result<Identity> {
        Identity::load(&self.client_cert, &self.client_key)
    }
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
        let chain = std::fs::read(cert).map_err(Error::io("reading", cert))?;
        let secret = std::fs::read(key).map_err(Error::io("reading", key))?;
        Identity::from_pem(&chain, &secret).map_err(|source| Error::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Parses a PEM chain and key held in memory.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Identity> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::Pem {
                what: "parsing the certificate chain".into(),
                source,
            })?;
        if chain.is_empty() {
            return Err(Error::NoCertificate {
                what: "the certificate file holds no certificate",
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| Error::Pem {
            what: "parsing the private key".into(),
            source,
        })?;
        Ok(Identity { chain, key })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::peer::client_role;

    fn temp_pki(name: &str) -> (PathBuf, Pki) {
        let dir = std::env::temp_dir().join(format!("ghost-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::new(&dir.join("tls"), &dir.join("ca"));
        (dir, pki)
    }

    fn ready_pki(name: &str) -> (PathBuf, Pki) {
        let (dir, pki) = temp_pki(name);
        pki.ensure(SystemTime::now()).expect("stack PKI");
        (dir, pki)
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::pem_file_iter(path)
            .expect("pem")
            .next()
            .expect("a certificate")
            .expect("pem")
    }

    fn root_store(pki: &Pki) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki.ca()).expect("ca"))
            .expect("root");
        Arc::new(roots)
    }

    /// Verifies the server chain at `cert` for `name` against the stack's CA at `at`, as a
    /// native client would.
    fn verifies_as_server(
        pki: &Pki,
        cert: &Path,
        name: &str,
        at: SystemTime,
    ) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            root_store(pki),
            provider(),
        )
        .build()
        .expect("verifier");
        let chain = CertificateDer::pem_file_iter(cert)
            .expect("pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("pem");
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).expect("epoch");
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &name,
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(secs),
            )
            .map(|_| ())
    }

    /// Verifies the chain at `cert` as a client's, as ingest and control do.
    fn verifies_as_client(pki: &Pki, cert: &Path) -> Result<(), rustls::Error> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            root_store(pki),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .expect("verifier");
        let chain = CertificateDer::pem_file_iter(cert)
            .expect("pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("pem");
        verifier
            .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn each_service_gets_its_own_identities_and_never_the_ca_key() {
        let (dir, pki) = ready_pki("roles");
        let now = SystemTime::now();
        assert_eq!(
            names_in(&pki.dir(Role::Ingest)),
            [
                "ca.pem",
                "client.key",
                "client.pem",
                "server.key",
                "server.pem"
            ]
        );
        assert_eq!(
            names_in(&pki.dir(Role::Relay)),
            [
                "ca.pem",
                "client.key",
                "client.pem",
                "relay.key",
                "relay.pem"
            ]
        );
        assert_eq!(
            names_in(&pki.dir(Role::Control)),
            [
                "ca.pem",
                "client.key",
                "client.pem",
                "server.key",
                "server.pem"
            ]
        );
        assert_eq!(
            names_in(&pki.dir(Role::Gateway)),
            ["ca.pem", "client.key", "client.pem"]
        );
        assert_eq!(
            names_in(&pki.dir(Role::Supervisor)),
            [
                "ca.pem",
                "client.key",
                "client.pem",
                "server.key",
                "server.pem"
            ]
        );
        assert_eq!(
            names_in(&dir.join("tls")),
            [
                "ca.pem",
                "control",
                "gateway",
                "ingest",
                "relay",
                "supervisor"
            ]
        );
        assert_eq!(names_in(&dir.join("ca")), ["ca.key"]);

        // Servers: each for its own name only.
        let ingest = pki.files(Role::Ingest);
        let relay = pki.files(Role::Relay);
        verifies_as_server(&pki, &ingest.cert, INGEST_NAME, now).expect("ingest");
        assert!(verifies_as_server(&pki, &ingest.cert, RELAY_NAME, now).is_err());
        verifies_as_server(&pki, &relay.relay_cert, RELAY_NAME, now).expect("relay");
        assert!(verifies_as_server(&pki, &relay.relay_cert, INGEST_NAME, now).is_err());
        let control = pki.files(Role::Control);
        verifies_as_server(&pki, &control.cert, CONTROL_NAME, now).expect("control");
        let supervisor = pki.files(Role::Supervisor);
        verifies_as_server(&pki, &supervisor.cert, SUPERVISOR_NAME, now).expect("supervisor");
        assert!(verifies_as_server(&pki, &supervisor.cert, CONTROL_NAME, now).is_err());

        // Clients: each names its role; no server certificate names one, nor passes as a
        // client's.
        for role in Role::ALL {
            let files = pki.files(role);
            verifies_as_client(&pki, &files.client_cert).expect("a client of the stack");
            assert_eq!(client_role(&der(&files.client_cert)), Some(role));
            files.client_identity().expect("loads");
        }
        for server in [
            &ingest.cert,
            &relay.relay_cert,
            &control.cert,
            &supervisor.cert,
        ] {
            assert_eq!(client_role(&der(server)), None, "{}", server.display());
            assert!(
                verifies_as_client(&pki, server).is_err(),
                "{}",
                server.display()
            );
        }
        // Another CA's client certificate for the relay role fails the chain.
        let (other_dir, other) = ready_pki("roles-other");
        assert!(verifies_as_client(&pki, &other.files(Role::Relay).client_cert).is_err());
        for d in [dir, other_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn an_earlier_layout_is_moved_over_and_keeps_its_ca() {
        let (dir, pki) = temp_pki("old-layout");
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("dir");
        let ca = generate_ca().expect("ca");
        std::fs::write(tls.join("ca.pem"), &ca.cert).expect("ca.pem");
        std::fs::write(tls.join("ca.key"), &ca.key).expect("ca.key");
        let shared = issue(&ca.cert, &ca.key, &Leaf::Server(INGEST_NAME)).expect("shared");
        std::fs::write(tls.join("server.pem"), &shared.cert).expect("server.pem");
        std::fs::write(tls.join("server.key"), &shared.key).expect("server.key");
        let operator = generate().expect("an operator's certificate");
        std::fs::write(tls.join("relay.pem"), &operator.cert).expect("relay.pem");
        std::fs::write(tls.join("relay.key"), &operator.key).expect("relay.key");

        pki.ensure(SystemTime::now()).expect("moved over");
        assert_eq!(std::fs::read_to_string(pki.ca()).expect("ca"), ca.cert);
        assert_eq!(std::fs::read_to_string(pki.ca_key()).expect("key"), ca.key);
        for gone in [
            "ca.key",
            "server.pem",
            "server.key",
            "relay.pem",
            "relay.key",
        ] {
            assert!(
                !tls.join(gone).exists(),
                "{gone} is still in the TLS directory"
            );
        }
        let relay = pki.files(Role::Relay);
        assert_eq!(
            std::fs::read_to_string(&relay.relay_cert).expect("kept"),
            operator.cert
        );
        assert!(relay.relay_cert_is_public().expect("state"));
        // The new certificates are from the CA clients already trust.
        verifies_as_server(
            &pki,
            &pki.files(Role::Ingest).cert,
            INGEST_NAME,
            SystemTime::now(),
        )
        .expect("ingest from the old CA");
        // A second run changes nothing.
        let before = std::fs::read(&pki.files(Role::Ingest).cert).expect("cert");
        pki.ensure(SystemTime::now()).expect("again");
        assert_eq!(
            before,
            std::fs::read(&pki.files(Role::Ingest).cert).expect("cert")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_ca_reissues_every_certificate() {
        let (dir, pki) = ready_pki("new-ca");
        let old = std::fs::read(&pki.files(Role::Relay).client_cert).expect("cert");
        std::fs::remove_file(pki.ca_key()).expect("lose the CA key");
        pki.ensure(SystemTime::now()).expect("new CA");
        let new = std::fs::read(&pki.files(Role::Relay).client_cert).expect("cert");
        assert_ne!(old, new);
        verifies_as_client(&pki, &pki.files(Role::Relay).client_cert).expect("from the new CA");
        assert_eq!(
            std::fs::read(pki.ca()).expect("ca"),
            std::fs::read(pki.files(Role::Gateway).ca).expect("copy")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn relay_certificates_fit_browsers_and_are_renewed_before_their_end() {
        let (dir, pki) = ready_pki("relay");
        let files = pki.files(Role::Relay);
        // Made by `ensure` just now: renew from a known time on.
        let now = SystemTime::now();
        let not_after = pki.renew_relay(now).expect("issue");
        let lifetime = not_after.duration_since(now).expect("ends later");
        assert!(
            lifetime <= Duration::from_secs(14 * 24 * 3600),
            "{lifetime:?}"
        );
        verifies_as_server(&pki, &files.relay_cert, RELAY_NAME, now)
            .expect("the stack's CA vouches for it");
        let first = Identity::load(&files.relay_cert, &files.relay_key)
            .expect("load")
            .leaf_sha256();
        // Fresh: kept as it is.
        assert_eq!(
            pki.ensure_relay(now + Duration::from_secs(3600))
                .expect("check"),
            RelayCert::Valid { not_after }
        );
        // Within a week of its end: the next one, valid from then on.
        let later = now + RELAY_CERT_LIFETIME - RELAY_CERT_RENEW_BEFORE;
        assert!(matches!(
            pki.ensure_relay(later).expect("renew"),
            RelayCert::Issued { .. }
        ));
        let second = Identity::load(&files.relay_cert, &files.relay_key)
            .expect("load")
            .leaf_sha256();
        assert_ne!(first, second, "a new certificate, hence a new hash");
        verifies_as_server(
            &pki,
            &files.relay_cert,
            RELAY_NAME,
            later + Duration::from_secs(6 * 24 * 3600),
        )
        .expect("still valid");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_reloading_certificate_takes_a_renewal_and_refuses_a_torn_one() {
        let (dir, pki) = ready_pki("reload");
        let files = pki.files(Role::Relay);
        let now = SystemTime::now();
        let reloading = Reloading::load(&files.relay_cert, &files.relay_key).expect("load");
        let first = reloading.leaf_sha256();
        assert!(!reloading.reload().expect("same files"), "nothing new yet");
        let later = now + RELAY_CERT_LIFETIME - RELAY_CERT_RENEW_BEFORE;
        pki.ensure_relay(later).expect("renew");
        assert!(reloading.reload().expect("renewed files"));
        let second = reloading.leaf_sha256();
        assert_ne!(first, second);
        // A key that is not the certificate's (a renewal half written): kept the one in use.
        std::fs::write(&files.relay_key, generate().expect("other").key).expect("key");
        assert!(reloading.reload().is_err());
        assert_eq!(reloading.leaf_sha256(), second);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_operators_certificate_is_kept_and_never_renewed() {
        let (dir, pki) = ready_pki("operator");
        let elsewhere = dir.join("operator");
        std::fs::create_dir_all(&elsewhere).expect("dir");
        let (cert, key) = (elsewhere.join("cert.pem"), elsewhere.join("key.pem"));
        let operator = generate().expect("another CA's certificate");
        std::fs::write(&cert, &operator.cert).expect("cert");
        std::fs::write(&key, &operator.key).expect("key");
        pki.install_relay(&cert, &key).expect("install");
        let far = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
        assert_eq!(pki.ensure_relay(far).expect("check"), RelayCert::Operator);
        assert_eq!(
            std::fs::read_to_string(&pki.files(Role::Relay).relay_cert).expect("kept"),
            operator.cert
        );
        // A key that is not the certificate's is refused.
        std::fs::write(&key, generate().expect("other").key).expect("key");
        assert!(pki.install_relay(&cert, &key).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn files_are_made_once_and_load() {
        let (dir, pki) = ready_pki("once");
        let files = pki.files(Role::Ingest);
        let first = std::fs::read(&files.cert).expect("cert");
        pki.ensure(SystemTime::now())
            .expect("second call keeps files");
        assert_eq!(first, std::fs::read(&files.cert).expect("cert"));
        let id = files.server_identity().expect("load");
        assert_eq!(id.chain.len(), 2);
        assert_eq!(id.leaf_sha256().len(), 64);
        server_config(&id, &[b"x"]).expect("server config");
        server_config_verifying_clients(&id, &[b"x"], &files.ca).expect("verifying clients");
        client_config(&files.ca, b"x").expect("client config");
        client_config_as(&files.ca, b"x", &files.client_identity().expect("client"))
            .expect("client config with a certificate");
        let _ = std::fs::remove_dir_all(dir);
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
