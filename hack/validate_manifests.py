#!/usr/bin/env python3
"""Offline validation of every manifest we ship: rendered kustomize output and the examples.

Each document is checked by the right schema, and a kind nobody can check is an error, never a silent pass:
  * built-in kinds: kubernetes-validate (strict: unknown fields fail) against a Kubernetes version;
  * kinds defined in crds/<profile>/: the CRD's openAPIV3Schema (types, required, enum, bounds) with unknown
    fields rejected, as `kubectl apply` (fieldValidation=Strict) would;
  * Prometheus Operator and Rancher Turtles kinds: the facts we rely on (docs/capi-contracts.md §6.2 for
    CAPIProvider), since their CRDs are not in this repository;
and on every object the API server's metadata rules: DNS names, label keys and values (a comma is not a legal
label-value character), annotation keys.
Usage: validate_manifests.py --crds crds/capi-v1.12 [--k8s 1.32] FILE_OR_DIR...
"""
import argparse
import copy
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
SEMVER_V = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
TURTLES_TYPES = {"infrastructure", "core", "controlPlane", "bootstrap", "addon", "ipam", "runtimeextension"}


def strict(schema):
    """CRD schema -> JSON schema that rejects unknown fields (what pruning + Strict field validation do)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for sub in node.get("properties", {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(schema)
    return schema


def load_crds(dirs):
    crds = {}
    for d in dirs:
        for f in sorted(pathlib.Path(d).glob("*.yaml")):
            crd = yaml.safe_load(f.read_text())
            spec = crd["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                    crds[key] = (spec["scope"], strict(v["schema"]["openAPIV3Schema"]), f)
    return crds


def check_metadata(obj, namespaced):
    errs = []
    md = obj.get("metadata") or {}
    name = md.get("name", "")
    if not name or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errs.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    if obj.get("kind") == "Namespace" and not DNS1123_LABEL.match(name):
        errs.append(f"Namespace name {name!r} is not a DNS-1123 label")
    if namespaced is False and "namespace" in md:
        errs.append("cluster-scoped object has metadata.namespace")
    for what, mapping in (("labels", md.get("labels") or {}), ("annotations", md.get("annotations") or {})):
        for k, v in mapping.items():
            prefix, _, short = k.rpartition("/")
            if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or \
                    not short or len(short) > 63 or not QUALIFIED_NAME.match(short):
                errs.append(f"metadata.{what} key {k!r} is not a qualified name")
            if not isinstance(v, str):
                errs.append(f"metadata.{what}[{k}] is not a string")
            elif what == "labels" and (len(v) > 63 or not LABEL_VALUE.match(v)):
                errs.append(f"metadata.labels[{k}] value {v!r} is not a valid label value "
                            "(<= 63 chars of letters, digits, '-', '_', '.')")
    return errs


def check_capiprovider(obj):
    spec = obj.get("spec") or {}
    errs = []
    if spec.get("type") not in TURTLES_TYPES:
        errs.append(f"spec.type must be one of {sorted(TURTLES_TYPES)}")
    if "version" in spec and not SEMVER_V.match(spec["version"]):
        errs.append("spec.version must be a semver with a leading v")
    fetch = spec.get("fetchConfig") or {}
    if sum(1 for k in ("url", "selector", "oci") if k in fetch) != 1:
        errs.append("spec.fetchConfig needs exactly one of url, selector, oci")
    if "url" in fetch and not fetch["url"].startswith("https://"):
        errs.append("spec.fetchConfig.url must be https")
    if not obj["metadata"].get("namespace"):
        errs.append("CAPIProvider is namespaced: set metadata.namespace")
    return errs


def check_servicemonitor(obj):
    spec = obj.get("spec") or {}
    errs = []
    if not (spec.get("selector") or {}).get("matchLabels"):
        errs.append("spec.selector.matchLabels is required here")
    for i, ep in enumerate(spec.get("endpoints") or [None]):
        if not ep or not (ep.get("port") or ep.get("targetPort")):
            errs.append(f"spec.endpoints[{i}] needs a port name")
    return errs


def check_prometheusrule(obj):
    errs = []
    for g in (obj.get("spec") or {}).get("groups") or []:
        if not g.get("name"):
            errs.append("every rule group needs a name")
        for r in g.get("rules") or []:
            if bool(r.get("alert")) == bool(r.get("record")) or not r.get("expr"):
                errs.append(f"rule {r} needs expr and exactly one of alert/record")
    return errs


def check_clusterctl_metadata(obj):
    """clusterctl v1alpha3 Metadata (docs/capi-contracts.md §6.1); also: the crate's version has a release series."""
    errs = []
    series = obj.get("releaseSeries") or []
    if not series:
        errs.append("releaseSeries needs at least one entry")
    seen = set()
    for s in series:
        if not isinstance(s.get("major"), int) or not isinstance(s.get("minor"), int):
            errs.append(f"release series {s}: major and minor must be integers")
        if s.get("contract") not in ("v1beta1", "v1beta2"):
            errs.append(f"release series {s}: contract must be v1beta1 or v1beta2")
        seen.add((s.get("major"), s.get("minor")))
    cargo = pathlib.Path("Cargo.toml")
    if cargo.exists():
        m = re.search(r'(?m)^version = "(\d+)\.(\d+)\.', cargo.read_text().split("[package]", 1)[-1])
        if m and (int(m.group(1)), int(m.group(2))) not in seen:
            errs.append(f"no release series for the crate version {m.group(1)}.{m.group(2)} (Cargo.toml)")
    return errs


