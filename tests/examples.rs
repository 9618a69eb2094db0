//! The examples in `examples/allocation/` do what their comments promise, applied verbatim with kubectl.
//!
//! A testbed starts with no CRDs; `kubectl apply -f crds/capi-v1.12/` and `kubectl apply -f examples/allocation/`
//! set it up exactly as a user would (kubectl's default strict field validation, so an example with a field the
//! CRDs do not declare fails here); then the real operator binary runs against it, and every Cluster of the examples
//! is checked: automatic VIPs (endpoint, `clusterVip`, ingress annotation/variable, from the right pool), the manual
//! endpoint untouched with no claim, ingress disabled, shared pools, a class in another namespace.
//! kubectl is required (`KUBECTL` or `kubectl` on PATH); without it the test fails with a clear message.

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf, time::Duration};

use common::{annotation, host, label, port, variable, Operator};
use kube::{
    api::{Api, ApiResource, DynamicObject},
    runtime::wait::await_condition,
};
use serde_json::Value;
use testbed::{Testbed, TestbedOptions};

const NS: &str = "vip-demo";
const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// Runs kubectl against the testbed; panics with its output unless it succeeds. Returns stdout.
async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(kubectl_bin())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .current_dir(repo())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (install kubectl or set KUBECTL): {e}",
                kubectl_bin()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("Warning:"),
        "kubectl {args:?} warned (unknown or pruned fields?):\n{stderr}"
    );
    stdout
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Waits until `name` satisfies `pred`, failing with the object and the operator's log on timeout.
async fn wait_until(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    op: &Operator,
    pred: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    let cond = move |o: Option<&DynamicObject>| o.is_some_and(&pred);
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(o))) => o,
        Ok(Ok(None)) => panic!("{name} vanished while waiting for {what}"),
        Ok(Err(e)) => panic!("watch of {name} failed: {e}"),
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!(
                "timed out waiting for {what} on {name}; now: {now:#?}\n{}",
                op.logs()
            )
        }
    }
}

/// Checks that the claim `claim` was made from `pool`, is controlled by `cluster`, and that its IPAddress holds
/// `vip`.
async fn assert_claim(
    claims: &Api<DynamicObject>,
    addresses: &Api<DynamicObject>,
    cluster: &DynamicObject,
    claim: &str,
    pool: &str,
    vip: &str,
) {
    let c = claims
        .get(claim)
        .await
        .unwrap_or_else(|e| panic!("claim {claim}: {e}"));
    assert_eq!(
        c.data["spec"]["poolRef"]["name"], pool,
        "claim {claim} should use pool {pool}"
    );
    assert_eq!(c.data["spec"]["poolRef"]["kind"], "GlobalInClusterIPPool");
    assert_eq!(
        c.data["spec"]["poolRef"]["apiGroup"],
        "ipam.cluster.x-k8s.io"
    );
    let owners = c.metadata.owner_references.clone().unwrap_or_default();
    let controller: Vec<_> = owners
        .iter()
        .filter(|o| o.controller == Some(true))
        .collect();
    assert_eq!(
        controller.len(),
        1,
        "claim {claim} has one controller owner: {owners:?}"
    );
    assert_eq!(
        Some(&controller[0].uid),
        cluster.metadata.uid.as_ref(),
        "claim {claim} is owned by its Cluster"
    );
    assert_eq!(controller[0].kind, "Cluster");
    let addr_name = c.data["status"]["addressRef"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("claim {claim} bound"));
    let addr = addresses
        .get(addr_name)
        .await
        .unwrap_or_else(|e| panic!("IPAddress {addr_name}: {e}"));
    assert_eq!(
        addr.data["spec"]["address"], vip,
        "IPAddress of {claim} holds the VIP written to the Cluster"
    );
    assert_eq!(addr.data["spec"]["poolRef"]["name"], pool);
}

fn ipv4(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not an IPv4 address: {e}"))
}

