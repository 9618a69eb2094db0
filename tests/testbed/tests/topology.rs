//! The topology simulator on its own, against a scripted extension: discovery into `status.handlers`, the request
//! it sends, blocking and unblocking by `retryAfterSeconds`, failure policies, and renders rejected without a VIP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use testbed::topology::{TopologyOptions, TopologyStats};
use testbed::{Profile, Testbed, TestbedOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Script = Arc<dyn Fn(&str, &Value) -> (u16, Value) + Send + Sync>;

/// A scripted Runtime SDK extension over HTTPS; records (path with query, body) of every call.
struct Extension {
    url: String,
    ca_bundle: String,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn extension(script: Script) -> Extension {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    use rustls_pki_types::pem::PemObject;
    let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()];
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pair.serialize_pem().as_bytes())
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, script, recorded) = (acceptor.clone(), script.clone(), recorded.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (path, body) = loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                        let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len])
                            .unwrap_or(Value::Null);
                        break (path, body);
                    }
                };
                recorded.lock().unwrap().push((path.clone(), body.clone()));
                let (status, answer) = script(&path, &body);
                let text = answer.to_string();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Extension {
        url: format!("https://localhost:{port}"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(pem),
        calls,
    }
}

fn discovery(policy: &str) -> Value {
    json!({"apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1", "kind": "DiscoveryResponse", "status": "Success",
        "handlers": [{"name": "gate", "requestHook": {"apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1",
            "hook": "BeforeClusterCreate"}, "timeoutSeconds": 5, "failurePolicy": policy}]})
}

fn answer(retry: u64) -> (u16, Value) {
    (
        200,
        json!({"kind": "BeforeClusterCreateResponse", "status": "Success", "message": "wait", "retryAfterSeconds": retry}),
    )
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

struct Bed {
    tb: Testbed,
}

impl Bed {
    async fn start() -> Bed {
        Self::start_with(TopologyOptions::default()).await
    }

    async fn start_with(opts: TopologyOptions) -> Bed {
        let tb = Testbed::start(TestbedOptions {
            ipam: false,
            topology: Some(opts),
            ..TestbedOptions::profile(Profile::Capi112)
        })
        .await
        .expect("testbed starts");
        // CAPI's Cluster webhook (on by default) refuses updates of Clusters whose class is missing, the
        // simulator's included: serve `gold`.
        let classes: Api<DynamicObject> = Api::namespaced_with(
            tb.client(),
            "default",
            &ar(
                "cluster.x-k8s.io",
                "v1beta2",
                "ClusterClass",
                "clusterclasses",
            ),
        );
        let gold = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass",
            "metadata": {"name": "gold", "namespace": "default"},
            "spec": {"variables": [{"name": "clusterVip", "required": false,
                "schema": {"openAPIV3Schema": {"type": "string"}}}]}});
        classes
            .create(&Default::default(), &serde_json::from_value(gold).unwrap())
            .await
            .expect("class created");
        Bed { tb }
    }

    fn clusters(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.tb.client(),
            "default",
            &ar("cluster.x-k8s.io", "v1beta2", "Cluster", "clusters"),
        )
    }

    async fn cluster(&self, name: &str, vip: Option<&str>) {
        let mut topology = json!({"classRef": {"name": "gold"}, "version": "v1.33.0"});
        if let Some(v) = vip {
            topology["variables"] = json!([{"name": "clusterVip", "value": v}]);
        }
        let body = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"topology": topology}});
        self.clusters()
            .create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
            .expect("create Cluster");
    }

    async fn register(&self, ext: &Extension, name: &str) {
        let api: Api<DynamicObject> = Api::all_with(
            self.tb.client(),
            &ar(
                "runtime.cluster.x-k8s.io",
                "v1alpha1",
                "ExtensionConfig",
                "extensionconfigs",
            ),
        );
        let body = json!({"apiVersion": "runtime.cluster.x-k8s.io/v1alpha1", "kind": "ExtensionConfig",
            "metadata": {"name": name},
            "spec": {"clientConfig": {"url": ext.url, "caBundle": ext.ca_bundle}, "settings": {"k": "v"}}});
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .expect("create ExtensionConfig");
        let obj = self
            .until(|| async {
                let o = api.get(name).await.ok()?;
                o.data.pointer("/status/handlers/0").is_some().then_some(o)
            })
            .await;
        assert_eq!(
            obj.data.pointer("/status/handlers/0/name"),
            Some(&json!(format!("gate.{name}")))
        );
        assert_eq!(
            obj.data.pointer("/status/conditions/0/type"),
            Some(&json!("Discovered"))
        );
    }

    async fn until<T, F, Fut>(&self, f: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out; stats {:?}",
                self.tb.topology_stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_stats(&self, pred: impl Fn(&TopologyStats) -> bool) -> TopologyStats {
        let tb = &self.tb;
        self.until(|| {
            let s = tb.topology_stats().unwrap();
            let ok = pred(&s);
            async move { ok.then_some(s) }
        })
        .await
    }

    async fn infra_ref(&self, name: &str) -> Option<Value> {
        let c = self.clusters().get(name).await.ok()?;
        c.data.pointer("/spec/infrastructureRef").cloned()
    }
}

