//! PUT and PATCH (JSON, merge, strategic merge, server-side apply), retried on concurrent changes.

use super::*;

impl Shared {
    pub fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Written, ApiError> {
        let res = self.update_inner(info, ns, name, body, status, ctx);
        self.record(
            ctx,
            "update",
            None,
            info,
            if status { "status" } else { "" },
            (ns, name),
            &res,
        );
        res
    }

    fn update_inner(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Written, ApiError> {
        let mut body = ensure_object(body)?;
        check_type_meta(info, &mut body, false)?;
        let body = from_view(info, body);
        if let Some(n) = meta_str(&body, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if info.namespaced {
            if let Some(bns) = meta_str(&body, "namespace").filter(|b| !b.is_empty()) {
                if bns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        let want_rv = meta_str(&body, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(String::from);
        let key = key_of(info, ns, name);
        loop {
            let Some(cur) = self.store.get(&key.gr, &key.namespace, &key.name) else {
                if !info.custom
                    && !matches!(
                        info.plural.as_str(),
                        "namespaces" | "customresourcedefinitions"
                    )
                    && !status
                {
                    // Built-ins like leases and events allow create-on-update.
                    return self
                        .create_inner(info, ns, body, ctx, false)
                        .map(|w| Written { code: 201, ..w });
                }
                return Err(ApiError::not_found(&info.subject(name)));
            };
            let cur_rv = rv_of(&cur).unwrap_or(0);
            match &want_rv {
                None if info.custom => {
                    return Err(ApiError::invalid(
                        &info.subject(name),
                        vec![Cause::invalid(
                            "metadata.resourceVersion",
                            &json!("0x0"),
                            "must be specified for an update",
                        )],
                    ))
                }
                Some(rv) if *rv != cur_rv.to_string() => {
                    return Err(ApiError::conflict(&info.subject(name)))
                }
                _ => {}
            }
            let p = self.prepare(
                info,
                &cur,
                body.clone(),
                scope_of(info, status),
                ctx,
                Mode::Update,
            )?;
            if let Some(w) = self.finish(info, &key, &cur, p, ctx)? {
                return Ok(w);
            }
            if want_rv.is_some() {
                return Err(ApiError::conflict(&info.subject(name)));
            }
        }
    }

    /// Commits a prepared write. Ok(None): the object changed meanwhile, try again.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &[u8],
        force: bool,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Written, ApiError> {
        let res = self.patch_inner(info, ns, name, ptype, body, force, status, ctx);
        let verb = if ptype == PatchType::Apply {
            "apply"
        } else {
            "patch"
        };
        self.record(
            ctx,
            verb,
            Some(ptype),
            info,
            if status { "status" } else { "" },
            (ns, name),
            &res,
        );
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn patch_inner(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &[u8],
        force: bool,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Written, ApiError> {
        if ptype == PatchType::StrategicMerge && info.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
                &[
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ],
            ));
        }
        if ptype == PatchType::Apply && ctx.manager.is_empty() {
            return Err(ApiError::invalid(
                &crate::errors::Subject {
                    group: "meta.k8s.io",
                    plural: "",
                    kind: "PatchOptions",
                    name: "",
                },
                vec![Cause {
                    reason: "FieldValueRequired",
                    field: "fieldManager".into(),
                    message: "Required value: is required for apply patch".into(),
                }],
            ));
        }
        if force && ptype != PatchType::Apply {
            return Err(ApiError::invalid(
                &crate::errors::Subject {
                    group: "meta.k8s.io",
                    plural: "",
                    kind: "PatchOptions",
                    name: "",
                },
                vec![Cause::forbidden(
                    "force",
                    "may not be specified for non-apply patch",
                )],
            ));
        }
        let parsed: Option<Value> = match ptype {
            PatchType::Json => None,
            PatchType::Apply => Some(parse_yaml_or_json(body)?),
            _ => Some(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
            ),
        };
        let scope = scope_of(info, status);
        let key = key_of(info, ns, name);
        loop {
            let cur = self.store.get(&key.gr, &key.namespace, &key.name);
            let Some(cur) = cur else {
                if ptype != PatchType::Apply || status {
                    return Err(ApiError::not_found(&info.subject(name)));
                }
                let mut applied = ensure_object(parsed.clone().unwrap_or_default())?;
                check_type_meta(info, &mut applied, true)?;
                check_name(&applied, name)?;
                applied["metadata"]["name"] = json!(name);
                let created = apply::apply(ApplyRequest {
                    current: None,
                    applied: &applied,
                    manager: &ctx.manager,
                    force,
                    schema: info.schema.as_deref(),
                    scope,
                    api_version: &info.api_version(),
                    now: &now_time(),
                })
                .map_err(|c| conflict_error(info, name, &c))?;
                match self.create_inner(info, ns, created, ctx, true) {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            };
            let view = to_view(info, &cur);
            let mut new = (*view).clone();
            let mode = match ptype {
                PatchType::Json => {
                    patch::json_patch(&mut new, body, self.fidelity.bytewise_json_patch_test)
                        .map_err(|e| json_patch_error(info, name, ctx.validation, e))?;
                    Mode::Update
                }
                PatchType::Merge => {
                    patch::merge_patch(&mut new, parsed.as_ref().unwrap_or(&Value::Null));
                    Mode::Update
                }
                PatchType::StrategicMerge => {
                    patch::strategic_merge(&mut new, parsed.as_ref().unwrap_or(&Value::Null));
                    Mode::Update
                }
                PatchType::Apply => {
                    let mut applied = ensure_object(parsed.clone().unwrap_or_default())?;
                    check_type_meta(info, &mut applied, true)?;
                    check_name(&applied, name)?;
                    new = apply::apply(ApplyRequest {
                        current: Some(&view),
                        applied: &applied,
                        manager: &ctx.manager,
                        force,
                        schema: info.schema.as_deref(),
                        scope,
                        api_version: &info.api_version(),
                        now: &now_time(),
                    })
                    .map_err(|c| conflict_error(info, name, &c))?;
                    if let Some(rv) = applied
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                    {
                        new["metadata"]["resourceVersion"] = json!(rv);
                    }
                    Mode::Apply
                }
            };
            let new = from_view(info, ensure_object(new)?);
            if let Some(rv) = meta_str(&new, "resourceVersion") {
                if Some(rv) != meta_str(&cur, "resourceVersion") {
                    return Err(ApiError::conflict(&info.subject(name)));
                }
            }
            let p = self.prepare(info, &cur, new, scope, ctx, mode)?;
            if let Some(w) = self.finish(info, &key, &cur, p, ctx)? {
                return Ok(w);
            }
        }
    }
}

/// kube-apiserver's answer to a JSON patch it cannot decode (400) or apply (422 from `NewGenericServerResponse`:
/// the generic message, `details` empty — evanphx's text is not sent to the client, only logged here).
/// With `fieldValidation` Warn (the default) or Strict the body is first decoded strictly as a list of operations.
fn json_patch_error(
    info: &ResourceInfo,
    name: &str,
    validation: Validation,
    e: patch::JsonPatchError,
) -> ApiError {
    match e {
        patch::JsonPatchError::Decode(msg) if validation != Validation::Ignore => {
            ApiError::bad_request(format!(
                "error decoding patch: {}",
                msg.replace("jsonpatch.Patch", "[]handlers.jsonPatchOp")
                    .replace("jsonpatch.Operation", "handlers.jsonPatchOp")
            ))
        }
        patch::JsonPatchError::Decode(msg) => ApiError::bad_request(msg),
        patch::JsonPatchError::Apply(msg) => {
            tracing::debug!(resource = %info.plural, %name, error = %msg, "JSON patch refused");
            ApiError {
                code: 422,
                reason: "Invalid",
                message: "the server rejected our request due to an error in our request".into(),
                details: Some(json!({})),
            }
        }
    }
}
