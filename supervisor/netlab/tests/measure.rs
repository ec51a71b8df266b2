//! The lab measures itself: servers on the host's 127.0.0.1, clients inside the lab, and the
//! round-trip time, loss and rate they see against what the lab was told to do.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netlab::Lab;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::timeout;

/// Bounds every await, so a broken path fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A UDP echo server on the host's 127.0.0.1; stops with the test's runtime.
async fn udp_echo() -> SocketAddr {
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the echo server");
    let addr = server.local_addr().expect("echo address");
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 2048];
        while let Ok((len, from)) = server.recv_from(&mut buffer).await {
            let _ = server.send_to(&buffer[..len], from).await;
        }
    });
    addr
}

/// A UDP socket in the lab, connected to `to`.
async fn lab_udp(lab: &Lab, to: SocketAddr) -> UdpSocket {
    let socket = lab
        .udp_socket((Ipv4Addr::UNSPECIFIED, 0).into())
        .expect("a socket in the lab");
    let socket = UdpSocket::from_std(socket).expect("tokio socket");
    socket.connect(to).await.expect("connect");
    socket
}

/// Sends `count` numbered probes from the lab to the echo server, `per_ms` every millisecond,
/// and waits `linger` after the last for answers. Returns each answered probe's round trip.
async fn probe(lab: &Lab, count: u32, per_ms: u32, linger: Duration) -> HashMap<u32, Duration> {
    let echo = udp_echo().await;
    let socket = lab_udp(lab, echo).await;
    let mut sent = Vec::with_capacity(count as usize);
    let mut answers = HashMap::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    let mut buffer = [0u8; 64];
    let mut next = 0u32;
    let mut stop_at = None;
    loop {
        tokio::select! {
            _ = ticks.tick(), if next < count => {
                for _ in 0..per_ms.min(count - next) {
                    sent.push(Instant::now());
                    socket.send(&next.to_be_bytes()).await.expect("send a probe");
                    next += 1;
                }
                if next == count {
                    stop_at = Some(tokio::time::Instant::now() + linger);
                }
            }
            received = socket.recv(&mut buffer) => {
                let len = received.expect("receive an answer");
                let seq = u32::from_be_bytes(buffer[..len.min(4)].try_into().expect("a probe number"));
                answers.insert(seq, sent[seq as usize].elapsed());
                if answers.len() == count as usize {
                    break;
                }
            }
            () = async {
                match stop_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => break,
        }
    }
    answers
}

fn median(mut samples: Vec<Duration>) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    samples[samples.len() / 2]
}

fn assert_near(measured: Duration, configured: Duration, what: &str) {
    let error = measured.as_secs_f64() / configured.as_secs_f64() - 1.0;
    eprintln!(
        "{what}: measured {measured:?}, configured {configured:?} ({error:+.1}%)",
        error = error * 100.0
    );
    assert!(
        error.abs() <= 0.10,
        "{what}: {measured:?} is not within 10% of {configured:?}"
    );
}

async fn udp_rtt(rtt_ms: u64) {
    let Some(lab) = common::lab(&format!("rtt={rtt_ms}ms")) else {
        return;
    };
    let rtt = Duration::from_millis(rtt_ms);
    let answers = timeout(PATIENCE, probe(&lab, 20, 1, rtt * 2))
        .await
        .expect("probing in time");
    assert_eq!(answers.len(), 20, "no loss configured");
    assert_near(
        median(answers.into_values().collect()),
        rtt,
        "UDP round trip",
    );
}

#[tokio::test]
async fn no_impairment_adds_little() {
    let Some(lab) = common::lab("none") else {
        return;
    };
    let answers = timeout(PATIENCE, probe(&lab, 20, 1, Duration::from_millis(100)))
        .await
        .expect("probing in time");
    assert_eq!(answers.len(), 20, "no loss configured");
    let rtt = median(answers.into_values().collect());
    eprintln!("UDP round trip through an unimpaired lab: {rtt:?}");
    assert!(rtt < Duration::from_millis(2), "{rtt:?}");
}