#[tokio::test]
async fn without_extensions_renders_at_once_and_rejects_an_empty_vip_until_it_is_set() {
    let bed = Bed::start().await;
    bed.cluster("ready", Some("10.0.0.9")).await;
    bed.cluster("early", None).await;
    let s = bed.wait_stats(|s| s.rendered >= 1 && s.rejected >= 1).await;
    assert_eq!(s.renders[0].name, "ready");
    assert_eq!(s.renders[0].host, "10.0.0.9");
    assert_eq!(
        bed.infra_ref("ready").await,
        Some(
            json!({"apiGroup": "infrastructure.test.vip.capi.gorizond.io", "kind": "TestInfraCluster", "name": "ready"})
        )
    );
    assert_eq!(bed.infra_ref("early").await, None);
    // Setting the variable (as the operator does) lets the retried render through.
    let patch = json!({"spec": {"topology": {"variables": [{"name": "clusterVip", "value": "10.0.0.10"}]}}});
    bed.clusters()
        .patch("early", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let s = bed.wait_stats(|s| s.rendered == 2).await;
    assert!(s
        .renders
        .iter()
        .any(|r| r.name == "early" && r.host == "10.0.0.10"));
    let infra: Api<DynamicObject> = Api::namespaced_with(
        bed.tb.client(),
        "default",
        &ar(
            "infrastructure.test.vip.capi.gorizond.io",
            "v1alpha1",
            "TestInfraCluster",
            "testinfraclusters",
        ),
    );
    let early = infra.get("early").await.unwrap();
    assert_eq!(
        early.data.pointer("/spec/controlPlaneEndpoint/host"),
        Some(&json!("10.0.0.10"))
    );
}

#[tokio::test]
async fn a_blocking_answer_holds_the_render_until_retry_after_passes() {
    let calls_seen = Arc::new(Mutex::new(0u32));
    let seen = calls_seen.clone();
    let ext = extension(Arc::new(move |path, _| {
        if path.contains("/discovery") {
            return (200, discovery("Fail"));
        }
        let mut n = seen.lock().unwrap();
        *n += 1;
        answer(if *n == 1 { 1 } else { 0 })
    }))
    .await;
    let bed = Bed::start().await;
    bed.register(&ext, "ext-a").await;
    let created = Instant::now();
    bed.cluster("c1", Some("10.0.0.1")).await;
    let s = bed.wait_stats(|s| s.rendered == 1).await;
    assert!(
        created.elapsed() >= Duration::from_millis(900),
        "rendered before retryAfterSeconds passed"
    );
    assert_eq!((s.hook_calls, s.hook_blocked, s.rejected), (2, 1, 0));
    let calls = ext.calls.lock().unwrap().clone();
    assert!(
        calls[0]
            .0
            .starts_with("/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery?timeout=10s"),
        "{calls:?}"
    );
    let (path, body) = &calls[1];
    assert_eq!(
        path,
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclustercreate/gate?timeout=5s"
    );
    assert_eq!(body["kind"], "BeforeClusterCreateRequest");
    assert_eq!(body["settings"], json!({"k": "v"}));
    assert_eq!(body["cluster"]["metadata"]["name"], "c1");
    assert!(body["cluster"].get("status").is_none());
    assert!(body["cluster"]["metadata"].get("managedFields").is_none());
}

#[tokio::test]
async fn failure_policy_fail_blocks_and_ignore_lets_through() {
    for (policy, expect_render) in [("Fail", false), ("Ignore", true)] {
        let ext = extension(Arc::new(move |path, _| {
            if path.contains("/discovery") {
                (200, discovery(policy))
            } else {
                (500, json!({"message": "boom"}))
            }
        }))
        .await;
        let bed = Bed::start().await;
        bed.register(&ext, "ext-b").await;
        bed.cluster("c1", Some("10.0.0.1")).await;
        if expect_render {
            let s = bed.wait_stats(|s| s.rendered == 1).await;
            assert_eq!(s.hook_errors, 0);
        } else {
            let s = bed.wait_stats(|s| s.hook_errors >= 2).await;
            assert_eq!(
                s.rendered, 0,
                "{policy}: a failing extension must hold the Cluster"
            );
            assert_eq!(bed.infra_ref("c1").await, None);
        }
    }
}

#[tokio::test]
async fn a_failure_answer_blocks_even_with_failure_policy_ignore() {
    let ext = extension(Arc::new(|path, _| {
        if path.contains("/discovery") {
            (200, discovery("Ignore"))
        } else {
            (200, json!({"status": "Failure", "message": "no"}))
        }
    }))
    .await;
    let bed = Bed::start().await;
    bed.register(&ext, "ext-c").await;
    bed.cluster("c1", Some("10.0.0.1")).await;
    let s = bed.wait_stats(|s| s.hook_errors >= 2).await;
    assert_eq!(s.rendered, 0);
}

#[tokio::test]
async fn hook_cache_off_calls_again_on_a_change_like_capi_1_11() {
    let n = Arc::new(Mutex::new(0u32));
    let seen = n.clone();
    let ext = extension(Arc::new(move |path, _| {
        if path.contains("/discovery") {
            return (200, discovery("Fail"));
        }
        let mut n = seen.lock().unwrap();
        *n += 1;
        answer(if *n == 1 { 30 } else { 0 })
    }))
    .await;
    let bed = Bed::start_with(TopologyOptions {
        hook_cache: false,
        ..Default::default()
    })
    .await;
    bed.register(&ext, "ext-d").await;
    bed.cluster("c1", Some("10.0.0.1")).await;
    bed.wait_stats(|s| s.hook_blocked == 1).await;
    // A change of the Cluster re-runs the hook long before the 30 s retryAfter (v1.12+ would wait).
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    bed.clusters()
        .patch("c1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let s = bed.wait_stats(|s| s.rendered == 1).await;
    assert_eq!(s.hook_calls, 2);
}
