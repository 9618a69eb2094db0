# Container image of capi-vip-allocator for users with Docker/BuildKit: `make docker-build`.
# `make image` builds the same image without a Docker engine (hack/image.sh, umoci); keep the two in step:
# static musl binary at /capi-vip-allocator, entrypoint, user 65532:65532, OCI labels.
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 .

# Same toolchain as CI (rustc 1.95); the workspace needs >= 1.89.
FROM docker.io/library/rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
# The Rust target triple of the platform being built.
RUN case "${TARGETARCH:-amd64}" in \
        amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
        arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
        *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && rustup target add "$(cat /rust-target)"
COPY . .
RUN cargo build --release --locked --target "$(cat /rust-target)" -p capi-vip-allocator --bin capi-vip-allocator \
    && cp "target/$(cat /rust-target)/release/capi-vip-allocator" /capi-vip-allocator

# Nothing but the static binary: no shell, no package manager, no libc.
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="capi-vip-allocator" \
      org.opencontainers.image.description="Allocates control-plane and ingress VIPs for Cluster API topology Clusters from IPAM pools" \
      org.opencontainers.image.source="https://github.com/gorizond/capi-vip-allocator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /capi-vip-allocator /capi-vip-allocator
USER 65532:65532
EXPOSE 8080 8081
# checkov:skip=CKV_DOCKER_2: Kubernetes probes /healthz and /readyz (config/manager); a scratch image has no tool to run a Docker HEALTHCHECK with.
ENTRYPOINT ["/capi-vip-allocator"]
