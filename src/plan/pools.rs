//! Which pool serves a class and role.
//!
//! Rule: among the pools whose labels list the class and the role (and that are not being deleted), take the
//! first by name among those not known to be exhausted; when all are exhausted, the first by name. Names are
//! unique per kind, so the choice is deterministic and does not depend on watch order.

use crate::api::PoolView;

use super::labels::pool_matches;

/// Pools that serve `class` in `role`, sorted by name.
pub fn matching_pools<'a>(pools: &'a [PoolView], class: &str, role: &str) -> Vec<&'a PoolView> {
    let mut found: Vec<&PoolView> = pools
        .iter()
        .filter(|p| !p.deleting && pool_matches(&p.labels, &p.annotations, class, role))
        .collect();
    found.sort_by(|a, b| (&a.name, &a.kind).cmp(&(&b.name, &b.kind)));
    found
}

/// The pool a new claim should use, or `None` when no pool matches.
pub fn choose_pool<'a>(pools: &'a [PoolView], class: &str, role: &str) -> Option<&'a PoolView> {
    let matching = matching_pools(pools, class, role);
    matching
        .iter()
        .find(|p| !p.exhausted())
        .or(matching.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{LABEL_CLUSTER_CLASS, LABEL_ROLE};

    pub(crate) fn pool(name: &str, classes: &str, roles: &str, free: Option<i64>) -> PoolView {
        PoolView {
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
        }
    }

    #[test]
    fn first_by_name_wins_regardless_of_order() {
        let pools = vec![
            pool("zeta", "gold", "control-plane", Some(5)),
            pool("alpha", "gold", "control-plane", Some(5)),
        ];
        assert_eq!(
            choose_pool(&pools, "gold", "control-plane").unwrap().name,
            "alpha"
        );
        let reversed: Vec<_> = pools.into_iter().rev().collect();
        assert_eq!(
            choose_pool(&reversed, "gold", "control-plane")
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
            choose_pool(&pools, "gold", "control-plane").unwrap().name,
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
            choose_pool(&pools, "gold", "control-plane").unwrap().name,
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
            choose_pool(&pools, "gold", "control-plane").unwrap().name,
            "beta"
        );
    }

    #[test]
    fn role_and_class_must_both_match() {
        let pools = vec![
            pool("a", "gold", "ingress", Some(1)),
            pool("b", "silver", "control-plane", Some(1)),
        ];
        assert!(choose_pool(&pools, "gold", "control-plane").is_none());
        assert_eq!(choose_pool(&pools, "gold", "ingress").unwrap().name, "a");
    }

    #[test]
    fn deleting_pools_are_not_chosen() {
        let mut p = pool("a", "gold", "control-plane", Some(1));
        p.deleting = true;
        assert!(choose_pool(&[p], "gold", "control-plane").is_none());
    }
}
