# capi-vip-allocator: developer and release entry points. Start with `make demo`, then `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TAG ?= v$(VERSION)
IMG ?= ghcr.io/gorizond/capi-vip-allocator
export TAG IMG

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## Build, start the testbed, apply CRDs + examples, run the operator, print the VIPs, clean up
	bash hack/demo.sh

.PHONY: test
test: ## cargo test --workspace + offline manifest validation
	cargo test --workspace
	$(MAKE) validate

.PHONY: validate
validate: ## Offline validation: CRDs, rendered manifests, examples, PromQL, checkov, the Helm chart (Python tools in .venv/)
	bash hack/validate.sh

.PHONY: venv
venv: ## Create .venv/ with the pinned Python tools (hack/requirements.txt)
	bash hack/venv.sh >/dev/null

.PHONY: release-manifests
release-manifests: ## Write out/addon-components.yaml, out/capi-vip-allocator.yaml, out/metadata.yaml (+ monitoring, gate) and the Helm chart out/capi-vip-allocator-<version>.tgz with image tag $(TAG)
	bash hack/release-manifests.sh

.PHONY: image
image: ## Build the OCI image without Docker (static musl, umoci) into out/ (ARCHES="amd64 arm64")
	bash hack/image.sh

.PHONY: image-test
image-test: image ## Build the image, then check entrypoint, user, --help and compressed size
	bash hack/image-test.sh

.PHONY: docker-build
docker-build: ## Build the image with Docker/BuildKit: $(IMG):$(TAG)
	docker build --build-arg VERSION=$(TAG) -t $(IMG):$(TAG) .

.PHONY: bench
bench: ## Benchmarks of the shipped (static musl) operator on the testbed (BENCH_QUICK=1: ~1 min subset); writes target/bench/results.{md,json}
	bash hack/bench.sh

.PHONY: chaos
chaos: ## Long fault run: 500 Clusters, 10 operator kills, API faults (CHAOS_CLUSTERS/CHAOS_KILLS override); prints a summary table
	cargo test -p capi-vip-allocator --test chaos -- --ignored --nocapture chaos_long_form

.PHONY: fmt
fmt: ## Format the Rust code
	cargo fmt --all

.PHONY: lint
lint: ## rustfmt check + clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
