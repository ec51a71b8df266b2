//! A certificate browsers trust, for a stack reached at a public name or a bare IP address,
//! from an ACME CA (RFC 8555; Let's Encrypt by default) through the http-01 challenge.
//!
//! The protocol is instant-acme's; this module decides what to ask for and where things go:
//! the account and the certificate live in the state directory's `acme/` (keys 0600), each
//! challenge response is a file in `acme/challenges/`, served on the stack's plain-HTTP port
//! (by the viewer gateway while the stack runs, by [`serve_challenges`] before it starts), and
//! the certificate is handed to the relays and the gateway through
//! [`identity::Pki::install_public`]. Let's Encrypt issues IP-address certificates
//! only under its short-lived profile (about 160 hours), so that is the default profile for
//! an IP address; renewal starts once a third of the lifetime is left ([`Certificate::due`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

/// Let's Encrypt's production directory: the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The profile Let's Encrypt issues IP-address certificates under.
pub const SHORT_LIVED: &str = "shortlived";

/// How long the CA may take to validate and issue, all in all, before `ghost up` gives up.
const ISSUE_WITHIN: Duration = Duration::from_secs(90);

/// What to ask the CA for, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The name or address viewers open (`--advertise-host`).
    pub identifier: String,
    /// The CA's directory URL.
    pub directory: String,
    /// A contact address for the account (expiry notices).
    pub email: Option<String>,
    /// The certificate profile; `None` is the CA's default.
    pub profile: Option<String>,
    /// An extra root certificate (PEM) to trust for the CA's own API: a test CA.
    pub root: Option<PathBuf>,
}

impl Settings {
    /// The settings `ghost up` was given, with the profile defaulted: [`SHORT_LIVED`] for an
    /// IP address, the CA's default for a name.
    pub fn new(
        identifier: &str,
        directory: Option<&str>,
        email: Option<&str>,
        profile: Option<&str>,
        root: Option<&Path>,
    ) -> Settings {
        let ip = identifier.parse::<IpAddr>().is_ok();
        Settings {
            identifier: identifier.to_string(),
            directory: directory.unwrap_or(LETS_ENCRYPT).to_string(),
            email: email.map(str::to_string),
            profile: match profile {
                Some("") => None,
                Some(p) => Some(p.to_string()),
                None if ip => Some(SHORT_LIVED.to_string()),
                None => None,
            },
            root: root.map(Path::to_path_buf),
        }
    }

    fn acme_identifier(&self) -> Identifier {
        match self.identifier.parse::<IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(self.identifier.clone()),
        }
    }
}

/// The state directory's ACME files.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// The files in `dir` (the state directory's `acme/`).
    pub fn in_dir(dir: PathBuf) -> Files {
        Files { dir }
    }

    /// Where challenge responses are written, one file per token.
    pub fn challenges(&self) -> PathBuf {
        self.dir.join("challenges")
    }

    fn account(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn meta(&self) -> PathBuf {
        self.dir.join("certificate.json")
    }

    /// Makes `acme/` and `acme/challenges/` (0700) where missing.
    pub fn create(&self) -> Result<(), Error> {
        for dir in [&self.dir, &self.challenges()] {
            let io = |action| {
                move |source| Error::Io {
                    action,
                    path: dir.clone(),
                    source,
                }
            };
            std::fs::create_dir_all(dir).map_err(io("creating"))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("setting the mode of"))?;
            }
        }
        Ok(())
    }

    /// The certificate held, if it is for `settings`' identifier from `settings`' CA.
    pub fn current(&self, settings: &Settings) -> Option<Certificate> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(self.meta()).ok()?).ok()?;
        if meta.identifier != settings.identifier || meta.directory != settings.directory {
            return None;
        }
        let cert = std::fs::read_to_string(self.cert()).ok()?;
        let key = std::fs::read_to_string(self.key()).ok()?;
        Certificate::parse(cert, key).ok()
    }

    fn store(&self, settings: &Settings, certificate: &Certificate) -> Result<(), Error> {
        identity::replace_private(&self.key(), &certificate.key_pem)?;
        identity::replace_private(&self.cert(), &certificate.cert_pem)?;
        let meta = Meta {
            identifier: settings.identifier.clone(),
            directory: settings.directory.clone(),
        };
        Ok(identity::replace_private(
            &self.meta(),
            &serde_json::to_string_pretty(&meta)?,
        )?)
    }
}

/// What `certificate.json` says the certificate is for.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    identifier: String,
    directory: String,
}

/// The account, with the directory it belongs to (an account exists at one CA only).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// A certificate from the CA, with its key and validity.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The chain, PEM, leaf first.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl Certificate {
    fn parse(cert_pem: String, key_pem: String) -> Result<Certificate, Error> {
        let (not_before, not_after) = validity(&cert_pem)?;
        Ok(Certificate {
            cert_pem,
            key_pem,
            not_before,
            not_after,
        })
    }

    /// How long it is valid, all in all.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// When to renew it: once a third of its lifetime is left.
    pub fn renew_at(&self) -> SystemTime {
        self.not_after - self.lifetime() / 3
    }

    /// Whether it is time to renew at `now`.
    pub fn due(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }
}

