//! A lab leaves nothing behind: no device in the host's interface list and no namespace that
//! any process can still reach, after a drop and after its process is killed outright.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set on the copy of this test binary that holds a lab until it is killed.
const HOLD: &str = "NETLAB_TEST_HOLD_A_LAB";

/// A host device as `ip link` shows it: index and name. Labs side by side reuse names (the
/// kernel numbers them from the lowest free one) but not indices, so a check needs both.
type Device = (u32, String);

/// The host device named `name`, from the kernel's list.
fn device(name: &str) -> Device {
    let index = std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))
        .expect("the lab's device is listed")
        .trim()
        .parse()
        .expect("an interface index");
    (index, name.to_owned())
}

/// Whether the host's interface list, as `ip link` prints it, still shows `device`.
fn device_listed((index, name): &Device) -> bool {
    let shown = format!("{index}: {name}:");
    let listed = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.starts_with(&shown))
        })
        .unwrap_or(false);
    // Without iproute2, the kernel's own list tells the same.
    let in_sysfs = std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))
        .is_ok_and(|found| found.trim() == index.to_string());
    listed || in_sysfs
}

/// Whether any thread or open descriptor on the machine still refers to the namespace whose
/// link text (`net:[inode]`) is `namespace`.
fn namespace_reachable(namespace: &str) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    let links = |dir: &Path, sub: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join(sub))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    processes.flatten().any(|process| {
        let pid = process.path();
        let threads = links(&pid, "task")
            .into_iter()
            .map(|task| task.join("ns/net"));
        let descriptors = links(&pid, "fd").into_iter();
        threads
            .chain(descriptors)
            .any(|link| std::fs::read_link(link).is_ok_and(|to| to.as_os_str() == namespace))
    })
}

/// The lab's namespace as a link text, `net:[inode]`.
fn namespace_of(lab: &netlab::Lab) -> String {
    lab.run(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .expect("enter the lab")
        .expect("read the namespace link")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn drop_removes_devices_and_namespace() {
    let Some(lab) = common::lab("rtt=10ms") else {
        return;
    };
    let device = device(lab.host_device());
    let namespace = namespace_of(&lab);
    assert!(device_listed(&device), "{device:?} while the lab runs");
    assert!(
        namespace_reachable(&namespace),
        "{namespace} while the lab runs"
    );
    // A socket made in the lab holds the namespace too, until it closes.
    let socket = lab
        .udp_socket((Ipv4Addr::UNSPECIFIED, 0).into())
        .expect("a socket in the lab");
    drop(lab);
    assert!(!device_listed(&device), "{device:?} after drop");
    drop(socket);
    assert!(!namespace_reachable(&namespace), "{namespace} after drop");
}

/// Not a test on its own: the body of the process that
/// [`sigkill_leaves_nothing_behind`] starts and kills.
#[test]
fn hold_a_lab_until_killed() {
    if std::env::var_os(HOLD).is_none() {
        return;
    }
    let lab = common::lab("rtt=10ms").expect("the parent checked for root");
    let (index, name) = device(lab.host_device());
    println!("HOLDING {index} {name} {}", namespace_of(&lab));
    // The parent kills this process long before; the bound keeps a lost child from lingering.
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn sigkill_leaves_nothing_behind() {
    // Only to learn whether this machine can make a lab at all.
    if common::lab("none").is_none() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "hold_a_lab_until_killed", "--nocapture"])
        .env(HOLD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child's stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("HOLDING "))
        .expect("the child reports its lab");
    let mut words = line.split_whitespace().skip(1);
    let (Some(Ok(index)), Some(name), Some(namespace)) =
        (words.next().map(str::parse), words.next(), words.next())
    else {
        panic!("unexpected report: {line}");
    };
    let device = (index, name.to_owned());
    assert!(device_listed(&device), "{device:?} while the child runs");
    assert!(
        namespace_reachable(namespace),
        "{namespace} while the child runs"
    );
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    assert!(!device_listed(&device), "{device:?} after SIGKILL");
    assert!(!namespace_reachable(namespace), "{namespace} after SIGKILL");
}
