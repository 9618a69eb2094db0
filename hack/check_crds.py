#!/usr/bin/env python3
"""Offline checks of the CRDs in crds/ that kubernetes-validate cannot do.

kubernetes-validate checks a CRD object against the apiextensions.k8s.io/v1 schema, but not the *structural schema*
rules the API server enforces on the openAPIV3Schema inside it. This script checks those we rely on:
  * every schema node has a `type`, unless it is `x-kubernetes-preserve-unknown-fields` or int-or-string;
  * `properties`/`additionalProperties` only on objects (and never both), `items` on every array;
  * list-map keys are required (or defaulted) in the item schema, and only on `x-kubernetes-list-type: map`;
  * exactly one storage version, every version served, the status subresource matches a `status` property;
  * every printer column's jsonPath starts with a path that exists in the schema;
  * both profiles serve the same kinds, and the pool CRDs are identical in both profiles.
Usage: check_crds.py CRD_DIR... ; exits non-zero with one line per problem.
"""
import pathlib
import re
import sys

import yaml

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def walk(node, path, where):
    if not isinstance(node, dict):
        problem(where, f"{path}: schema node is not a mapping")
        return
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    typ = node.get("type")
    if typ is None and not (preserve or int_or_string):
        problem(where, f"{path}: missing type")
    if "properties" in node and typ not in ("object", None):
        problem(where, f"{path}: properties on a {typ}")
    if "properties" in node and "additionalProperties" in node:
        problem(where, f"{path}: both properties and additionalProperties")
    if typ == "array":
        if "items" not in node:
            problem(where, f"{path}: array without items")
        else:
            walk(node["items"], path + "[]", where)
        lt = node.get("x-kubernetes-list-type")
        keys = node.get("x-kubernetes-list-map-keys")
        if keys and lt != "map":
            problem(where, f"{path}: list-map-keys without list-type map")
        if lt == "map":
            if not keys:
                problem(where, f"{path}: list-type map without keys")
            item = node.get("items", {})
            for k in keys or []:
                sub = item.get("properties", {}).get(k)
                if sub is None:
                    problem(where, f"{path}: map key {k} not a property of the items")
                elif k not in item.get("required", []) and "default" not in sub:
                    problem(where, f"{path}: map key {k} neither required nor defaulted")
    for req in node.get("required", []):
        if req not in node.get("properties", {}):
            problem(where, f"{path}: required field {req} is not declared")
    for name, sub in node.get("properties", {}).items():
        walk(sub, f"{path}.{name}", where)
    if isinstance(node.get("additionalProperties"), dict):
        walk(node["additionalProperties"], path + ".*", where)


def path_exists(schema, json_path):
    # `.spec.topology.classRef.name` or `.status.conditions[?(@.type=="X")].status`
    parts = re.findall(r"\.([A-Za-z0-9_]+)", re.sub(r"\[[^\]]*\]", "", json_path))
    if parts[:1] == ["metadata"]:
        return True  # ObjectMeta is served by the API server, not by the CRD schema
    node = schema
    for part in parts:
        if node.get("x-kubernetes-preserve-unknown-fields") and part not in node.get("properties", {}):
            return True
        if node.get("type") == "array":
            node = node.get("items", {})
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


def check_crd(path):
    crd = yaml.safe_load(path.read_text())
    where = str(path)
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        problem(where, "not an apiextensions.k8s.io/v1 CustomResourceDefinition")
        return None
    spec = crd["spec"]
    names = spec["names"]
    if crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
        problem(where, "metadata.name must be <plural>.<group>")
    versions = spec["versions"]
    if sum(1 for v in versions if v.get("storage")) != 1:
        problem(where, "exactly one storage version expected")
    if len(versions) != 1:
        problem(where, "one served version per kind per profile (no conversion)")
    for v in versions:
        schema = v["schema"]["openAPIV3Schema"]
        walk(schema, v["name"], where)
        has_status = "status" in schema.get("properties", {})
        if "status" in v.get("subresources", {}) and not has_status:
            problem(where, f"{v['name']}: status subresource without a status property")
        for col in v.get("additionalPrinterColumns", []):
            if not path_exists(schema, col["jsonPath"]):
                problem(where, f"{v['name']}: printer column {col['name']} path {col['jsonPath']} not in schema")
    return (spec["group"], names["kind"], spec["scope"])


def main(dirs):
    kinds = {}
    for d in dirs:
        files = sorted(pathlib.Path(d).glob("*.yaml"))
        if not files:
            problem(d, "no CRDs found")
        kinds[d] = {check_crd(f) for f in files}
    if len({frozenset(k) for k in kinds.values()}) > 1:
        problem("crds", f"profiles serve different kinds: {kinds}")
    if len(dirs) > 1:
        base = pathlib.Path(dirs[0])
        for pool in base.glob("*inclusterippools.yaml"):
            for other in dirs[1:]:
                twin = pathlib.Path(other) / pool.name
                if not twin.exists() or twin.read_text() != pool.read_text():
                    problem(str(twin), f"must be identical to {pool} (pools are v1alpha2 in every profile)")
    for p in problems:
        print(f"check_crds: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check_crds: {sum(len(k) for k in kinds.values())} CRDs in {len(dirs)} profiles OK")


if __name__ == "__main__":
    main(sys.argv[1:] or ["crds/capi-v1.10", "crds/capi-v1.12"])