/// The leaf's validity, from the first certificate of `pem`.
fn validity(pem: &str) -> Result<(SystemTime, SystemTime), Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(Error::NoCertificate)?
        .map_err(|e| Error::Parse(e.into()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&leaf).map_err(|e| Error::Parse(e.into()))?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok((
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    ))
}

/// Why a certificate could not be obtained or kept, in words an operator acts on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA could not be reached or refused the request outright.
    #[error(
        "ACME: the CA at {directory} could not be used: {cause}. Check the directory URL, that this host reaches it (outbound HTTPS), and for a test CA --acme-root"
    )]
    Ca {
        /// The directory URL.
        directory: String,
        /// What went wrong.
        cause: String,
    },
    /// The challenge failed: the CA could not fetch the response from this host.
    #[error(
        "ACME: the http-01 challenge for {identifier} failed: the CA could not fetch http://{identifier}{path}, which this host serves on port {port}/tcp; the CA answered: {answer}. Check that {identifier} {resolves} this host, that port {port}/tcp is open to the internet (security group, firewall; a public CA connects to port 80), and that nothing else answers on it"
    )]
    Challenge {
        /// The name or address.
        identifier: String,
        /// The plain-HTTP port the CA connects to (80 for a real CA).
        port: u16,
        /// The challenge's path.
        path: String,
        /// What the CA said.
        answer: String,
        /// "resolves to" for a name, "is" for an address.
        resolves: &'static str,
    },
    /// Anything else: the answer came, but not a certificate.
    #[error("ACME: {0}")]
    Other(String),
    /// The CA's answer holds no certificate.
    #[error("the CA's answer holds no certificate")]
    NoCertificate,
    /// The CA's certificate cannot be parsed.
    #[error("parsing the CA's certificate")]
    Parse(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The extra root certificate for the CA's API (`--acme-root`) cannot be used.
    #[error("--acme-root {}", path.display())]
    Root {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: instant_acme::Error,
    },
    /// The system's root certificates cannot be loaded to reach the CA.
    #[error("the system's root certificates")]
    SystemRoots(#[source] instant_acme::Error),
    /// A directory of `acme/` could not be made.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`creating`, `setting the mode of`).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the account, the certificate, its key or a challenge response failed.
    #[error(transparent)]
    Files(#[from] identity::Error),
    /// The account or the certificate's description could not be put into JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Serving the challenge responses failed.
    #[error("serving ACME challenges")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// Whether issuance itself failed (the CA, the challenge, the CA's answer): what asking
    /// again later may get past, where a failure of this host's files would not.
    pub fn is_issuance(&self) -> bool {
        matches!(
            self,
            Error::Ca { .. } | Error::Challenge { .. } | Error::Other(_)
        )
    }
}

/// `error` and its causes, as one line: hyper's "client error (Connect)" alone does not say
/// that the certificate was refused or the port closed.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Obtains a certificate for `settings.identifier` and stores it in `files`; challenge
/// responses go to `files.challenges()`, where whoever holds port `http_port` serves them.
/// Gives up after [`ISSUE_WITHIN`]. Challenge files are removed whatever the outcome.
pub async fn obtain(
    settings: &Settings,
    files: &Files,
    http_port: u16,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Certificate, Error> {
    files.create()?;
    let mut written = Vec::new();
    let result = tokio::time::timeout(
        ISSUE_WITHIN,
        issue(settings, files, http_port, progress, &mut written),
    )
    .await;
    for path in &written {
        let _ = std::fs::remove_file(path);
    }
    let certificate = match result {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Other(format!(
                "no certificate from {} within {} s",
                settings.directory,
                ISSUE_WITHIN.as_secs()
            )));
        }
    };
    files.store(settings, &certificate)?;
    Ok(certificate)
}

async fn issue(
    settings: &Settings,
    files: &Files,
    http_port: u16,
    progress: &(dyn Fn(&str) + Send + Sync),
    written: &mut Vec<PathBuf>,
) -> Result<Certificate, Error> {
    let ca = |cause: String| Error::Ca {
        directory: settings.directory.clone(),
        cause,
    };
    let account = account(settings, files).await?;
    let identifiers = [settings.acme_identifier()];
    let mut order = NewOrder::new(&identifiers);
    if let Some(profile) = &settings.profile {
        order = order.profile(profile);
    }
    progress(&format!(
        "asking {} for a certificate for {}{}",
        settings.directory,
        settings.identifier,
        settings
            .profile
            .as_deref()
            .map(|p| format!(" (profile {p})"))
            .unwrap_or_default()
    ));
    let mut order = account
        .new_order(&order)
        .await
        .map_err(|e| ca(format!("the order was refused: {}", chain(&e))))?;
    let mut paths = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization =
            authorization.map_err(|e| ca(format!("reading an authorization: {}", chain(&e))))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(Error::Other(format!("the authorization is {other:?}")));
            }
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Error::Other("the CA offers no http-01 challenge".into()))?;
        let token = challenge.token.clone();
        if !server::challenge::valid_token(&token) {
            return Err(Error::Other(format!(
                "the CA sent a malformed token {token:?}"
            )));
        }
        let path = files.challenges().join(&token);
        identity::replace_private(&path, challenge.key_authorization().as_str())?;
        written.push(path);
        paths.push(format!("{}{token}", server::challenge::PREFIX));
        challenge
            .set_ready()
            .await
            .map_err(|e| ca(format!("the challenge was refused: {}", chain(&e))))?;
    }
    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ISSUE_WITHIN);
    // A failed validation makes the order invalid, which instant-acme reports as the CA's
    // problem document: the challenge's answer either way.
    let answer = match order.poll_ready(&policy).await {
        Ok(OrderStatus::Ready) => None,
        Ok(status) => Some(
            challenge_error(&mut order)
                .await
                .unwrap_or_else(|| format!("the order is {status:?}")),
        ),
        Err(instant_acme::Error::Api(problem)) => Some(problem.to_string()),
        Err(e) => return Err(ca(format!("waiting for validation: {}", chain(&e)))),
    };
    if let Some(answer) = answer {
        return Err(Error::Challenge {
            identifier: settings.identifier.clone(),
            port: http_port,
            path: paths.first().cloned().unwrap_or_default(),
            answer,
            resolves: if settings.identifier.parse::<IpAddr>().is_ok() {
                "is"
            } else {
                "resolves to"
            },
        });
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| ca(format!("finalizing the order: {}", chain(&e))))?;
    let cert_pem = order
        .poll_certificate(&policy)
        .await
        .map_err(|e| ca(format!("fetching the certificate: {}", chain(&e))))?;
    Certificate::parse(cert_pem, key_pem)
}

