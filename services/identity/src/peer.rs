//! Who is calling: by the client certificate the stack's CA vouched for, or, for a caller
//! without one, by its address. Servers on the data path (QUIC, RTMP) and off it (the viewer
//! gateway's HTTP) count and exempt callers by the same rules.

use std::net::{IpAddr, Ipv6Addr};

use rustls::pki_types::CertificateDer;

use crate::{ROLE_URI_PREFIX, Role};

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

/// Whether a connection from `source` is the host's own: loopback, or one of the `local`
/// addresses its connections arrive from otherwise (see [`LocalSource`]).
pub fn from_host(source: IpAddr, local: &[IpAddr]) -> bool {
    let source = source.to_canonical();
    source.is_loopback() || local.contains(&source)
}

/// The address a source is counted by: IPv4 as it is, IPv6 by its /64 (the block one host
/// or home network gets; an IPv4-mapped address as the IPv4 one).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Where the host's own connections come from besides loopback: a flag of every server that
/// exempts the host from its per-source limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct LocalSource {
    /// The address the host's own connections arrive from when they are not loopback: in a
    /// container, the Docker network's gateway, through which Docker's port proxy forwards
    /// connections made to the host's 127.0.0.1. Exempt from per-source limits as loopback
    /// is. (Connections from elsewhere keep their own address.)
    #[arg(long, env = "GHOST_LOCAL_SOURCE")]
    pub local_source: Option<IpAddr>,
}
