//! Who may do what inside the stack, tried as a stranger would: media leaves ingest only for
//! the stack's relays, whatever certificate a client brings, while a real viewer watches on
//! through its relay.

mod common;

use std::time::Duration;

use api::client::EndReason;
use api::status::Role;
use common::{DOCKER, Stack, TEST_TIMEOUT, docker_available};
use tokio_util::sync::CancellationToken;
use transport::quic::{self, Closed, Session, Windows};
use wire::{Code, Message};

/// What came of a subscription at ingest.
#[derive(Debug)]
enum Subscribed {
    /// Ingest sent the stream's init: it serves media to this client.
    Served,
    /// The TLS handshake failed (a certificate ingest does not accept).
    Handshake(String),
    /// Ingest closed the connection, with its code and reason.
    Closed(Closed),
}

/// Opens `ghost-subscribe/1` at ingest with `identity` as client certificate (none for
/// `None`), sends `Subscribe` for `stream` and says what came of it.
async fn subscribe(
    stack: &Stack,
    stream: &str,
    identity: Option<&identity::Identity>,
) -> Subscribed {
    let ca = stack.state.ca();
    let endpoint = match identity {
        Some(id) => quic::client_as(&ca, quic::ALPN_SUBSCRIBE, id, Windows::RECEIVER),
        None => quic::client(&ca, quic::ALPN_SUBSCRIBE, Windows::RECEIVER),
    }
    .expect("endpoint");
    let addr = stack.addr("ingest", Role::Quic).await;
    let conn = match endpoint
        .connect(addr, identity::INGEST_NAME)
        .expect("connect")
        .await
    {
        Ok(conn) => conn,
        Err(e) => return Subscribed::Handshake(e.to_string()),
    };
    let ask = async {
        let mut session = Session::open(&conn).await.ok()?;
        session
            .send(&Message::Subscribe {
                stream_id: stream.to_string(),
            })
            .await
            .ok()?;
        session.recv().await.ok()?
    };
    if let Ok(Some(Message::Init { .. })) = tokio::time::timeout(Duration::from_secs(3), ask).await
    {
        return Subscribed::Served;
    }
    // No init: the connection is closed (or about to be); nothing else may arrive on it.
    let lost = tokio::time::timeout(Duration::from_secs(3), conn.closed())
        .await
        .expect("ingest closes a subscription it does not serve");
    match Closed::from(&lost) {
        closed @ Closed::ByPeer { .. } => Subscribed::Closed(closed),
        // A TLS alert from ingest (a certificate it refuses) arrives as a transport error.
        _ => Subscribed::Handshake(lost.to_string()),
    }
}

