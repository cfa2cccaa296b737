//! IP access lists: allow and deny CIDRs (IPv4 and IPv6) decided by longest-prefix
//! match. The most specific listed network that holds the address decides; an address
//! in none of them is allowed if the list allows nothing explicitly, else denied (an
//! allow list is a default-deny list). Lookup is one hash probe per distinct prefix
//! length in use, longest first: real lists use a handful of lengths, so a lookup stays
//! a few probes however many entries there are.
//!
//! Also the client address behind trusted proxies: `X-Forwarded-For` is read from the
//! right, skipping the addresses of trusted proxies, and the first untrusted one is the
//! client; if the connection itself does not come from a trusted proxy, the header is
//! not believed at all.

use rustc_hash::FxHashMap;
use std::net::IpAddr;

/// What a listed network says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allow,
    Deny,
}

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, len })
    }
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4 address is never in an IPv6 network,
    /// nor the other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u32::from(n) as u128, 32, self.len) == mask(u32::from(a) as u128, 32, self.len)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                mask(u128::from(n), 128, self.len) == mask(u128::from(a), 128, self.len)
            }
            _ => false,
        }
    }
}

/// One address family's networks, by prefix length, each with a value.
#[derive(Debug)]
struct Family<V> {
    /// Prefix lengths in use, longest first.
    lengths: Vec<u8>,
    by_length: FxHashMap<u8, FxHashMap<u128, V>>,
}

impl<V> Default for Family<V> {
    fn default() -> Self {
        Family {
            lengths: Vec::new(),
            by_length: FxHashMap::default(),
        }
    }
}

