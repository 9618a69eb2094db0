//! Pool upkeep: the ProtectPool finalizer and `status.ipAddresses {total, used, free, outOfRange}`.

use serde_json::{json, Value};

use super::alloc::{Allocatable, PoolSpec};
use super::controller::{pool_gr, s, Controller};
use super::index::PoolId;
use super::PROTECT_POOL_FINALIZER;
use crate::state::{finalizers, is_deleting};

pub(super) fn pool_spec(pool: &Value) -> PoolSpec {
    let list = |p: &str| -> Vec<String> {
        pool.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    PoolSpec {
        addresses: list("/spec/addresses"),
        prefix: pool
            .pointer("/spec/prefix")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(128) as u8,
        gateway: s(pool, "/spec/gateway").map(String::from),
        excluded: list("/spec/excludedAddresses"),
        allocate_reserved: pool
            .pointer("/spec/allocateReservedIPAddresses")
            .and_then(Value::as_bool)
            == Some(true),
    }
}

impl Controller {
    pub(super) fn update_pool(&self, id: &PoolId) {
        let Some(g) = pool_gr(&id.0) else { return };
        let Some(pool) = self.shared.store.get(&g, &id.1, &id.2) else {
            return;
        };
        let (used_n, used) = self.index.used(id);
        if is_deleting(&pool) {
            if used_n == 0 {
                self.remove_finalizer(&g, &pool, PROTECT_POOL_FINALIZER);
            }
            return;
        }
        if !finalizers(&pool)
            .iter()
            .any(|f| f == PROTECT_POOL_FINALIZER)
        {
            let fins = finalizers(&pool);
            let mut with = fins.clone();
            with.push(PROTECT_POOL_FINALIZER.to_string());
            let test = if fins.is_empty() {
                Value::Null
            } else {
                json!(fins)
            };
            self.json_patch(
                &g,
                &id.1,
                &id.2,
                json!([{"op": "test", "path": "/metadata/finalizers", "value": test},
                {"op": "add", "path": "/metadata/finalizers", "value": with}]),
                false,
            );
        }
        let Ok(alloc) = Allocatable::new(&pool_spec(&pool)) else {
            return;
        };
        let total = alloc.total();
        let out_of_range = used.iter().filter(|ip| !alloc.contains(**ip)).count() as i64;
        let used_n = used_n as i64;
        let status = json!({"status": {"ipAddresses": {"total": total, "used": used_n, "free": total - used_n, "outOfRange": out_of_range}}});
        if pool.pointer("/status/ipAddresses") != status.pointer("/status/ipAddresses") {
            self.json_patch(&g, &id.1, &id.2, status, true);
        }
    }
}
