//! Comma-separated label lists: how a pool says which classes and roles it serves.

use std::collections::BTreeMap;

use crate::names::{LABEL_CLUSTER_CLASS, LABEL_ROLE, LIST_IN_ANNOTATION};

/// Whether `list` (comma-separated, items trimmed) contains `wanted` exactly (case-sensitive).
/// Empty items never match, and an empty `wanted` never matches.
pub fn list_contains(list: &str, wanted: &str) -> bool {
    !wanted.is_empty()
        && list
            .split(',')
            .map(str::trim)
            .any(|item| !item.is_empty() && item == wanted)
}

/// The list a pool holds under `key`: the label itself, or the annotation of the same key when the label is
/// `"true"`. Label values cannot hold commas or more than 63 characters, so a real API server only accepts a
/// multi-item list (several classes, both roles, long class names) in the annotation form.
fn listed<'a>(
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    key: &str,
) -> Option<&'a str> {
    let label = labels.get(key)?;
    if label == LIST_IN_ANNOTATION {
        annotations.get(key).map(String::as_str)
    } else {
        Some(label)
    }
}

/// The class list of a pool (label, or annotation when the label is `"true"`).
pub fn class_list<'a>(
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    listed(labels, annotations, LABEL_CLUSTER_CLASS)
}

/// The role list of a pool (label, or annotation when the label is `"true"`).
pub fn role_list<'a>(
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    listed(labels, annotations, LABEL_ROLE)
}

/// Whether a pool with these labels/annotations serves `class` in `role`.
pub fn pool_matches(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    class: &str,
    role: &str,
) -> bool {
    let classes_ok = class_list(labels, annotations).is_some_and(|l| list_contains(l, class));
    let role_ok = role_list(labels, annotations).is_some_and(|l| list_contains(l, role));
    classes_ok && role_ok
}