#[tokio::test]
async fn udp_round_trip_of_60ms() {
    udp_rtt(60).await;
}

#[tokio::test]
async fn udp_round_trip_of_100ms() {
    udp_rtt(100).await;
}

#[tokio::test]
async fn tcp_round_trip() {
    let Some(lab) = common::lab("rtt=60ms") else {
        return;
    };
    let rtt = Duration::from_millis(60);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("listen on the host");
    let addr = listener.local_addr().expect("listener address");
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).await.is_ok() {
            if stream.write_all(&byte).await.is_err() {
                break;
            }
        }
    });
    let exchange = async {
        let started = Instant::now();
        let mut stream = lab.tcp_connect(addr).await.expect("connect across the lab");
        // The handshake's SYN and SYN-ACK: one round trip.
        let handshake = started.elapsed();
        stream.set_nodelay(true).expect("nodelay");
        let mut trips = Vec::new();
        let mut byte = [7u8; 1];
        for _ in 0..7 {
            let started = Instant::now();
            stream.write_all(&byte).await.expect("write");
            stream.read_exact(&mut byte).await.expect("read");
            trips.push(started.elapsed());
        }
        (handshake, trips)
    };
    let (handshake, trips) = timeout(PATIENCE, exchange).await.expect("exchange in time");
    assert_near(handshake, rtt, "TCP handshake");
    assert_near(median(trips), rtt, "TCP request and answer");
}

#[tokio::test]
async fn random_loss_in_both_directions() {
    let Some(lab) = common::lab("rtt=10ms,loss=5%") else {
        return;
    };
    const PROBES: u32 = 4_000;
    let answers = timeout(PATIENCE, probe(&lab, PROBES, 8, Duration::from_millis(200)))
        .await
        .expect("probing in time");
    // Each direction loses 5% on its own, so a probe comes back with 0.95² ≈ 90.25% odds. Over
    // 4000 probes the round-trip loss's standard deviation is about 0.47 points; ±2 points is
    // over four of them.
    let round_trip = 1.0 - answers.len() as f64 / f64::from(PROBES);
    let stats = lab.stats();
    let one_way = |s: netlab::DirectionStats| s.lost as f64 / s.received as f64;
    eprintln!(
        "round-trip loss {:.2}% (expected 9.75%), to the stack {:.2}%, to the viewers {:.2}% \
         (configured 5%); {stats:?}",
        round_trip * 100.0,
        one_way(stats.to_stack) * 100.0,
        one_way(stats.to_viewers) * 100.0
    );
    assert!(
        (round_trip - 0.0975).abs() < 0.02,
        "round-trip loss {round_trip}"
    );
    // Per direction, over ~4000 and ~3800 packets: σ ≈ 0.35 points, ±1.5 points allowed.
    assert_eq!(stats.to_stack.received, u64::from(PROBES));
    assert!((one_way(stats.to_stack) - 0.05).abs() < 0.015);
    assert!((one_way(stats.to_viewers) - 0.05).abs() < 0.015);
    assert_eq!(
        stats.to_viewers.received, stats.to_stack.delivered,
        "every probe that reached the stack was answered"
    );
}

/// Sends `count` numbered datagrams one way, from the lab to the host, and returns which
/// arrived, in order of their numbers.
async fn one_way(lab: &Lab, count: u32) -> Vec<bool> {
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the receiver");
    let sender = lab_udp(lab, receiver.local_addr().expect("receiver address")).await;
    let mut arrived = vec![false; count as usize];
    let receive = async {
        let mut buffer = [0u8; 64];
        while let Ok(Ok(len)) =
            timeout(Duration::from_millis(300), receiver.recv(&mut buffer)).await
        {
            let seq = u32::from_be_bytes(buffer[..len.min(4)].try_into().expect("a number"));
            arrived[seq as usize] = true;
        }
    };
    let send = async {
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        for chunk in (0..count).collect::<Vec<_>>().chunks(10) {
            ticks.tick().await;
            for seq in chunk {
                sender.send(&seq.to_be_bytes()).await.expect("send");
            }
        }
    };
    timeout(PATIENCE, async { tokio::join!(send, receive) })
        .await
        .expect("one-way stream in time");
    arrived
}

