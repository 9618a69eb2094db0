//! A kubeconfig pointing kubectl and kube-rs at the testbed (plain HTTP, no credentials).

use std::path::Path;

pub fn render(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {url}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: testbed
    namespace: default
current-context: testbed
preferences: {{}}
users:
- name: testbed
  user: {{}}
"
    )
}

pub fn write(path: &Path, url: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(url))
}
