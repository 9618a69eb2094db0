//! Probes, flags and shutdown of the real binary.

mod common;

use common::{http_get, Operator};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use testbed::{Profile, Testbed, TestbedOptions};

#[tokio::test]
async fn readyz_flips_to_200_once_crds_are_served_and_caches_synced() {
    // A server without the CAPI CRDs: the operator is alive but not ready.
    let tb = Testbed::start(TestbedOptions::default())
        .await
        .expect("testbed");
    let mut op = Operator::spawn(tb.kubeconfig_path(), &[]);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if let Some((200, body)) = op.probe("/healthz").await {
            assert_eq!(body, "ok");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz never answered\n{}",
            op.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _) = op.probe("/readyz").await.expect("readyz answers");
    assert_eq!(status, 503, "not ready before the CRDs exist");

    let crds: Api<CustomResourceDefinition> = Api::all(tb.client());
    for entry in std::fs::read_dir(Profile::Capi112.crd_dir()).expect("crd dir") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("CRD YAML");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    op.wait_ready().await;
    let (status, body) = op.probe("/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, logs) = op.terminate().await;
    assert!(
        status.success(),
        "graceful exit on SIGTERM: {status}\n{logs}"
    );
    assert!(
        logs.contains("controller stopped"),
        "the controller shut down cleanly:\n{logs}"
    );
}

#[tokio::test]
async fn one_server_serves_everything_when_addresses_are_equal() {
    let tb = Testbed::start(TestbedOptions::profile(Profile::Capi112))
        .await
        .expect("testbed");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let certs = serving_certs();
    let _op = Operator::spawn(
        tb.kubeconfig_path(),
        &[
            &format!("--metrics-bind-address={addr}"),
            "--health-probe-bind-address",
            &addr,
            "--leader-elect",
            // Outside a pod the Lease namespace cannot be read from the service account.
            "--leader-election-namespace=kube-system",
            "--enable-runtime-extension=true",
            &format!("--runtime-extension-port={}", common::free_port()),
            &format!("--runtime-extension-cert-dir={}", certs.display()),
        ],
    );
    // The later flags override the harness's: both endpoints on one port.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if let Some((200, _)) = http_get(port, "/readyz").await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready on the shared port"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = http_get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("process_start_time_seconds"));
}

#[tokio::test]
async fn reconciler_can_be_disabled() {
    let tb = Testbed::start(TestbedOptions::profile(Profile::Capi112))
        .await
        .expect("testbed");
    let mut op = Operator::spawn(tb.kubeconfig_path(), &["--enable-reconciler=false"]);
    op.wait_ready().await;
    let stats = serde_json::to_value(tb.stats()).unwrap().to_string();
    assert!(
        !stats.contains("capi-vip-allocator/"),
        "no API request at all when the reconciler is off"
    );
}

#[test]
fn help_lists_every_go_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capi-vip-allocator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--metrics-bind-address",
        "--health-probe-bind-address",
        "--leader-elect",
        "--default-port",
        "--enable-reconciler",
        "--enable-runtime-extension",
        "--runtime-extension-port",
        "--runtime-extension-name",
        "--kubeconfig",
        "--log-format",
        "--log-level",
    ] {
        assert!(help.contains(flag), "--help misses {flag}");
    }
}

#[test]
fn bad_flags_exit_with_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capi-vip-allocator"))
        .arg("--default-port=nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default-port"));
}

/// A self-signed `tls.crt`/`tls.key` for the hook server, in a fresh directory.
fn serving_certs() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vip-probes-certs-{}-{}",
        std::process::id(),
        common::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.key_pair.serialize_pem()).unwrap();
    dir
}

/// Go's `:PORT` listens on every family; so do ours: in an IPv6-only cluster the kubelet probes `[::1]`-style
/// addresses, elsewhere IPv4. Both loopbacks answer on the probe, metrics and hook ports.
#[tokio::test]
async fn go_style_port_only_addresses_answer_on_ipv4_and_ipv6() {
    let tb = Testbed::start(TestbedOptions::profile(Profile::Capi112))
        .await
        .expect("testbed");
    let (probe, metrics, hook) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let certs = serving_certs();
    let mut op = Operator::spawn_opts(
        &Operator::binary(),
        tb.kubeconfig_path(),
        &[
            "--enable-runtime-extension=true",
            &format!("--runtime-extension-port={hook}"),
            &format!("--runtime-extension-cert-dir={}", certs.display()),
        ],
        common::SpawnOptions {
            probe_bind: Some(format!(":{probe}")),
            metrics_bind: Some(format!(":{metrics}")),
            ..Default::default()
        },
    );
    op.wait_ready().await;
    for host in ["127.0.0.1", "::1"] {
        for (port, path) in [
            (probe, "/healthz"),
            (probe, "/readyz"),
            (metrics, "/metrics"),
        ] {
            let addr = std::net::SocketAddr::new(host.parse().unwrap(), port);
            let status = common::http_get_at(addr, path).await.map(|(s, _)| s);
            assert_eq!(status, Some(200), "{path} on {addr}\n{}", op.logs());
        }
        let addr = std::net::SocketAddr::new(host.parse().unwrap(), hook);
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_ok(),
            "the hook port accepts on {addr}"
        );
    }
}
