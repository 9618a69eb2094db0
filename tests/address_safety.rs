//! The address of a running Cluster's VIP is never freed: our finalizer on its IPAddress, a deleted claim recreated
//! on the same address, everything released when the Cluster goes, and the README's uninstall command.

mod common;

use common::{host, Env};
use kube::api::{DeleteParams, DynamicObject, ListParams};
use serde_json::json;
use testbed::Profile;

const CP: &str = "control-plane";
const FINALIZER: &str = "vip.capi.gorizond.io/address-protection";

fn finalizers(o: &DynamicObject) -> Vec<String> {
    o.metadata.finalizers.clone().unwrap_or_default()
}

fn address_of(o: &DynamicObject) -> String {
    o.data
        .pointer("/spec/address")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A Cluster of class `gold` without ingress VIP.
async fn cp_only_cluster(env: &Env, ns: &str, name: &str) -> String {
    env.gold_cp_only_cluster(ns, name, json!({})).await;
    env.wait_cp_vip(ns, name).await
}

async fn setup(env: &Env, prefix: &str) -> String {
    let ns = env.namespace(prefix).await;
    env.class(&ns, "gold", &[]).await;
    // First fit, lowest free: a freed .10 would be the very next address handed out.
    env.pool("cp-pool", &["10.60.0.10-10.60.0.20"], 24, "gold", CP)
        .await;
    ns
}

#[tokio::test]
async fn a_deleted_claim_never_frees_a_running_clusters_vip() {
    let env = Env::start(Profile::Capi112).await;
    let ns = setup(&env, "keep").await;
    let vip = cp_only_cluster(&env, &ns, "first").await;
    assert_eq!(vip, "10.60.0.10");
    let before = env.wait_protected(&ns, "vip-cp-first").await;
    assert!(
        finalizers(&before)
            .iter()
            .any(|f| f == "ipam.cluster.x-k8s.io/ProtectAddress"),
        "the provider's finalizer is kept: {before:#?}"
    );

    // A GitOps prune, a script: the bound claim of a running Cluster is deleted.
    env.claims(&ns)
        .delete("vip-cp-first", &DeleteParams::default())
        .await
        .expect("delete claim");
    // The very next Cluster of the class must not get the address the first one still uses.
    let second = cp_only_cluster(&env, &ns, "second").await;
    assert_ne!(
        second, vip,
        "a running Cluster's VIP was handed to another Cluster"
    );

    env.wait_event(&ns, "first", "ClaimRestored").await;
    let claim = env
        .wait_object(
            &env.claims(&ns),
            "vip-cp-first",
            "claim recreated and bound",
            |c| {
                c.metadata.deletion_timestamp.is_none()
                    && c.data.pointer("/status/addressRef/name").is_some()
            },
        )
        .await;
    assert_ne!(claim.metadata.uid, None);
    let after = env.wait_protected(&ns, "vip-cp-first").await;
    assert_eq!(address_of(&after), vip, "recreated on the same address");
    assert_ne!(after.metadata.uid, before.metadata.uid, "a new IPAddress");
    env.wait_gone(
        &env.addresses(&ns),
        "vip-cp-first-held",
        "the holder goes once the claim is bound",
    )
    .await;
    let first = env.clusters(&ns).get("first").await.unwrap();
    assert_eq!(host(&first), vip, "the Cluster's host is untouched");
    assert!(env.events(&ns, "first", "VIPReleased").await.is_empty());
    assert!(env.events(&ns, "first", "ManualEndpoint").await.is_empty());

    // No two IPAddresses hold one address.
    let all = env
        .addresses(&ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut seen: Vec<String> = all.iter().map(address_of).collect();
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "an address is held twice: {all:#?}");

    // Deleting the Cluster releases everything: claims and IPAddresses go.
    env.delete_cluster(&ns, "first").await;
    env.wait_gone(&env.claims(&ns), "vip-cp-first", "claim deletion")
        .await;
    env.wait_gone(
        &env.addresses(&ns),
        "vip-cp-first",
        "our finalizer released",
    )
    .await;
}

#[tokio::test]
async fn deleting_the_namespace_completes_with_the_operator_running() {
    let env = Env::start(Profile::Capi112).await;
    let ns = setup(&env, "nsgone").await;
    cp_only_cluster(&env, &ns, "doomed").await;
    env.wait_protected(&ns, "vip-cp-doomed").await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(env.client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    env.wait_gone(
        &env.addresses(&ns),
        "vip-cp-doomed",
        "our finalizer released",
    )
    .await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while namespaces.get_opt(&ns).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace {ns} never went\n{}",
            env.op.diagnostics().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The README's uninstall command, run as written with kubectl, removes our finalizer and only ours.
#[tokio::test]
async fn the_readme_uninstall_command_releases_what_we_hold() {
    let env = Env::start(Profile::Capi112).await;
    let ns = setup(&env, "uninstall").await;
    cp_only_cluster(&env, &ns, "kept").await;
    env.wait_protected(&ns, "vip-cp-kept").await;
    let Env { op, tb, .. } = env;
    op.terminate().await;

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("# release-finalizers\n")
        .expect("README has the uninstall command block");
    let block = &readme[start..];
    let command = &block[..block.find("```").expect("end of block")];
    // Async: the testbed serves from this test's runtime. The command is safe to run again (the README says so):
    // an entry another client moved between its read and its patch fails the `test` guard, and the next run
    // finds it at its new index. It must succeed within three runs.
    let mut last = None;
    for _ in 0..3 {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("KUBECONFIG", tb.kubeconfig_path())
            .output()
            .await
            .expect("sh runs");
        let ok = out.status.success();
        last = Some(out);
        if ok {
            break;
        }
    }
    let out = last.expect("ran");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let client = tb.client();
    let shapes = common::shapes(Profile::Capi112);
    let addresses: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client, &ns, &shapes.address);
    let a = addresses.get("vip-cp-kept").await.unwrap();
    assert!(
        !finalizers(&a).iter().any(|f| f == FINALIZER),
        "{a:#?}\n{command}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        finalizers(&a)
            .iter()
            .any(|f| f == "ipam.cluster.x-k8s.io/ProtectAddress"),
        "the IPAM provider's own finalizer stays: {a:#?}"
    );
}

#[tokio::test]
async fn a_force_released_vip_is_reserved_again_while_its_pool_has_it_free() {
    let env = Env::start(Profile::Capi112).await;
    let ns = setup(&env, "forced").await;
    let vip = cp_only_cluster(&env, &ns, "first").await;
    env.wait_protected(&ns, "vip-cp-first").await;
    // With the operator down, the claim is deleted and our finalizer removed by hand: the address is free.
    let Env {
        tb,
        op,
        client,
        profile,
        shapes,
    } = env;
    op.terminate().await;
    let claims: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), &ns, &shapes.claim);
    let addresses: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), &ns, &shapes.address);
    claims
        .delete("vip-cp-first", &DeleteParams::default())
        .await
        .expect("delete claim");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let a = addresses.get_opt("vip-cp-first").await.unwrap();
        match a {
            Some(a) if a.metadata.deletion_timestamp.is_some() => {
                let kept: Vec<String> = finalizers(&a)
                    .into_iter()
                    .filter(|f| f != FINALIZER)
                    .collect();
                addresses
                    .patch(
                        "vip-cp-first",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": kept}})),
                    )
                    .await
                    .expect("remove our finalizer by hand");
            }
            None => break,
            Some(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the IPAddress never went"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let mut op = common::Operator::spawn(tb.kubeconfig_path(), &[]);
    op.wait_ready().await;
    let env = Env {
        tb,
        op,
        client,
        profile,
        shapes,
    };
    let e = env.wait_event(&ns, "first", "VIPReleased").await;
    assert!(
        e.note
            .as_deref()
            .unwrap_or_default()
            .contains("reserved again"),
        "{e:?}"
    );
    let claim = env
        .wait_object(&env.claims(&ns), "vip-cp-first", "claim bound again", |c| {
            c.data.pointer("/status/addressRef/name").is_some()
        })
        .await;
    assert!(claim.metadata.deletion_timestamp.is_none());
    let a = env.wait_protected(&ns, "vip-cp-first").await;
    assert_eq!(address_of(&a), vip, "the same address, reserved again");
    assert_ne!(cp_only_cluster(&env, &ns, "second").await, vip);
}

#[tokio::test]
async fn a_hand_set_host_inside_a_pool_is_reported_unreserved() {
    let env = Env::start(Profile::Capi112).await;
    let ns = setup(&env, "unreserved").await;
    for (name, host) in [("inside", "10.60.0.15"), ("outside", "192.168.7.7")] {
        env.cluster_with(
            &ns,
            name,
            json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
            json!({"topology": env.topology("gold", None, None),
                   "controlPlaneEndpoint": {"host": host, "port": 6443}}),
        )
        .await;
    }
    let e = env.wait_event(&ns, "inside", "EndpointNotReserved").await;
    assert!(
        e.note.as_deref().unwrap_or_default().contains("cp-pool"),
        "{e:?}"
    );
    env.wait_event(&ns, "outside", "ManualEndpoint").await;
    assert!(env
        .events(&ns, "outside", "EndpointNotReserved")
        .await
        .is_empty());
}

#[tokio::test]
async fn the_tcp_probe_keeps_an_answering_vip_off_the_cluster() {
    // Tests may only probe loopback: 127.0.0.0/8 is all loopback on Linux.
    let port = common::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.33.10", port))
        .await
        .expect("listen on a loopback VIP");
    let port_flag = format!("--default-port={port}");
    let env = Env::start_with(Profile::Capi112, &["--vip-probe=tcp", &port_flag]).await;
    let ns = env.namespace("probe").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("loop-pool", &["127.0.33.10-127.0.33.20"], 24, "gold", CP)
        .await;
    env.gold_cp_only_cluster(&ns, "squatted", json!({})).await;
    let e = env.wait_event(&ns, "squatted", "VIPInUse").await;
    assert!(
        e.note
            .as_deref()
            .unwrap_or_default()
            .contains("127.0.33.10"),
        "{e:?}"
    );
    let c = env.clusters(&ns).get("squatted").await.unwrap();
    assert_eq!(host(&c), "", "an answering address is never written");
    // The next Cluster gets the next, silent address, and it is written.
    assert_eq!(cp_only_cluster(&env, &ns, "second").await, "127.0.33.11");
    drop(listener);
}
