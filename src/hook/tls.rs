//! Serving certificate read from `<dir>/tls.crt` and `<dir>/tls.key`, re-read when either file changes
//! (cert-manager rotates the Secret; the kubelet swaps the mounted files atomically), without a restart.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use rustls::{
    crypto::ring::sign::any_supported_type,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Certificate file name in the cert dir (the Secret key cert-manager writes).
pub const CERT_FILE: &str = "tls.crt";
/// Key file name in the cert dir.
pub const KEY_FILE: &str = "tls.key";

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The PEM did not hold a usable certificate chain or key.
    #[error("{path}: {message}")]
    Pem {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Size and modification time of both files: a change in either means "re-read".
type Stamp = Option<[(SystemTime, u64); 2]>;

fn stamp(dir: &Path) -> Stamp {
    let one = |f: &str| {
        let m = std::fs::metadata(dir.join(f)).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(CERT_FILE)?, one(KEY_FILE)?])
}

/// Loads the certificate chain and key in `dir`.
pub fn load(dir: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
    };
    let (cert_pem, key_pem) = (read(CERT_FILE)?, read(KEY_FILE)?);
    let pem_err = |f: &str, message: String| TlsError::Pem {
        path: dir.join(f),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(CERT_FILE, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err(CERT_FILE, "no CERTIFICATE block".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_err(KEY_FILE, format!("no usable private key: {e}")))?;
    let signing = any_supported_type(&key)
        .map_err(|e| pem_err(KEY_FILE, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| pem_err(KEY_FILE, format!("key does not match {CERT_FILE}: {e}")))?;
    Ok(Arc::new(certified))
}

/// Resolves the serving certificate, re-reading the files when their size or mtime changed. A rotation
/// caught half-written keeps the previous certificate until the next handshake sees complete files.
pub struct ReloadingCert {
    dir: PathBuf,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("dir", &self.dir)
            .finish()
    }
}

impl ReloadingCert {
    /// Loads `dir` once; fails when the files are missing or unusable (a start-up error).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let dir = dir.into();
        let st = stamp(&dir);
        let key = load(&dir)?;
        Ok(Self {
            dir,
            current: Mutex::new((st, key)),
        })
    }

    /// The certificate to serve now.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut slot = self.current.lock().ok()?;
        let now = stamp(&self.dir);
        if now.is_some() && now != slot.0 {
            match load(&self.dir) {
                Ok(key) => {
                    tracing::info!(dir = %self.dir.display(), "serving certificate reloaded");
                    *slot = (now, key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new serving certificate not usable yet; keeping the previous one")
                }
            }
        }
        Some(slot.1.clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// A server config (HTTP/1.1, TLS 1.2+) serving `certs`.
pub fn server_config(certs: Arc<ReloadingCert>) -> Result<ServerConfig, rustls::Error> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