/// What the CA said about the failed challenge, if it said anything.
async fn challenge_error(order: &mut instant_acme::Order) -> Option<String> {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                return Some(problem.to_string());
            }
        }
    }
    None
}

/// The account at `settings.directory`: the one stored, or a new one (stored, 0600).
async fn account(settings: &Settings, files: &Files) -> Result<Account, Error> {
    let builder = || match &settings.root {
        Some(root) => Account::builder_with_root(root).map_err(|source| Error::Root {
            path: root.clone(),
            source,
        }),
        None => Account::builder().map_err(Error::SystemRoots),
    };
    if let Ok(bytes) = std::fs::read(files.account())
        && let Ok(stored) = serde_json::from_slice::<StoredAccount>(&bytes)
        && stored.directory == settings.directory
    {
        match builder()?.from_credentials(stored.credentials).await {
            Ok(account) => return Ok(account),
            Err(e) => {
                tracing::warn!(error = %e, "the stored ACME account is not usable; making a new one")
            }
        }
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| Error::Ca {
            directory: settings.directory.clone(),
            cause: format!("creating an account: {}", chain(&e)),
        })?;
    let stored = StoredAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    identity::replace_private(&files.account(), &serde_json::to_string(&stored)?)?;
    Ok(account)
}

/// Serves the challenge responses in `dir` on `listener` until `stop`: the stack's
/// plain-HTTP port while no gateway holds it yet (the first certificate, before `ghost up`
/// starts anything).
pub async fn serve_challenges(
    listener: tokio::net::TcpListener,
    dir: PathBuf,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    axum::serve(listener, server::challenge::routes(dir))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_defaults_to_the_short_lived_profile() {
        let ip = Settings::new("203.0.113.7", None, None, None, None);
        assert_eq!(ip.profile.as_deref(), Some(SHORT_LIVED));
        assert_eq!(ip.directory, LETS_ENCRYPT);
        assert_eq!(
            ip.acme_identifier(),
            Identifier::Ip("203.0.113.7".parse().expect("ip"))
        );
        let name = Settings::new(
            "ghost.example.com",
            Some("https://ca.test/dir"),
            None,
            None,
            None,
        );
        assert_eq!(name.profile, None);
        assert_eq!(
            name.acme_identifier(),
            Identifier::Dns("ghost.example.com".into())
        );
        let chosen = Settings::new("203.0.113.7", None, None, Some("classic"), None);
        assert_eq!(chosen.profile.as_deref(), Some("classic"));
        let none = Settings::new("203.0.113.7", None, None, Some(""), None);
        assert_eq!(none.profile, None);
    }

    #[test]
    fn renewal_starts_with_a_third_of_the_lifetime_left() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cert = Certificate {
            cert_pem: String::new(),
            key_pem: String::new(),
            not_before: start,
            not_after: start + Duration::from_secs(160 * 3600),
        };
        assert_eq!(cert.lifetime(), Duration::from_secs(160 * 3600));
        let at = start + Duration::from_secs(160 * 3600 * 2 / 3);
        assert!(!cert.due(at - Duration::from_secs(1)));
        assert!(cert.due(at + Duration::from_secs(1)));
    }
}
