#!/usr/bin/env python3
"""Helm without a helm binary: render, lint, schema-check and package a chart with the Helm v4 engine embedded in
PyPI's helm-python-sdk (libhelm_c over Helm's Go SDK; pinned in hack/requirements.txt). Everything is offline.

  helm.py render   CHART [-f VALUES]... [--set k=v]... [--name N] [--namespace NS] [-o FILE]
      like `helm template`: values.schema.json is enforced; one multi-document YAML, templates in path order
  helm.py lint     CHART [-f VALUES]... [--namespace NS] [--kube-version v1.32.0]
      like `helm lint --strict`: fails on any error or warning (info findings are printed only)
  helm.py reject   CHART -f VALUES [--expect REGEX]
      succeeds only when the values are REFUSED (schema) and the message matches REGEX (negative tests)
  helm.py package  CHART [--destination out] [--version V] [--app-version V] [--image-repository R] [--image-tag T]
      like `helm package`; --image-* rewrite image.repository / image.tag in a copy of values.yaml first
  helm.py version  prints the SDK and Helm engine versions
"""
import argparse
import pathlib
import re
import shutil
import sys
import tempfile

import helm_python as helm
import yaml


def merged_values(files, sets):
    values = {}
    for f in files or []:
        values = deep_merge(values, yaml.safe_load(pathlib.Path(f).read_text()) or {})
    for s in sets or []:
        values = deep_merge(values, helm.parse_set_string(s))
    return values


def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Helm's install order (pkg/release/util/kind_sorter.go, abridged to what charts like ours hold): what
# `helm template` prints and `helm install` creates first, so `kubectl apply -f` of the output works too.
INSTALL_ORDER = ["PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
                 "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
                 "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
                 "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
                 "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet",
                 "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
                 "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def render(chart, values=None, name="capi-vip-allocator", namespace="capi-system"):
    """Rendered manifests as one YAML stream (NOTES.txt and empty documents left out), in Helm's install order
    (kinds it does not know last), then template path and position: what `helm template` prints."""
    with helm.Chart.load(chart) as c:
        manifests = c.render(values or {}, name=name, namespace=namespace, is_install=True)
    docs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for i, body in enumerate(re.split(r"(?m)^---\s*$", manifests[path])):
            obj = yaml.safe_load(body)
            if obj is None:
                continue
            kind = obj.get("kind", "")
            rank = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
            docs.append((rank, path, i, f"---\n# Source: {path}\n{body.strip()}\n"))
    return "".join(d[3] for d in sorted(docs))


def lint(chart, values, namespace, kube_version):
    report = helm.lint(chart, values, strict=True, namespace=namespace, kube_version=kube_version)
    sev = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    bad = 0
    for m in report.get("messages", []):
        print(f"lint: [{sev.get(m['severity'], m['severity'])}] {m['path']}: {m['error'].strip()}", file=sys.stderr)
        bad += m["severity"] >= 2 or m["severity"] == 0
    bad += len(report.get("errors") or []) if not bad else 0
    print(f"lint: {report.get('total_charts_linted')} chart(s) linted, {bad} error(s)/warning(s)", file=sys.stderr)
    return bad == 0


def reject(chart, values, expect):
    """True when Helm refuses the values (as `helm install` would) with a message matching expect."""
    try:
        with helm.Chart.load(chart) as c:
            c.render(values, name="capi-vip-allocator", namespace="capi-system", is_install=True)
    except helm.HelmValuesError as e:
        msg = str(e)
        if expect and not re.search(expect, msg):
            print(f"reject: refused, but the message does not match {expect!r}:\n{msg}", file=sys.stderr)
            return False
        print(f"reject: refused as expected: {' '.join(msg.split())}", file=sys.stderr)
        return True
    print("reject: FAIL: the values were accepted", file=sys.stderr)
    return False


def package(chart, destination, version=None, app_version=None, image_repository=None, image_tag=None):
    """helm package; image_repository / image_tag are written into a copy of values.yaml (image.repository,
    image.tag: the first such keys under `image:`), the chart directory itself is never edited."""
    pathlib.Path(destination).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(chart)
        if image_repository or image_tag:
            copy = pathlib.Path(tmp) / src.name
            shutil.copytree(src, copy)
            vf = copy / "values.yaml"
            text = vf.read_text()
            for field, value in (("repository", image_repository), ("tag", image_tag)):
                if value:
                    text, n = re.subn(rf"(?m)^(  {field}: ).*$", rf'\g<1>"{value}"', text, count=1)
                    if n != 1:
                        raise SystemExit(f"package: image.{field} line not found in values.yaml")
            vf.write_text(text)
            src = copy
        return helm.package(src, destination=destination, version=version, app_version=app_version)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("chart")
    r.add_argument("-f", "--values", action="append")
    r.add_argument("--set", action="append")
    r.add_argument("--name", default="capi-vip-allocator")
    r.add_argument("--namespace", default="capi-system")
    r.add_argument("-o", "--output")
    li = sub.add_parser("lint")
    li.add_argument("chart")
    li.add_argument("-f", "--values", action="append")
    li.add_argument("--set", action="append")
    li.add_argument("--namespace", default="capi-system")
    li.add_argument("--kube-version", default="v1.32.0")
    rj = sub.add_parser("reject")
    rj.add_argument("chart")
    rj.add_argument("-f", "--values", action="append", required=True)
    rj.add_argument("--expect")
    p = sub.add_parser("package")
    p.add_argument("chart")
    p.add_argument("--destination", default="out")
    p.add_argument("--version")
    p.add_argument("--app-version")
    p.add_argument("--image-repository")
    p.add_argument("--image-tag")
    sub.add_parser("version")
    a = ap.parse_args()

    if a.cmd == "version":
        print(f"helm-python-sdk {helm.__version__}, libhelm_c {helm.helm_c_version()}, Helm SDK {helm.helm_sdk_version()}")
    elif a.cmd == "render":
        text = render(a.chart, merged_values(a.values, a.set), a.name, a.namespace)
        if a.output:
            pathlib.Path(a.output).write_text(text)
        else:
            sys.stdout.write(text)
    elif a.cmd == "lint":
        sys.exit(0 if lint(a.chart, merged_values(a.values, a.set), a.namespace, a.kube_version) else 1)
    elif a.cmd == "reject":
        sys.exit(0 if reject(a.chart, merged_values(a.values, None), a.expect) else 1)
    elif a.cmd == "package":
        print(package(a.chart, a.destination, a.version, a.app_version, a.image_repository, a.image_tag))


if __name__ == "__main__":
    try:
        main()
    except helm.HelmError as e:
        print(f"helm.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
