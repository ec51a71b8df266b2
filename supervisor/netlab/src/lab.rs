//! The lab: its namespace, its two TUN devices with their addresses and routes, and the thread
//! that runs the forwarder between them.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tun_rs::{AsyncDevice, DeviceBuilder, SyncDevice};

use crate::Impairment;
use crate::forward::{self, SharedStats, Stats};

/// Name pattern of the host-side device; the kernel fills in the number, so labs side by
/// side get different names.
const HOST_DEVICE: &str = "ghostlab%d";

/// Name of the viewers' device, alone in the lab's namespace.
const LAB_DEVICE: &str = "lab0";

/// Typical Ethernet MTU, so that the stack's packet sizes are those of a real network path
/// rather than loopback's 64 KiB.
const MTU: u16 = 1500;

/// First address of the benchmarking range (RFC 2544), 198.18.0.0/15, from which each lab
/// takes a pair of addresses.
const LAB_RANGE: u32 = u32::from_be_bytes([198, 18, 0, 0]);

/// Why a lab could not start or be entered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Making a network namespace or a TUN device was refused: the lab must run as root
    /// (or with CAP_NET_ADMIN).
    #[error("the network lab needs root (CAP_NET_ADMIN) to make its namespace and TUN devices")]
    NeedsRoot(#[source] io::Error),
    /// The kernel would not make the lab's network namespace.
    #[error("cannot make the lab's network namespace")]
    Namespace(#[source] io::Error),
    /// The kernel would not make or open a TUN device.
    #[error("cannot make the lab's {side} TUN device")]
    Tun {
        /// `host` or `lab`.
        side: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Setting up an address, route or link state over netlink failed.
    #[error("cannot {what}")]
    Netlink {
        /// The step that failed.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: rtnetlink::Error,
    },
    /// Writing a kernel setting failed.
    #[error("cannot set {setting}")]
    Sysctl {
        /// The setting, as `sysctl` names it.
        setting: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The lab's thread or its runtime could not be started.
    #[error("cannot start the lab's thread")]
    Thread(#[source] io::Error),
    /// The lab's thread ended before it was set up.
    #[error("the lab's thread ended while setting up")]
    SetupPanicked,
    /// A thread could not enter the lab's namespace.
    #[error("cannot enter the lab's network namespace")]
    Enter(#[source] io::Error),
}

/// A running lab: an anonymous network namespace whose traffic reaches the host's network
/// (the stack on 127.0.0.1) through the impaired path. Dropping it stops the forwarder and
/// removes its devices; the namespace goes with the last socket made in it.
#[derive(Debug)]
pub struct Lab {
    impairment: Impairment,
    namespace: OwnedFd,
    host_device: String,
    stats: Arc<SharedStats>,
    /// Dropping it tells the forwarder's thread to stop.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the lab's thread hands back once both devices are set up.
struct Ready {
    namespace: OwnedFd,
    host_device: String,
}

impl Lab {
    /// Makes the namespace and its devices and starts forwarding through `impairment`. The
    /// host side is the calling thread's network namespace. Blocks for the few milliseconds
    /// setup takes; callable from inside or outside a tokio runtime, since the lab runs on a
    /// thread and runtime of its own (whose clock a test's paused clock does not stop).
    pub fn start(impairment: Impairment) -> Result<Lab, Error> {
        let stats = Arc::new(SharedStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("netlab".into())
            .spawn({
                let stats = stats.clone();
                move || lab_thread(impairment, stats, ready_tx, stopped)
            })
            .map_err(Error::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(ready)) => Ok(Lab {
                impairment,
                namespace: ready.namespace,
                host_device: ready.host_device,
                stats,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                // The thread dropped its sender without a word: it panicked. Re-raise that
                // panic here, where the caller sees it.
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
                Err(Error::SetupPanicked)
            }
        }
    }

    /// The impairment this lab applies.
    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// The host-side TUN device's name (`ghostlab` and a number): what to look for in the
    /// host's interface list.
    pub fn host_device(&self) -> &str {
        &self.host_device
    }

    /// Counts of what the path did so far, per direction.
    pub fn stats(&self) -> Stats {
        Stats {
            to_stack: self.stats.to_stack.snapshot(),
            to_viewers: self.stats.to_viewers.snapshot(),
        }
    }

    /// Runs `f` on a thread inside the lab's namespace and returns what it returns. Sockets it
    /// opens belong to the namespace for good, whichever thread uses them afterwards, so this
    /// is how to build clients whose traffic crosses the impaired path.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.namespace, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| Error::Enter(errno.into()))?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A UDP socket bound to `bind` inside the lab, non-blocking so that tokio or a QUIC
    /// endpoint can take it as it is. Bind to `0.0.0.0:0`: loopback is down in the lab, so
    /// 127.0.0.1 is not one of its addresses.
    pub fn udp_socket(&self, bind: SocketAddr) -> io::Result<UdpSocket> {
        let socket = self
            .run(|| UdpSocket::bind(bind))
            .map_err(io::Error::other)??;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// A TCP connection from inside the lab to `addr` (typically the stack's 127.0.0.1:PORT
    /// on the host), across the impaired path. Call it within a tokio runtime.
    pub async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = self
            .run(|| match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            })
            .map_err(io::Error::other)??;
        socket.connect(addr).await
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Closing the channel ends the forwarder; joining the thread closes both devices, so
        // when drop returns, the host's device is gone.
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the network lab's thread panicked");
        }
    }
}

/// The lab's thread: sets up both ends, reports, then forwards until told to stop. It owns
/// both devices, so they close (and the kernel removes them) when it returns.
fn lab_thread(
    impairment: Impairment,
    stats: Arc<SharedStats>,
    ready: std::sync::mpsc::Sender<Result<Ready, Error>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(Error::Thread(error)));
            return;
        }
    };
    runtime.block_on(async move {
        let (viewers, stack, namespace, host_device) = match set_up().await {
            Ok(made) => made,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        if ready
            .send(Ok(Ready {
                namespace,
                host_device: host_device.clone(),
            }))
            .is_err()
        {
            return;
        }
        tracing::debug!(device = %host_device, %impairment, "network lab started");
        tokio::select! {
            _ = stopped => {}
            result = forward::run(&viewers, &stack, &impairment, &stats) => {
                if let Err(error) = result {
                    tracing::error!(%error, device = %host_device, "network lab's forwarder failed");
                }
            }
        }
    });
}

/// Makes and configures both devices; returns the viewers' device, the stack's device, the
/// lab's namespace and the host device's name. Runs on the lab's thread, which starts in the
/// host's namespace and ends up in the lab's.
async fn set_up() -> Result<(AsyncDevice, AsyncDevice, OwnedFd, String), Error> {
    // The host side first, while this thread is still in the host's namespace.
    let stack = make_tun(HOST_DEVICE, "host")?;
    let host_index = stack
        .if_index()
        .map_err(|source| tun_error("host", source))?;
    let host_device = stack.name().map_err(|source| tun_error("host", source))?;
    // Interface indices are unique among the host's live devices, so each lab gets its own
    // pair out of the 65536 in the range.
    let pair = LAB_RANGE + 2 * (host_index % 65_536);
    let (host_addr, lab_addr) = (Ipv4Addr::from(pair), Ipv4Addr::from(pair + 1));
    let host = netlink()?;
    configure(&host, host_index, host_addr, lab_addr, 32).await?;
    allow_loopback_addresses(&host_device)?;

    // Then the lab: from here on this thread, and all it makes, is in the new namespace.
    unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| {
        let error = io::Error::from(errno);
        if error.kind() == io::ErrorKind::PermissionDenied {
            Error::NeedsRoot(error)
        } else {
            Error::Namespace(error)
        }
    })?;
    let namespace: OwnedFd = File::open("/proc/thread-self/ns/net")
        .map_err(Error::Namespace)?
        .into();
    let viewers = make_tun(LAB_DEVICE, "lab")?;
    let lab_index = viewers
        .if_index()
        .map_err(|source| tun_error("lab", source))?;
    let lab = netlink()?;
    // The default route: every IPv4 destination, 127.0.0.1 included (loopback stays down),
    // leaves through the impaired path.
    configure(&lab, lab_index, lab_addr, Ipv4Addr::UNSPECIFIED, 0).await?;
    allow_loopback_addresses(LAB_DEVICE)?;

    let viewers = AsyncDevice::new(viewers).map_err(|source| tun_error("lab", source))?;
    let stack = AsyncDevice::new(stack).map_err(|source| tun_error("host", source))?;
    Ok((viewers, stack, namespace, host_device))
}

/// A non-persistent TUN device (it goes when its descriptor closes) in this thread's
/// namespace, carrying bare IP packets.
fn make_tun(name: &str, side: &'static str) -> Result<SyncDevice, Error> {
    DeviceBuilder::new()
        .name(name)
        .mtu(MTU)
        .build_sync()
        .map_err(|source| tun_error(side, source))
}

fn tun_error(side: &'static str, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::PermissionDenied {
        Error::NeedsRoot(source)
    } else {
        Error::Tun { side, source }
    }
}

/// A netlink connection in this thread's current namespace, driven on this thread's runtime.
fn netlink() -> Result<Handle, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Thread)?;
    // The connection task ends with the runtime, which ends with the lab's thread.
    tokio::spawn(connection);
    Ok(handle)
}

