//! Transparent capture: the nftables rules a mesh proxy installs in its network
//! namespace so workloads' TCP reaches it unchanged, and reading a captured
//! connection's original destination.
//!
//! Node mode (in the node's namespace): TCP from a local meshed workload is redirected
//! to the outbound port; TCP to one (from anywhere else) to the inbound plaintext port.
//! Sidecar mode (in the pod's namespace): the pod's own outgoing TCP goes to the
//! outbound port, except the proxy's (marked) and loopback; incoming TCP, except to
//! the tunnel port, to the inbound plaintext port.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// The nftables table the rules live in.
pub const TABLE: &str = "gatehouse";
/// The packet mark of the proxy's own connections (as Istio's 1337).
pub const MARK: u32 = 0x539;

/// The proxy's ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub outbound: u16,
    pub inbound_plain: u16,
    pub tunnel: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            outbound: 15001,
            inbound_plain: 15006,
            tunnel: 15008,
        }
    }
}

fn set_line(name: &str, ty: &str, ips: &[&IpAddr]) -> String {
    if ips.is_empty() {
        return format!("  set {name} {{ type {ty}; }}\n");
    }
    let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    format!(
        "  set {name} {{ type {ty}; elements = {{ {} }} }}\n",
        list.join(", ")
    )
}

/// The node-mode ruleset for the local workloads `ips`.
pub fn node_ruleset(ips: &[IpAddr], ports: Ports) -> String {
    let (v4, v6): (Vec<&IpAddr>, Vec<&IpAddr>) = ips.iter().partition(|i| i.is_ipv4());
    let mut s = replace_prelude();
    s.push_str(&format!("table inet {TABLE} {{\n"));
    s.push_str(&set_line("workloads4", "ipv4_addr", &v4));
    s.push_str(&set_line("workloads6", "ipv6_addr", &v6));
    s.push_str(&format!(
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   ip saddr @workloads4 meta l4proto tcp redirect to :{o}\n\
         \x20   ip6 saddr @workloads6 meta l4proto tcp redirect to :{o}\n\
         \x20   ip daddr @workloads4 meta l4proto tcp redirect to :{i}\n\
         \x20   ip6 daddr @workloads6 meta l4proto tcp redirect to :{i}\n  }}\n}}\n",
        o = ports.outbound,
        i = ports.inbound_plain,
    ));
    s
}

/// The sidecar-mode ruleset.
pub fn sidecar_ruleset(ports: Ports) -> String {
    let mut s = replace_prelude();
    s.push_str(&format!(
        "table inet {TABLE} {{\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n\
         \x20   meta mark {MARK:#x} return\n\
         \x20   oifname \"lo\" return\n\
         \x20   meta l4proto tcp redirect to :{o}\n  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   tcp dport {t} return\n\
         \x20   meta l4proto tcp redirect to :{i}\n  }}\n}}\n",
        o = ports.outbound,
        i = ports.inbound_plain,
        t = ports.tunnel,
    ));
    s
}

/// Lines that make the table exist and then delete it, so the ruleset that follows
/// replaces it in one transaction.
fn replace_prelude() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Applies a ruleset with `nft -f -` (atomically: all or nothing).
pub fn apply(ruleset: &str) -> io::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Removes the rules (when the proxy stops).
pub fn remove() -> io::Result<()> {
    apply(&replace_prelude())
}

const SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination a redirected connection was addressed to.
pub fn original_dst(s: &tokio::net::TcpStream) -> io::Result<SocketAddr> {
    let fd = s.as_raw_fd();
    let local = s.local_addr()?;
    // SAFETY: getsockopt writes at most `len` bytes into the sockaddr we own, and the
    // fd is a live socket borrowed from `s`.
    unsafe {
        if local.is_ipv4() {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                &mut addr as *mut _ as *mut libc::c_void,
                &mut len,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(addr.sin_addr.s_addr).into(),
                u16::from_be(addr.sin_port),
            )))
        } else {
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                &mut addr as *mut _ as *mut libc::c_void,
                &mut len,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(SocketAddr::V6(SocketAddrV6::new(
                addr.sin6_addr.s6_addr.into(),
                u16::from_be(addr.sin6_port),
                0,
                0,
            )))
        }
    }
}

/// Marks a socket's packets (SO_MARK), so capture rules let them pass.
pub fn set_mark(s: &impl AsRawFd, mark: u32) -> io::Result<()> {
    let v = mark as libc::c_int;
    // SAFETY: setsockopt reads one c_int we own; the fd is a live socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rulesets_name_workloads_and_ports() {
        let r = node_ruleset(
            &[
                "10.1.1.10".parse().expect("ip"),
                "fd00::5".parse().expect("ip"),
            ],
            Ports::default(),
        );
        assert!(r.contains("elements = { 10.1.1.10 }"), "{r}");
        assert!(r.contains("elements = { fd00::5 }"), "{r}");
        assert!(r.contains("ip saddr @workloads4 meta l4proto tcp redirect to :15001"));
        assert!(r.contains("ip daddr @workloads4 meta l4proto tcp redirect to :15006"));
        let empty = node_ruleset(&[], Ports::default());
        assert!(
            empty.contains("set workloads4 { type ipv4_addr; }"),
            "{empty}"
        );
        let s = sidecar_ruleset(Ports::default());
        assert!(s.contains("meta mark 0x539 return"));
        assert!(s.contains("tcp dport 15008 return"));
    }
}
