#!/usr/bin/env bash
# Builds the container image WITHOUT a Docker engine (make image): a static musl binary per architecture, put into
# an OCI image layout with umoci, exported as an OCI archive per architecture:
#   out/image/oci/                                  OCI layout, tags <TAG>-amd64 [and <TAG>-arm64]
#   out/capi-vip-allocator-<TAG>-linux-<arch>.oci.tar  `skopeo copy oci-archive:<file> docker://<registry>/…:<tag>`
# Same contents as the Dockerfile: /capi-vip-allocator, entrypoint, user 65532:65532, OCI labels.
# ARCHES (default "amd64 arm64"): arm64 is built when a cross C compiler for it is available (ring compiles C);
# otherwise it is skipped with a message, and out/image/arches lists what was built.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${TAG:-v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
ARCHES="${ARCHES:-amd64 arm64}"
OUT=out/image
LAYOUT="$OUT/oci"
IMAGE_NAME=capi-vip-allocator

need() { command -v "$1" >/dev/null || { echo "image: '$1' not found ($2)" >&2; exit 1; }; }
need umoci "apt-get install umoci"
need cargo "rustup"

rust_target() { case "$1" in amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; *) return 1 ;; esac; }

# C compiler and linker for each musl target (ring builds C and assembly).
setup_toolchain() {
  case "$1" in
    amd64)
      command -v musl-gcc >/dev/null || { echo "image: musl-gcc missing (apt-get install musl-tools)" >&2; return 1; }
      export CC_x86_64_unknown_linux_musl=musl-gcc
      ;;
    arm64)
      command -v aarch64-linux-gnu-gcc >/dev/null || { echo "image: aarch64-linux-gnu-gcc missing (apt-get install gcc-aarch64-linux-gnu)" >&2; return 1; }
      # ring's C code includes <stdint.h>, which the cross gcc forwards to the target's libc headers; without
      # them it falls through to the host's /usr/include and fails. Rust links its own musl crt objects.
      [ -d /usr/aarch64-linux-gnu/include ] || { echo "image: arm64 C headers missing (apt-get install libc6-dev-arm64-cross)" >&2; return 1; }
      export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
      ;;
  esac
  rustup target list --installed 2>/dev/null | grep -qx "$(rust_target "$1")" || rustup target add "$(rust_target "$1")"
}

rm -rf "$LAYOUT" "$OUT/bundle" && mkdir -p "$OUT"
umoci init --layout "$LAYOUT"
: > "$OUT/arches"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"

for arch in $ARCHES; do
  target="$(rust_target "$arch")" || { echo "image: unknown arch $arch" >&2; exit 1; }
  if ! setup_toolchain "$arch"; then
    if [ "$arch" = amd64 ]; then exit 1; fi
    echo "image: skipping $arch (no cross toolchain)" >&2
    continue
  fi
  echo "image: building $target (release)" >&2
  cargo build --release --locked --target "$target" -p capi-vip-allocator --bin capi-vip-allocator
  bin="target/$target/release/capi-vip-allocator"
  if file "$bin" 2>/dev/null | grep -q "dynamically linked"; then
    echo "image: $bin is dynamically linked; a scratch image needs a static binary" >&2
    exit 1
  fi

  ref="$LAYOUT:$TAG-$arch"
  umoci new --image "$ref"
  umoci config --image "$ref" --os linux --architecture "$arch" \
    --config.entrypoint /capi-vip-allocator --config.user 65532:65532 \
    --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
    --config.label org.opencontainers.image.title=$IMAGE_NAME \
    --config.label "org.opencontainers.image.description=Allocates control-plane and ingress VIPs for Cluster API topology Clusters from IPAM pools" \
    --config.label org.opencontainers.image.source=https://github.com/gorizond/capi-vip-allocator \
    --config.label org.opencontainers.image.licenses=Apache-2.0 \
    --config.label "org.opencontainers.image.version=$TAG" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.created=$created" \
    --history.created_by "hack/image.sh: static $target binary" \
    --created "$created"
  bundle="$OUT/bundle-$arch"
  rm -rf "$bundle"
  umoci unpack --rootless --image "$ref" "$bundle"
  install -m 0755 "$bin" "$bundle/rootfs/capi-vip-allocator"
  umoci repack --image "$ref" --history.created_by "COPY capi-vip-allocator /capi-vip-allocator" "$bundle"
  umoci gc --layout "$LAYOUT"
  rm -rf "$bundle"

  # A single-image OCI archive per architecture (what `skopeo copy oci-archive:` and `podman load` read).
  if command -v skopeo >/dev/null; then
    archive="out/$IMAGE_NAME-$TAG-linux-$arch.oci.tar"
    rm -f "$archive"
    skopeo copy --quiet "oci:$ref" "oci-archive:$archive:$IMAGE_NAME:$TAG"
  else
    archive="out/$IMAGE_NAME-$TAG-linux-$arch.oci-layout.tar"
    tar -C "$LAYOUT" -cf "$archive" .
  fi
  echo "$arch $TAG-$arch $archive" >> "$OUT/arches"
  echo "image: $arch -> $archive ($(du -h "$archive" | cut -f1))" >&2
done

echo "image: built $(cut -d' ' -f1 "$OUT/arches" | tr '\n' ' ')into $LAYOUT (tag $TAG)" >&2
