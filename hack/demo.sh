#!/usr/bin/env bash
# make demo: from a fresh clone, show capi-vip-allocator allocating VIPs - no cluster needed.
#   1. builds the operator and the testbed (cargo build --workspace --bins, debug profile: shares the test build
#      cache; a fresh clone has neither binary, so the build must name both packages);
#   2. starts the testbed (a Kubernetes API emulator with a simulated in-cluster IPAM provider) on a free port;
#   3. kubectl apply -f crds/capi-v1.12/ and examples/allocation/ (pools, ClusterClasses, Clusters);
#   4. runs the real operator binary against it and waits for the VIPs with kubectl wait;
#   5. prints cluster -> control-plane VIP, ingress VIP; then stops everything (also on Ctrl-C or failure).
# On timeout it fails loudly with the operator's and the testbed's logs. DEMO_TIMEOUT (default 120s), KUBECTL.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL="${KUBECTL:-kubectl}"
TIMEOUT="${DEMO_TIMEOUT:-120s}"
NS=vip-demo
# Clusters of the examples that get an ingress VIP (the others opt out or have no ingress pool for their class).
INGRESS_CLUSTERS="demo-auto demo-manual lab-1"

if [ -t 2 ]; then say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }; else say() { printf 'demo: %s\n' "$*" >&2; }; fi
for tool in cargo "$KUBECTL" python3; do
  command -v "$tool" >/dev/null || { echo "demo: '$tool' not found on PATH" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/capi-vip-demo.XXXXXX")"
kubeconfig="$work/kubeconfig"
testbed_pid="" operator_pid=""
ok=0
cleanup() {
  local rc=$?
  [ -n "$operator_pid" ] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null || true
  [ -n "$testbed_pid" ] && kill "$testbed_pid" 2>/dev/null && wait "$testbed_pid" 2>/dev/null || true
  if [ "$ok" != 1 ]; then
    echo "demo: FAILED (exit $rc). Last lines of the logs:" >&2
    for log in operator testbed; do
      [ -s "$work/$log.log" ] && { echo "----- $log.log -----" >&2; tail -n 60 "$work/$log.log" >&2; }
    done
    echo "----- (logs kept in $work) -----" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
k() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "building the operator and the testbed (cargo build --workspace --bins; the first build takes a few minutes)"
cargo build --workspace --bins
for bin in capi-vip-allocator testbed; do
  [ -x "target/debug/$bin" ] || { echo "demo: cargo did not produce target/debug/$bin" >&2; exit 1; }
done

say "starting the testbed"
target/debug/testbed --listen 127.0.0.1:0 --kubeconfig "$kubeconfig" > "$work/testbed.out" 2> "$work/testbed.log" &
testbed_pid=$!
for _ in $(seq 1 100); do
  grep -q "testbed ready at" "$work/testbed.out" 2>/dev/null && break
  kill -0 "$testbed_pid" 2>/dev/null || { echo "demo: the testbed exited" >&2; exit 1; }
  sleep 0.1
done
grep -q "testbed ready at" "$work/testbed.out" || { echo "demo: the testbed did not become ready" >&2; exit 1; }
say "$(head -1 "$work/testbed.out")"

say "kubectl apply -f crds/capi-v1.12/"
k apply -f crds/capi-v1.12/ >/dev/null
k wait --for condition=established crd --all --timeout=30s >/dev/null
say "kubectl apply -f examples/allocation/"
k apply -f examples/allocation/

metrics_port="$(free_port)" health_port="$(free_port)"
say "starting capi-vip-allocator (metrics 127.0.0.1:$metrics_port, probes 127.0.0.1:$health_port)"
target/debug/capi-vip-allocator --kubeconfig "$kubeconfig" \
  --metrics-bind-address "127.0.0.1:$metrics_port" --health-probe-bind-address "127.0.0.1:$health_port" \
  > "$work/operator.log" 2>&1 &
operator_pid=$!

say "waiting for the control-plane VIPs (clusterVip on every Cluster, timeout $TIMEOUT)"
k -n "$NS" wait cluster --all --timeout="$TIMEOUT" \
  --for=jsonpath='{.spec.topology.variables[?(@.name=="clusterVip")].value}'
k -n "$NS" wait cluster --all --timeout="$TIMEOUT" --for=jsonpath='{.spec.controlPlaneEndpoint.host}' >/dev/null
say "waiting for the ingress VIPs ($INGRESS_CLUSTERS)"
for c in $INGRESS_CLUSTERS; do
  k -n "$NS" wait "cluster/$c" --timeout="$TIMEOUT" \
    --for=jsonpath='{.metadata.annotations.vip\.capi\.gorizond\.io/ingress-vip}'
done

echo
k -n "$NS" get clusters -o custom-columns='CLUSTER:.metadata.name,CLASS:.spec.topology.classRef.name,CONTROL-PLANE VIP:.spec.controlPlaneEndpoint.host,PORT:.spec.controlPlaneEndpoint.port,INGRESS VIP:.metadata.annotations.vip\.capi\.gorizond\.io/ingress-vip'
echo
k -n "$NS" get ipaddressclaims
echo
say "pools after allocation"
k get globalinclusterippools
echo
say "a few of the operator's metrics (http://127.0.0.1:$metrics_port/metrics)"
python3 - "$metrics_port" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in body.splitlines():
    if line.startswith(("capi_vip_allocator_allocations_total", "capi_vip_allocator_claims_ready")):
        print("  " + line)
PY
echo
if k -n "$NS" get ipaddressclaims vip-cp-demo-manual >/dev/null 2>&1; then
  echo "demo: demo-manual has a control-plane claim although its endpoint was set by hand" >&2
  exit 1
fi
say "demo-manual kept its hand-set endpoint and got no control-plane claim (no address wasted)"
ok=1
say "done; stopping the operator and the testbed"
