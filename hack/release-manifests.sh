#!/usr/bin/env bash
# make release-manifests: renders config/default with the image tag TAG into the release assets
#   out/addon-components.yaml   clusterctl / Turtles addon asset name
#   out/capi-vip-allocator.yaml the Go operator's asset name (same content), for kubectl apply users
#   out/metadata.yaml           clusterctl provider metadata
#   out/capi-vip-allocator-monitoring.yaml  the Prometheus Operator kit (config/prometheus)
#   out/capi-vip-allocator-runtime-extension.yaml  the install with the BeforeClusterCreate gate
#                               (config/runtime-extension; needs cert-manager and CAPI's RuntimeSDK feature gate)
#   out/capi-vip-allocator-<version>.tgz  the Helm chart (charts/capi-vip-allocator), version = TAG without its
#                               leading v when that is SemVer (else the Cargo.toml version), image IMG:TAG
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${TAG:-v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
IMG="${IMG:-ghcr.io/gorizond/capi-vip-allocator}"
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "release-manifests: '$TAG' is not a valid image tag" >&2; exit 1; }

mkdir -p out
overlay="$(mktemp -d out/.release.XXXXXX)"
trap 'rm -rf "$overlay"' EXIT
# A throw-away overlay sets the image; config/ itself is never edited.
cat > "$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../config/default
images:
  - name: ghcr.io/gorizond/capi-vip-allocator
    newName: $IMG
    newTag: $TAG
YAML
kubectl kustomize "$overlay" > out/addon-components.yaml
cp out/addon-components.yaml out/capi-vip-allocator.yaml
cp metadata.yaml out/metadata.yaml
kubectl kustomize config/prometheus > out/capi-vip-allocator-monitoring.yaml
# The gate variant: the same overlay over config/runtime-extension instead of config/default.
mkdir -p "$overlay/runtime-extension"
sed 's#\.\./\.\./config/default#../../../config/runtime-extension#' "$overlay/kustomization.yaml" \
  > "$overlay/runtime-extension/kustomization.yaml"
kubectl kustomize "$overlay/runtime-extension" > out/capi-vip-allocator-runtime-extension.yaml
grep -q "image: $IMG:$TAG\$" out/capi-vip-allocator-runtime-extension.yaml \
  || { echo "release-manifests: image $IMG:$TAG not found in out/capi-vip-allocator-runtime-extension.yaml" >&2; exit 1; }

grep -q "image: $IMG:$TAG\$" out/addon-components.yaml \
  || { echo "release-manifests: image $IMG:$TAG not found in out/addon-components.yaml" >&2; exit 1; }

# The Helm chart, packaged by the Helm v4 engine of helm-python-sdk (hack/helm.py; no helm binary needed).
PY="$(bash hack/venv.sh)/bin/python"
CARGO_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
CHART_VERSION="${TAG#v}"
SEMVER='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$'
[[ "$CHART_VERSION" =~ $SEMVER ]] || CHART_VERSION="$CARGO_VERSION"
chart_args=(--destination out --version "$CHART_VERSION" --app-version "$CHART_VERSION")
[ "$IMG" = ghcr.io/gorizond/capi-vip-allocator ] || chart_args+=(--image-repository "$IMG")
[ "$TAG" = "v$CHART_VERSION" ] || chart_args+=(--image-tag "$TAG")
chart_tgz="$("$PY" hack/helm.py package charts/capi-vip-allocator "${chart_args[@]}")"
[ "$chart_tgz" = "out/capi-vip-allocator-$CHART_VERSION.tgz" ] \
  || { echo "release-manifests: helm package wrote '$chart_tgz', not out/capi-vip-allocator-$CHART_VERSION.tgz" >&2; exit 1; }
"$PY" hack/helm.py render "$chart_tgz" | grep -q "image: $IMG:$TAG\$" \
  || { echo "release-manifests: image $IMG:$TAG not found in the render of $chart_tgz" >&2; exit 1; }

echo "release-manifests: wrote out/addon-components.yaml, out/capi-vip-allocator.yaml, out/metadata.yaml," \
     "out/capi-vip-allocator-monitoring.yaml, out/capi-vip-allocator-runtime-extension.yaml," \
     "$chart_tgz (image $IMG:$TAG)" >&2
