//! Helpers shared by the conformance tests.

use std::time::Duration;

use http_body_util::BodyExt;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

pub const NS: &str = "default";

pub async fn start(p: Profile) -> Testbed {
    let tb = Testbed::start(TestbedOptions::profile(p))
        .await
        .expect("testbed starts");
    create_demo_class(&tb, p).await;
    tb
}

pub async fn start_without_ipam(p: Profile) -> Testbed {
    let tb = Testbed::start(TestbedOptions {
        ipam: false,
        ..TestbedOptions::profile(p)
    })
    .await
    .expect("testbed starts");
    create_demo_class(&tb, p).await;
    tb
}

/// The variables `demo-class` declares (any value): CAPI's Cluster webhook refuses undeclared ones and updates of
/// Clusters whose class is missing.
pub const DEMO_VARIABLES: [&str; 6] = ["a", "b", "c", "x", "clusterVip", "kubeVipInterface"];

pub fn clusterclasses(p: Profile) -> ApiResource {
    ar(
        "cluster.x-k8s.io",
        cluster_version(p),
        "ClusterClass",
        "clusterclasses",
    )
}

/// A ClusterClass in `NS` with these variables (`schema` is each variable's openAPIV3Schema).
pub fn class_json(p: Profile, name: &str, variables: &[(&str, bool, Value)]) -> Value {
    let vars: Vec<Value> = variables
        .iter()
        .map(|(n, required, schema)| {
            json!({"name": n, "required": required, "schema": {"openAPIV3Schema": schema}})
        })
        .collect();
    json!({"apiVersion": format!("cluster.x-k8s.io/{}", cluster_version(p)), "kind": "ClusterClass",
        "metadata": {"name": name, "namespace": NS}, "spec": {"variables": vars}})
}

/// Creates `demo-class`, the class of `cluster_json`'s Clusters.
pub async fn create_demo_class(tb: &Testbed, p: Profile) {
    let any = json!({"x-kubernetes-preserve-unknown-fields": true});
    let vars: Vec<(&str, bool, Value)> = DEMO_VARIABLES
        .iter()
        .map(|n| (*n, false, any.clone()))
        .collect();
    create(
        &api(tb, &clusterclasses(p), Some(NS)),
        class_json(p, "demo-class", &vars),
    )
    .await;
}

pub fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn cluster_version(p: Profile) -> &'static str {
    match p {
        Profile::Capi110 => "v1beta1",
        Profile::Capi112 => "v1beta2",
    }
}

pub fn clusters(p: Profile) -> ApiResource {
    ar(
        "cluster.x-k8s.io",
        cluster_version(p),
        "Cluster",
        "clusters",
    )
}

pub fn claims(p: Profile) -> ApiResource {
    ar(
        "ipam.cluster.x-k8s.io",
        cluster_version(p),
        "IPAddressClaim",
        "ipaddressclaims",
    )
}

pub fn addresses(p: Profile) -> ApiResource {
    ar(
        "ipam.cluster.x-k8s.io",
        cluster_version(p),
        "IPAddress",
        "ipaddresses",
    )
}

pub fn global_pools() -> ApiResource {
    ar(
        "ipam.cluster.x-k8s.io",
        "v1alpha2",
        "GlobalInClusterIPPool",
        "globalinclusterippools",
    )
}

pub fn ns_pools() -> ApiResource {
    ar(
        "ipam.cluster.x-k8s.io",
        "v1alpha2",
        "InClusterIPPool",
        "inclusterippools",
    )
}

pub fn api(tb: &Testbed, r: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(tb.client(), ns, r),
        None => Api::all_with(tb.client(), r),
    }
}

pub fn dynobj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("valid object")
}

/// A topology Cluster of the profile's shape, with optional variables.
pub fn cluster_json(p: Profile, name: &str, variables: Value) -> Value {
    let mut topology = match p {
        Profile::Capi110 => json!({"class": "demo-class", "version": "v1.32.0"}),
        Profile::Capi112 => json!({"classRef": {"name": "demo-class"}, "version": "v1.32.0"}),
    };
    if variables.as_array().is_some_and(|a| !a.is_empty()) {
        topology["variables"] = variables;
    }
    json!({"apiVersion": format!("cluster.x-k8s.io/{}", cluster_version(p)), "kind": "Cluster",
        "metadata": {"name": name, "namespace": NS}, "spec": {"topology": topology}})
}

pub async fn create(api: &Api<DynamicObject>, v: Value) -> DynamicObject {
    api.create(&PostParams::default(), &dynobj(v))
        .await
        .expect("create succeeds")
}

/// The API error of a failed kube call.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls until `f` yields Some (tests may poll; the code under test must not).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Raw {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// Sends a raw request through the testbed's kube client.
pub async fn raw(
    tb: &Testbed,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: &str,
) -> Raw {
    raw_with(
        tb,
        method,
        uri,
        &[("content-type", content_type.unwrap_or("application/json"))],
        body,
    )
    .await
}

pub async fn raw_with(
    tb: &Testbed,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request");
    let resp = tb.client().send(req).await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Raw {
        status,
        headers,
        body,
    }
}

/// A bare HTTP/1.1 request over TCP (bypasses kube's retry layer): status code and body.
pub async fn bare(tb: &Testbed, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(tb.addr())
        .await
        .expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bare\r\nConnection: close\r\n\r\n",
        tb.addr()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
