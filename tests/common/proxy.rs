//! A TCP proxy between the operator and the testbed that can hold or swallow chosen HTTP requests, to play a
//! stuck API server (a request accepted and never answered) or to stop a watch at a chosen moment.
//!
//! It reads each request's first line (method, path and query) where a client write begins, which is where
//! hyper's HTTP/1.1 client writes a request's head; chunked bodies and pipelining are never used by kube. A
//! swallowed request wedges its connection for good: nothing more from that client connection reaches the server,
//! and no answer ever comes back, exactly as with a black-holed server. (The testbed's own "black hole" fault can
//! replace the swallow rule when it lands; holds stay useful for ordering.)

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What happens to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wait until the rule is released, then forward.
    Hold,
    /// Never forward; never answer.
    Swallow,
}

#[derive(Debug)]
struct Rule {
    id: u64,
    methods: Vec<String>,
    contains: Vec<String>,
    action: Action,
    matched: Arc<AtomicUsize>,
}

impl Rule {
    fn matches(&self, line: &str) -> bool {
        let method = line.split(' ').next().unwrap_or_default();
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.contains.iter().all(|c| line.contains(c.as_str()))
    }
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    next_id: AtomicU64,
    /// Bumped whenever a rule is removed, so held requests look again.
    changed: Mutex<Option<watch::Sender<u64>>>,
    /// Every request line seen, in order.
    lines: Mutex<Vec<String>>,
}

/// A rule installed on the proxy; [`Proxy::remove`] releases what it holds.
#[derive(Debug, Clone)]
pub struct RuleHandle {
    id: u64,
    matched: Arc<AtomicUsize>,
}

impl RuleHandle {
    /// Requests this rule has caught so far.
    pub fn matched(&self) -> usize {
        self.matched.load(Ordering::SeqCst)
    }
}

/// The running proxy.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` and writes a kubeconfig (a copy of `kubeconfig` pointing at the proxy).
    pub async fn start(upstream: SocketAddr, kubeconfig: &Path) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (tx, _) = watch::channel(0u64);
        let state = Arc::new(State {
            changed: Mutex::new(Some(tx)),
            ..State::default()
        });
        let text = std::fs::read_to_string(kubeconfig).expect("testbed kubeconfig");
        let rewritten: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("server:") {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}server: http://{addr}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "capi-vip-allocator-proxy-{}-{}.kubeconfig",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&path, rewritten).expect("proxy kubeconfig");
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        connection(client, server, st).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            state,
            kubeconfig: path,
            task,
        }
    }

    /// The kubeconfig pointing at the proxy.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Installs a rule for requests whose method is one of `methods` (any when empty) and whose request line
    /// contains every string of `contains`.
    pub fn add(&self, methods: &[&str], contains: &[&str], action: Action) -> RuleHandle {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        let matched = Arc::new(AtomicUsize::new(0));
        let rule = Rule {
            id,
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            contains: contains.iter().map(|c| (*c).to_owned()).collect(),
            action,
            matched: matched.clone(),
        };
        if let Ok(mut rules) = self.state.rules.lock() {
            rules.push(rule);
        }
        RuleHandle { id, matched }
    }

    /// Removes a rule: requests it holds go on; connections it swallowed stay wedged.
    pub fn remove(&self, rule: &RuleHandle) {
        if let Ok(mut rules) = self.state.rules.lock() {
            rules.retain(|r| r.id != rule.id);
        }
        if let Ok(tx) = self.state.changed.lock() {
            if let Some(tx) = tx.as_ref() {
                tx.send_modify(|n| *n += 1);
            }
        }
    }

    /// Every request line seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.state
            .lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Waits (up to `within`) until `rule` caught at least `n` requests.
    pub async fn wait_matched(&self, rule: &RuleHandle, n: usize, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while rule.matched() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy saw {} of {n} matching requests; lines: {:#?}",
                rule.matched(),
                self.lines().iter().rev().take(20).collect::<Vec<_>>()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The rule's action for a request starting with `line`, counting the match.
fn verdict(state: &State, line: &str) -> Option<(u64, Action)> {
    let rules = state.rules.lock().ok()?;
    let rule = rules.iter().find(|r| r.matches(line))?;
    rule.matched.fetch_add(1, Ordering::SeqCst);
    Some((rule.id, rule.action))
}

fn still_installed(state: &State, id: u64) -> bool {
    state
        .rules
        .lock()
        .map(|r| r.iter().any(|r| r.id == id))
        .unwrap_or(false)
}

async fn connection(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    });
    let mut changed = state
        .changed
        .lock()
        .ok()
        .and_then(|c| c.as_ref().map(|tx| tx.subscribe()));
    let mut buf = vec![0u8; 64 * 1024];
    let mut swallowed = false;
    loop {
        let n = match client_rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if swallowed {
            continue;
        }
        let chunk = &buf[..n];
        if let Some(line) = request_line(chunk) {
            if let Ok(mut lines) = state.lines.lock() {
                lines.push(line.clone());
            }
            match verdict(&state, &line) {
                Some((_, Action::Swallow)) => {
                    swallowed = true;
                    continue;
                }
                Some((id, Action::Hold)) => {
                    while still_installed(&state, id) {
                        match changed.as_mut() {
                            Some(rx) => {
                                if rx.changed().await.is_err() {
                                    break;
                                }
                            }
                            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                        }
                    }
                }
                None => {}
            }
        }
        if server_wr.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = server_wr.shutdown().await;
    down.abort();
}

/// `METHOD /path?query` when `chunk` starts an HTTP request.
fn request_line(chunk: &[u8]) -> Option<String> {
    let end = chunk.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&chunk[..end]).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    (method.chars().all(|c| c.is_ascii_uppercase()) && version.starts_with("HTTP/"))
        .then(|| format!("{method} {target}"))
}
