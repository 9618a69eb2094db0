//! POST: names and generateName, namespaces, server-set metadata, built-in defaults.

use super::*;

impl Shared {
    pub fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Written, ApiError> {
        let name_hint = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = self.create_inner(info, ns, body, ctx, false);
        let name = res
            .as_ref()
            .ok()
            .and_then(|w| meta_str(&w.object, "name").map(String::from))
            .unwrap_or(name_hint);
        self.record(ctx, "create", None, info, "", (ns, &name), &res);
        res
    }

    pub(super) fn create_inner(
        &self,
        info: &ResourceInfo,
        ns: &str,
        body: Value,
        ctx: &WriteCtx,
        managed: bool,
    ) -> Result<Written, ApiError> {
        let mut obj = ensure_object(body)?;
        check_type_meta(info, &mut obj, false)?;
        let mut obj = from_view(info, obj);
        let meta_ns = meta_str(&obj, "namespace").map(String::from);
        if info.namespaced {
            if let Some(bns) = meta_ns.filter(|b| !b.is_empty()) {
                if bns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let generate = meta_str(&obj, "generateName")
            .map(String::from)
            .filter(|g| !g.is_empty());
        let given = meta_str(&obj, "name")
            .map(String::from)
            .filter(|n| !n.is_empty());
        if given.is_none() && generate.is_none() {
            return Err(ApiError::invalid(
                &info.subject(""),
                vec![Cause {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        if info.namespaced {
            self.check_namespace_open(info, ns, given.as_deref().unwrap_or(""))?;
        }
        let mf = obj.pointer("/metadata/managedFields").cloned();
        if let Some(m) = obj["metadata"].as_object_mut() {
            for f in metadata::SYSTEM_FIELDS {
                m.remove(f);
            }
            if managed {
                if let Some(mf) = mf {
                    m.insert("managedFields".into(), mf);
                }
            }
        }
        if info.status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.builtin_defaults(info, &mut obj, given.as_deref());
        obj["metadata"]["uid"] = json!(self.new_uid());
        obj["metadata"]["creationTimestamp"] = json!(now_time());
        obj["metadata"]["generation"] = json!(1);
        let mut attempts = 0;
        loop {
            let name = match (&given, &generate) {
                (Some(n), _) => n.clone(),
                (None, Some(g)) => format!("{g}{}", self.name_suffix()),
                (None, None) => String::new(),
            };
            obj["metadata"]["name"] = json!(name);
            let mut candidate = obj.clone();
            let labels_ok = candidate
                .pointer("/metadata/labels")
                .is_none_or(|l| l.is_object() || l.is_null());
            if info.plural == "namespaces" && labels_ok {
                candidate["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            let warnings = self.check_content(info, &mut candidate, ctx, None, false)?;
            if !managed {
                let schema = info.schema.as_deref();
                let scope = scope_of(info, false);
                apply::record_update(
                    None,
                    &mut candidate,
                    &ctx.manager,
                    &info.api_version(),
                    &now_time(),
                    schema,
                    scope,
                );
            }
            let key = ObjKey {
                gr: info.storage.clone(),
                namespace: if info.namespaced {
                    ns.into()
                } else {
                    String::new()
                },
                name: name.clone(),
            };
            if ctx.dry_run {
                if self.store.get(&key.gr, &key.namespace, &key.name).is_some()
                    && generate.is_none()
                {
                    return Err(ApiError::already_exists(&info.subject(&name)));
                }
                return Ok(Written {
                    object: to_view(info, &Arc::new(candidate)),
                    code: 201,
                    warnings,
                });
            }
            match self.store.swap(&key, None, Some(candidate)) {
                Ok(stored) => {
                    self.after_commit(info, &stored, true);
                    return Ok(Written {
                        object: to_view(info, &stored),
                        code: 201,
                        warnings,
                    });
                }
                Err(_) if generate.is_some() && given.is_none() && attempts < 8 => attempts += 1,
                Err(_) => return Err(ApiError::already_exists(&info.subject(&name))),
            }
        }
    }

    fn builtin_defaults(&self, info: &ResourceInfo, obj: &mut Value, _name: Option<&str>) {
        if info.custom {
            return;
        }
        match info.plural.as_str() {
            "namespaces" => {
                if obj.pointer("/spec/finalizers").is_none() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                obj["status"] = json!({"phase": "Active"});
            }
            "customresourcedefinitions" => set_crd_status(obj),
            _ => {}
        }
    }
}
