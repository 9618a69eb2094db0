//! Which pools serve a Cluster's class and role, in the order they are tried.
//!
//! Candidates are the pools whose labels list the class and the role (and that are not being deleted), in two
//! tiers: first the namespaced `InClusterIPPool`s of the Cluster's own namespace (a claim can only reference a
//! namespaced pool of its own namespace), then the `GlobalInClusterIPPool`s — unless a namespaced candidate says
//! `vip.capi.gorizond.io/fallthrough: "false"`, which keeps the namespace on its own pools. Within a tier, a higher
//! `vip.capi.gorizond.io/priority` comes first, then a pool with room, then the name; so the order never depends
//! on watch order. A new claim goes to the first candidate not known to be exhausted (or the first one when all
//! are).

use std::{cmp::Reverse, time::Duration};

use crate::{
    api::{PoolRef, PoolView},
    names::{ANNOTATION_POOL_FALLTHROUGH, ANNOTATION_POOL_PRIORITY},
};

use super::labels::pool_matches;

/// A pool's priority: its annotation as an integer, 0 when absent or not an integer.
pub fn priority(p: &PoolView) -> i64 {
    p.annotations
        .get(ANNOTATION_POOL_PRIORITY)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `p` serves `class` in `role` at all (labels, not being deleted).
pub fn serves(p: &PoolView, class: &str, role: &str) -> bool {
    !p.deleting && pool_matches(&p.labels, &p.annotations, class, role)
}

/// Whether a namespaced candidate keeps its namespace off the global pools.
pub fn stops_fallthrough(p: &PoolView) -> bool {
    p.namespace.is_some()
        && p.annotations
            .get(ANNOTATION_POOL_FALLTHROUGH)
            .is_some_and(|v| v.trim() == "false")
}

/// The pools that may serve a Cluster in `namespace` of `class` in `role`, in the order they are tried.
pub fn candidates<'a>(
    pools: &'a [PoolView],
    namespace: &str,
    class: &str,
    role: &str,
) -> Vec<&'a PoolView> {
    let order = |tier: &mut Vec<&'a PoolView>| {
        tier.sort_by(|a, b| {
            (Reverse(priority(a)), a.exhausted(), &a.name, &a.kind).cmp(&(
                Reverse(priority(b)),
                b.exhausted(),
                &b.name,
                &b.kind,
            ))
        })
    };
    let mut local: Vec<&PoolView> = pools
        .iter()
        .filter(|p| p.namespace.as_deref() == Some(namespace) && serves(p, class, role))
        .collect();
    order(&mut local);
    if local.iter().any(|p| stops_fallthrough(p)) {
        return local;
    }
    let mut global: Vec<&PoolView> = pools
        .iter()
        .filter(|p| p.namespace.is_none() && serves(p, class, role))
        .collect();
    order(&mut global);
    local.extend(global);
    local
}

/// The pool a new claim should use, or `None` when no pool is a candidate.
pub fn choose_pool<'a>(
    pools: &'a [PoolView],
    namespace: &str,
    class: &str,
    role: &str,
) -> Option<&'a PoolView> {
    let all = candidates(pools, namespace, class, role);
    all.iter().find(|p| !p.exhausted()).or(all.first()).copied()
}

/// [`choose_pool`] for a new claim, avoiding the pools a claim of this Cluster already timed out on
/// (`passed_over`) while another candidate is left.
pub fn choose_pool_avoiding<'a>(
    pools: &'a [PoolView],
    namespace: &str,
    class: &str,
    role: &str,
    passed_over: &[&PoolRef],
) -> Option<&'a PoolView> {
    let all = candidates(pools, namespace, class, role);
    let fresh: Vec<&PoolView> = all
        .iter()
        .copied()
        .filter(|p| !passed_over.iter().any(|r| p.reference() == **r))
        .collect();
    let from = if fresh.is_empty() { &all } else { &fresh };
    from.iter()
        .find(|p| !p.exhausted())
        .or(from.first())
        .copied()
}