/// Every class name a pool lists (for the `pools_available` gauge).
pub fn listed_classes<'a>(
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
) -> Vec<&'a str> {
    class_list(labels, annotations)
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `value` is a legal Kubernetes label value (≤63 chars, alphanumerics and `-_.`, alphanumeric ends).
pub fn is_label_value(value: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    value.is_empty()
        || (value.len() <= 63
            && value.chars().all(ok_char)
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // The Go operator's matching cases, and more.
    #[test]
    fn single_value_matches_itself() {
        assert!(list_contains("gold", "gold"));
    }
    #[test]
    fn single_value_does_not_match_another() {
        assert!(!list_contains("gold", "silver"));
    }
    #[test]
    fn comma_list_matches_first_middle_last() {
        assert!(list_contains("a,b,c", "a"));
        assert!(list_contains("a,b,c", "b"));
        assert!(list_contains("a,b,c", "c"));
    }
    #[test]
    fn comma_list_does_not_match_missing_item() {
        assert!(!list_contains("a,b,c", "d"));
    }
    #[test]
    fn items_are_trimmed() {
        assert!(list_contains(" a , b ,c ", "b"));
        assert!(list_contains("a,\tb", "b"));
    }
    #[test]
    fn wanted_with_spaces_is_not_trimmed() {
        assert!(!list_contains("a,b", " b"));
    }
    #[test]
    fn empty_list_matches_nothing() {
        assert!(!list_contains("", "a"));
        assert!(!list_contains("", ""));
    }
    #[test]
    fn empty_items_never_match() {
        assert!(!list_contains("a,,b", ""));
        assert!(!list_contains(",", ""));
        assert!(!list_contains(" , ", ""));
        assert!(list_contains(",a,", "a"));
    }
    #[test]
    fn matching_is_case_sensitive() {
        assert!(!list_contains("Gold", "gold"));
        assert!(!list_contains("control-plane", "Control-Plane"));
    }
    #[test]
    fn substrings_and_prefixes_do_not_match() {
        assert!(!list_contains("gold-large", "gold"));
        assert!(!list_contains("gold", "gol"));
        assert!(!list_contains("a-b,c", "a"));
    }
    #[test]
    fn other_separators_are_not_separators() {
        assert!(!list_contains("a;b", "a"));
        assert!(!list_contains("a b", "a"));
    }
    #[test]
    fn duplicate_items_still_match() {
        assert!(list_contains("a,a", "a"));
    }

    #[test]
    fn true_label_reads_the_annotation() {
        let long = "x".repeat(80);
        let labels = m(&[(LABEL_CLUSTER_CLASS, "true"), (LABEL_ROLE, "control-plane")]);
        let ann = m(&[(LABEL_CLUSTER_CLASS, &format!("short, {long}"))]);
        assert!(pool_matches(&labels, &ann, &long, "control-plane"));
        assert!(pool_matches(&labels, &ann, "short", "control-plane"));
        assert!(
            !pool_matches(&labels, &ann, "true", "control-plane"),
            "'true' is a redirect, not a class"
        );
    }
    #[test]
    fn true_label_without_annotation_matches_nothing() {
        let labels = m(&[(LABEL_CLUSTER_CLASS, "true"), (LABEL_ROLE, "control-plane")]);
        assert!(!pool_matches(&labels, &m(&[]), "true", "control-plane"));
    }
    #[test]
    fn annotation_is_ignored_unless_label_says_true() {
        let labels = m(&[(LABEL_CLUSTER_CLASS, "a"), (LABEL_ROLE, "ingress")]);
        let ann = m(&[(LABEL_CLUSTER_CLASS, "b")]);
        assert!(pool_matches(&labels, &ann, "a", "ingress"));
        assert!(!pool_matches(&labels, &ann, "b", "ingress"));
    }
    #[test]
    fn true_role_label_reads_the_role_annotation() {
        let labels = m(&[(LABEL_CLUSTER_CLASS, "true"), (LABEL_ROLE, "true")]);
        let ann = m(&[
            (LABEL_CLUSTER_CLASS, "a, b"),
            (LABEL_ROLE, "control-plane, ingress"),
        ]);
        assert!(pool_matches(&labels, &ann, "a", "control-plane"));
        assert!(pool_matches(&labels, &ann, "b", "ingress"));
        assert!(!pool_matches(&labels, &ann, "c", "ingress"));
        let no_role_annotation = m(&[(LABEL_CLUSTER_CLASS, "a")]);
        assert!(!pool_matches(
            &labels,
            &no_role_annotation,
            "a",
            "control-plane"
        ));
        // A role annotation without the "true" label is ignored.
        let plain = m(&[(LABEL_CLUSTER_CLASS, "a"), (LABEL_ROLE, "ingress")]);
        assert!(!pool_matches(&plain, &ann, "a", "control-plane"));
    }

    #[test]
    fn both_labels_are_required() {
        assert!(!pool_matches(
            &m(&[(LABEL_CLUSTER_CLASS, "a")]),
            &m(&[]),
            "a",
            "ingress"
        ));
        assert!(!pool_matches(
            &m(&[(LABEL_ROLE, "ingress")]),
            &m(&[]),
            "a",
            "ingress"
        ));
        assert!(pool_matches(
            &m(&[
                (LABEL_CLUSTER_CLASS, "a"),
                (LABEL_ROLE, "ingress,control-plane")
            ]),
            &m(&[]),
            "a",
            "control-plane"
        ));
    }
    #[test]
    fn listed_classes_skips_empty_items() {
        let labels = m(&[(LABEL_CLUSTER_CLASS, "a, ,b,")]);
        assert_eq!(listed_classes(&labels, &m(&[])), vec!["a", "b"]);
    }
    #[test]
    fn label_values_ipv4_ok_ipv6_not() {
        assert!(is_label_value("10.0.0.5"));
        assert!(!is_label_value("fd00::5"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(!is_label_value("-a"));
    }
}
