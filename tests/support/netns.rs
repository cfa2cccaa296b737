//! A two-node cluster network on one machine, made of network namespaces: a bridge in
//! the test's own namespace joins two "node" namespaces; each node has a bridge of its
//! own for its "pod" namespaces, routes to the other node's pods, and forwards. All of
//! it is removed when the value is dropped.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `ip` (or any command) and panics with its output if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err()
            && Command::new(tool).arg("--version").output().is_err()
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

pub struct Pod {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub node: usize,
}

pub struct Cluster {
    pub tag: String,
    pub bridge: String,
    /// The test namespace's address on the node network (where the controller listens).
    pub host_ip: Ipv4Addr,
    /// Node namespaces and their addresses.
    pub nodes: Vec<(String, Ipv4Addr)>,
    pub pods: Vec<Pod>,
}

impl Cluster {
    /// Two nodes (`10.250.K.1`, `.2`), with pods `10.251.K.10+i` on node 1 and
    /// `10.252.K.10+i` on node 2; `k` keeps concurrent tests apart.
    pub fn new(k: u8, pods_per_node: usize) -> Cluster {
        let tag = format!("gh{}{k}", std::process::id() % 10000);
        let bridge = format!("{tag}br");
        let host_ip = Ipv4Addr::new(10, 250, k, 254);
        let mut c = Cluster {
            tag: tag.clone(),
            bridge: bridge.clone(),
            host_ip,
            nodes: Vec::new(),
            pods: Vec::new(),
        };
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &bridge,
        ]);
        sh(&["ip", "link", "set", &bridge, "up"]);
        for n in 1..=2u8 {
            let ns = format!("{tag}-n{n}");
            let ip = Ipv4Addr::new(10, 250, k, n);
            sh(&["ip", "netns", "add", &ns]);
            c.nodes.push((ns.clone(), ip));
            let host_end = format!("{tag}n{n}");
            sh(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            sh(&["ip", "link", "set", &host_end, "master", &bridge, "up"]);
            let x = |args: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", &ns];
                v.extend_from_slice(args);
                sh(&v);
            };
            x(&["ip", "link", "set", "lo", "up"]);
            x(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            x(&["ip", "link", "set", "eth0", "up"]);
            x(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
            x(&["ip", "link", "add", "cbr0", "type", "bridge"]);
            x(&[
                "ip",
                "addr",
                "add",
                &format!("10.{}.{k}.1/24", 250 + n),
                "dev",
                "cbr0",
            ]);
            x(&["ip", "link", "set", "cbr0", "up"]);
            // The test's namespace reaches the node's pods through the node (a sidecar
            // calls the CA from its pod's address).
            sh(&[
                "ip",
                "route",
                "add",
                &format!("10.{}.{k}.0/24", 250 + n),
                "via",
                &ip.to_string(),
            ]);
            let other = 3 - n;
            x(&[
                "ip",
                "route",
                "add",
                &format!("10.{}.{k}.0/24", 250 + other),
                "via",
                &format!("10.250.{k}.{other}"),
            ]);
            for i in 0..pods_per_node {
                let pod_ns = format!("{tag}-n{n}p{i}");
                let pod_ip = Ipv4Addr::new(10, 250 + n, k, 10 + i as u8);
                sh(&["ip", "netns", "add", &pod_ns]);
                let node_end = format!("p{i}");
                x(&[
                    "ip", "link", "add", &node_end, "type", "veth", "peer", "name", "eth0",
                    "netns", &pod_ns,
                ]);
                x(&["ip", "link", "set", &node_end, "master", "cbr0", "up"]);
                let p = |args: &[&str]| {
                    let mut v = vec!["ip", "netns", "exec", &pod_ns];
                    v.extend_from_slice(args);
                    sh(&v);
                };
                p(&["ip", "link", "set", "lo", "up"]);
                p(&["ip", "addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"]);
                p(&["ip", "link", "set", "eth0", "up"]);
                p(&[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.{}.{k}.1", 250 + n),
                ]);
                c.pods.push(Pod {
                    ns: pod_ns,
                    ip: pod_ip,
                    node: n as usize,
                });
            }
        }
        c
    }

    /// Node `n`'s link to the node network (its veth end on the bridge).
    pub fn node_link(&self, n: usize) -> String {
        format!("{}n{n}", self.tag)
    }

    pub fn pod(&self, node: usize, i: usize) -> &Pod {
        self.pods
            .iter()
            .filter(|p| p.node == node)
            .nth(i)
            .expect("no such pod")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", &p.ns]).output();
        }
        for (i, (ns, _)) in self.nodes.iter().enumerate() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            // A namespace lives on while anything holds it: its links go now.
            let _ = Command::new("ip")
                .args(["link", "del", &self.node_link(i + 1)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns`; sockets it makes
/// live there.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Runs an async block to completion inside namespace `ns`.
pub fn block_on_in<T: Send + 'static, F>(ns: &str, f: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("thread in namespace panicked")
}

/// Starts a server inside `ns` that runs until the process ends (its namespace's
/// removal closes its sockets).
pub fn serve_in<F>(ns: &str, f: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    });
}
