//! A network namespace of a test's own, for a browser that must see a network other than the
//! host's: only the ports the test forwards into it, under firewall rules that exist in it
//! alone. It is anonymous (no name under `/run/netns`, no veth on the host): the kernel frees
//! it, rules included, once its handle is dropped and the processes in it are gone, so a failed
//! test leaves nothing behind and tests running beside it see no change to the host's network.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns, unshare};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// A network namespace with its loopback up and nothing else.
#[derive(Debug)]
pub struct Namespace {
    fd: OwnedFd,
}

impl Namespace {
    /// A new namespace, or why this machine cannot make one (making one takes root).
    pub fn new() -> Result<Namespace, String> {
        // Network namespaces belong to threads: a thread of its own moves into the new one,
        // leaving the test's threads where they are, and hands back a handle to it.
        std::thread::scope(|s| {
            s.spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot make a network namespace ({e}); it takes root"))?;
                let fd = File::open("/proc/thread-self/ns/net")
                    .map_err(|e| format!("cannot open the new network namespace: {e}"))?;
                let namespace = Namespace { fd: fd.into() };
                namespace.try_command("ip", &["link", "set", "lo", "up"], None)?;
                Ok(namespace)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `f` on a thread inside the namespace: the sockets it opens and the processes it
    /// starts are in there, and stay there after it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.fd, CloneFlags::CLONE_NEWNET).expect("enter the network namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `program` with `args` inside, `input` on its standard input; panics with its
    /// error output when it fails. Returns its standard output.
    pub fn command(&self, program: &str, args: &[&str], input: Option<&str>) -> String {
        self.run(|| self.try_command(program, args, input))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Namespace::command`], run from the calling thread's namespace.
    fn try_command(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, String> {
        let what = format!("{program} {}", args.join(" "));
        let mut child = Command::new(system_program(program))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.unwrap_or_default().as_bytes())
            .map_err(|e| format!("writing to {what}: {e}"))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {what}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Forwards TCP connections to `port` on the namespace's 127.0.0.1 to the same port on
    /// the host's, until the returned [`Forward`] is dropped.
    pub fn forward_tcp(&self, port: u16) -> Forward {
        let listener = self
            .run(|| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
            .expect("listen in the namespace");
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        Forward(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inside, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    let Ok(mut outside) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await
                    else {
                        return;
                    };
                    // Small writes (frames, WebSocket messages) go on at once, as they would
                    // without a forwarder in between.
                    let _ = inside.set_nodelay(true);
                    let _ = outside.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                });
                while connections.try_join_next().is_some() {}
            }
        }))
    }

    /// Forwards UDP datagrams to `port` on the namespace's 127.0.0.1 to the same port on the
    /// host's, and the answers back, one host socket per sender (a NAT's mapping), until the
    /// returned [`Forward`] is dropped.
    pub fn forward_udp(&self, port: u16) -> Forward {
        let inside = self
            .run(|| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)))
            .expect("bind in the namespace");
        inside.set_nonblocking(true).expect("non-blocking");
        let inside = Arc::new(UdpSocket::from_std(inside).expect("tokio socket"));
        Forward(tokio::spawn(async move {
            let mut senders: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut answers = JoinSet::new();
            let mut datagram = vec![0u8; 65_536];
            loop {
                let Ok((len, sender)) = inside.recv_from(&mut datagram).await else {
                    continue;
                };
                let outside = match senders.get(&sender) {
                    Some(outside) => outside.clone(),
                    None => {
                        let outside = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                            .await
                            .expect("bind on the host");
                        outside
                            .connect((Ipv4Addr::LOCALHOST, port))
                            .await
                            .expect("connect on the host");
                        let outside = Arc::new(outside);
                        let (from, to) = (outside.clone(), inside.clone());
                        answers.spawn(async move {
                            let mut answer = vec![0u8; 65_536];
                            while let Ok(len) = from.recv(&mut answer).await {
                                let _ = to.send_to(&answer[..len], sender).await;
                            }
                        });
                        senders.insert(sender, outside.clone());
                        outside
                    }
                };
                let _ = outside.send(&datagram[..len]).await;
            }
        }))
    }
}

/// `program` in the system directories where `ip` and `nft` live, which a user's `PATH` may
/// lack; else as `PATH` finds it.
fn system_program(program: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.exists())
        .unwrap_or_else(|| program.into())
}

/// A forwarder into a [`Namespace`]; it stops, with every connection it carries, when dropped.
pub struct Forward(JoinHandle<()>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A namespace for a test that also needs nftables (`nft`) in it; `None` lets the test skip
/// on a developer machine that cannot make one (not root, no `ip` or `nft`), and CI (which
/// sets `CI`, runs as root and installs both) fails instead.
pub fn with_nftables() -> Option<Namespace> {
    let made = Namespace::new().and_then(|namespace| {
        namespace
            .run(|| namespace.try_command("nft", &["--version"], None))
            .map(|_| namespace)
    });
    match made {
        Ok(namespace) => Some(namespace),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs a network namespace with nftables (root, iproute2, nftables): {why}"
            );
            eprintln!(
                "skipped: {why} (the test command installs iproute2 and nftables; run as root)"
            );
            None
        }
    }
}
