//! The stack's CA on disk: made once, issuing each service's certificates, renewing relays'
//! short-lived ones, written with the modes a secret needs.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::*;

/// Whether the leaf at `cert` was issued by the CA at `ca`, and its end.
pub(super) fn cert_state(cert: &Path, ca: &Path) -> Result<(bool, SystemTime)> {
    let pem = std::fs::read(cert).map_err(Error::io("reading", cert))?;
    let ca_pem = std::fs::read(ca).map_err(Error::io("reading", ca))?;
    leaf_state(&pem, &ca_pem).map_err(|source| Error::Certificate {
        path: cert.to_path_buf(),
        source: Box::new(source),
    })
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
            let ca = generate_ca().map_err(|source| Error::Issue {
                what: "generating the stack's CA".into(),
                source: Box::new(source),
            })?;
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
                let issued = issue(&ca_pem, &ca_key, &Leaf::Server(name)).map_err(|source| {
                    Error::Issue {
                        what: format!("issuing {role}'s server certificate"),
                        source: Box::new(source),
                    }
                })?;
                issued.write(&files.cert, &files.key, &ca_pem)?;
            }
            if !self.issued_here(&files.client_cert, &files.client_key)? {
                let issued = issue(&ca_pem, &ca_key, &Leaf::Client(role)).map_err(|source| {
                    Error::Issue {
                        what: format!("issuing {role}'s client certificate"),
                        source: Box::new(source),
                    }
                })?;
                issued.write(&files.client_cert, &files.client_key, &ca_pem)?;
            }
        }
        self.move_old_relay_cert()?;
        for old in ["server.pem", "server.key"] {
            let path = self.tls.join(old);
            if path.exists() {
                std::fs::remove_file(&path).map_err(Error::io("removing", &path))?;
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
            return std::fs::rename(&old, &new).map_err(|source| Error::Move {
                from: old,
                to: new,
                source,
            });
        }
        if read_text(&old)? != read_text(&new)? {
            return Err(Error::TwoCaKeys {
                old,
                new,
                ca: self.ca(),
            });
        }
        std::fs::remove_file(&old).map_err(Error::io("removing", &old))
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
                .map_err(|source| Error::Move {
                    from: old.clone(),
                    to: new.clone(),
                    source,
                })?;
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
        let issued = issue(&ca_pem, &ca_key, &Leaf::Relay(now)).map_err(|source| Error::Issue {
            what: "issuing the relay certificate".into(),
            source: Box::new(source),
        })?;
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
            .map_err(|source| Error::Pair {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source: Box::new(source),
            })
    }

    /// Puts a certificate for the stack's public name (from ACME, or the operator's) where
    /// the relays and the viewer gateway's HTTPS listener read it, after checking that the
    /// chain and key load and match. Each file is replaced by a rename, so a service that
    /// looks meanwhile sees the old pair or the new one, or a mismatch it ignores until the
    /// next look, never a half-written file.
    pub fn install_public(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let identity = Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
        server_config(&identity, &[]).map_err(|e| Error::Unmatched(Box::new(e)))?;
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
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path)(e)),
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
    std::fs::rename(&tmp, path).map_err(|source| Error::Move {
        from: tmp,
        to: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::io("reading", path))
}

fn write_public(path: &Path, pem: &str) -> Result<()> {
    std::fs::write(path, pem).map_err(Error::io("writing", path))
}

/// Makes `dir` (mode 0700) where missing; an existing one is made 0700 too.
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io("setting the mode of", dir))?;
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
    let mut f = options.open(path).map_err(Error::io("writing", path))?;
    f.write_all(pem.as_bytes())
        .map_err(Error::io("writing", path))
}

/// How long a relay certificate from the stack's CA is valid: under the 14 days browsers
/// accept for a certificate pinned by hash, with a day to spare for clocks that disagree.
pub const RELAY_CERT_LIFETIME: Duration = Duration::from_secs(13 * 24 * 3600);
/// A relay certificate is renewed once it has less than this left, so a relay that misses
/// a renewal still has days, not minutes, to pick the next one up.
pub const RELAY_CERT_RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The relays' certificate, as [`Pki::ensure_relay`] left it.
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
pub(super) fn leaf_state(pem: &[u8], ca_pem: &[u8]) -> Result<(bool, SystemTime)> {
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or(Error::NoCertificate {
            what: "no certificate",
        })?
        .map_err(|source| Error::Pem {
            what: "not PEM".into(),
            source,
        })?;
    let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|source| Error::Pem {
        what: "the CA is not PEM".into(),
        source,
    })?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).map_err(|source| Error::X509 {
        what: "not X.509",
        source,
    })?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca).map_err(|source| Error::X509 {
        what: "the CA is not X.509",
        source,
    })?;
    // Signed by this CA's key: names alone do not tell two stacks' CAs apart.
    let ours =
        leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok();
    let end = leaf.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(end).unwrap_or(0));
    Ok((ours, not_after))
}

/// What a certificate from the stack's CA is for.
pub(super) enum Leaf {
    /// A service's server certificate for `name` (and [`LOOPBACK_NAMES`]).
    Server(&'static str),
    /// A role's client certificate.
    Client(Role),
    /// The relays' server certificate, valid from an hour before the time (clocks disagree)
    /// for [`RELAY_CERT_LIFETIME`] in all.
    Relay(SystemTime),
}

/// A certificate and key from the stack's CA.
pub(super) struct Issued {
    pub(super) cert: String,
    pub(super) key: String,
    pub(super) not_after: SystemTime,
}

impl Issued {
    /// Writes the key, then the chain (leaf and CA), each replaced whole: a reader in between
    /// sees an old pair or a mismatched one, which it refuses and retries, never a torn file.
    fn write(&self, cert: &Path, key: &Path, ca_pem: &str) -> Result<()> {
        replace_private(key, &self.key)?;
        let chain = cert.with_extension("pem.new");
        write_public(&chain, &format!("{}{}", self.cert, ca_pem))?;
        std::fs::rename(&chain, cert).map_err(Error::io("writing", cert))
    }
}

pub(super) fn issue(ca_pem: &str, ca_key_pem: &str, leaf: &Leaf) -> Result<Issued> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
        string::Ia5String,
    };
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|source| Error::Ca {
        what: "reading the CA key",
        source,
    })?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(|source| Error::Ca {
        what: "reading the CA",
        source,
    })?;
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
            .map_err(Error::Clock)?;
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
pub(super) struct Ca {
    pub(super) cert: String,
    pub(super) key: String,
}

pub(super) fn generate_ca() -> Result<Ca> {
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
