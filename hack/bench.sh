#!/usr/bin/env bash
# make bench: measures the operator binary the image ships - the static musl build of this machine's architecture
# (as hack/image.sh builds it) - when the musl toolchain is present; otherwise says so loudly and measures the glibc
# release build. BENCH_OPERATOR_BIN=<path> measures that binary instead. The report names the binary and how it is
# linked. Every other knob: benches/bench/config.rs (BENCH_QUICK=1 for the one-minute subset).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_OPERATOR_BIN:-}" ]; then
  case "$(uname -m)" in
    x86_64) target=x86_64-unknown-linux-musl; cc_var=CC_x86_64_unknown_linux_musl; cc=musl-gcc ;;
    aarch64) target=aarch64-unknown-linux-musl; cc_var=CC_aarch64_unknown_linux_musl; cc=musl-gcc ;;
    *) target="" ;;
  esac
  if [ -n "$target" ] && command -v "$cc" >/dev/null \
    && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "bench: building the shipped binary (static musl, $target, release)" >&2
    export "$cc_var=$cc"
    cargo build --release --locked --target "$target" -p capi-vip-allocator --bin capi-vip-allocator
    export BENCH_OPERATOR_BIN="$PWD/target/$target/release/capi-vip-allocator"
  else
    echo "bench: WARNING: no musl toolchain (apt-get install musl-tools; rustup target add ${target:-<musl target>}):" \
      "measuring the glibc release build, which is NOT what the image ships" >&2
    cargo build --release --locked --bin capi-vip-allocator
  fi
fi
cargo bench --bench bench