CERT_MANAGER_ISSUER_TYPES = {"acme", "ca", "vault", "selfSigned", "venafi"}


def check_cert_manager_issuer(obj):
    spec = obj.get("spec") or {}
    kinds = [k for k in spec if k in CERT_MANAGER_ISSUER_TYPES]
    errs = [] if len(kinds) == 1 else [f"spec needs exactly one of {sorted(CERT_MANAGER_ISSUER_TYPES)}"]
    unknown = set(spec) - CERT_MANAGER_ISSUER_TYPES
    if unknown:
        errs.append(f"unknown spec fields {sorted(unknown)}")
    return errs


def check_cert_manager_certificate(obj):
    spec = obj.get("spec") or {}
    errs = []
    if not spec.get("secretName"):
        errs.append("spec.secretName is required")
    if not (spec.get("issuerRef") or {}).get("name"):
        errs.append("spec.issuerRef.name is required")
    if not (spec.get("dnsNames") or spec.get("commonName") or spec.get("ipAddresses") or spec.get("uris")):
        errs.append("spec needs dnsNames, ipAddresses, uris or commonName")
    key = spec.get("privateKey") or {}
    if key.get("algorithm", "RSA") not in ("RSA", "ECDSA", "Ed25519"):
        errs.append("spec.privateKey.algorithm must be RSA, ECDSA or Ed25519")
    if key.get("rotationPolicy", "Always") not in ("Never", "Always"):
        errs.append("spec.privateKey.rotationPolicy must be Never or Always")
    return errs


THIRD_PARTY = {
    ("cert-manager.io/v1", "Issuer"): (True, check_cert_manager_issuer),
    ("cert-manager.io/v1", "Certificate"): (True, check_cert_manager_certificate),
    ("turtles-capi.cattle.io/v1alpha1", "CAPIProvider"): (True, check_capiprovider),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (True, check_servicemonitor),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (True, check_prometheusrule),
}


def documents(paths):
    for p in paths:
        p = pathlib.Path(p)
        files = sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
                if doc is not None:
                    yield f, i, doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crds", action="append", default=[])
    ap.add_argument("--k8s", default="1.32")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    crds = load_crds(args.crds)
    failures, count = [], 0
    for f, i, obj in documents(args.paths):
        count += 1
        key = (obj.get("apiVersion"), obj.get("kind"))
        where = f"{f}[{i}] {key[1]}/{(obj.get('metadata') or {}).get('name')}"
        errs = []
        if key == ("clusterctl.cluster.x-k8s.io/v1alpha3", "Metadata"):
            # Not a Kubernetes object: a file read by clusterctl, with no metadata of its own.
            for e in check_clusterctl_metadata(obj):
                failures.append(f"{where}: {e}")
            continue
        if key in crds:
            scope, schema, crd_file = crds[key]
            namespaced = scope == "Namespaced"
            validator = jsonschema.Draft7Validator(schema)
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in e.path) or "<root>"
                errs.append(f"{path}: {e.message} (schema {crd_file.name})")
        elif key in THIRD_PARTY:
            namespaced, check = THIRD_PARTY[key]
            errs += check(obj)
        else:
            try:
                kubernetes_validate.validate(obj, args.k8s, strict=True)
                namespaced = None  # scope of built-ins is checked by kubernetes-validate's schema
            except kubernetes_validate.utils.SchemaNotFoundError:
                errs.append(f"no schema for {key}: not a built-in kind, not in {args.crds}, not a known third-party kind")
                namespaced = None
            except kubernetes_validate.utils.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "<root>"
                errs.append(f"{path}: {e.message}")
                namespaced = None
        errs += check_metadata(obj, namespaced)
        for e in errs:
            failures.append(f"{where}: {e}")
    for line in failures:
        print(f"validate: FAIL {line}", file=sys.stderr)
    print(f"validate: {count} objects checked, {len(failures)} problems", file=sys.stderr)
    sys.exit(1 if failures or count == 0 else 0)


if __name__ == "__main__":
    main()