/// Brings the device up with address `local`/32 and a route to `route`/`prefix` through it.
async fn configure(
    handle: &Handle,
    index: u32,
    local: Ipv4Addr,
    route: Ipv4Addr,
    prefix: u8,
) -> Result<(), Error> {
    let failed = |what| move |source| Error::Netlink { what, source };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(failed("bring a lab device up"))?;
    handle
        .address()
        .add(index, local.into(), 32)
        .execute()
        .await
        .map_err(failed("give a lab device its address"))?;
    // A route straight out of the device, with no gateway: the kernel's scope for that is
    // "link", as `ip route add … dev` gives it.
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route, prefix)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(failed("route through a lab device"))?;
    Ok(())
}

/// Lets the device carry packets from and to 127.0.0.0/8, which the kernel otherwise drops as
/// martian on any device but loopback; and turns IPv6 off on it, so the kernel's IPv6
/// chatter (router solicitations) does not cross the path.
fn allow_loopback_addresses(device: &str) -> Result<(), Error> {
    let setting = format!("net.ipv4.conf.{device}.route_localnet");
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{device}/route_localnet"),
        "1",
    )
    .map_err(|source| Error::Sysctl { setting, source })?;
    // A kernel without IPv6 has no such setting, and nothing to silence.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6"),
        "1",
    );
    Ok(())
}
