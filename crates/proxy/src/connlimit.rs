//! Connection limits, checked when a connection is accepted (after a PROXY header has
//! named the real client): concurrent connections per client address and per listener,
//! and new connections per second per client address (GCRA, with a burst of one second's
//! worth). A connection over a limit is closed at once, before any TLS or HTTP work,
//! counted, and recorded as a security event (at most one per client address a second, so
//! a flood cannot flood the log too: `security_log::Throttle`).

use crate::dataplane::DataPlane;
use gatehouse_security::ratelimit::{Decision, Keys, Limiter, Quota};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The configured limits (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnLimits {
    pub per_ip: u32,
    pub per_listener: u32,
    pub new_per_ip_per_second: u32,
}

/// Live counts.
#[derive(Debug)]
pub struct ConnCounts {
    limits: ConnLimits,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    per_listener: Mutex<HashMap<SocketAddr, u32>>,
    new_conns: Option<Limiter>,
    keys: Keys,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerIp,
    PerListener,
    NewPerIp,
}

impl Refused {
    fn name(self) -> &'static str {
        match self {
            Refused::PerIp => "connections_per_ip",
            Refused::PerListener => "connections_per_listener",
            Refused::NewPerIp => "new_connections_per_ip",
        }
    }
}

/// Holds a connection's place in the counts; gives it back when dropped.
pub struct Admitted {
    counts: Arc<ConnCounts>,
    ip: IpAddr,
    listener: SocketAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let c = &self.counts;
        if c.limits.per_ip > 0 {
            release(&c.per_ip, &self.ip);
        }
        if c.limits.per_listener > 0 {
            release(&c.per_listener, &self.listener);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u32>>, key: &K) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = m.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            m.remove(key);
        }
    }
}

/// Takes a place under `limit` (0: unlimited); false if the count is at the limit.
fn take<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u32>>, key: K, limit: u32) -> bool {
    if limit == 0 {
        return true;
    }
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    let n = m.entry(key).or_insert(0);
    if *n >= limit {
        return false;
    }
    *n += 1;
    true
}

impl ConnCounts {
    pub fn new(limits: ConnLimits) -> ConnCounts {
        let per_second = |n: u32| {
            Limiter::new(Quota {
                requests: n,
                period: Duration::from_secs(1),
                burst: n,
            })
        };
        ConnCounts {
            limits,
            per_ip: Mutex::default(),
            per_listener: Mutex::default(),
            new_conns: (limits.new_per_ip_per_second > 0)
                .then(|| per_second(limits.new_per_ip_per_second)),
            keys: Keys::default(),
        }
    }

    fn key(&self, ip: IpAddr) -> u64 {
        self.keys.of_address(ip)
    }

    /// Admits a connection from `ip` on `listener`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, listener: SocketAddr) -> Result<Admitted, Refused> {
        if let Some(l) = &self.new_conns {
            if matches!(l.check(self.key(ip)), Decision::Deny { .. }) {
                return Err(Refused::NewPerIp);
            }
        }
        if !take(&self.per_ip, ip, self.limits.per_ip) {
            return Err(Refused::PerIp);
        }
        if !take(&self.per_listener, listener, self.limits.per_listener) {
            if self.limits.per_ip > 0 {
                release(&self.per_ip, &ip);
            }
            return Err(Refused::PerListener);
        }
        Ok(Admitted {
            counts: self.clone(),
            ip,
            listener,
        })
    }
}

/// Admits an accepted connection under the data plane's limits: its place (None when
/// no limits are set), or Err if it is refused (counted and recorded; the caller drops
/// it).
pub fn admit(
    dp: &DataPlane,
    peer: SocketAddr,
    listener: SocketAddr,
) -> Result<Option<Admitted>, Refused> {
    let Some(counts) = dp.conn_limits.as_ref() else {
        return Ok(None);
    };
    match counts.admit(peer.ip(), listener) {
        Ok(a) => Ok(Some(a)),
        Err(refused) => {
            dp.metrics
                .counters
                .connections_refused_total
                .fetch_add(1, Relaxed);
            if dp.event_throttle.allow(peer.ip()) {
                let event = serde_json::json!({
                    "time": crate::security_log::now_ms(),
                    "event": "connection_refused",
                    "client": peer.ip().to_string(),
                    "listener": listener.to_string(),
                    "limit": refused.name(),
                    "action": "close",
                });
                crate::security_log::event(dp, event);
            }
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_and_new_connection_limits() {
        let counts = Arc::new(ConnCounts::new(ConnLimits {
            per_ip: 2,
            per_listener: 3,
            new_per_ip_per_second: 0,
        }));
        let l: SocketAddr = "127.0.0.1:80".parse().expect("addr");
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let a1 = counts.admit(a, l).expect("first");
        let _a2 = counts.admit(a, l).expect("second");
        assert_eq!(counts.admit(a, l).err(), Some(Refused::PerIp));
        let _b1 = counts.admit(b, l).expect("another address");
        assert_eq!(counts.admit(b, l).err(), Some(Refused::PerListener));
        drop(a1);
        let _b2 = counts.admit(b, l).expect("a place came free");

        let rate = Arc::new(ConnCounts::new(ConnLimits {
            new_per_ip_per_second: 3,
            ..Default::default()
        }));
        let held: Vec<_> = (0..3)
            .map(|_| rate.admit(a, l).expect("within the rate"))
            .collect();
        assert_eq!(rate.admit(a, l).err(), Some(Refused::NewPerIp));
        assert!(rate.admit(b, l).is_ok());
        drop(held);
    }
}