fn in_range(ip: &str, first: &str, last: &str) -> bool {
    let (ip, first, last) = (
        u32::from(ipv4(ip)),
        u32::from(ipv4(first)),
        u32::from(ipv4(last)),
    );
    (first..=last).contains(&ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_apply_verbatim_and_get_the_vips_they_promise() {
    let tb = Testbed::start(TestbedOptions::default())
        .await
        .expect("testbed starts");
    let kc = tb.kubeconfig_path().to_path_buf();

    // What a user types (kubectl validates strictly: an undeclared field would fail the apply).
    kubectl(&kc, &["apply", "-f", "crds/capi-v1.12/"]).await;
    kubectl(
        &kc,
        &[
            "wait",
            "--for=condition=established",
            "crd",
            "--all",
            "--timeout=30s",
        ],
    )
    .await;
    let applied = kubectl(&kc, &["apply", "-f", "examples/allocation/"]).await;
    assert!(
        applied.contains("cluster.cluster.x-k8s.io/demo-auto created"),
        "{applied}"
    );

    let mut op = Operator::spawn(&kc, &[]);
    op.wait_ready().await;

    let client = tb.client();
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &resource("cluster.x-k8s.io", "v1beta2", "Cluster", "clusters"),
    );
    let claims: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &resource(
            "ipam.cluster.x-k8s.io",
            "v1beta2",
            "IPAddressClaim",
            "ipaddressclaims",
        ),
    );
    let addresses: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &resource(
            "ipam.cluster.x-k8s.io",
            "v1beta2",
            "IPAddress",
            "ipaddresses",
        ),
    );
    const INGRESS: &str = "vip.capi.gorizond.io/ingress-vip";
    let has_cluster_vip =
        |c: &DynamicObject| variable(c, "clusterVip").is_some() && !host(c).is_empty();
    let has_ingress = |c: &DynamicObject| annotation(c, INGRESS).is_some();
    let mut seen = BTreeSet::new();

    // 30-cluster-auto.yaml: both VIPs, endpoint + variables + annotation, the user's own variable untouched.
    let auto = wait_until(&clusters, "demo-auto", "both VIPs", &op, |c| {
        has_cluster_vip(c) && has_ingress(c)
    })
    .await;
    let cp = host(&auto);
    assert!(
        in_range(&cp, "10.10.0.10", "10.10.0.99"),
        "demo-auto CP VIP {cp} from vip-cp-kubeadm"
    );
    assert_eq!(port(&auto), 6443, "default port written with the VIP");
    assert_eq!(variable(&auto, "clusterVip"), Some(Value::from(cp.clone())));
    let ingress = annotation(&auto, INGRESS).unwrap();
    assert!(
        in_range(&ingress, "10.10.1.12", "10.10.1.99"),
        "demo-auto ingress VIP {ingress} (10/11 excluded)"
    );
    assert_eq!(
        variable(&auto, "ingressVip"),
        Some(Value::from(ingress.clone())),
        "class declares ingressVip"
    );
    assert_eq!(
        label(&auto, INGRESS).as_deref(),
        Some(ingress.as_str()),
        "IPv4 ingress VIP also as a label"
    );
    assert_eq!(
        variable(&auto, "kubeVipInterface"),
        Some(Value::from("ens192")),
        "user variable survives"
    );
    assert_claim(
        &claims,
        &addresses,
        &auto,
        "vip-cp-demo-auto",
        "vip-cp-kubeadm",
        &cp,
    )
    .await;
    assert_claim(
        &claims,
        &addresses,
        &auto,
        "vip-ingress-demo-auto",
        "vip-ingress-kubeadm",
        &ingress,
    )
    .await;
    seen.extend([cp, ingress]);

    // 31-cluster-manual.yaml: the hand-set endpoint stays, clusterVip mirrors it, no CP claim; ingress still comes.
    let manual = wait_until(
        &clusters,
        "demo-manual",
        "clusterVip mirrored + ingress",
        &op,
        |c| has_cluster_vip(c) && has_ingress(c),
    )
    .await;
    assert_eq!(host(&manual), "192.168.50.10", "manual endpoint untouched");
    assert_eq!(port(&manual), 6443);
    assert_eq!(
        variable(&manual, "clusterVip"),
        Some(Value::from("192.168.50.10")),
        "clusterVip mirrors the host"
    );
    assert!(
        claims
            .get_opt("vip-cp-demo-manual")
            .await
            .unwrap()
            .is_none(),
        "no claim (no IP wasted) for a manual host"
    );
    let ingress = annotation(&manual, INGRESS).unwrap();
    assert_claim(
        &claims,
        &addresses,
        &manual,
        "vip-ingress-demo-manual",
        "vip-ingress-kubeadm",
        &ingress,
    )
    .await;
    seen.insert(ingress);

    // 32-cluster-no-ingress.yaml: the CP VIP only.
    let no_ingress = wait_until(&clusters, "demo-no-ingress", "CP VIP", &op, has_cluster_vip).await;
    let cp = host(&no_ingress);
    assert_claim(
        &claims,
        &addresses,
        &no_ingress,
        "vip-cp-demo-no-ingress",
        "vip-cp-kubeadm",
        &cp,
    )
    .await;
    seen.insert(cp);

    // 33-cluster-shared-pool.yaml: both VIPs from the one pool serving both roles (lists in annotations).
    let lab = wait_until(&clusters, "lab-1", "both VIPs", &op, |c| {
        has_cluster_vip(c) && has_ingress(c)
    })
    .await;
    let (cp, ingress) = (host(&lab), annotation(&lab, INGRESS).unwrap());
    for vip in [&cp, &ingress] {
        assert!(
            in_range(vip, "10.20.0.2", "10.20.0.30"),
            "lab-1 VIP {vip} from 10.20.0.0/27 minus net/bcast/gw"
        );
    }
    assert_ne!(cp, ingress, "lab-1 got one address for both roles");
    assert_claim(
        &claims,
        &addresses,
        &lab,
        "vip-cp-lab-1",
        "vip-shared-lab",
        &cp,
    )
    .await;
    assert_claim(
        &claims,
        &addresses,
        &lab,
        "vip-ingress-lab-1",
        "vip-shared-lab",
        &ingress,
    )
    .await;
    seen.extend([cp, ingress]);

    // 34-cluster-class-in-other-namespace.yaml: class from vip-platform, pool listing it in its annotation.
    let prod = wait_until(&clusters, "prod-1", "CP VIP", &op, has_cluster_vip).await;
    let cp = host(&prod);
    assert!(
        ["10.30.0.10", "10.30.0.11", "10.30.0.12"].contains(&cp.as_str()),
        "prod-1 CP VIP {cp}"
    );
    assert_claim(
        &claims,
        &addresses,
        &prod,
        "vip-cp-prod-1",
        "vip-cp-platform",
        &cp,
    )
    .await;
    seen.insert(cp);

    // Negative promises, checked once the Clusters above have been reconciled to their final state.
    assert!(
        annotation(&no_ingress, INGRESS).is_none(),
        "ingress disabled: no ingress VIP"
    );
    assert!(variable(&no_ingress, "ingressVip").is_none());
    assert!(
        claims
            .get_opt("vip-ingress-demo-no-ingress")
            .await
            .unwrap()
            .is_none(),
        "ingress disabled: no claim"
    );
    assert!(
        annotation(&prod, INGRESS).is_none(),
        "no ingress pool lists prod-1's class"
    );
    assert!(claims
        .get_opt("vip-ingress-prod-1")
        .await
        .unwrap()
        .is_none());
    assert!(
        variable(&prod, "ingressVip").is_none(),
        "the platform class does not declare ingressVip"
    );

    // Seven distinct addresses (the manual endpoint is not from a pool), and exactly the promised claims.
    assert_eq!(seen.len(), 7, "every VIP is distinct: {seen:?}");
    let names: BTreeSet<String> = claims
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let want: BTreeSet<String> = [
        "vip-cp-demo-auto",
        "vip-ingress-demo-auto",
        "vip-ingress-demo-manual",
        "vip-cp-demo-no-ingress",
        "vip-cp-lab-1",
        "vip-ingress-lab-1",
        "vip-cp-prod-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want, "claims in {NS}");

    // kubectl shows the same thing a user would read.
    let table = kubectl(
        &kc,
        &[
            "-n",
            NS,
            "get",
            "cluster",
            "demo-auto",
            "-o",
            "jsonpath={.spec.controlPlaneEndpoint.host}",
        ],
    )
    .await;
    assert_eq!(table, host(&auto));

    drop(op);
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_custom_resource_example_validates_against_the_crds() {
    // Server-side dry run against a testbed that has only the CRDs: nothing is stored, every object is validated
    // (types, required fields, bounds, unknown fields) by the same code that serves real requests.
    let tb = Testbed::start(TestbedOptions::default())
        .await
        .expect("testbed starts");
    let kc = tb.kubeconfig_path().to_path_buf();
    kubectl(&kc, &["apply", "-f", "crds/capi-v1.12/"]).await;
    kubectl(
        &kc,
        &[
            "wait",
            "--for=condition=established",
            "crd",
            "--all",
            "--timeout=30s",
        ],
    )
    .await;
    // Namespaces must exist for namespaced dry runs.
    kubectl(
        &kc,
        &["apply", "-f", "examples/allocation/00-namespaces.yaml"],
    )
    .await;
    let mut files: Vec<_> = std::fs::read_dir(repo().join("examples/allocation"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "examples found: {files:?}");
    // CAPI's Cluster webhook validates a Cluster's variables against its ClusterClass (and only warns when the class
    // does not exist yet), so the classes are stored first: the Clusters' dry runs then get the real check.
    for f in files.iter().filter(|f| {
        f.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("clusterclass"))
    }) {
        kubectl(&kc, &["apply", "-f", f.to_str().unwrap()]).await;
    }
    for f in &files {
        let out = kubectl(
            &kc,
            &["apply", "--dry-run=server", "-f", f.to_str().unwrap()],
        )
        .await;
        assert!(out.contains("(server dry run)"), "{}: {out}", f.display());
    }
    // And the validation is real: the same Cluster with an out-of-bounds port and an unknown field is refused.
    let bad = std::fs::read_to_string(repo().join("examples/allocation/31-cluster-manual.yaml"))
        .unwrap()
        .replace("port: 6443", "port: 70000");
    let path = std::env::temp_dir().join(format!("bad-example-{}.yaml", std::process::id()));
    std::fs::write(&path, bad).unwrap();
    let out = tokio::process::Command::new(kubectl_bin())
        .arg(format!("--kubeconfig={}", kc.display()))
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "a port of 70000 must be rejected");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("controlPlaneEndpoint.port"),
        "error names the field: {stderr}"
    );
    tb.shutdown().await;
}