/// What becomes of a claim pending for `age` on `current`, a candidate of unknown capacity: `Some(Ok(next))` once
/// `timeout` has passed — the first other candidate (in order) not known to be exhausted and not passed over;
/// `Some(Err(remaining))` while the timeout runs and such a candidate exists; `None` when there is none (the claim
/// stays: nowhere else to go).
pub fn after_timeout<'a>(
    candidates: &[&'a PoolView],
    current: &PoolView,
    passed_over: &[&PoolRef],
    age: Duration,
    timeout: Duration,
) -> Option<Result<&'a PoolView, Duration>> {
    let here = current.reference();
    let next = candidates.iter().copied().find(|p| {
        let r = p.reference();
        let is_current = r == here && p.namespace == current.namespace;
        let tried = passed_over.iter().any(|o| **o == r);
        !is_current && !tried && !p.exhausted()
    })?;
    Some(if age >= timeout {
        Ok(next)
    } else {
        Err(timeout - age)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{LABEL_CLUSTER_CLASS, LABEL_ROLE};

    pub(crate) fn pool(name: &str, classes: &str, roles: &str, free: Option<i64>) -> PoolView {
        PoolView {
            group: crate::names::IPAM_GROUP.into(),
            kind: "GlobalInClusterIPPool".into(),
            name: name.into(),
            namespace: None,
            labels: [
                (LABEL_CLUSTER_CLASS.to_owned(), classes.to_owned()),
                (LABEL_ROLE.to_owned(), roles.to_owned()),
            ]
            .into_iter()
            .collect(),
            annotations: Default::default(),
            total: free.map(|f| f + 1),
            free,
            used: Some(1),
            deleting: false,
            addresses: None,
            prefix: None,
            gateway: None,
        }
    }

    #[test]
    fn first_by_name_wins_regardless_of_order() {
        let pools = vec![
            pool("zeta", "gold", "control-plane", Some(5)),
            pool("alpha", "gold", "control-plane", Some(5)),
        ];
        assert_eq!(
            choose_pool(&pools, "ns", "gold", "control-plane")
                .unwrap()
                .name,
            "alpha"
        );
        let reversed: Vec<_> = pools.into_iter().rev().collect();
        assert_eq!(
            choose_pool(&reversed, "ns", "gold", "control-plane")
                .unwrap()
                .name,
            "alpha"
        );
    }

    #[test]
    fn exhausted_pool_is_skipped_when_another_has_room() {
        let pools = vec![
            pool("alpha", "gold", "control-plane", Some(0)),
            pool("beta", "gold", "control-plane", Some(3)),
        ];
        assert_eq!(
            choose_pool(&pools, "ns", "gold", "control-plane")
                .unwrap()
                .name,
            "beta"
        );
    }

    #[test]
    fn all_exhausted_falls_back_to_first_by_name() {
        let pools = vec![
            pool("beta", "gold", "control-plane", Some(0)),
            pool("alpha", "gold", "control-plane", Some(0)),
        ];
        assert_eq!(
            choose_pool(&pools, "ns", "gold", "control-plane")
                .unwrap()
                .name,
            "alpha"
        );
    }

    #[test]
    fn unknown_status_counts_as_available() {
        let pools = vec![
            pool("alpha", "gold", "control-plane", Some(0)),
            pool("beta", "gold", "control-plane", None),
        ];
        assert_eq!(
            choose_pool(&pools, "ns", "gold", "control-plane")
                .unwrap()
                .name,
            "beta"
        );
    }

    #[test]
    fn role_and_class_must_both_match() {
        let pools = vec![
            pool("a", "gold", "ingress", Some(1)),
            pool("b", "silver", "control-plane", Some(1)),
        ];
        assert!(choose_pool(&pools, "ns", "gold", "control-plane").is_none());
        assert_eq!(
            choose_pool(&pools, "ns", "gold", "ingress").unwrap().name,
            "a"
        );
    }

    #[test]
    fn deleting_pools_are_not_chosen() {
        let mut p = pool("a", "gold", "control-plane", Some(1));
        p.deleting = true;
        assert!(choose_pool(&[p], "ns", "gold", "control-plane").is_none());
    }

    fn in_ns(mut p: PoolView, ns: &str) -> PoolView {
        p.kind = "InClusterIPPool".into();
        p.namespace = Some(ns.into());
        p
    }

    fn annotated(mut p: PoolView, key: &str, value: &str) -> PoolView {
        p.annotations.insert(key.into(), value.into());
        p
    }

    fn order(pools: &[PoolView], ns: &str) -> Vec<String> {
        candidates(pools, ns, "gold", "control-plane")
            .iter()
            .map(|p| match &p.namespace {
                Some(ns) => format!("{ns}/{}", p.name),
                None => p.name.clone(),
            })
            .collect()
    }

    #[test]
    fn candidate_order_from_a_table() {
        let cp = |name: &str, free: Option<i64>| pool(name, "gold", "control-plane", free);
        let prio = |p: PoolView, v: &str| annotated(p, ANNOTATION_POOL_PRIORITY, v);
        /// What, the pools, the expected order, the expected choice.
        type Case<'a> = (&'a str, Vec<PoolView>, Vec<&'a str>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "namespaced pools of the Cluster's namespace first, other namespaces never",
                vec![
                    cp("a-global", Some(5)),
                    in_ns(cp("z-local", Some(5)), "ns"),
                    in_ns(cp("other", Some(5)), "other"),
                ],
                vec!["ns/z-local", "a-global"],
                Some("z-local"),
            ),
            (
                "higher priority first within a tier; a tier never jumps another",
                vec![
                    cp("a", Some(5)),
                    prio(cp("b", Some(5)), "10"),
                    in_ns(cp("c", Some(5)), "ns"),
                    in_ns(prio(cp("d", Some(5)), "-1"), "ns"),
                ],
                vec!["ns/c", "ns/d", "b", "a"],
                Some("c"),
            ),
            (
                "then room, then name",
                vec![cp("a", Some(0)), cp("b", Some(3)), cp("c", None)],
                vec!["b", "c", "a"],
                Some("b"),
            ),
            (
                "an exhausted namespaced tier falls through to the global pools",
                vec![in_ns(cp("local", Some(0)), "ns"), cp("global", Some(2))],
                vec!["ns/local", "global"],
                Some("global"),
            ),
            (
                "unless a namespaced candidate opts out",
                vec![
                    in_ns(
                        annotated(cp("local", Some(0)), ANNOTATION_POOL_FALLTHROUGH, "false"),
                        "ns",
                    ),
                    cp("global", Some(2)),
                ],
                vec!["ns/local"],
                Some("local"),
            ),
            (
                "a higher-priority exhausted pool spills over to the next",
                vec![prio(cp("big", Some(0)), "5"), cp("small", Some(1))],
                vec!["big", "small"],
                Some("small"),
            ),
            (
                "an unparsable priority is 0",
                vec![prio(cp("a", Some(1)), "high"), prio(cp("b", Some(1)), "1")],
                vec!["b", "a"],
                Some("b"),
            ),
            (
                "nothing serves",
                vec![pool("a", "silver", "control-plane", Some(1))],
                vec![],
                None,
            ),
        ];
        for (what, pools, want, chosen) in cases {
            assert_eq!(order(&pools, "ns"), want, "{what}");
            let reversed: Vec<PoolView> = pools.iter().rev().cloned().collect();
            assert_eq!(order(&reversed, "ns"), want, "{what} (reversed input)");
            assert_eq!(
                choose_pool(&pools, "ns", "gold", "control-plane").map(|p| p.name.as_str()),
                chosen,
                "{what}"
            );
        }
    }

    fn metal3(name: &str) -> PoolView {
        let mut p = pool(name, "gold", "control-plane", None);
        p.group = "ipam.metal3.io".into();
        p.kind = "IPPool".into();
        p.total = None;
        p.used = None;
        p
    }

    #[test]
    fn extra_kinds_take_part_in_the_tiers_and_unknown_capacity_is_room() {
        let pools = vec![
            in_ns(pool("b-local", "gold", "control-plane", Some(0)), "ns"),
            {
                let mut m = metal3("m-local");
                m.namespace = Some("ns".into());
                m
            },
            metal3("a-global"),
        ];
        assert_eq!(
            order(&pools, "ns"),
            vec!["ns/m-local", "ns/b-local", "a-global"]
        );
        assert_eq!(
            choose_pool(&pools, "ns", "gold", "control-plane").map(|p| p.group.as_str()),
            Some("ipam.metal3.io")
        );
    }

    #[test]
    fn a_timed_out_claim_moves_to_the_next_untried_candidate_with_room() {
        let s = Duration::from_secs;
        let pools = vec![
            metal3("a"),
            metal3("b"),
            pool("c", "gold", "control-plane", Some(0)),
            metal3("d"),
        ];
        let all = candidates(&pools, "ns", "gold", "control-plane");
        let names = |r: Option<Result<&PoolView, Duration>>| r.map(|r| r.map(|p| p.name.clone()));
        type Case<'a> = (
            &'a str,
            &'a str,
            Vec<&'a str>,
            u64,
            Option<Result<String, Duration>>,
        );
        let cases: Vec<Case> = vec![
            ("waits out the timeout", "a", vec![], 30, Some(Err(s(90)))),
            (
                "then the next in order",
                "a",
                vec![],
                120,
                Some(Ok("b".into())),
            ),
            (
                "skips exhausted and tried pools",
                "b",
                vec!["a"],
                121,
                Some(Ok("d".into())),
            ),
            (
                "an earlier untried pool counts",
                "b",
                vec![],
                121,
                Some(Ok("a".into())),
            ),
            ("nowhere left: stays", "d", vec!["a", "b"], 500, None),
        ];
        for (what, current, tried, age, want) in cases {
            let current = pools.iter().find(|p| p.name == current).unwrap();
            let tried: Vec<PoolRef> = tried
                .iter()
                .map(|n| pools.iter().find(|p| p.name == *n).unwrap().reference())
                .collect();
            let tried: Vec<&PoolRef> = tried.iter().collect();
            let got = after_timeout(&all, current, &tried, s(age), s(120));
            assert_eq!(names(got), want, "{what}");
        }
        let a = pools[0].reference();
        let b = pools[1].reference();
        let chosen = |tried: &[&PoolRef]| {
            choose_pool_avoiding(&pools, "ns", "gold", "control-plane", tried)
                .map(|p| p.name.clone())
        };
        assert_eq!(chosen(&[]).as_deref(), Some("a"));
        assert_eq!(
            chosen(&[&a]).as_deref(),
            Some("b"),
            "a new claim avoids a pool passed over"
        );
        assert_eq!(chosen(&[&a, &b]).as_deref(), Some("d"));
        let d = pools[3].reference();
        let c = pools[2].reference();
        assert_eq!(
            chosen(&[&a, &b, &c, &d]).as_deref(),
            Some("a"),
            "every candidate tried: back to the normal choice"
        );
    }
}
