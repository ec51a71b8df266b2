//! Relay certificates browsers accept: short-lived, from the stack's CA, renewed while viewers
//! watch. A renewal reaches new viewers (the gateway hands out the new hash) and costs the
//! viewers already watching nothing.

mod common;

use std::time::{Duration, Instant, SystemTime};

use api::client::EndReason;
use clients::watch;
use common::{Stack, TEST_TIMEOUT};
use identity::RelayCert;
use tokio_util::sync::CancellationToken;

/// The relay's certificate hash, as the gateway hands it to a joining viewer.
async fn joined_hash(stack: &Stack, stream: &str) -> String {
    let join = watch::join(&stack.http, &stack.file.gateway_url, stream)
        .await
        .expect("join");
    join.cert_sha256
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_relay_certificate_reaches_new_viewers_and_spares_the_others() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up_with_env(
            "process",
            &["--relays", "1"],
            &[("GHOST_RELAY_CERT_CHECK", "200ms")],
        );
        let pki = stack.state.pki();
        let files = pki.files(identity::Role::Relay);
        let in_use = identity::Identity::load(&files.relay_cert, &files.relay_key)
            .expect("the relay certificate ghost up issued")
            .leaf_sha256();
        // The publisher's stop ends the stream; the viewers are never stopped: they end with it.
        let stop = CancellationToken::new();
        let viewers = CancellationToken::new();
        let (id, publisher) = stack
            .publish("renewed", 30, 2000, 30, None, stop.clone())
            .await;
        assert_eq!(joined_hash(&stack, &id).await, in_use);
        let watching = stack.watch(&id, None, None, viewers.clone());
        tokio::time::sleep(Duration::from_millis(1000)).await;

        // What the supervisor does a week before the end (here and now: a certificate issued
        // for a later date would not be valid yet, and browsers check that).
        pki.renew_relay(SystemTime::now()).expect("renew");
        let renewed = Instant::now();
        let next = loop {
            let hash = joined_hash(&stack, &id).await;
            if hash != in_use {
                break hash;
            }
            assert!(
                renewed.elapsed() < Duration::from_secs(10),
                "the new hash never came"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "certs: new hash in join answers {:.0} ms after the renewal",
            common::ms(renewed.elapsed())
        );

        // A viewer that trusts nothing but the hash it was given gets in: the relay presents
        // the new certificate to new connections.
        let pinned = watch::Options {
            gateway: stack.file.gateway_url.clone(),
            stream: id.clone(),
            ca: stack.dir.path().join("no-ca-here.pem"),
            duration: Some(Duration::from_secs(2)),
            read_delay: None,
            output: None,
            endpoint: None,
            http: stack.http.clone(),
            measure_from_us: None,
            clock_skew_us: 0,
            transport: watch::Transport::Native,
        };
        let s = watch::watch(pinned, stop.clone())
            .await
            .expect("pinned viewer");
        assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
        assert!(s.frames >= 30, "{s:?}");
        assert_eq!(
            identity::Identity::load(&files.relay_cert, &files.relay_key)
                .expect("load")
                .leaf_sha256(),
            next
        );

        // The viewer from before the renewal watched on, to the end of the stream.
        stop.cancel();
        let before = watching.await.expect("join").expect("viewer");
        assert_eq!(before.end_reason, EndReason::Ended, "{before:?}");
        assert_eq!(before.skipped_groups, 0, "{before:?}");
        println!(
            "certs: the viewer from before the renewal got {} frames, ended as {:?}",
            before.frames, before.end_reason
        );
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_certificate_is_served_and_not_pinned_by_browsers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // A certificate from a CA that is not the stack's, as a public CA's would be.
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let operator = identity::generate().expect("certificate");
        let (cert, key) = (
            elsewhere.path().join("live.pem"),
            elsewhere.path().join("live.key"),
        );
        std::fs::write(&cert, &operator.cert).expect("cert");
        std::fs::write(&key, &operator.key).expect("key");
        let mut stack = Stack::up(&[
            "--relays",
            "1",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("operator", 30, 2000, 30, None, stop.clone())
            .await;
        let join = watch::join(&stack.http, &stack.file.gateway_url, &id)
            .await
            .expect("join");
        assert!(join.cert_public, "{join:?}");
        assert!(
            stack.file.certificate.starts_with("the operator's"),
            "stack.json says {}",
            stack.file.certificate
        );
        let leaf = identity::Identity::load(&cert, &key)
            .expect("load")
            .leaf_sha256();
        assert_eq!(
            join.cert_sha256, leaf,
            "the operator's certificate is the one served"
        );

        // A native viewer on this host has the stack's CA, which did not issue this
        // certificate: it goes by the hash instead, and watches.
        let s = stack
            .watch(
                &id,
                Some(Duration::from_secs(2)),
                None,
                CancellationToken::new(),
            )
            .await
            .expect("join")
            .expect("viewer");
        assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
        assert!(s.frames >= 30, "{s:?}");
        // Renewal leaves it alone.
        assert_eq!(
            stack
                .state
                .pki()
                .ensure_relay(SystemTime::now() + Duration::from_secs(365 * 24 * 3600))
                .expect("check"),
            RelayCert::Operator
        );
        stop.cancel();
        let _ = publisher.await;

        // The next `ghost up` without --tls-cert serves the stack's own certificate again:
        // which certificate a stack uses is what its `up` said.
        let down = stack.ghost().arg("down").output().expect("ghost down");
        assert!(down.status.success(), "{down:?}");
        let again = stack
            .ghost()
            .args([
                "up",
                "-d",
                "--runtime",
                "process",
                "--ephemeral-ports",
                "--relays",
                "1",
            ])
            .output()
            .expect("ghost up");
        assert!(again.status.success(), "{again:?}");
        let said = String::from_utf8_lossy(&again.stdout);
        assert!(
            said.contains("certificate     the stack's own CA"),
            "{said}"
        );
        stack.file = stack.state.read().expect("stack file");
        let stop = CancellationToken::new();
        let (id, publisher) = stack.publish("own", 30, 2000, 30, None, stop.clone()).await;
        let join = watch::join(&stack.http, &stack.file.gateway_url, &id)
            .await
            .expect("join");
        assert!(
            !join.cert_public,
            "the operator's certificate stayed: {join:?}"
        );
        assert_ne!(join.cert_sha256, leaf);
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}