/// Mean length of the runs of lost datagrams, and the share lost.
fn loss_runs(arrived: &[bool]) -> (f64, f64) {
    let lost = arrived.iter().filter(|a| !**a).count();
    let runs = arrived
        .iter()
        .enumerate()
        .filter(|(i, a)| !**a && (*i == 0 || arrived[i - 1]))
        .count();
    (
        lost as f64 / runs.max(1) as f64,
        lost as f64 / arrived.len() as f64,
    )
}

#[tokio::test]
async fn bursty_loss_comes_in_longer_runs_than_random_loss() {
    let (Some(random), Some(bursty)) = (common::lab("loss=5%"), common::lab("loss=5%,burst=8"))
    else {
        return;
    };
    const COUNT: u32 = 8_000;
    let (random, bursty) = tokio::join!(one_way(&random, COUNT), one_way(&bursty, COUNT));
    let (random_run, random_rate) = loss_runs(&random);
    let (burst_run, burst_rate) = loss_runs(&bursty);
    eprintln!(
        "random loss: {:.2}% in runs of {random_run:.2}; bursty loss (burst=8): {:.2}% in runs of {burst_run:.2}",
        random_rate * 100.0,
        burst_rate * 100.0
    );
    // Random loss at 5% has runs of 1/(1-0.05) ≈ 1.05 packets; bursts of mean 8 packets give
    // some 50 runs over 8000 packets, so their measured mean is noisy but far above 2.
    assert!(random_run < 1.5, "random loss runs of {random_run}");
    assert!(burst_run > 3.0, "bursty loss runs of {burst_run}");
    assert!(
        (random_rate - 0.05).abs() < 0.015,
        "random loss rate {random_rate}"
    );
    // Losses in bursts vary much more from run to run: σ is about 1 point here.
    assert!(
        (0.015..0.10).contains(&burst_rate),
        "bursty loss rate {burst_rate}"
    );
}

#[tokio::test]
async fn rate_cap_delivers_the_cap() {
    let Some(lab) = common::lab("rate=4mbit") else {
        return;
    };
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the receiver");
    let sender = lab_udp(&lab, receiver.local_addr().expect("receiver address")).await;
    // 1200 bytes every millisecond: about 9.8 Mbit/s of IP packets, well over the cap.
    const PAYLOAD: usize = 1200;
    const IP_SIZE: usize = PAYLOAD + 28;
    let send = async {
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..1_000 {
            ticks.tick().await;
            sender.send(&[0u8; PAYLOAD]).await.expect("send");
        }
    };
    let receive = async {
        let mut buffer = vec![0u8; 2048];
        let (mut first, mut last, mut count) = (None, None, 0u32);
        while let Ok(Ok(_)) = timeout(Duration::from_millis(300), receiver.recv(&mut buffer)).await
        {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            count += 1;
        }
        (first, last, count)
    };
    let (_, (first, last, count)) = timeout(PATIENCE, async { tokio::join!(send, receive) })
        .await
        .expect("stream in time");
    let (Some(first), Some(last)) = (first, last) else {
        panic!("nothing arrived");
    };
    // Bits after the first packet, over the time between the first arrival and the last.
    let rate = f64::from(count - 1) * (IP_SIZE * 8) as f64 / (last - first).as_secs_f64();
    let stats = lab.stats();
    eprintln!(
        "rate: {:.3} Mbit/s delivered (cap 4 Mbit/s), {count} packets; {stats:?}",
        rate / 1e6
    );
    assert!((rate / 4e6 - 1.0).abs() < 0.10, "delivered {rate} bit/s");
    assert!(stats.to_stack.overflowed > 0, "the queue overflowed");
}
