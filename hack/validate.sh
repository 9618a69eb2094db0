#!/usr/bin/env bash
# make validate: offline validation of everything we ship (no cluster needed).
#   1. CRDs: structural-schema checks (hack/check_crds.py) + kubernetes-validate of the CRD objects;
#   2. release manifests rendered from config/ (make release-manifests) and every example: built-in kinds with
#      kubernetes-validate, custom resources against crds/capi-v1.12, metadata rules (hack/validate_manifests.py);
#   3. every PromQL expression of config/prometheus parses and uses only operator metrics (hack/check_promql.py);
#   4. checkov on config/, the rendered release and the Dockerfile: zero failed checks (skips are justified inline);
#   5. the Helm chart (charts/capi-vip-allocator, Helm v4 engine from helm-python-sdk, no helm binary): renders equal
#      to config/ (hack/check_chart.py), strict lint, bad values refused by values.schema.json, renders with default
#      and all-features values through kubernetes-validate, hack/validate_manifests.py and checkov; packages.
# Custom-resource examples are also applied to the testbed by tests/examples.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(bash hack/venv.sh)"
PY="$VENV/bin/python"
K8S_VERSION="${K8S_VERSION:-1.32}"
step() { echo "== validate: $*" >&2; }

step "CRD structure (both profiles)"
"$PY" hack/check_crds.py crds/capi-v1.10 crds/capi-v1.12
"$VENV/bin/kubernetes-validate" --quiet --strict -k "$K8S_VERSION" crds/capi-v1.10/*.yaml crds/capi-v1.12/*.yaml
# Add-on CRDs (each its own profile): ExtensionConfig (Runtime SDK) and the topology simulator's TestInfraCluster.
"$PY" hack/check_crds.py crds/runtime-sdk
"$PY" hack/check_crds.py crds/test
"$VENV/bin/kubernetes-validate" --quiet --strict -k "$K8S_VERSION" crds/runtime-sdk/*.yaml crds/test/*.yaml

step "release manifests + examples"
bash hack/release-manifests.sh
"$PY" hack/validate_manifests.py --k8s "$K8S_VERSION" --crds crds/capi-v1.12 \
  out/addon-components.yaml out/capi-vip-allocator-monitoring.yaml examples metadata.yaml
# The optional BeforeClusterCreate gate (config/runtime-extension): ExtensionConfig from crds/runtime-sdk,
# cert-manager kinds by the facts hack/validate_manifests.py checks.
"$PY" hack/validate_manifests.py --k8s "$K8S_VERSION" --crds crds/capi-v1.12 --crds crds/runtime-sdk \
  out/capi-vip-allocator-runtime-extension.yaml
# The installable kustomization must render on its own too (what the README tells users to run).
kubectl kustomize config/default >/dev/null
kubectl kustomize config/prometheus >/dev/null
kubectl kustomize config/runtime-extension >/dev/null

step "PromQL (alerts + dashboard)"
"$PY" hack/check_promql.py config/prometheus >/dev/null

step "checkov (config/, release manifest, Dockerfile)"
# --skip-download: offline; no platform API key. Non-zero exit on any failed check.
CHECKOV=("$VENV/bin/checkov" --skip-download --quiet --compact)
"${CHECKOV[@]}" -d config --framework kubernetes
"${CHECKOV[@]}" -f out/addon-components.yaml --framework kubernetes
"${CHECKOV[@]}" -f out/capi-vip-allocator-runtime-extension.yaml --framework kubernetes
"${CHECKOV[@]}" -f Dockerfile --framework dockerfile

step "Helm chart (charts/capi-vip-allocator)"
chart_t0=$SECONDS
"$PY" hack/check_chart.py   # writes out/chart/default.yaml and out/chart/all-features.yaml
"$VENV/bin/kubernetes-validate" --quiet --strict -k "$K8S_VERSION" out/chart/default.yaml
"$PY" hack/validate_manifests.py --k8s "$K8S_VERSION" --crds crds/capi-v1.12 --crds crds/runtime-sdk \
  out/chart/default.yaml out/chart/all-features.yaml
"${CHECKOV[@]}" -f out/chart/default.yaml --framework kubernetes
"${CHECKOV[@]}" -f out/chart/all-features.yaml --framework kubernetes
# The package release-manifests wrote (above; it checked the image) passes lint and renders valid objects too.
chart_tgz="$(ls -t out/capi-vip-allocator-*.tgz | head -1)"
"$PY" hack/helm.py lint "$chart_tgz"
"$PY" hack/helm.py render "$chart_tgz" | "$PY" hack/validate_manifests.py --k8s "$K8S_VERSION" /dev/stdin
echo "validate: Helm chart checks took $((SECONDS - chart_t0))s" >&2
step "OK"
