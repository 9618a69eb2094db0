#!/usr/bin/env bash
# Measures the operator's memory and CPU on the testbed to size config/manager requests/limits
# (README "Resource sizing"). Uses the release binary of `make image` (static musl) when present, else builds it.
#   N (default 2000) topology Clusters of one class, one large control-plane pool, ingress disabled.
# Prints RSS idle (caches synced, nothing to do), RSS after allocating N VIPs, and CPU seconds used.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2000}"
KUBECTL="${KUBECTL:-kubectl}"
bin=target/x86_64-unknown-linux-musl/release/capi-vip-allocator
[ -x "$bin" ] || { CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target x86_64-unknown-linux-musl -p capi-vip-allocator --bin capi-vip-allocator; }
cargo build --release -p testbed --bin testbed >/dev/null 2>&1 || cargo build --release -p testbed --bin testbed
work="$(mktemp -d)"; tb_pid="" op_pid=""
trap '[ -n "$op_pid" ] && kill $op_pid 2>/dev/null; [ -n "$tb_pid" ] && kill $tb_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
target/release/testbed --listen 127.0.0.1:0 --kubeconfig "$work/kc" --crds crds/capi-v1.12 > "$work/tb.out" 2>"$work/tb.log" &
tb_pid=$!
until grep -q "ready at" "$work/tb.out" 2>/dev/null; do sleep 0.1; done
k() { "$KUBECTL" --kubeconfig "$work/kc" "$@"; }
python3 - "$N" > "$work/objects.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print("""apiVersion: v1
kind: Namespace
metadata: {name: sizing}
---
apiVersion: ipam.cluster.x-k8s.io/v1alpha2
kind: GlobalInClusterIPPool
metadata:
  name: sizing-cp
  labels: {vip.capi.gorizond.io/cluster-class: sizing, vip.capi.gorizond.io/role: control-plane}
spec: {addresses: [10.64.0.0/16], prefix: 16}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: ClusterClass
metadata: {name: sizing, namespace: sizing}
spec:
  variables:
    - {name: clusterVip, required: false, schema: {openAPIV3Schema: {type: string}}}""")
for i in range(n):
    print(f"""---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: c{i:05d}
  namespace: sizing
  annotations: {{vip.capi.gorizond.io/ingress-enabled: "false"}}
spec:
  topology: {{classRef: {{name: sizing}}, version: v1.32.4}}""")
PY
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
"$bin" --kubeconfig "$work/kc" --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
  --log-level warn > "$work/op.log" 2>&1 &
op_pid=$!
sleep 3
echo "idle (caches synced, no Clusters): RSS $(rss $op_pid), CPU $(cpu $op_pid)s"
t0=$(date +%s.%N)
k apply --server-side -f "$work/objects.yaml" >/dev/null
k -n sizing wait cluster --all --for=jsonpath='{.spec.controlPlaneEndpoint.host}' --timeout=600s >/dev/null
t1=$(date +%s.%N)
echo "after $N VIPs (applied + allocated in $(python3 -c "print(round($t1-$t0,1))")s): RSS $(rss $op_pid), CPU $(cpu $op_pid)s"
sleep 5
echo "settled: RSS $(rss $op_pid), CPU $(cpu $op_pid)s"
