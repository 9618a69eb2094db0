//! The addresses a pool can hand out, computed as the in-cluster IPAM provider computes them
//! (`internal/poolutil.PoolSpecToIPSet`): the union of `spec.addresses` (single IPs, `first-last` ranges, CIDRs),
//! minus `spec.excludedAddresses`, minus the subnet's network address (and, for IPv4, its broadcast address) unless
//! `spec.allocateReservedIPAddresses`, minus `spec.gateway`. The subnet is the first address with `spec.prefix`.

use std::net::IpAddr;

use serde_json::Value;

/// A set of addresses of one family, as sorted disjoint inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressSet {
    v6: bool,
    ranges: Vec<(u128, u128)>,
}

fn num(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into())
    }
}

/// One `spec.addresses` entry as an inclusive range: `(is IPv6, first, last)`.
fn entry(s: &str) -> Result<(bool, u128, u128), String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let (fa, a) = num(a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a valid address range"))?);
        let (fb, b) = num(b
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a valid address range"))?);
        if fa != fb || a > b {
            return Err(format!("{s:?} is not a valid address range"));
        }
        return Ok((fa, a, b));
    }
    if let Some((a, len)) = s.split_once('/') {
        let (f, a) = num(a
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR"))?);
        let bits = if f { 128 } else { 32 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{s:?} is not a valid CIDR"))?;
        let host = if len == 0 {
            u128::MAX >> (128 - bits)
        } else {
            (1u128 << (bits - len)) - 1
        };
        let first = a & !host;
        return Ok((f, first, first | host));
    }
    let (f, a) = num(s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))?);
    Ok((f, a, a))
}

impl AddressSet {
    fn from_ranges(v6: bool, mut ranges: Vec<(u128, u128)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Self { v6, ranges: merged }
    }

    fn remove(&mut self, a: u128, b: u128) {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(x, y) in &self.ranges {
            if y < a || x > b {
                out.push((x, y));
                continue;
            }
            if x < a {
                out.push((x, a - 1));
            }
            if y > b {
                out.push((b + 1, y));
            }
        }
        self.ranges = out;
    }

    /// The allocatable addresses of an in-cluster pool `spec`; an error names what cannot be read.
    pub fn of_pool_spec(spec: &Value) -> Result<Self, String> {
        let list = |key: &str| -> Vec<String> {
            spec.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut v6 = None;
        let mut ranges = Vec::new();
        for s in list("addresses").iter().filter(|s| !s.trim().is_empty()) {
            let (f, a, b) = entry(s)?;
            if *v6.get_or_insert(f) != f {
                return Err("spec.addresses mixes IPv4 and IPv6".to_owned());
            }
            ranges.push((a, b));
        }
        let Some(v6) = v6 else {
            return Err("spec.addresses is empty".to_owned());
        };
        let mut set = Self::from_ranges(v6, ranges);
        for s in list("excludedAddresses")
            .iter()
            .filter(|s| !s.trim().is_empty())
        {
            let (f, a, b) = entry(s)?;
            if f == v6 {
                set.remove(a, b);
            }
        }
        let reserved_ok = spec
            .get("allocateReservedIPAddresses")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let prefix = spec.get("prefix").and_then(Value::as_u64);
        if let (false, Some(prefix), Some(&(first, _))) = (reserved_ok, prefix, set.ranges.first())
        {
            let bits = if v6 { 128 } else { 32 };
            if let Ok(len) = u32::try_from(prefix) {
                if len <= bits {
                    let host = if len == 0 {
                        u128::MAX >> (128 - bits)
                    } else {
                        (1u128 << (bits - len)) - 1
                    };
                    let network = first & !host;
                    set.remove(network, network);
                    if !v6 {
                        set.remove(network | host, network | host);
                    }
                }
            }
        }
        if let Some(g) = spec
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok())
        {
            let (f, g) = num(g);
            if f == v6 {
                set.remove(g, g);
            }
        }
        Ok(set)
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (f, n) = num(addr);
        f == self.v6 && self.ranges.iter().any(|&(a, b)| a <= n && n <= b)
    }

    /// The first address both sets hold, if any.
    pub fn first_shared(&self, other: &AddressSet) -> Option<IpAddr> {
        if self.v6 != other.v6 {
            return None;
        }
        let mut best: Option<u128> = None;
        for &(a, b) in &self.ranges {
            for &(c, d) in &other.ranges {
                let (lo, hi) = (a.max(c), b.min(d));
                if lo <= hi {
                    best = Some(best.map_or(lo, |x| x.min(lo)));
                }
            }
        }
        best.map(|n| ip(self.v6, n))
    }

    /// Whether the set holds IPv6 addresses.
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }
}

