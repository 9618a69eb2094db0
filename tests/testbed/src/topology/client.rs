//! The Runtime SDK client side, as CAPI's runtime client does it: HTTPS POST only, the server certificate checked
//! against the ExtensionConfig's `caBundle`, the URL `<base>/hooks.runtime.cluster.x-k8s.io/v1alpha1/<hook>[/<handler>]
//! ?timeout=<n>s`, HTTP 200 with a JSON body or an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hooks API path prefix.
pub const HOOKS_PREFIX: &str = "/hooks.runtime.cluster.x-k8s.io/v1alpha1";
/// Hooks apiVersion.
pub const HOOKS_API_VERSION: &str = "hooks.runtime.cluster.x-k8s.io/v1alpha1";
/// Bodies above this are refused (CAPI reads up to 20 MiB of error bodies; answers are small).
const MAX_RESPONSE: usize = 20 << 20;

/// Where and how to reach one extension.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    connect_to: Option<SocketAddr>,
    path_prefix: String,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}:{}{}", self.host, self.port, self.path_prefix)
    }
}

impl Endpoint {
    /// From `spec.clientConfig`: `url`, or `service` (host `<name>.<namespace>.svc`, the TLS server name, as CAPI
    /// builds it), reached through `services` (`"<host>:<port>"` → address) since the testbed has no cluster DNS.
    pub fn from_client_config(
        cc: &Value,
        services: &BTreeMap<String, SocketAddr>,
    ) -> Result<Self, String> {
        let (host, port, path, connect_to) = if let Some(url) =
            cc.get("url").and_then(Value::as_str)
        {
            let (host, port, path) = parse_url(url)?;
            (host, port, path, None)
        } else if let Some(svc) = cc.get("service") {
            let field = |k: &str| {
                svc.get(k)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("clientConfig.service.{k} is required"))
            };
            let host = format!("{}.{}.svc", field("name")?, field("namespace")?);
            let port = match svc.get("port").and_then(Value::as_u64) {
                None => 443,
                Some(p) => {
                    u16::try_from(p).map_err(|_| format!("clientConfig.service.port {p}"))?
                }
            };
            let path = svc
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_end_matches('/')
                .to_owned();
            let key = format!("{host}:{port}");
            let addr = *services.get(&key).ok_or_else(|| {
                format!("service {key} has no address in the testbed (TopologyOptions::services)")
            })?;
            (host, port, path, Some(addr))
        } else {
            return Err("clientConfig needs url or service".to_owned());
        };
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = cc.get("caBundle").and_then(Value::as_str) {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca)
                .map_err(|e| format!("caBundle is not base64: {e}"))?;
            use rustls_pki_types::pem::PemObject;
            for der in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let der = der.map_err(|e| format!("caBundle: {e}"))?;
                roots.add(der).map_err(|e| format!("caBundle: {e}"))?;
            }
        }
        if roots.is_empty() {
            return Err("clientConfig.caBundle holds no certificate".to_owned());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Endpoint {
            host,
            port,
            connect_to,
            path_prefix: path,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// POSTs `body` to `<prefix>/hooks…/<suffix>?timeout=<timeout>s` and returns the JSON answer.
    pub async fn call(
        &self,
        suffix: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let secs = timeout.as_secs().max(1);
        let path = format!(
            "{}{HOOKS_PREFIX}/{suffix}?timeout={secs}s",
            self.path_prefix
        );
        tokio::time::timeout(timeout, self.post(&path, body))
            .await
            .map_err(|_| format!("POST {path}: timed out after {secs}s"))?
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let tcp = match self.connect_to {
            Some(addr) => tokio::net::TcpStream::connect(addr).await,
            None => tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await,
        }
        .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("server name {}: {e}", self.host))?;
        let mut tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {}: {e}", self.host))?;
        let payload = body.to_string();
        // CAPI's client sets no Content-Type of its own; Go adds Content-Length and Accept-Encoding.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: testbed-topology\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            self.port,
            payload.len()
        );
        tls.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(payload.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        // A peer closing without close_notify still delivered a complete response when Content-Length matches.
        let _ = (&mut tls)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await;
        parse_response(&raw)
    }
}

/// `https://host[:port][/path]` → (host, port, path without trailing slash).
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("clientConfig.url {url:?} must use https"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("bad host in {url:?}"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|e| format!("port in {url:?}: {e}"))?,
        None => 443,
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

fn parse_response(raw: &[u8]) -> Result<Value, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < len {
            return Err("response body cut short".to_owned());
        }
        body.truncate(len);
    }
    if status != 200 {
        let text = String::from_utf8_lossy(&body);
        let short: String = text.chars().take(512).collect();
        return Err(format!("unexpected status code {status}: {short}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("response is not JSON: {e}"))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".to_owned());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_by_length_or_chunks_and_non_200_is_an_error() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\":\"ok\"}\nxx";
        assert_eq!(parse_response(ok).unwrap()["status"], "ok");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap()["a"], 1);
        let err =
            parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope").unwrap_err();
        assert!(err.contains("404") && err.contains("nope"), "{err}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn client_config_needs_an_https_url_and_a_ca_bundle() {
        let none = BTreeMap::new();
        let e = Endpoint::from_client_config(
            &serde_json::json!({"service": {"name": "x", "namespace": "y"}}),
            &none,
        );
        assert!(e.unwrap_err().contains("x.y.svc:443"));
        let e = Endpoint::from_client_config(&serde_json::json!({"url": "http://h"}), &none);
        assert!(e.unwrap_err().contains("https"));
        let e = Endpoint::from_client_config(&serde_json::json!({"url": "https://h:1"}), &none);
        assert!(e.unwrap_err().contains("caBundle"));
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            parse_url("https://h").unwrap(),
            ("h".into(), 443, "".into())
        );
        assert_eq!(
            parse_url("https://h:8443/x/").unwrap(),
            ("h".into(), 8443, "/x".into())
        );
        assert_eq!(
            parse_url("https://[::1]:9443").unwrap(),
            ("::1".into(), 9443, "".into())
        );
        assert_eq!(
            parse_url("https://[::1]").unwrap(),
            ("::1".into(), 443, "".into())
        );
        assert!(parse_url("https://:1").is_err());
        assert!(parse_url("https://h:port").is_err());
    }
}
