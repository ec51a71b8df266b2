//! A relay's `--congestion` reaches its viewers' connections: each controller quinn offers
//! runs the sending side of a real loopback connection, and media crosses it.

#![allow(missing_docs)]

mod common;

use std::any::Any;
use std::time::Duration;

use transport::quic::{self, Congestion, Windows};

use common::{Endpoints, Server};

fn is<T: Any>(controller: Box<dyn Any>) -> bool {
    controller.downcast::<T>().is_ok()
}

#[tokio::test]
async fn each_controller_runs_the_senders_side_and_carries_data() {
    tokio::time::timeout(Duration::from_secs(20), async {
        for congestion in [Congestion::Cubic, Congestion::NewReno, Congestion::Bbr] {
            let endpoints = Endpoints::new(
                Server::Relay,
                quic::ALPN_VIEW,
                Windows {
                    congestion,
                    ..Windows::SENDER
                },
                Windows::RECEIVER,
            );
            let (relay, viewer) = endpoints.connect().await;
            let controller = relay.congestion_state().into_any();
            let chosen = match congestion {
                Congestion::Cubic => is::<quinn::congestion::Cubic>(controller),
                Congestion::NewReno => is::<quinn::congestion::NewReno>(controller),
                Congestion::Bbr => is::<quinn::congestion::Bbr>(controller),
            };
            assert!(
                chosen,
                "{congestion}: another controller runs the connection"
            );

            // A megabyte of "media" from the relay to the viewer.
            let payload = vec![7u8; 1 << 20];
            let mut send = relay.open_uni().await.expect("open");
            let sending = async {
                send.write_all(&payload).await.expect("write");
                send.finish().expect("finish");
            };
            let receiving = async {
                let mut recv = viewer.accept_uni().await.expect("accept");
                recv.read_to_end(2 << 20).await.expect("read")
            };
            let ((), got) = tokio::join!(sending, receiving);
            assert_eq!(got.len(), payload.len(), "{congestion}");
            println!(
                "{congestion}: 1 MiB over loopback, cwnd {} bytes after",
                relay.stats().path.cwnd
            );
        }
    })
    .await
    .expect("in time");
}

#[test]
fn the_flag_takes_each_controller_by_name() {
    use clap::ValueEnum;
    for congestion in [Congestion::Cubic, Congestion::NewReno, Congestion::Bbr] {
        let parsed = Congestion::from_str(congestion.as_str(), false).expect("a name");
        assert_eq!(parsed, congestion);
        assert_eq!(congestion.to_string(), congestion.as_str());
    }
    assert!(Congestion::from_str("vegas", false).is_err());
}
