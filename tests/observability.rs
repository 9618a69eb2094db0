//! The observability kit in `config/prometheus` only uses what the operator really exports.
//!
//! Runs the real operator against the testbed with the examples applied (plus one Cluster whose class has no pool,
//! so the error counter has a series), scrapes `/metrics`, and checks every PromQL expression of the
//! PrometheusRule and the Grafana dashboard: each metric name has samples, each label used in `by (…)` or in a
//! matcher is carried by those series, and each matcher's value occurs. `up` is the scrape's own series and is
//! exempt, as are the target labels Prometheus adds (`job`, `instance`, `pod`).

mod common;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use common::Operator;
use kube::{
    api::{Api, ApiResource, DynamicObject, PostParams},
    runtime::wait::await_condition,
};
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

const WAIT: Duration = Duration::from_secs(30);
/// Aggregation operators, which may be followed by `by (…)` instead of their argument.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Labels Prometheus attaches from the scrape target, not from the exporter.
const TARGET_LABELS: &[&str] = &["job", "instance", "pod", "service", "endpoint", "container"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every PromQL expression of config/prometheus, with where it comes from.
fn expressions() -> Vec<(String, String)> {
    let dir = repo().join("config/prometheus");
    let mut out = Vec::new();
    let rule_text =
        std::fs::read_to_string(dir.join("prometheus_rule.yaml")).expect("prometheus_rule.yaml");
    let rule: Value = serde_saphyr::from_str(&rule_text).expect("PrometheusRule parses");
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            out.push((
                format!("alert {name}"),
                r["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    let dash_text =
        std::fs::read_to_string(dir.join("capi-vip-allocator-dashboard.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&dash_text).expect("dashboard parses");
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", panel["title"]),
                t["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

/// Metric names in an expression: identifiers that are not functions, keywords, label names or strings.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let (mut i, mut depth_braces, mut in_string) = (0, 0usize, false);
    while i < bytes.len() {
        let c = bytes[i] as char;
        if in_string {
            in_string = c != '"';
            i += 1;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth_braces += 1,
            '}' => depth_braces = depth_braces.saturating_sub(1),
            '[' => {
                // Range durations like [5m] or [$__rate_interval].
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
            }
            _ if (c.is_ascii_alphabetic() || c == '_' || c == '$') && depth_braces == 0 => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let rest = expr[i..].trim_start();
                let is_call = rest.starts_with('(');
                let after_by = expr[..start].trim_end().ends_with('(') && {
                    let before = expr[..start].trim_end().trim_end_matches('(').trim_end();
                    before.ends_with("by")
                        || before.ends_with("without")
                        || before.ends_with("on")
                        || before.ends_with("ignoring")
                };
                let in_grouping = after_by
                    || expr[..start].trim_end().ends_with(',') && in_label_list(&expr[..start]);
                let keyword = matches!(
                    word,
                    "by" | "without"
                        | "on"
                        | "ignoring"
                        | "and"
                        | "or"
                        | "unless"
                        | "bool"
                        | "offset"
                ) || AGGREGATIONS.contains(&word);
                if !is_call && !keyword && !in_grouping && !word.starts_with('$') {
                    names.push(word.to_owned());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// Whether the text before a comma is inside a `by (…)`-style label list.
fn in_label_list(before: &str) -> bool {
    let open = before.rfind('(').unwrap_or(0);
    let head = before[..open].trim_end();
    before[open..].find(')').is_none()
        && (head.ends_with("by")
            || head.ends_with("without")
            || head.ends_with("on")
            || head.ends_with("ignoring"))
}

/// Label names in `by (…)`/`without (…)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for kw in ["by", "without"] {
        let mut rest = expr;
        while let Some(pos) = rest.find(kw) {
            let boundary_before = pos == 0
                || !rest.as_bytes()[pos - 1].is_ascii_alphanumeric()
                    && rest.as_bytes()[pos - 1] != b'_';
            let after = rest[pos + kw.len()..].trim_start();
            if boundary_before && after.starts_with('(') {
                if let Some(end) = after.find(')') {
                    labels.extend(
                        after[1..end]
                            .split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                }
            }
            rest = &rest[pos + kw.len()..];
        }
    }
    labels
}

/// `name{label="value", …}` matchers: (metric, label, value).
fn matchers(expr: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let name_start = rest[..open]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        let metric = rest[name_start..open].to_owned();
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        for m in rest[open + 1..open + close].split(',') {
            if let Some((label, value)) = m.split_once('=') {
                let label = label.trim().trim_end_matches(['!', '=', '~']).to_owned();
                out.push((
                    metric.clone(),
                    label,
                    value
                        .trim()
                        .trim_start_matches(['=', '~'])
                        .trim_matches('"')
                        .to_owned(),
                ));
            }
        }
        rest = &rest[open + close..];
    }
    out
}

/// Parsed exposition: metric name → label sets of its samples.
fn samples(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut map: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut set = BTreeMap::new();
        for pair in split_labels(labels) {
            if let Some((k, v)) = pair.split_once('=') {
                set.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
            }
        }
        map.entry(name.to_owned()).or_default().push(set);
    }
    map
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

#[test]
fn the_expression_scanner_finds_names_labels_and_matchers() {
    let e = r#"histogram_quantile(0.99, sum by (le, role) (rate(capi_vip_allocator_allocation_duration_seconds_bucket[15m]))) > 5 and capi_vip_allocator_pools_available{role="control-plane"} == 0"#;
    assert_eq!(
        metric_names(e),
        [
            "capi_vip_allocator_allocation_duration_seconds_bucket",
            "capi_vip_allocator_pools_available"
        ]
    );
    assert_eq!(grouping_labels(e), ["le", "role"]);
    assert_eq!(
        matchers(e),
        [(
            "capi_vip_allocator_pools_available".to_owned(),
            "role".to_owned(),
            "control-plane".to_owned()
        )]
    );
    assert_eq!(metric_names(r#"absent(up{job="x"} == 1)"#), ["up"]);
    assert_eq!(
        metric_names("sum by (reason, role) (increase(a_total[$__rate_interval])) / b"),
        ["a_total", "b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_alerts_and_dashboard_is_exported_with_its_labels() {
    let tb = Testbed::start(TestbedOptions::profile(Profile::Capi112))
        .await
        .expect("testbed starts");
    let kc = tb.kubeconfig_path().to_path_buf();
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let out = std::process::Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kc.display()))
        .args(["apply", "-f", "examples/allocation/"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {kubectl} (install kubectl or set KUBECTL): {e}"));
    assert!(
        out.status.success(),
        "kubectl apply examples: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A Cluster whose class no pool lists: the allocation error counter gets a series (reason PoolNotFound).
    let client = tb.client();
    let cluster_res = ApiResource {
        group: "cluster.x-k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "cluster.x-k8s.io/v1beta2".into(),
        kind: "Cluster".into(),
        plural: "clusters".into(),
    };
    let class_res = ApiResource {
        kind: "ClusterClass".into(),
        plural: "clusterclasses".into(),
        ..cluster_res.clone()
    };
    let classes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "vip-demo", &class_res);
    let class = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass",
        "metadata": {"name": "no-pool-class", "namespace": "vip-demo"},
        "spec": {"variables": [{"name": "clusterVip", "required": false, "schema": {"openAPIV3Schema": {"type": "string"}}}]}});
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(class).unwrap(),
        )
        .await
        .expect("class");
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "vip-demo", &cluster_res);
    let orphan = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "no-pool", "namespace": "vip-demo"},
        "spec": {"topology": {"classRef": {"name": "no-pool-class"}, "version": "v1.32.4"}}});
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(orphan).unwrap(),
        )
        .await
        .expect("cluster");

    let mut op = Operator::spawn(&kc, &[]);
    op.wait_ready().await;
    let allocated = |o: Option<&DynamicObject>| {
        o.and_then(|c| c.metadata.annotations.as_ref())
            .is_some_and(|a| a.contains_key("vip.capi.gorizond.io/ingress-vip"))
    };
    tokio::time::timeout(
        WAIT,
        await_condition(clusters.clone(), "demo-auto", allocated),
    )
    .await
    .unwrap_or_else(|_| panic!("demo-auto got no VIPs:\n{}", op.logs()))
    .expect("watch");

    // Wait until the error counter and the histograms have series, then check everything on one scrape.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = op.metrics().await;
        let s = samples(&text);
        let ready = [
            "capi_vip_allocator_allocation_errors_total",
            "capi_vip_allocator_allocation_duration_seconds_bucket",
        ]
        .iter()
        .all(|n| s.contains_key(*n));
        if ready {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics incomplete:\n{text}\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported = samples(&text);

    let exprs = expressions();
    assert!(
        exprs.len() >= 20,
        "alerts and panels found: {}",
        exprs.len()
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for (where_, expr) in &exprs {
        let names: Vec<String> = metric_names(expr)
            .into_iter()
            .filter(|n| n != "up")
            .collect();
        for name in &names {
            checked += 1;
            if !exported.contains_key(name) {
                problems.push(format!("{where_}: {name} is not exported"));
            }
        }
        let series: Vec<&BTreeMap<String, String>> = names
            .iter()
            .filter_map(|n| exported.get(n))
            .flatten()
            .collect();
        for label in grouping_labels(expr) {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !series.iter().any(|s| s.contains_key(&label)) {
                problems.push(format!(
                    "{where_}: label {label:?} (by/without) is on none of {names:?}"
                ));
            }
        }
        for (metric, label, value) in matchers(expr) {
            if metric == "up" || TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let found = exported
                .get(&metric)
                .into_iter()
                .flatten()
                .any(|s| s.get(&label) == Some(&value));
            if !found {
                problems.push(format!(
                    "{where_}: no {metric} series with {label}={value:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "config/prometheus uses what the operator does not export:\n{}\n\n/metrics:\n{text}",
        problems.join("\n")
    );
    assert!(checked >= 20, "metric references checked: {checked}");
    // The scrape's own `up` is the only metric outside the operator's namespace that we rely on.
    for (where_, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(
                name == "up"
                    || name.starts_with("capi_vip_allocator_")
                    || name.starts_with("process_"),
                "{where_}: unexpected metric {name}"
            );
        }
    }
    drop(op);
    tb.shutdown().await;
}
