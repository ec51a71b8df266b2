//! Two QUIC endpoints on 127.0.0.1 that trust each other: a server with a relay's or
//! ingest's certificate from a fresh stack CA, and a client trusting that CA.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use transport::quic::{self, Windows};

/// Whose certificate the server presents.
#[derive(Debug, Clone, Copy)]
pub enum Server {
    Relay,
    Ingest,
}

impl Server {
    fn role(self) -> identity::Role {
        match self {
            Server::Relay => identity::Role::Relay,
            Server::Ingest => identity::Role::Ingest,
        }
    }

    /// The TLS server name its certificate carries.
    fn name(self) -> &'static str {
        match self {
            Server::Relay => identity::RELAY_NAME,
            Server::Ingest => identity::INGEST_NAME,
        }
    }
}

/// A server and a client endpoint, and where the server listens.
pub struct Endpoints {
    pub server: quinn::Endpoint,
    pub client: quinn::Endpoint,
    pub addr: SocketAddr,
    who: Server,
}

impl Endpoints {
    /// Endpoints offering `alpn`, each side with its windows, the server as `who`. The
    /// certificates live only until the endpoints have read them.
    pub fn new(who: Server, alpn: &[u8], server: Windows, client: Windows) -> Endpoints {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ghost-transport-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let made = (|| {
            let pki = identity::Pki::new(&dir.join("tls"), &dir.join("ca"));
            pki.ensure(std::time::SystemTime::now())?;
            let files = pki.files(who.role());
            let identity = match who {
                Server::Relay => identity::Identity::load(&files.relay_cert, &files.relay_key)?,
                Server::Ingest => files.server_identity()?,
            };
            let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = quic::server(localhost, &identity, &[alpn], server)?;
            let client = quic::client(&files.ca, alpn, client)?;
            Ok::<_, quic::EndpointError>((server, client))
        })();
        let _ = std::fs::remove_dir_all(&dir);
        let (server, client) = made.expect("certificates and endpoints");
        let addr = server.local_addr().expect("address");
        Endpoints {
            server,
            client,
            addr,
            who,
        }
    }

    /// One connection between the two, as (server side, client side).
    pub async fn connect(&self) -> (quinn::Connection, quinn::Connection) {
        let accept = async {
            self.server
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake")
        };
        let connect = async {
            self.client
                .connect(self.addr, self.who.name())
                .expect("connect")
                .await
                .expect("handshake")
        };
        tokio::join!(accept, connect)
    }
}
