//! Address arithmetic of the in-cluster IPAM provider: parse pool entries (IP, CIDR, `a-b`),
//! build the allocatable set, pick the lowest free address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// A pool's spec fields that drive allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSpec {
    pub addresses: Vec<String>,
    pub prefix: u8,
    pub gateway: Option<String>,
    pub excluded: Vec<String>,
    pub allocate_reserved: bool,
}

/// Inclusive ranges of addresses as integers (IPv4 in the low 32 bits).
#[derive(Debug, Clone, PartialEq)]
pub struct Allocatable {
    pub v6: bool,
    ranges: Vec<(u128, u128)>,
}

pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_int(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not a valid IP address"))
}

/// One pool entry as an inclusive range; the parser rule is: `-` ⇒ range, `/` ⇒ prefix, else one IP.
pub fn parse_entry(s: &str) -> Result<(u128, u128, bool), String> {
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (parse_ip(a)?, parse_ip(b)?);
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!("range {s:?} mixes IPv4 and IPv6"));
        }
        let (x, y) = (to_int(a), to_int(b));
        if x > y {
            return Err(format!("range {s:?} ends before it starts"));
        }
        Ok((x, y, a.is_ipv6()))
    } else if s.contains('/') {
        let net: IpNet = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR"))?;
        Ok((
            to_int(net.network()),
            to_int(net.broadcast()),
            matches!(net, IpNet::V6(_)),
        ))
    } else {
        let ip = parse_ip(s)?;
        Ok((to_int(ip), to_int(ip), ip.is_ipv6()))
    }
}

fn normalise(mut r: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    r.sort();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn subtract(ranges: Vec<(u128, u128)>, (x, y): (u128, u128)) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    for (a, b) in ranges {
        if y < a || x > b {
            out.push((a, b));
            continue;
        }
        if a < x {
            out.push((a, x - 1));
        }
        if b > y {
            out.push((y + 1, b));
        }
    }
    out
}

impl Allocatable {
    pub fn new(spec: &PoolSpec) -> Result<Allocatable, String> {
        let first = spec
            .addresses
            .first()
            .ok_or("addresses must not be empty")?;
        let (first_ip, _, v6) = parse_entry(first)?;
        let mut ranges = Vec::new();
        for a in &spec.addresses {
            let (x, y, fam) = parse_entry(a)?;
            if fam != v6 {
                return Err("addresses mix IPv4 and IPv6".into());
            }
            ranges.push((x, y));
        }
        let mut ranges = normalise(ranges);
        for e in &spec.excluded {
            let (x, y, _) = parse_entry(e)?;
            ranges = subtract(ranges, (x, y));
        }
        if !spec.allocate_reserved {
            let bits: u32 = if v6 { 128 } else { 32 };
            let prefix = u32::from(spec.prefix).min(bits);
            let host_bits = bits - prefix;
            let mask: u128 = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let network = first_ip & !mask;
            ranges = subtract(ranges, (network, network));
            if !v6 {
                let broadcast = network | mask;
                ranges = subtract(ranges, (broadcast, broadcast));
            }
        }
        if let Some(gw) = spec.gateway.as_deref().filter(|g| !g.is_empty()) {
            let g = to_int(parse_ip(gw)?);
            ranges = subtract(ranges, (g, g));
        }
        Ok(Allocatable { v6, ranges })
    }

    /// Number of allocatable addresses, capped at i64::MAX.
    pub fn total(&self) -> i64 {
        let sum = self
            .ranges
            .iter()
            .fold(0u128, |acc, (a, b)| acc.saturating_add(b - a + 1));
        sum.min(i64::MAX as u128) as i64
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv6() != self.v6 {
            return false;
        }
        let v = to_int(ip);
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&v))
    }

    /// The lowest allocatable address not in use (keys of `in_use`: addresses as integers).
    pub fn first_free<V>(&self, in_use: &BTreeMap<u128, V>) -> Option<IpAddr> {
        for (a, b) in &self.ranges {
            let mut c = *a;
            for (u, _) in in_use.range(*a..=*b) {
                if *u == c {
                    if c == *b {
                        break;
                    }
                    c += 1;
                } else {
                    break;
                }
            }
            if !in_use.contains_key(&c) {
                return Some(from_int(c, self.v6));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> BTreeMap<u128, usize> {
        ips.iter()
            .map(|x| (to_int(x.parse().unwrap()), 1))
            .collect()
    }

    fn spec(addresses: &[&str], prefix: u8) -> PoolSpec {
        PoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            prefix,
            ..Default::default()
        }
    }

    #[test]
    fn cidr_drops_network_broadcast_and_gateway() {
        let mut s = spec(&["10.0.0.0/29"], 29);
        s.gateway = Some("10.0.0.1".into());
        let a = Allocatable::new(&s).unwrap();
        assert_eq!(a.total(), 5, ".2-.6");
        assert_eq!(a.first_free(&set(&[])), Some("10.0.0.2".parse().unwrap()));
        assert!(!a.contains("10.0.0.7".parse().unwrap()));
        s.allocate_reserved = true;
        assert_eq!(
            Allocatable::new(&s).unwrap().total(),
            7,
            "only the gateway is removed"
        );
    }

    #[test]
    fn ranges_singles_and_exclusions_pick_lowest_free() {
        let mut s = spec(&["10.0.1.10-10.0.1.12", "10.0.1.5"], 24);
        s.excluded = vec!["10.0.1.11".into()];
        let a = Allocatable::new(&s).unwrap();
        assert_eq!(a.total(), 3);
        let used = set(&["10.0.1.5"]);
        assert_eq!(a.first_free(&used), Some("10.0.1.10".parse().unwrap()));
        let all = set(&["10.0.1.5", "10.0.1.10", "10.0.1.12"]);
        assert_eq!(a.first_free(&all), None, "exhausted");
    }

    #[test]
    fn ipv6_keeps_last_address_and_drops_anycast() {
        let a = Allocatable::new(&spec(&["fd00::/126"], 126)).unwrap();
        assert_eq!(a.total(), 3);
        assert_eq!(a.first_free(&set(&[])), Some("fd00::1".parse().unwrap()));
        assert!(a.contains("fd00::3".parse().unwrap()));
        assert!(Allocatable::new(&spec(&["10.0.0.1", "fd00::1"], 24)).is_err());
    }
}