impl<V: Copy> Family<V> {
    /// Lists a network; `merge` decides between two values for the very same one.
    fn insert(&mut self, bits: u128, width: u8, len: u8, value: V, merge: fn(V, V) -> V) {
        let key = mask(bits, width, len);
        let table = self.by_length.entry(len).or_default();
        table
            .entry(key)
            .and_modify(|old| *old = merge(*old, value))
            .or_insert(value);
        if !self.lengths.contains(&len) {
            self.lengths.push(len);
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// The value of the longest listed network holding the address that `keep` keeps.
    fn lookup_where(&self, bits: u128, width: u8, keep: impl Fn(V) -> bool) -> Option<V> {
        self.lengths.iter().find_map(|&len| {
            self.by_length
                .get(&len)
                .and_then(|t| t.get(&mask(bits, width, len)))
                .copied()
                .filter(|v| keep(*v))
        })
    }
}

/// A network as (address bits, address width, prefix length), an IPv4-mapped IPv6
/// network as the IPv4 one it is.
fn normal(c: &Cidr) -> (u128, u8, u8) {
    let (bits, width, v4) = split(c.addr);
    let len = if v4 && c.addr.is_ipv6() {
        c.len.saturating_sub(96)
    } else {
        c.len
    };
    (mask(bits, width, len), width, len)
}

/// Both families' networks, an address of either looked up in its own.
#[derive(Debug)]
struct Networks<V> {
    v4: Family<V>,
    v6: Family<V>,
}

impl<V> Default for Networks<V> {
    fn default() -> Self {
        Networks {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

impl<V: Copy> Networks<V> {
    fn insert(&mut self, c: &Cidr, value: V, merge: fn(V, V) -> V) {
        let (bits, width, len) = normal(c);
        let family = if width == 32 {
            &mut self.v4
        } else {
            &mut self.v6
        };
        family.insert(bits, width, len, value, merge);
    }

    fn lookup(&self, addr: IpAddr) -> Option<V> {
        self.lookup_where(addr, |_| true)
    }

    fn lookup_where(&self, addr: IpAddr, keep: impl Fn(V) -> bool) -> Option<V> {
        let (bits, width, v4) = split(addr);
        let family = if v4 { &self.v4 } else { &self.v6 };
        family.lookup_where(bits, width, keep)
    }
}

/// The first `len` bits of an address `width` bits wide.
fn mask(bits: u128, width: u8, len: u8) -> u128 {
    let len = len.min(width);
    if len == 0 {
        return 0;
    }
    let drop = u32::from(width - len);
    (bits >> drop) << drop
}

fn split(addr: IpAddr) -> (u128, u8, bool) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            // An IPv4 client on a dual-stack socket is an IPv4 client.
            Some(v4) => (u128::from(u32::from(v4)), 32, true),
            None => (u128::from(a), 128, false),
        },
    }
}

/// An access list.
#[derive(Debug, Default)]
pub struct AccessList {
    networks: Networks<Access>,
    /// Some network is explicitly allowed: unlisted addresses are denied.
    default_deny: bool,
    entries: usize,
}

impl AccessList {
    pub fn new(allow: &[Cidr], deny: &[Cidr]) -> AccessList {
        let mut l = AccessList {
            default_deny: !allow.is_empty(),
            ..Default::default()
        };
        // Deny wins over allow for the very same network.
        let merge = |old: Access, new: Access| match new {
            Access::Deny => Access::Deny,
            Access::Allow => old,
        };
        for (list, access) in [(allow, Access::Allow), (deny, Access::Deny)] {
            for c in list {
                l.networks.insert(c, access, merge);
                l.entries += 1;
            }
        }
        l
    }

    /// The verdict for `addr`.
    pub fn check(&self, addr: IpAddr) -> Access {
        match self.networks.lookup(addr) {
            Some(a) => a,
            None if self.default_deny => Access::Deny,
            None => Access::Allow,
        }
    }

    /// Networks listed.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

/// Blocked networks, each until a time: the longest listed network holding an address
/// decides, and a block whose time has passed blocks nothing (whoever lists them
/// removes it later).
#[derive(Debug, Default)]
pub struct BlockList {
    /// Index of the entry of each network (of two for one network, the later-ending).
    networks: Networks<usize>,
    /// Each block's end, in milliseconds since the Unix epoch (`u64::MAX`: none).
    until: Vec<u64>,
}

impl BlockList {
    /// Blocks in order: `(network, end)`; a lookup names a block by its place here.
    pub fn new(blocks: &[(Cidr, u64)]) -> BlockList {
        // Of two blocks of the very same network, the later-ending one counts.
        let mut best: FxHashMap<(u128, u8, u8), usize> = FxHashMap::default();
        for (i, (c, until)) in blocks.iter().enumerate() {
            best.entry(normal(c))
                .and_modify(|j| {
                    if blocks[*j].1 < *until {
                        *j = i
                    }
                })
                .or_insert(i);
        }
        let mut networks = Networks::default();
        for &i in best.values() {
            networks.insert(&blocks[i].0, i, |_, b| b);
        }
        BlockList {
            networks,
            until: blocks.iter().map(|(_, u)| *u).collect(),
        }
    }

    /// The block holding `addr` at `now_ms`, by its place in the list given to `new`.
    pub fn check(&self, addr: IpAddr, now_ms: u64) -> Option<usize> {
        // An ended block of a narrower network does not hide a wider one in force.
        self.networks
            .lookup_where(addr, |i| self.until.get(i).is_some_and(|&u| u > now_ms))
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// Which proxies' `X-Forwarded-For` is believed.
#[derive(Debug, Default)]
pub struct TrustedProxies {
    list: AccessList,
}

impl TrustedProxies {
    pub fn new(trusted: &[Cidr]) -> TrustedProxies {
        TrustedProxies {
            list: AccessList::new(trusted, &[]),
        }
    }

    /// Whether `addr` is one of the trusted proxies.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        !self.list.is_empty() && self.list.check(addr) == Access::Allow
    }

    /// The client: `peer`, or if it is a trusted proxy, the rightmost address of the
    /// `X-Forwarded-For` values (in order) that is not a trusted proxy. An unparsable
    /// entry stops the walk at the address that added it.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded_for
            .rev()
            .flat_map(|v| v.rsplit(|&b| b == b','))
            .map(|h| {
                std::str::from_utf8(h)
                    .ok()
                    .map(str::trim)
                    .and_then(parse_hop)
            });
        for hop in hops {
            match hop {
                Some(addr) => {
                    client = addr;
                    if !self.trusts(addr) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_hop(h: &str) -> Option<IpAddr> {
    if let Ok(a) = h.parse() {
        return Some(a);
    }
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split_once(']').and_then(|(a, _)| a.parse().ok());
    }
    h.rsplit_once(':').and_then(|(a, _)| a.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn blocks_end_and_the_longest_decides() {
        let l = BlockList::new(&[
            ("10.0.0.0/8".parse().expect("cidr"), 1_000),
            ("10.1.2.3".parse().expect("cidr"), 5_000),
            ("2001:db8:1:2::/64".parse().expect("cidr"), u64::MAX),
            ("10.1.2.3".parse().expect("cidr"), 3_000),
        ]);
        assert_eq!(l.check(ip("10.9.9.9"), 500), Some(0));
        assert_eq!(l.check(ip("10.9.9.9"), 1_000), None, "ended");
        let wide = BlockList::new(&[
            ("10.0.0.0/8".parse().expect("cidr"), u64::MAX),
            ("10.1.2.3".parse().expect("cidr"), 1_000),
        ]);
        assert_eq!(
            wide.check(ip("10.1.2.3"), 2_000),
            Some(0),
            "an ended /32 does not hide the /8"
        );
        assert_eq!(l.check(ip("10.1.2.3"), 4_000), Some(1), "the later of two");
        assert_eq!(l.check(ip("::ffff:10.1.2.3"), 4_000), Some(1), "mapped");
        assert_eq!(l.check(ip("2001:db8:1:2:abcd::1"), 9_999_999), Some(2));
        assert_eq!(l.check(ip("2001:db8:1:3::1"), 0), None);
        assert_eq!(l.check(ip("192.0.2.1"), 0), None);
    }

    #[test]
    fn longest_prefix_decides() {
        let l = AccessList::new(
            &cidrs(&["10.0.0.0/8", "2001:db8::/32", "10.1.2.3"]),
            &cidrs(&["10.1.0.0/16", "2001:db8:bad::/48"]),
        );
        assert_eq!(l.check(ip("10.2.3.4")), Access::Allow);
        assert_eq!(l.check(ip("10.1.9.9")), Access::Deny);
        assert_eq!(
            l.check(ip("10.1.2.3")),
            Access::Allow,
            "a /32 inside the denied /16"
        );
        assert_eq!(
            l.check(ip("8.8.8.8")),
            Access::Deny,
            "an allow list denies the rest"
        );
        assert_eq!(l.check(ip("2001:db8::1")), Access::Allow);
        assert_eq!(l.check(ip("2001:db8:bad::1")), Access::Deny);
        assert_eq!(
            l.check(ip("::ffff:10.2.3.4")),
            Access::Allow,
            "v4-mapped is v4"
        );
        let deny_only = AccessList::new(&[], &cidrs(&["192.0.2.0/24"]));
        assert_eq!(deny_only.check(ip("192.0.2.7")), Access::Deny);
        assert_eq!(deny_only.check(ip("198.51.100.1")), Access::Allow);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn fifty_thousand_entries() {
        let deny: Vec<Cidr> = (0..50_000u32)
            .map(|i| Cidr {
                addr: IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i * 256)),
                len: 24,
            })
            .collect();
        let l = AccessList::new(&[], &deny);
        assert_eq!(l.len(), 50_000);
        assert_eq!(l.check(ip("11.0.0.5")), Access::Deny);
        assert_eq!(l.check(ip("11.0.195.80")), Access::Deny);
        assert_eq!(l.check(ip("12.0.0.1")), Access::Allow);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = TrustedProxies::new(&cidrs(&["10.0.0.0/8"]));
        let xff = |v: &'static [&'static str]| v.iter().map(|s| s.as_bytes());
        // An untrusted peer: its header is ignored.
        assert_eq!(
            t.client(ip("203.0.113.9"), xff(&["1.2.3.4"])),
            ip("203.0.113.9")
        );
        // Through two trusted proxies: the first untrusted address from the right.
        assert_eq!(
            t.client(ip("10.0.0.1"), xff(&["6.6.6.6, 1.2.3.4", "10.0.0.2"])),
            ip("1.2.3.4")
        );
        assert_eq!(
            t.client(ip("10.0.0.1"), xff(&["[2001:db8::7]:443"])),
            ip("2001:db8::7")
        );
        // Only trusted addresses: the leftmost.
        assert_eq!(t.client(ip("10.0.0.1"), xff(&["10.0.0.3"])), ip("10.0.0.3"));
        // Garbage stops the walk at the proxy that added it.
        assert_eq!(
            t.client(ip("10.0.0.1"), xff(&["1.2.3.4, junk"])),
            ip("10.0.0.1")
        );
        // Nobody trusted: the peer.
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), xff(&["1.2.3.4"])),
            ip("10.0.0.1")
        );
    }
}
