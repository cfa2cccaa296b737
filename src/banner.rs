//! The start-up banner: where each listener is and a curl command to try on it.

use gatehouse_translate::Snapshot;
use std::fmt::Write;
use std::net::SocketAddr;

fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Text that tells a newcomer where to point curl.
pub fn banner(dir: &str, s: &Snapshot, admin: SocketAddr) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Gatehouse is serving {dir} (config v{}: {} Ingress, {} Gateway, {} HTTPRoute, {} routes)",
        s.version, s.summary.ingresses, s.summary.gateways, s.summary.http_routes, s.summary.routes
    );
    for p in &s.ports {
        let scheme = if p.tls.is_some() { "https" } else { "http" };
        let _ = writeln!(out, "  {scheme}://{}  ({})", p.addr, p.owners.join(", "));
        let target = reachable(p.addr);
        let mut shown = 0;
        for (_, section) in p.sections.entries() {
            for (host, _) in section.hosts.entries() {
                if shown == 3 {
                    break;
                }
                shown += 1;
                if host == "*" {
                    let _ = writeln!(out, "      curl -k {scheme}://{target}/");
                } else {
                    let h = host.replace('*', "demo");
                    let port = p.addr.port();
                    if p.tls.is_some() {
                        let _ = writeln!(
                            out,
                            "      curl -k --resolve {h}:{port}:127.0.0.1 https://{h}:{port}/"
                        );
                    } else {
                        let _ = writeln!(out, "      curl -H 'Host: {h}' http://{target}/");
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "  admin: http://{admin}/config  http://{admin}/metrics\n  dashboard: http://{}/dashboard",
        reachable(admin)
    );
    for w in &s.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}
