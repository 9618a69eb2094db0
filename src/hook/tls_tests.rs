//! The TLS server: discovery over HTTPS, a certificate rotated on disk picked up without a restart.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;

use super::{
    decision::Lookup,
    routes::{handler_name, ClusterSource, Routes, HOOKS_PATH},
};

struct Missing;

impl ClusterSource for Missing {
    fn lookup(&self, _: &str, _: &str, _: Option<&str>) -> Lookup {
        Lookup::Missing
    }
}

fn routes() -> Routes {
    Routes {
        handler: handler_name("vip-allocator"),
        retry_after_seconds: 2,
    }
}

fn waiting() -> Missing {
    Missing
}

fn self_signed(cn: &str) -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), cn.to_owned()]).unwrap();
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vip-hook-{tag}-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn write(dir: &std::path::Path, pair: &(String, String)) {
    // Like the kubelet: write aside, then rename into place.
    for (name, text) in [("tls.crt", &pair.0), ("tls.key", &pair.1)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

async fn served_cert(addr: std::net::SocketAddr, roots: &[&str]) -> (Vec<u8>, String) {
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        store
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let body =
        r#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"DiscoveryRequest"}"#;
    let req = format!(
        "POST {HOOKS_PATH}/discovery?timeout=10s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap_or_default();
    (der, out)
}

#[tokio::test]
async fn tls_server_serves_discovery_and_picks_up_a_rotated_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("rotate");
    let first = self_signed("first.example");
    let second = self_signed("second.example");
    write(&dir, &first);
    let server = super::HookServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        &dir,
        routes(),
        Arc::new(waiting()),
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));

    let (der1, resp) = served_cert(addr, &[&first.0, &second.0]).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"hook\":\"BeforeClusterCreate\""), "{resp}");
    let first_der = rustls_pki_types::CertificateDer::from_pem_slice(first.0.as_bytes()).unwrap();
    assert_eq!(der1, first_der.to_vec());

    // mtime granularity can be coarse: make sure the stamp differs.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&dir, &second);
    let (der2, resp) = served_cert(addr, &[&first.0, &second.0]).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let second_der = rustls_pki_types::CertificateDer::from_pem_slice(second.0.as_bytes()).unwrap();
    assert_eq!(
        der2,
        second_der.to_vec(),
        "the rotated certificate is served without a restart"
    );

    // A half-written rotation keeps the last good certificate.
    std::fs::write(dir.join("tls.key"), "garbage").unwrap();
    let (der3, _) = served_cert(addr, &[&first.0, &second.0]).await;
    assert_eq!(der3, second_der.to_vec());

    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn missing_certificate_is_a_start_up_error() {
    let dir = temp_dir("missing");
    let err = super::HookServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        &dir,
        routes(),
        Arc::new(waiting()),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("tls.crt"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
