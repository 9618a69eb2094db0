//! Preloading: the namespaces every cluster has, and YAML/JSON files from directories.

use std::path::Path;

use serde_json::{json, Value};

use crate::objects::{parse_yaml_or_json, WriteCtx};
use crate::state::Shared;
use crate::TestbedError;

const AGENT: &str = "testbed-loader";

pub fn create_default_namespaces(shared: &Shared) {
    let Some(info) = shared.registry().lookup("", "v1", "namespaces") else {
        return;
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = shared.create(&info, "", obj, &WriteCtx::internal(AGENT));
    }
}

/// Splits a multi-document YAML (or a JSON) file into objects.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(match v {
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                m.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            }
            other => vec![other],
        });
    }
    let mut out = Vec::new();
    let mut chunk = String::new();
    let mut flush = |chunk: &mut String| -> Result<(), String> {
        if chunk
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            let v = parse_yaml_or_json(chunk.as_bytes()).map_err(|e| e.message)?;
            if !v.is_null() {
                out.push(v);
            }
        }
        chunk.clear();
        Ok(())
    };
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            flush(&mut chunk)?;
        } else {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    flush(&mut chunk)?;
    Ok(out)
}

/// Applies every `.yaml`/`.yml`/`.json` file of a directory: CRDs first, then the rest.
pub fn load_dir(shared: &Shared, dir: &Path) -> Result<(), TestbedError> {
    let err = |path: &Path, message: String| TestbedError::Load {
        path: path.to_path_buf(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| err(dir, e.to_string()))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| err(f, e.to_string()))?;
        for d in documents(&text).map_err(|e| err(f, e))? {
            docs.push((f.clone(), d));
        }
    }
    docs.sort_by_key(|(_, d)| {
        d.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition")
    });
    let ctx = WriteCtx::internal(AGENT);
    for (f, d) in docs {
        let av = d.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = d.get("kind").and_then(Value::as_str).unwrap_or("");
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        let info = shared
            .registry()
            .all()
            .into_iter()
            .find(|i| i.group == group && i.version == version && i.kind == kind)
            .ok_or_else(|| err(&f, format!("no served resource for {av} {kind}")))?;
        let ns = d
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        shared
            .create(&info, &ns, d, &ctx)
            .map_err(|e| err(&f, e.message))?;
    }
    Ok(())
}