/// Pools that serve VIPs (they carry the class label) and share addresses with another such pool: for each pool
/// (`namespace/name` or `name`), the others it overlaps, with the first shared address. The in-cluster provider only
/// keeps addresses unique within one pool, so two overlapping pools can hand one address to two Clusters. Pools are
/// few: every pair is compared.
pub fn overlaps(
    pools: &[crate::api::PoolView],
) -> std::collections::BTreeMap<String, Vec<(String, IpAddr)>> {
    let vip_pools: Vec<(String, &AddressSet)> = pools
        .iter()
        .filter(|p| !p.deleting && p.labels.contains_key(crate::names::LABEL_CLUSTER_CLASS))
        .filter_map(|p| {
            let key = match &p.namespace {
                Some(ns) => format!("{ns}/{}", p.name),
                None => p.name.clone(),
            };
            p.addresses.as_ref().map(|a| (key, a))
        })
        .collect();
    let mut out: std::collections::BTreeMap<String, Vec<(String, IpAddr)>> = Default::default();
    for (i, (a, sa)) in vip_pools.iter().enumerate() {
        for (b, sb) in &vip_pools[i + 1..] {
            if let Some(shared) = sa.first_shared(sb) {
                out.entry(a.clone()).or_default().push((b.clone(), shared));
                out.entry(b.clone()).or_default().push((a.clone(), shared));
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(spec: Value) -> AddressSet {
        AddressSet::of_pool_spec(&spec).unwrap()
    }

    fn has(s: &AddressSet, a: &str) -> bool {
        s.contains(a.parse().unwrap())
    }

    #[test]
    fn ranges_cidrs_and_single_addresses_as_the_provider_reads_them() {
        let s = set(
            json!({"addresses": ["10.0.0.10-10.0.0.12", "10.0.1.0/30", "10.0.2.7"], "prefix": 16}),
        );
        for a in ["10.0.0.10", "10.0.0.12", "10.0.1.1", "10.0.1.3", "10.0.2.7"] {
            assert!(has(&s, a), "{a}");
        }
        for a in ["10.0.0.9", "10.0.0.13", "10.0.2.8", "fd00::1"] {
            assert!(!has(&s, a), "{a}");
        }
    }

    #[test]
    fn network_broadcast_gateway_and_excluded_addresses_are_not_allocatable() {
        let s = set(
            json!({"addresses": ["10.0.0.0/24"], "prefix": 24, "gateway": "10.0.0.1",
            "excludedAddresses": ["10.0.0.100-10.0.0.110", "10.0.0.200"]}),
        );
        for a in [
            "10.0.0.0",
            "10.0.0.255",
            "10.0.0.1",
            "10.0.0.100",
            "10.0.0.105",
            "10.0.0.110",
            "10.0.0.200",
        ] {
            assert!(!has(&s, a), "{a}");
        }
        for a in ["10.0.0.2", "10.0.0.99", "10.0.0.111", "10.0.0.254"] {
            assert!(has(&s, a), "{a}");
        }
        let s = set(
            json!({"addresses": ["10.0.0.0/24"], "prefix": 24, "allocateReservedIPAddresses": true}),
        );
        assert!(has(&s, "10.0.0.0") && has(&s, "10.0.0.255"));
    }

    #[test]
    fn ipv6_keeps_its_last_address_and_drops_the_subnet_router_anycast() {
        let s = set(json!({"addresses": ["fd00::/126"], "prefix": 126}));
        assert!(!has(&s, "fd00::"));
        assert!(has(&s, "fd00::1") && has(&s, "fd00::3"));
        assert!(!has(&s, "10.0.0.1"));
    }

    #[test]
    fn overlap_names_the_first_shared_address() {
        let a = set(json!({"addresses": ["10.0.0.10-10.0.0.20"], "prefix": 24}));
        let b = set(json!({"addresses": ["10.0.0.15-10.0.0.30"], "prefix": 24}));
        let c = set(json!({"addresses": ["10.0.0.21-10.0.0.30"], "prefix": 24}));
        let v6 = set(json!({"addresses": ["fd00::10-fd00::20"], "prefix": 64}));
        assert_eq!(a.first_shared(&b), Some("10.0.0.15".parse().unwrap()));
        assert_eq!(b.first_shared(&a), Some("10.0.0.15".parse().unwrap()));
        assert_eq!(a.first_shared(&c), None);
        assert_eq!(a.first_shared(&v6), None);
    }

    #[test]
    fn overlapping_vip_pools_name_each_other() {
        let pool = |name: &str, addresses: &str, vip: bool| {
            let mut labels = std::collections::BTreeMap::new();
            if vip {
                labels.insert(
                    crate::names::LABEL_CLUSTER_CLASS.to_owned(),
                    "gold".to_owned(),
                );
            }
            crate::api::PoolView {
                group: crate::names::IPAM_GROUP.into(),
                kind: "GlobalInClusterIPPool".into(),
                name: name.into(),
                namespace: None,
                labels,
                annotations: Default::default(),
                total: None,
                free: None,
                used: None,
                deleting: false,
                addresses: Some(set(json!({"addresses": [addresses], "prefix": 24}))),
                prefix: Some(24),
                gateway: None,
            }
        };
        let o = overlaps(&[
            pool("a", "10.0.0.10-10.0.0.20", true),
            pool("b", "10.0.0.20-10.0.0.30", true),
            pool("c", "10.0.0.40-10.0.0.50", true),
            pool("workers", "10.0.0.0/24", false),
        ]);
        let first: IpAddr = "10.0.0.20".parse().unwrap();
        assert_eq!(o.get("a"), Some(&vec![("b".to_owned(), first)]));
        assert_eq!(o.get("b"), Some(&vec![("a".to_owned(), first)]));
        assert!(!o.contains_key("c"), "disjoint");
        assert!(
            !o.contains_key("workers"),
            "only pools that serve VIPs are compared"
        );
    }

    #[test]
    fn unreadable_specs_say_why() {
        for spec in [
            json!({"addresses": []}),
            json!({"addresses": ["10.0.0.5-10.0.0.1"]}),
            json!({"addresses": ["10.0.0.1", "fd00::1"]}),
            json!({"addresses": ["banana"]}),
            json!({"addresses": ["10.0.0.0/33"]}),
        ] {
            assert!(AddressSet::of_pool_spec(&spec).is_err(), "{spec}");
        }
    }
}
