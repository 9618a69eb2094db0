//! kubectl 1.32 against the standalone `testbed` binary: an independent client checking fidelity.
//! Fails (never skips) when kubectl is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn kubectl_path() -> PathBuf {
    let p = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    assert!(
        p.is_file(),
        "kubectl not found at {} — install kubectl 1.32 or set KUBECTL=/path/to/kubectl; this suite never skips",
        p.display()
    );
    p
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Server {
    child: Child,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "testbed-kubectl-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_testbed"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("testbed binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("testbed ready at http://127.0.0.1:"),
            "ready line: {line:?}"
        );
        assert!(line.trim_end().ends_with(&kubeconfig.display().to_string()));
        let s = Server {
            child,
            dir,
            kubeconfig,
        };
        // CAPI's Cluster webhook (on by default) refuses updates of Clusters whose ClusterClass is missing and
        // variables the class does not declare: serve `cluster_yaml`'s class.
        let profile = extra.iter().find_map(|a| {
            ["capi-v1.10", "capi-v1.12"]
                .into_iter()
                .find(|p| a.ends_with(p))
        });
        if let (Some(profile), false) = (profile, extra.contains(&"--fault-error-rate")) {
            s.apply_yaml(&class_yaml(profile), &[]);
        }
        s
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl_path());
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout; panics with stderr on failure.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl -o json prints JSON")
    }

    fn apply_yaml(&self, yaml: &str, extra: &[&str]) -> String {
        let path = self.dir.join(format!(
            "obj-{}.yaml",
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        std::fs::write(&path, yaml).unwrap();
        let mut args = vec!["apply", "-f", path.to_str().unwrap()];
        args.extend(extra);
        self.ok(&args)
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn crds(profile: &str) -> String {
    repo().join("crds").join(profile).display().to_string()
}

const POOL: &str = "apiVersion: ipam.cluster.x-k8s.io/v1alpha2
kind: GlobalInClusterIPPool
metadata:
  name: cp-pool
spec:
  addresses: [\"10.20.0.10-10.20.0.20\"]
  prefix: 24
  gateway: 10.20.0.1
";

/// The ClusterClass `demo` of `cluster_yaml`, declaring the variables the tests set.
fn class_yaml(profile: &str) -> String {
    let version = if profile == "capi-v1.10" {
        "v1beta1"
    } else {
        "v1beta2"
    };
    format!(
        "apiVersion: cluster.x-k8s.io/{version}
kind: ClusterClass
metadata:
  name: demo
  namespace: default
spec:
  variables:
  - name: kubeVipInterface
    required: false
    schema:
      openAPIV3Schema:
        type: string
  - name: clusterVip
    required: false
    schema:
      openAPIV3Schema:
        type: string
"
    )
}

fn cluster_yaml(profile: &str, name: &str) -> String {
    let (version, class) = match profile {
        "capi-v1.10" => ("v1beta1", "    class: demo\n"),
        _ => ("v1beta2", "    classRef:\n      name: demo\n"),
    };
    format!(
        "apiVersion: cluster.x-k8s.io/{version}
kind: Cluster
metadata:
  name: {name}
  namespace: default
spec:
  topology:
{class}    version: v1.32.0
    variables:
    - name: kubeVipInterface
      value: ens192
"
    )
}

fn claim_yaml(profile: &str, name: &str, cluster: &str, owner_uid: &str) -> String {
    let version = if profile == "capi-v1.10" {
        "v1beta1"
    } else {
        "v1beta2"
    };
    format!(
        "apiVersion: ipam.cluster.x-k8s.io/{version}
kind: IPAddressClaim
metadata:
  name: {name}
  namespace: default
  labels:
    cluster.x-k8s.io/cluster-name: {cluster}
  ownerReferences:
  - apiVersion: cluster.x-k8s.io/{cv}
    kind: Cluster
    name: {cluster}
    uid: {owner_uid}
    controller: true
    blockOwnerDeletion: true
spec:
  clusterName: {cluster}
  poolRef:
    apiGroup: ipam.cluster.x-k8s.io
    kind: GlobalInClusterIPPool
    name: cp-pool
",
        cv = if profile == "capi-v1.10" {
            "v1beta1"
        } else {
            "v1beta2"
        }
    )
}

fn apply_crds_then_objects(profile: &str) {
    let s = Server::start(&[]);
    let out = s.ok(&["apply", "-f", &crds(profile)]);
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/clusters.cluster.x-k8s.io created"
        ),
        "{out}"
    );
    s.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/clusters.cluster.x-k8s.io",
        "--timeout=10s",
    ]);
    s.apply_yaml(POOL, &[]);
    let out = s.apply_yaml(&cluster_yaml(profile, "c1"), &[]);
    assert!(out.contains("cluster.cluster.x-k8s.io/c1 created"), "{out}");
    let c = s.json(&["get", "cluster", "c1", "-n", "default"]);
    assert_eq!(
        c["spec"]["topology"]["variables"][0]["name"],
        "kubeVipInterface"
    );
    assert!(
        c["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let again = s.apply_yaml(&cluster_yaml(profile, "c1"), &[]);
    assert!(
        again.contains("unchanged"),
        "client-side re-apply is a no-op: {again}"
    );
    let list = s.json(&["get", "clusters", "-A"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let table = s.ok(&["get", "globalinclusterippools"]);
    assert!(table.contains("cp-pool"), "{table}");
    let short = s.ok(&["get", "cl", "-n", "default", "-o", "name"]);
    assert_eq!(
        short.trim(),
        "cluster.cluster.x-k8s.io/c1",
        "short name cl resolves"
    );
}

#[test]
fn kubectl_apply_crds_then_objects_capi_v1_10() {
    apply_crds_then_objects("capi-v1.10");
}

#[test]
fn kubectl_apply_crds_then_objects_capi_v1_12() {
    apply_crds_then_objects("capi-v1.12");
}

#[test]
fn kubectl_server_side_apply_twice_and_conflicts() {
    let s = Server::start(&["--crds", &crds("capi-v1.12")]);
    let crd_rv = || {
        s.ok(&[
            "get",
            "crd",
            "clusters.cluster.x-k8s.io",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    s.ok(&["apply", "--server-side", "-f", &crds("capi-v1.12")]);
    let before = crd_rv();
    s.ok(&["apply", "--server-side", "-f", &crds("capi-v1.12")]);
    assert_eq!(
        crd_rv(),
        before,
        "re-applying CRDs server-side changes nothing"
    );
    let y = cluster_yaml("capi-v1.12", "ssa");
    let first = s.apply_yaml(&y, &["--server-side"]);
    assert!(first.contains("serverside-applied"), "{first}");
    let rv1 = s.json(&["get", "cluster", "ssa"])["metadata"]["resourceVersion"].clone();
    s.apply_yaml(&y, &["--server-side"]);
    let c = s.json(&["get", "cluster", "ssa", "--show-managed-fields"]);
    assert_eq!(
        c["metadata"]["resourceVersion"], rv1,
        "second identical apply changes nothing"
    );
    assert_eq!(c["metadata"]["managedFields"][0]["manager"], "kubectl");
    let other = y.replace("ens192", "eth1");
    let out = s
        .cmd(&[
            "apply",
            "--server-side",
            "--field-manager",
            "someone-else",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(other.as_bytes())?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success(), "conflict expected");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conflict") && err.contains("kubectl"), "{err}");
    let path = s.dir.join("other.yaml");
    std::fs::write(&path, other).unwrap();
    s.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "someone-else",
        "--force-conflicts",
        "-f",
        path.to_str().unwrap(),
    ]);
    let c = s.json(&["get", "cluster", "ssa"]);
    assert_eq!(c["spec"]["topology"]["variables"][0]["value"], "eth1");
}

#[test]
fn kubectl_sees_real_server_refusals() {
    let s = Server::start(&["--crds", &crds("capi-v1.12"), "--no-ipam"]);
    s.apply_yaml(&cluster_yaml("capi-v1.12", "r"), &[]);
    s.ok(&[
        "patch",
        "cluster",
        "r",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"topology":{"variables":[{"name":"kubeVipInterface","value":"a&b"}]}}}"#,
    ]);
    // kubectl re-encodes the patch with Go's encoder (yaml.ToJSON), so its "a&b" reaches the server as
    // "a\u0026b" and passes the byte-wise `test` that the same text sent by a serde client fails
    // (tests/conformance/fidelity.rs).
    let guard = r#"[{"op":"test","path":"/spec/topology/variables/0/value","value":"a&b"}]"#;
    s.ok(&["patch", "cluster", "r", "--type", "json", "-p", guard]);
    let wrong = r#"[{"op":"test","path":"/spec/topology/variables/0/value","value":"zzz"},{"op":"add","path":"/metadata/labels","value":{"x":"y"}}]"#;
    let out = s.run(&["patch", "cluster", "r", "--type", "json", "-p", wrong]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server rejected our request due to an error in our request"),
        "{err}"
    );
    // CAPI's webhook: a variable the ClusterClass does not declare.
    let out = s.run(&[
        "patch",
        "cluster",
        "r",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/topology/variables/-","value":{"name":"nope","value":"x"}}]"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Cluster "r" is invalid"#) && err.contains("variable is not defined"),
        "{err}"
    );
}

#[test]
fn kubectl_patch_merge_and_json() {
    let s = Server::start(&["--crds", &crds("capi-v1.12")]);
    s.apply_yaml(&cluster_yaml("capi-v1.12", "p"), &[]);
    s.ok(&[
        "patch",
        "cluster",
        "p",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"controlPlaneEndpoint":{"host":"10.1.1.1","port":6443}}}"#,
    ]);
    s.ok(&["patch", "cluster", "p", "--type", "json", "-p",
        r#"[{"op":"test","path":"/spec/controlPlaneEndpoint/host","value":"10.1.1.1"},{"op":"add","path":"/spec/topology/variables/-","value":{"name":"clusterVip","value":"10.1.1.1"}}]"#]);
    let c = s.json(&["get", "cluster", "p"]);
    assert_eq!(c["spec"]["controlPlaneEndpoint"]["host"], "10.1.1.1");
    assert_eq!(c["spec"]["topology"]["variables"][1]["name"], "clusterVip");
    let bad = s.run(&[
        "patch",
        "cluster",
        "p",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/spec/controlPlaneEndpoint/host","value":"x"}]"#,
    ]);
    assert!(!bad.status.success());
    let invalid = s.run(&[
        "patch",
        "cluster",
        "p",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"controlPlaneEndpoint":{"port":0}}}"#,
    ]);
    assert!(!invalid.status.success());
    let err = String::from_utf8_lossy(&invalid.stderr);
    assert!(err.contains("spec.controlPlaneEndpoint.port"), "{err}");
    let strategic = s.run(&["patch", "cluster", "p", "-p", r#"{"spec":{"paused":true}}"#]);
    assert!(
        !strategic.status.success(),
        "strategic merge is not supported for custom resources"
    );
}

#[test]
fn kubectl_delete_collects_owned_claim_and_ipam_answers() {
    let s = Server::start(&["--crds", &crds("capi-v1.12")]);
    s.apply_yaml(POOL, &[]);
    s.apply_yaml(&cluster_yaml("capi-v1.12", "own"), &[]);
    let uid = s.ok(&["get", "cluster", "own", "-o", "jsonpath={.metadata.uid}"]);
    s.apply_yaml(&claim_yaml("capi-v1.12", "own-cp", "own", uid.trim()), &[]);
    s.ok(&[
        "wait",
        "--for=jsonpath={.status.addressRef.name}=own-cp",
        "ipaddressclaim/own-cp",
        "--timeout=10s",
    ]);
    let addr = s.ok(&[
        "get",
        "ipaddress",
        "own-cp",
        "-o",
        "jsonpath={.spec.address}",
    ]);
    assert_eq!(addr, "10.20.0.10");
    let table = s.ok(&["get", "ipaddresses"]);
    assert!(
        table.contains("ADDRESS") && table.contains("10.20.0.10"),
        "printer columns: {table}"
    );
    s.ok(&["delete", "cluster", "own"]);
    s.ok(&[
        "wait",
        "--for=delete",
        "ipaddressclaim/own-cp",
        "--timeout=10s",
    ]);
    s.ok(&["wait", "--for=delete", "ipaddress/own-cp", "--timeout=10s"]);
    let pool = s.ok(&[
        "get",
        "globalinclusterippool",
        "cp-pool",
        "-o",
        "jsonpath={.status.ipAddresses.used}",
    ]);
    assert_eq!(pool, "0");
}

#[test]
fn kubectl_get_watch_sees_a_change() {
    let s = Server::start(&["--crds", &crds("capi-v1.12")]);
    s.apply_yaml(&cluster_yaml("capi-v1.12", "w"), &[]);
    let mut watch = s
        .cmd(&[
            "get",
            "cluster",
            "w",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = serde_json::Deserializer::from_reader(stdout).into_iter::<Value>();
        for v in reader.flatten() {
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("initial event");
    assert_eq!(first["type"], "ADDED");
    s.ok(&[
        "patch",
        "cluster",
        "w",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"seen":"yes"}}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut modified = false;
    while Instant::now() < deadline && !modified {
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(500)) {
            modified =
                ev["type"] == "MODIFIED" && ev["object"]["metadata"]["labels"]["seen"] == "yes";
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(modified, "kubectl get -w printed the MODIFIED event");
}

#[test]
fn kubectl_discovery_describe_and_events() {
    let s = Server::start(&["--crds", &crds("capi-v1.12")]);
    let res = s.ok(&["api-resources"]);
    assert!(
        res.lines().any(|l| l.starts_with("clusters")
            && l.contains(" cl ")
            && l.contains("cluster.x-k8s.io/v1beta2")),
        "{res}"
    );
    assert!(res
        .lines()
        .any(|l| l.starts_with("leases") && l.contains("coordination.k8s.io/v1")));
    s.apply_yaml(&cluster_yaml("capi-v1.12", "d"), &[]);
    let uid = s.ok(&["get", "cluster", "d", "-o", "jsonpath={.metadata.uid}"]);
    let event = format!(
        "apiVersion: v1
kind: Event
metadata:
  name: d.1
  namespace: default
involvedObject:
  apiVersion: cluster.x-k8s.io/v1beta2
  kind: Cluster
  name: d
  namespace: default
  uid: {}
reason: VIPAllocated
message: control-plane VIP 10.0.0.5
type: Normal
",
        uid.trim()
    );
    s.apply_yaml(&event, &[]);
    let described = s.ok(&["describe", "cluster", "d"]);
    assert!(
        described.contains("VIPAllocated"),
        "describe shows events of the object: {described}"
    );
    let listed = s.ok(&["get", "events"]);
    assert!(
        listed.contains("OBJECT")
            && listed.contains("cluster/d")
            && listed.contains("VIPAllocated"),
        "{listed}"
    );
    let ev = s.json(&["get", "events.v1.events.k8s.io", "d.1"]);
    assert_eq!(
        ev["note"], "control-plane VIP 10.0.0.5",
        "events.k8s.io/v1 view of a core event"
    );
    // `kubectl create namespace` sends protobuf, which is out of scope: a clear 415, never a silent success.
    let proto = s.run(&["create", "namespace", "proto"]);
    assert!(!proto.status.success());
    assert!(String::from_utf8_lossy(&proto.stderr).contains("UnsupportedMediaType"));
    // `kubectl apply -f` of a Namespace works:
    s.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: applied\n",
        &[],
    );
    assert_eq!(
        s.ok(&["get", "ns", "applied", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
    s.ok(&["delete", "ns", "applied"]);
    s.ok(&["wait", "--for=delete", "ns/applied", "--timeout=10s"]);
}

#[test]
fn kubectl_uses_the_stats_endpoint_user_agent() {
    let s = Server::start(&["--crds", &crds("capi-v1.12"), "--no-ipam"]);
    s.apply_yaml(&cluster_yaml("capi-v1.12", "st"), &[]);
    let raw = s.ok(&["get", "--raw", "/testbed/stats"]);
    let stats: testbed::Stats = serde_json::from_str(&raw).expect("stats JSON");
    let w = stats
        .writes
        .iter()
        .find(|w| w.resource == "clusters" && w.verb == "create")
        .expect("create logged");
    assert!(w.user_agent.starts_with("kubectl/"), "{}", w.user_agent);
    assert_eq!(w.code, 201);
}

#[test]
fn binary_fault_flags_reach_kubectl() {
    let s = Server::start(&[
        "--crds",
        &crds("capi-v1.12"),
        "--fault-error-rate",
        "list=1:500",
    ]);
    let out = s.run(&["get", "clusters"]);
    assert!(!out.status.success(), "every list fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InternalError") || err.contains("Internal error"),
        "{err}"
    );
    // Faults of a running testbed can be replaced over HTTP.
    let cleared = s
        .cmd(&["create", "--raw", "/testbed/faults", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(b"{}")?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(
        cleared.status.success(),
        "{}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    s.ok(&["get", "clusters"]);
}

#[test]
fn binary_reports_bad_crd_directory_and_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["--listen", "127.0.0.1:0", "--crds", "/nonexistent/crds"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/crds"));
}

#[test]
fn kubectl_server_side_apply_takes_over_client_side_apply_ownership() {
    let s = Server::start(&["--crds", &crds("capi-v1.12"), "--no-ipam"]);
    let y = cluster_yaml("capi-v1.12", "mig");
    s.apply_yaml(&y, &[]);
    s.apply_yaml(&y, &["--server-side"]);
    let c = s.json(&["get", "cluster", "mig", "--show-managed-fields"]);
    let managers: Vec<(String, String)> = c["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_string(),
                m["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("kubectl".into(), "Apply".into())),
        "{managers:?}"
    );
    assert!(
        !managers.iter().any(|(m, _)| m == "kubectl-client-side-apply"),
        "kubectl's managedFields upgrade (a JSON patch of metadata.managedFields) is honoured: {managers:?}"
    );
}

/// kubectl 1.27–1.33 (the versions installed next to the Google Cloud SDK) all drive the testbed.
#[test]
fn older_and_newer_kubectl_versions_apply_patch_and_wait() {
    let dir = std::env::var_os("KUBECTL_VERSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/google-cloud-sdk/bin"));
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("kubectl.1."))
    });
    versions.sort();
    assert!(
        !versions.is_empty(),
        "no kubectl.1.* binaries in {} — set KUBECTL_VERSIONS_DIR to a folder holding kubectl.1.27 … kubectl.1.33",
        dir.display()
    );
    let s = Server::start(&["--crds", &crds("capi-v1.12"), "--no-ipam"]);
    for (i, bin) in versions.iter().enumerate() {
        let run = |args: &[&str]| {
            let out = Command::new(bin)
                .arg("--kubeconfig")
                .arg(&s.kubeconfig)
                .arg("--cache-dir")
                .arg(s.dir.join(format!("cache-{i}")))
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} {args:?}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let name = format!("v{i}");
        let path = s.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, cluster_yaml("capi-v1.12", &name)).unwrap();
        run(&["apply", "-f", path.to_str().unwrap()]);
        run(&["apply", "-f", path.to_str().unwrap()]);
        run(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
        run(&[
            "patch",
            "cluster",
            &name,
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"seen":"yes"}}}"#,
        ]);
        run(&[
            "wait",
            "--for=jsonpath={.metadata.labels.seen}=yes",
            &format!("cluster/{name}"),
            "--timeout=10s",
        ]);
        let listed = run(&["get", "clusters"]);
        assert!(
            listed.contains(&name),
            "{} lists {name}: {listed}",
            bin.display()
        );
    }
}