fn identity(cert: &std::path::Path, key: &std::path::Path) -> identity::Identity {
    identity::Identity::load(cert, key).expect("identity from the state directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_serves_subscriptions_only_to_a_relay_identity() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("private", 30, 2000, 30, None, stop.clone())
            .await;
        // A real viewer through the relay, watching throughout.
        let viewer = stack.watch(&id, Some(Duration::from_secs(4)), None, stop.clone());

        let pki = stack.state.pki();
        let relay = pki.files(identity::Role::Relay);
        let gateway = pki.files(identity::Role::Gateway);
        let ingest = pki.files(identity::Role::Ingest);
        let strangers = [
            ("no client certificate", None),
            (
                "the relay's server certificate (whose hash viewers are given)",
                Some(identity(&relay.relay_cert, &relay.relay_key)),
            ),
            (
                "ingest's own server certificate",
                Some(identity(&ingest.cert, &ingest.key)),
            ),
            (
                "the gateway's client certificate",
                Some(identity(&gateway.client_cert, &gateway.client_key)),
            ),
            (
                "ingest's client certificate",
                Some(identity(&ingest.client_cert, &ingest.client_key)),
            ),
        ];
        for (what, id_used) in &strangers {
            let got = subscribe(&stack, &id, id_used.as_ref()).await;
            println!("subscription with {what}: {got:?}");
            match &got {
                Subscribed::Served => panic!("ingest served media to a client with {what}"),
                Subscribed::Handshake(error) => {
                    assert!(error.contains("certificate"), "{what}: {error}")
                }
                Subscribed::Closed(closed) => assert!(
                    matches!(closed, Closed::ByPeer { code: Code::Unauthorized, reason }
                        if reason.contains("relay")),
                    "{what}: {closed:?}"
                ),
            }
            // Without a certificate, or with another service's, the refusal is clear.
            if what.contains("client certificate") {
                assert!(matches!(got, Subscribed::Closed(_)), "{what}: {got:?}");
            }
        }
        // A relay's client certificate is what ingest serves.
        let relay_client = identity(&relay.client_cert, &relay.client_key);
        let got = subscribe(&stack, &id, Some(&relay_client)).await;
        assert!(matches!(got, Subscribed::Served), "{got:?}");

        let watched = viewer.await.expect("viewer task").expect("viewer");
        println!(
            "viewer meanwhile: {} frames, {} skipped groups, {:?}",
            watched.frames, watched.skipped_groups, watched.end_reason
        );
        assert_eq!(watched.end_reason, EndReason::Duration, "{watched:?}");
        assert!(watched.frames >= 90, "{watched:?}");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

/// A TLS endpoint at `addr` that trusts the stack's CA, expects the server `name` and
/// presents no certificate, as anyone who reaches the port (and read `ca.pem`) could be.
fn endpoint_without_identity(
    stack: &Stack,
    addr: std::net::SocketAddr,
    name: &str,
) -> tonic::transport::Endpoint {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let ca = std::fs::read(stack.state.ca()).expect("ca.pem");
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(name),
        )
        .expect("tls")
        .timeout(Duration::from_secs(3))
}

/// A client of control presenting no certificate.
fn control_without_identity(
    stack: &Stack,
    control: std::net::SocketAddr,
) -> proto::control::control_client::ControlClient<tonic::transport::Channel> {
    let endpoint = endpoint_without_identity(stack, control, identity::CONTROL_NAME);
    proto::control::control_client::ControlClient::new(endpoint.connect_lazy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_api_takes_calls_only_from_control() {
    use proto::supervisor::CapacityRequest;
    use proto::supervisor::supervisor_client::SupervisorClient;
    use tonic::transport::Endpoint;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1", "--max-relays", "3"]);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], stack.file.supervisor_ports.1));
        let url = format!("http://{addr}");
        let ask = || CapacityRequest {
            rejected_viewers: 100,
            relays: 1,
            reason: "a stranger wants relays".into(),
        };
        let client = |endpoint: Endpoint| {
            SupervisorClient::new(endpoint.timeout(Duration::from_secs(3)).connect_lazy())
        };

        let err = client(Endpoint::from_shared(url.clone()).expect("url"))
            .request_capacity(ask())
            .await
            .expect_err("plain gRPC refused");
        println!("capacity API, plain: {:?}", err.code());
        let anonymous = endpoint_without_identity(&stack, addr, identity::SUPERVISOR_NAME);
        let err = client(anonymous)
            .request_capacity(ask())
            .await
            .expect_err("no identity");
        println!("capacity API, TLS without a certificate: {:?}", err.code());
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        for role in [
            identity::Role::Gateway,
            identity::Role::Relay,
            identity::Role::Ingest,
        ] {
            let endpoint = server::control::endpoint(
                &url,
                Some(&stack.state.tls_dir_of(role)),
                identity::SUPERVISOR_NAME,
            )
            .expect("endpoint");
            let err = client(endpoint)
                .request_capacity(ask())
                .await
                .expect_err("not control");
            println!("capacity API as {role}: {:?}", err.code());
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{role}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            stack.relay_count().await,
            1,
            "a refused request started relays"
        );

        // Control's own identity is heard.
        let control = server::control::endpoint(
            &url,
            Some(&stack.state.tls_dir_of(identity::Role::Control)),
            identity::SUPERVISOR_NAME,
        )
        .expect("endpoint");
        let answer = client(control)
            .request_capacity(ask())
            .await
            .expect("control asks for relays")
            .into_inner();
        assert_eq!(answer.max_relays, 3);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_takes_heartbeats_and_ends_only_from_the_stacks_services() {
    use proto::control as pb;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("guarded", 30, 2000, 30, None, stop.clone())
            .await;
        let viewer = stack.watch(&id, Some(Duration::from_secs(4)), None, stop.clone());
        let control = stack.addr("control", Role::Grpc).await;
        let heartbeat = || pb::RelayHeartbeatRequest {
            relay_id: "relay-1".into(),
            addr: "203.0.113.9:4500".into(),
            server_name: identity::RELAY_NAME.into(),
            cert_sha256: "00".repeat(32),
            capacity: 1000,
            accepting: true,
            ..Default::default()
        };
        let end = || pb::EndStreamRequest {
            id: id.clone(),
            ingest_id: "ingest-1".into(),
        };

        // Plain HTTP/2, as before: no answer at all.
        let mut plain =
            server::control::client(&format!("http://{control}"), None).expect("client");
        let err = plain
            .end_stream(end())
            .await
            .expect_err("plain gRPC refused");
        println!("plain gRPC EndStream: {:?} {}", err.code(), err.message());
        assert_ne!(err.code(), tonic::Code::Ok);

        // TLS with the CA and no certificate: told why.
        let mut stranger = control_without_identity(&stack, control);
        let err = stranger
            .relay_heartbeat(heartbeat())
            .await
            .expect_err("a heartbeat without identity");
        println!(
            "RelayHeartbeat without identity: {:?} {}",
            err.code(),
            err.message()
        );
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains("client certificate"), "{err:?}");
        let err = stranger
            .end_stream(end())
            .await
            .expect_err("an end without identity");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        for call in ["ForgetRelay", "Join", "CreateStream"] {
            let err = match call {
                "ForgetRelay" => stranger
                    .forget_relay(pb::ForgetRelayRequest {
                        relay_id: "relay-1".into(),
                    })
                    .await
                    .map(|_| ()),
                "Join" => stranger
                    .join(pb::JoinRequest { stream: id.clone() })
                    .await
                    .map(|_| ()),
                _ => stranger
                    .create_stream(pb::CreateStreamRequest {
                        name: "fake".into(),
                        ingest_id: "ingest-1".into(),
                        protocol: String::new(),
                    })
                    .await
                    .map(|_| ()),
            }
            .expect_err(call);
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{call}: {err:?}");
        }

        // A service of the stack, but not one that may make this call.
        let as_gateway = stack.control_as(identity::Role::Gateway).await;
        let err = as_gateway
            .clone()
            .relay_heartbeat(heartbeat())
            .await
            .expect_err("a relay heartbeat from the gateway");
        println!(
            "RelayHeartbeat as the gateway: {:?} {}",
            err.code(),
            err.message()
        );
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        let err = stack
            .control_as(identity::Role::Relay)
            .await
            .end_stream(end())
            .await
            .expect_err("an end from a relay");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("ingest"), "{err:?}");

        // The stream is live, listed, and placed on the real relay.
        assert!(stack.listed("guarded").await, "the stream left the list");
        let join = as_gateway
            .clone()
            .join(pb::JoinRequest { stream: id.clone() })
            .await
            .expect("the gateway joins")
            .into_inner();
        assert_ne!(join.relay_addr, "203.0.113.9:4500", "{join:?}");
        let watched = viewer.await.expect("viewer task").expect("viewer");
        println!(
            "viewer meanwhile: {} frames, {:?}",
            watched.frames, watched.end_reason
        );
        assert_eq!(watched.end_reason, EndReason::Duration, "{watched:?}");
        assert!(watched.frames >= 90, "{watched:?}");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

/// Every file a container sees through its mounts: its path inside the container, and its
/// content.
async fn mounted_files(
    docker: &bollard::Docker,
    container: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let info = docker
        .inspect_container(container, None)
        .await
        .expect("inspect");
    let mut files = std::collections::BTreeMap::new();
    for mount in info.mounts.unwrap_or_default() {
        let (Some(source), Some(target)) = (mount.source, mount.destination) else {
            continue;
        };
        let source = std::path::PathBuf::from(source);
        let mut todo = vec![(source, target)];
        while let Some((host, inside)) = todo.pop() {
            if host.is_dir() {
                for entry in std::fs::read_dir(&host).expect("read dir") {
                    let entry = entry.expect("entry");
                    let name = entry.file_name().to_string_lossy().into_owned();
                    todo.push((entry.path(), format!("{inside}/{name}")));
                }
            } else {
                files.insert(inside, std::fs::read(&host).expect("read"));
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_each_container_sees_only_its_own_secrets_and_never_the_ca_key() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    tokio::time::timeout(Duration::from_secs(240), async {
        let stack = Stack::up_on("docker", &["--relays", "1"]);
        let docker = orchestrator::runtime::docker::connect()
            .await
            .expect("docker");
        let stack_id = orchestrator::runtime::docker::stack_id(&stack.state);
        let ca_key = std::fs::read(stack.state.pki().ca_key()).expect("the CA key");
        let tls = |names: &[&str]| -> Vec<String> {
            names
                .iter()
                .map(|n| format!("/run/ghost/tls/{n}"))
                .collect()
        };
        let expected: [(&str, Vec<String>); 4] = [
            (
                "control",
                [
                    vec!["/run/ghost/ticket.key".to_string()],
                    tls(&[
                        "ca.pem",
                        "client.key",
                        "client.pem",
                        "server.key",
                        "server.pem",
                    ]),
                ]
                .concat(),
            ),
            (
                "ingest",
                tls(&[
                    "ca.pem",
                    "client.key",
                    "client.pem",
                    "server.key",
                    "server.pem",
                ]),
            ),
            (
                "relay-1",
                [
                    vec!["/run/ghost/ticket.key".to_string()],
                    tls(&[
                        "ca.pem",
                        "client.key",
                        "client.pem",
                        "relay.key",
                        "relay.pem",
                    ]),
                ]
                .concat(),
            ),
            ("gateway", tls(&["ca.pem", "client.key", "client.pem"])),
        ];
        let mut keys_seen: Vec<(String, String, Vec<u8>)> = Vec::new();
        for (service, want) in &expected {
            let container = format!("ghost-{stack_id}-{service}");
            let files = mounted_files(&docker, &container).await;
            let mut got: Vec<String> = files
                .keys()
                .filter(|p| !p.starts_with("/run/ghost/keys/"))
                .cloned()
                .collect();
            got.sort();
            println!("{service} sees {got:?}");
            assert_eq!(&got, want, "{service}");
            for (path, content) in files {
                assert_ne!(content, ca_key, "{service} sees the CA key at {path}");
                if String::from_utf8_lossy(&content).contains("PRIVATE KEY") {
                    keys_seen.push((service.to_string(), path, content));
                }
            }
        }
        // No private key is in two containers (the ticket key is shared by control and
        // relays on purpose, and is no certificate's).
        for (i, (a, path_a, key_a)) in keys_seen.iter().enumerate() {
            for (b, path_b, key_b) in &keys_seen[i + 1..] {
                assert!(key_a != key_b, "{a}'s {path_a} is also {b}'s {path_b}");
            }
        }

        // And the stack works on these identities: relays subscribe at ingest, everyone
        // reaches control.
        stack.plays("contained").await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_of_the_earlier_layout_is_moved_over_and_works() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // What an earlier `ghost up` left: the CA key beside the CA in tls/, one server
        // certificate for ingest and relays, the relays' own, the ticket key.
        let dir = tempfile::Builder::new()
            .prefix("ghost-test-")
            .tempdir()
            .expect("temp dir");
        let tls_dir = dir.path().join("tls");
        std::fs::create_dir_all(&tls_dir).expect("tls dir");
        let old = identity::generate().expect("an earlier CA and server certificate");
        for (name, text) in [
            ("ca.pem", old.ca.clone()),
            ("ca.key", old.ca_key.clone()),
            ("server.pem", format!("{}{}", old.cert, old.ca)),
            ("server.key", old.key.clone()),
        ] {
            std::fs::write(tls_dir.join(name), text).expect("old file");
        }
        std::fs::write(dir.path().join("ticket.key"), [7u8; 32]).expect("ticket key");

        let stack = Stack::up_in(dir, "process", &["--relays", "1"], &[]);
        let pki = stack.state.pki();
        assert!(
            !tls_dir.join("ca.key").exists(),
            "the CA key is still in tls/"
        );
        assert_eq!(
            std::fs::read_to_string(pki.ca_key()).expect("moved CA key"),
            old.ca_key
        );
        assert_eq!(
            std::fs::read_to_string(pki.ca()).expect("ca.pem"),
            old.ca,
            "the CA clients were given is kept"
        );
        for gone in ["server.pem", "server.key"] {
            assert!(!tls_dir.join(gone).exists(), "{gone} is still shared");
        }
        // The stack works on the new identities, and a publisher holding the old ca.pem
        // still verifies ingest.
        stack.plays("upgraded").await;
    })
    .await
    .expect("test timed out");
}
