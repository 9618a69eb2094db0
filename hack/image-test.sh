#!/usr/bin/env bash
# Checks the images built by hack/image.sh (make image-test), from the OCI archives, as a registry/runtime sees them:
#   - the archive unpacks (umoci) and holds exactly one file, /capi-vip-allocator, static, executable, owned by root;
#   - config: entrypoint ["/capi-vip-allocator"], user 65532:65532, os/arch, OCI labels, exposed ports;
#   - the binary runs `--help` and names its flags (amd64 natively; arm64 through qemu-aarch64 when installed);
#   - the compressed size (what a node pulls: compressed layers + config) is printed and must be <= 15 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=out/image
LIMIT_BYTES=$((15 * 1000 * 1000))
[ -s "$OUT/arches" ] || { echo "image-test: no image built (run make image)" >&2; exit 1; }
command -v umoci >/dev/null && command -v skopeo >/dev/null && command -v python3 >/dev/null \
  || { echo "image-test: needs umoci, skopeo, python3" >&2; exit 1; }

fail() { echo "image-test: FAIL: $*" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tested=""

while read -r arch tag archive; do
  echo "image-test: $arch ($archive)" >&2
  [ -s "$archive" ] || fail "$archive missing"
  layout="$work/$arch"
  skopeo copy --quiet "oci-archive:$archive" "oci:$layout:test"

  # Config and manifest, as stored in the archive.
  python3 - "$layout" "$arch" "$tag" "$LIMIT_BYTES" <<'PY'
import json, pathlib, sys
layout, arch, tag, limit = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
blob = lambda d: json.loads((layout / "blobs" / d["digest"].replace(":", "/", 1)).read_text())
index = json.loads((layout / "index.json").read_text())
assert len(index["manifests"]) == 1, "one image per archive"
manifest = blob(index["manifests"][0])
config_desc = manifest["config"]
config = blob(config_desc)
c = config["config"]
def check(cond, msg):
    if not cond:
        sys.exit(f"image-test: FAIL {arch}: {msg}")
check(c.get("Entrypoint") == ["/capi-vip-allocator"], f"entrypoint is {c.get('Entrypoint')}")
check(not c.get("Cmd"), f"unexpected Cmd {c.get('Cmd')}")
check(c.get("User") == "65532:65532", f"user is {c.get('User')!r}, want 65532:65532 (non-root)")
check(config.get("os") == "linux" and config.get("architecture") == arch, f"platform {config.get('os')}/{config.get('architecture')}")
labels = c.get("Labels") or {}
for k in ("org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.version",
          "org.opencontainers.image.licenses", "org.opencontainers.image.revision"):
    check(labels.get(k), f"label {k} missing")
check(labels["org.opencontainers.image.version"] == tag.rsplit("-", 1)[0], "version label != tag")
check(set(c.get("ExposedPorts") or {}) == {"8080/tcp", "8081/tcp"}, f"exposed ports {c.get('ExposedPorts')}")
check(len(manifest["layers"]) == 1, f"{len(manifest['layers'])} layers, want 1")
check(manifest["layers"][0]["mediaType"].endswith("tar+gzip"), "layer not gzip-compressed")
size = sum(l["size"] for l in manifest["layers"]) + config_desc["size"]
print(f"image-test: {arch}: compressed image size {size} bytes ({size / 1e6:.2f} MB; limit {limit / 1e6:.0f} MB)")
check(size <= limit, f"compressed size {size} > {limit}")
PY

  # The filesystem: exactly one file, the static binary.
  umoci unpack --rootless --image "$layout:test" "$work/bundle-$arch" >/dev/null
  rootfs="$work/bundle-$arch/rootfs"
  files="$(cd "$rootfs" && find . -mindepth 1 | sort | tr '\n' ' ')"
  [ "$files" = "./capi-vip-allocator " ] || fail "$arch rootfs holds: $files"
  bin="$rootfs/capi-vip-allocator"
  [ -x "$bin" ] || fail "$arch binary not executable"
  file "$bin" | grep -Eq "statically linked|static-pie linked" || fail "$arch binary not static: $(file "$bin")"

  run=()
  case "$arch" in
    amd64) [ "$(uname -m)" = x86_64 ] || run=(qemu-x86_64) ;;
    arm64) [ "$(uname -m)" = aarch64 ] || run=(qemu-aarch64) ;;
  esac
  if [ ${#run[@]} -gt 0 ] && ! command -v "${run[0]}" >/dev/null; then
    echo "image-test: $arch binary not run (${run[0]} not installed; apt-get install qemu-user)" >&2
  else
    help="$("${run[@]}" "$bin" --help)" || fail "$arch: --help exited non-zero"
    for flag in --metrics-bind-address --health-probe-bind-address --leader-elect --kubeconfig; do
      grep -q -- "$flag" <<<"$help" || fail "$arch: --help does not mention $flag"
    done
    echo "image-test: $arch: ${run[*]:-native} run of --help OK" >&2
  fi
  tested="$tested $arch"
done < "$OUT/arches"

echo "image-test: passed for:$tested" >&2
