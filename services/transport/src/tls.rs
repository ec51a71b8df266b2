//! The stack's certificates and rustls configurations.
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
//!   control, control calling the supervisor. [`client_role`] reads the role back from a certificate the CA vouched for.
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

    fn from_uri(uri: &str) -> Option<Role> {
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

/// Whether the leaf at `cert` was issued by the CA at `ca`, and its end.
fn cert_state(cert: &Path, ca: &Path) -> Result<(bool, SystemTime)> {
    let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    leaf_state(&pem, &ca_pem).with_context(|| format!("reading {}", cert.display()))
}

/// The stack's certificate authority and every service's TLS directory, as the supervisor
/// keeps them: the CA key in a directory of its own that no service is given
/// (`ca_dir/ca.key`), the CA certificate at `tls/ca.pem` for the operator's clients, and one
/// directory per service, `tls/<role>/` ([`Files`]).
#[derive(Debug, Clone)]
pub struct Pki {
    tls: PathBuf,
    ca_dir: PathBuf,
}

impl Pki {
    /// The layout with service directories under `tls` and the CA key in `ca_dir`.
    pub fn new(tls: &Path, ca_dir: &Path) -> Pki {
        Pki {
            tls: tls.to_path_buf(),
            ca_dir: ca_dir.to_path_buf(),
        }
    }

    /// The CA certificate, which clients outside the stack trust (`--ca`).
    pub fn ca(&self) -> PathBuf {
        self.tls.join("ca.pem")
    }

    /// The CA's private key: it can sign any certificate, so only the supervisor reads it.
    pub fn ca_key(&self) -> PathBuf {
        self.ca_dir.join("ca.key")
    }

    /// Where the CA key was kept before it moved out of the TLS directory.
    fn old_ca_key(&self) -> PathBuf {
        self.tls.join("ca.key")
    }

    /// `role`'s directory: all that service is given.
    pub fn dir(&self, role: Role) -> PathBuf {
        self.tls.join(role.as_str())
    }

    /// `role`'s files.
    pub fn files(&self, role: Role) -> Files {
        Files::in_dir(&self.dir(role))
    }

    /// Makes what is missing: the CA, each service's directory with the CA certificate and
    /// its certificates (and any there that this CA did not issue, as after a new CA). A
    /// state directory in the earlier layout (one `server.pem` for ingest and relays, the CA
    /// key and the relays' certificate beside it) is moved over: the CA key into its own
    /// directory, the relays' certificate (the operator's too) into the relays' directory,
    /// and the shared server certificate removed, since no service uses it any more.
    pub fn ensure(&self, now: SystemTime) -> Result<()> {
        create_private_dir(&self.tls)?;
        create_private_dir(&self.ca_dir)?;
        self.move_old_ca_key()?;
        if !self.ca().exists() || !self.ca_key().exists() {
            let ca = generate_ca().context("generating the stack's CA")?;
            write_private(&self.ca_key(), &ca.key)?;
            write_public(&self.ca(), &ca.cert)?;
        }
        let ca_pem = read_text(&self.ca())?;
        let ca_key = read_text(&self.ca_key())?;
        for role in Role::ALL {
            let files = self.files(role);
            create_private_dir(&self.dir(role))?;
            if read_text(&files.ca).ok().as_deref() != Some(ca_pem.as_str()) {
                write_public(&files.ca, &ca_pem)?;
            }
            if let Some(name) = role.server_name()
                && !self.issued_here(&files.cert, &files.key)?
            {
                let issued = issue(&ca_pem, &ca_key, &Leaf::Server(name))
                    .with_context(|| format!("issuing {role}'s server certificate"))?;
                issued.write(&files.cert, &files.key, &ca_pem)?;
            }
            if !self.issued_here(&files.client_cert, &files.client_key)? {
                let issued = issue(&ca_pem, &ca_key, &Leaf::Client(role))
                    .with_context(|| format!("issuing {role}'s client certificate"))?;
                issued.write(&files.client_cert, &files.client_key, &ca_pem)?;
            }
        }
        self.move_old_relay_cert()?;
        for old in ["server.pem", "server.key"] {
            let path = self.tls.join(old);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        self.ensure_relay(now)?;
        Ok(())
    }

    /// Whether `cert` and `key` both exist and `cert` is from this CA.
    fn issued_here(&self, cert: &Path, key: &Path) -> Result<bool> {
        if !cert.exists() || !key.exists() {
            return Ok(false);
        }
        Ok(cert_state(cert, &self.ca())?.0)
    }

    fn move_old_ca_key(&self) -> Result<()> {
        let old = self.old_ca_key();
        if !old.exists() {
            return Ok(());
        }
        let new = self.ca_key();
        if !new.exists() {
            return std::fs::rename(&old, &new)
                .with_context(|| format!("moving {} to {}", old.display(), new.display()));
        }
        if read_text(&old)? != read_text(&new)? {
            anyhow::bail!(
                "two different CA keys: {} and {}; remove the one that is not the CA of {}",
                old.display(),
                new.display(),
                self.ca().display()
            );
        }
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))
    }

    fn move_old_relay_cert(&self) -> Result<()> {
        let relay = self.files(Role::Relay);
        for (old, new) in [
            (self.tls.join("relay.key"), &relay.relay_key),
            (self.tls.join("relay.pem"), &relay.relay_cert),
        ] {
            if old.exists() {
                if new.exists() {
                    std::fs::remove_file(&old)
                } else {
                    std::fs::rename(&old, new)
                }
                .with_context(|| format!("moving {} to {}", old.display(), new.display()))?;
            }
        }
        Ok(())
    }

    /// Issues the relays' certificate from the stack's CA where there is none, or where the
    /// one there ends within [`RELAY_CERT_RENEW_BEFORE`] of `now`. An operator's certificate
    /// (not issued by this CA) is left alone. Returns what it found or did.
    pub fn ensure_relay(&self, now: SystemTime) -> Result<RelayCert> {
        let files = self.files(Role::Relay);
        if files.relay_cert.exists() && files.relay_key.exists() {
            let (ours, not_after) = files.relay_cert_state()?;
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
        let files = self.files(Role::Relay);
        let ca_pem = read_text(&self.ca())?;
        let ca_key = read_text(&self.ca_key())?;
        let issued =
            issue(&ca_pem, &ca_key, &Leaf::Relay(now)).context("issuing the relay certificate")?;
        issued.write(&files.relay_cert, &files.relay_key, &ca_pem)?;
        Ok(issued.not_after)
    }

    /// Whether the relays' certificate is the operator's rather than one from the stack's CA.
    pub fn relay_cert_is_public(&self) -> Result<bool> {
        self.files(Role::Relay).relay_cert_is_public()
    }

    /// Puts an operator's certificate chain and key in place of the relays' own and as the
    /// gateway's HTTPS certificate, after checking that they load and match.
    pub fn install_relay(&self, cert: &Path, key: &Path) -> Result<()> {
        self.install_public(&read_text(cert)?, &read_text(key)?)
            .with_context(|| format!("{} and {}", cert.display(), key.display()))
    }

    /// Puts a certificate for the stack's public name (from ACME, or the operator's) where
    /// the relays and the viewer gateway's HTTPS listener read it, after checking that the
    /// chain and key load and match. Each file is replaced by a rename, so a service that
    /// looks meanwhile sees the old pair or the new one, or a mismatch it ignores until the
    /// next look, never a half-written file.
    pub fn install_public(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let identity = Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
        server_config(&identity, &[]).context("the certificate and key do not match")?;
        let relay = self.files(Role::Relay);
        let gateway = self.files(Role::Gateway);
        for role in [Role::Relay, Role::Gateway] {
            create_private_dir(&self.dir(role))?;
        }
        for (cert, key) in [
            (&relay.relay_cert, &relay.relay_key),
            (&gateway.https_cert, &gateway.https_key),
        ] {
            replace_private(key, key_pem)?;
            replace_private(cert, cert_pem)?;
        }
        Ok(())
    }

    /// Goes back to the stack's own certificates: a public one (an operator's, or ACME's)
    /// leaves the relays' and the gateway's directories, and the relays get one from the
    /// stack's CA. What `ghost up` without `--tls-cert` or `--acme` means.
    pub fn use_own(&self, now: SystemTime) -> Result<()> {
        let relay = self.files(Role::Relay);
        let gateway = self.files(Role::Gateway);
        if relay.relay_cert.exists() && relay.relay_cert_is_public()? {
            for path in [&relay.relay_cert, &relay.relay_key] {
                remove_if_there(path)?;
            }
        }
        for path in [&gateway.https_cert, &gateway.https_key] {
            remove_if_there(path)?;
        }
        self.ensure_relay(now)?;
        Ok(())
    }
}

fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes a secret to `path` (mode 0600) whole, through a temporary file beside it and a
/// rename: a reader sees the old text or the new one, never a torn file.
pub fn replace_private(path: &Path, pem: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    write_private(&tmp, pem)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving {} to {}", tmp.display(), path.display()))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_public(path: &Path, pem: &str) -> Result<()> {
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}

/// Makes `dir` (mode 0700) where missing; an existing one is made 0700 too.
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    Ok(())
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
fn leaf_state(pem: &[u8], ca_pem: &[u8]) -> Result<(bool, SystemTime)> {
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

/// What a certificate from the stack's CA is for.
enum Leaf {
    /// A service's server certificate for `name` (and [`LOOPBACK_NAMES`]).
    Server(&'static str),
    /// A role's client certificate.
    Client(Role),
    /// The relays' server certificate, valid from an hour before the time (clocks disagree)
    /// for [`RELAY_CERT_LIFETIME`] in all.
    Relay(SystemTime),
}

/// A certificate and key from the stack's CA.
struct Issued {
    cert: String,
    key: String,
    not_after: SystemTime,
}

impl Issued {
    /// Writes the key, then the chain (leaf and CA), each replaced whole: a reader in between
    /// sees an old pair or a mismatched one, which it refuses and retries, never a torn file.
    fn write(&self, cert: &Path, key: &Path, ca_pem: &str) -> Result<()> {
        replace_private(key, &self.key)?;
        let chain = cert.with_extension("pem.new");
        write_public(&chain, &format!("{}{}", self.cert, ca_pem))?;
        std::fs::rename(&chain, cert).with_context(|| format!("writing {}", cert.display()))
    }
}

fn issue(ca_pem: &str, ca_key_pem: &str, leaf: &Leaf) -> Result<Issued> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
        string::Ia5String,
    };
    let ca_key = KeyPair::from_pem(ca_key_pem).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).context("reading the CA")?;
    let key = KeyPair::generate()?;
    let names = |name: &str| {
        std::iter::once(name)
            .chain(LOOPBACK_NAMES.iter().copied())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut params = match leaf {
        Leaf::Server(name) => CertificateParams::new(names(name))?,
        Leaf::Relay(_) => CertificateParams::new(names(RELAY_NAME))?,
        Leaf::Client(_) => CertificateParams::new(Vec::<String>::new())?,
    };
    let (common_name, usage) = match leaf {
        Leaf::Server(name) => (
            format!("Ghost Stream {name}"),
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        Leaf::Relay(_) => (
            "Ghost Stream relay".to_string(),
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        Leaf::Client(role) => {
            params
                .subject_alt_names
                .push(SanType::URI(Ia5String::try_from(role.uri())?));
            (
                format!("Ghost Stream {role} (client)"),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        }
    };
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    // One purpose each: a server's certificate never authenticates a client, nor the reverse.
    params.extended_key_usages = vec![usage];
    let mut not_after = SystemTime::UNIX_EPOCH;
    if let Leaf::Relay(now) = leaf {
        // Whole seconds: that is all a certificate holds, so the end reads back the same.
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .context("the clock is before 1970")?;
        let not_before = SystemTime::UNIX_EPOCH
            + Duration::from_secs(since_epoch.as_secs().saturating_sub(3600));
        not_after = not_before + RELAY_CERT_LIFETIME;
        params.not_before = time::OffsetDateTime::from(not_before);
        params.not_after = time::OffsetDateTime::from(not_after);
    }
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after,
    })
}

/// A CA certificate and key, PEM.
struct Ca {
    cert: String,
    key: String,
}

fn generate_ca() -> Result<Ca> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Ghost Stream stack CA");
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// PEM texts of a CA of its own and a relay server certificate from it: what another
/// stack, or an operator's CA, would have.
pub struct Generated {
    /// CA certificate.
    pub ca: String,
    /// CA private key.
    pub ca_key: String,
    /// Server certificate for [`RELAY_NAME`] (leaf only).
    pub cert: String,
    /// Server key.
    pub key: String,
}

/// Makes a CA and a server certificate for [`RELAY_NAME`] from it (ECDSA P-256).
pub fn generate() -> Result<Generated> {
    let ca = generate_ca()?;
    let leaf = issue(&ca.cert, &ca.key, &Leaf::Server(RELAY_NAME))?;
    Ok(Generated {
        ca: ca.cert,
        ca_key: ca.key,
        cert: leaf.cert,
        key: leaf.key,
    })
}

/// The role a client certificate from the stack's CA names: its one URI under
/// [`ROLE_URI_PREFIX`], in a certificate whose extended key usage allows client
/// authentication. `None` for anything else, a server's certificate included. The chain
/// must have been verified against the CA before (the TLS handshake did).
pub fn client_role(leaf: &CertificateDer<'_>) -> Option<Role> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let usage = cert.extended_key_usage().ok()??;
    if !usage.value.client_auth {
        return None;
    }
    let names = cert.subject_alternative_name().ok()??;
    let mut roles = names.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) if uri.starts_with(ROLE_URI_PREFIX) => Some(Role::from_uri(uri)),
        _ => None,
    });
    match (roles.next(), roles.next()) {
        (Some(role), None) => role,
        _ => None,
    }
}

/// The role of the first certificate of a verified peer chain, as rustls hands it over.
pub fn peer_role(chain: &[CertificateDer<'_>]) -> Option<Role> {
    chain.first().and_then(client_role)
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
        let chain = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let secret = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        Identity::from_pem(&chain, &secret)
            .with_context(|| format!("{} and {}", cert.display(), key.display()))
    }

    /// Parses a PEM chain and key held in memory.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Identity> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .context("parsing the certificate chain")?;
        if chain.is_empty() {
            anyhow::bail!("the certificate file holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(key).context("parsing the private key")?;
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

/// The CA in the PEM file `ca_pem` as a root store, the only one a party of the stack trusts.
fn roots(ca_pem: &Path) -> Result<rustls::RootCertStore> {
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
    Ok(roots)
}

/// A TLS 1.3 server config offering `alpns` that asks clients for a certificate from the
/// CA in `ca_pem` without requiring one: a client presenting one that the CA did not issue
/// fails the handshake, one presenting none gets in, and the server decides per connection
/// from [`peer_role`] what it may do (ingest: publishers present none, relays theirs).
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
    .context("building the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
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
                    error = %format!("{error:#}"),
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
        .context("client certificate and key do not match")?;
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
