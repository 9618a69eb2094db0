#!/usr/bin/env python3
"""Checks of the Helm chart charts/capi-vip-allocator against config/, the one source of truth (make validate).

config/ stays the kustomize source; the chart is hand-written Helm templates that must render the SAME objects:
  1. default values                       == kubectl kustomize config/default, minus its Namespace
     namespace.create=true                == kubectl kustomize config/default
     runtimeExtension.enabled=true        == kubectl kustomize config/runtime-extension, minus its Namespace (which
                                             wrongly carries the provider label there; the chart follows config/default)
     monitoring.*.enabled=true (+ns)      == config/default + kubectl kustomize config/prometheus
   Objects are matched by (kind, namespace, name) and compared WHOLE (spec, rules, roleRef, subjects, data,
   selectors, container args/ports/probes/securityContext/resources/image, labels, annotations) after removing only
   what the chart adds on purpose: Helm's standard labels (helm.sh/chart, app.kubernetes.io/*) and, on the
   Namespace, helm.sh/resource-policy: keep. checkov.io/skip* annotations are compared by check ID (the reason
   text may name the chart's own knob). A difference fails with a unified diff of the object.
  2. rendered in another namespace (vip-system): every namespace reference follows the release namespace; values
     do what values.yaml says (leader election forced on above 1 replica, flag order, image tag/digest, ...).
  3. files/ holds byte copies of config/prometheus's rule and dashboard (the templates read them); Rancher's
     questions.yaml names real values with their values.yaml defaults.
  4. Chart.yaml version == appVersion == the Cargo.toml version; the default image tag is v<appVersion>.
  5. Helm's lint (strict, Kubernetes v1.32) on default and all-features values.
  6. Every values file in charts/capi-vip-allocator/tests/invalid/ is refused by values.schema.json with the
     message its `# expect:` line names.
Writes the renders to out/chart/{default,all-features}.yaml for kubernetes-validate and checkov (hack/validate.sh).
"""
import copy
import difflib
import pathlib
import re
import subprocess
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helm as h  # noqa: E402  (hack/helm.py)

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "capi-vip-allocator"
OUT = ROOT / "out" / "chart"
NS = "capi-system"
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/managed-by"}
MONITORING_ON = {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                                "dashboard": {"enabled": True}}}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"check_chart: FAIL {msg}", file=sys.stderr)


def kustomize(*dirs):
    objs = []
    for d in dirs:
        out = subprocess.run(["kubectl", "kustomize", str(ROOT / d)], check=True, capture_output=True, text=True)
        objs += [o for o in yaml.safe_load_all(out.stdout) if o]
    return objs


def chart(values, namespace=NS):
    return [o for o in yaml.safe_load_all(h.render(CHART, values, namespace=namespace)) if o]


def key(o):
    md = o.get("metadata") or {}
    return (o.get("kind"), md.get("namespace", ""), md.get("name"))


def normalize(o, from_chart):
    o = copy.deepcopy(o)
    md = o.setdefault("metadata", {})
    labels = md.get("labels") or {}
    if from_chart:
        for k in HELM_LABELS:
            labels.pop(k, None)
    ann = md.get("annotations") or {}
    skips = sorted(v.split("=", 1)[0] for k, v in ann.items() if k.startswith("checkov.io/skip"))
    for k in [k for k in ann if k.startswith("checkov.io/skip")]:
        del ann[k]
    if skips:
        ann["checkov skips (by check ID)"] = ",".join(skips)
    if from_chart and o.get("kind") == "Namespace" and ann.get("helm.sh/resource-policy") == "keep":
        del ann["helm.sh/resource-policy"]
    for field, m in (("labels", labels), ("annotations", ann)):
        if m:
            md[field] = m
        else:
            md.pop(field, None)
    return o


def compare(case, got, want):
    """got: chart objects, want: kustomize objects. Returns the number of equal objects."""
    g = {key(o): normalize(o, True) for o in got}
    w = {key(o): normalize(o, False) for o in want}
    for k in sorted(set(w) - set(g), key=str):
        fail(f"{case}: the chart lacks {k[0]} {k[1]}/{k[2]} (kustomize has it)")
    for k in sorted(set(g) - set(w), key=str):
        fail(f"{case}: the chart has {k[0]} {k[1]}/{k[2]} that kustomize does not")
    equal = 0
    for k in sorted(set(g) & set(w), key=str):
        equal += g[k] == w[k]
        if g[k] != w[k]:
            a = yaml.safe_dump(w[k], sort_keys=True, width=1000).splitlines()
            b = yaml.safe_dump(g[k], sort_keys=True, width=1000).splitlines()
            diff = "\n".join(difflib.unified_diff(a, b, "kustomize", "chart", lineterm="", n=2))
            fail(f"{case}: {k[0]} {k[1]}/{k[2]} differs:\n{diff}")
    return equal


def strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k, path)
            yield from strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    all_values = yaml.safe_load((CHART / "ci" / "all-features-values.yaml").read_text())

    # 1. equivalence with config/
    base = kustomize("config/default")
    cases = [
        ("default values vs config/default without its Namespace", {},
         [o for o in base if o["kind"] != "Namespace"]),
        ("namespace.create=true vs config/default", {"namespace": {"create": True}}, base),
        # Known exception: config/runtime-extension's component `labels` also relabels the shared capi-system
        # Namespace with cluster.x-k8s.io/provider, which config/default/namespace.yaml says must never happen
        # (deleting the addon by label would delete CAPI core's namespace). The chart follows config/default
        # (compared just above), so the gate case compares everything but the Namespace.
        ("runtimeExtension.enabled=true vs config/runtime-extension (Namespace: see config/default)",
         {"runtimeExtension": {"enabled": True}},
         [o for o in kustomize("config/runtime-extension") if o["kind"] != "Namespace"]),
        ("monitoring.*.enabled=true vs config/default + config/prometheus",
         dict(MONITORING_ON, namespace={"create": True}), base + kustomize("config/prometheus")),
    ]
    for case, values, want in cases:
        n = compare(case, chart(values), want)
        print(f"check_chart: {case}: {n}/{len(want)} objects equal", file=sys.stderr)

    # 2. another namespace: nothing may still point at capi-system (alert/dashboard prose aside)
    other = chart(all_values, namespace="vip-system")
    for o in other:
        if o["kind"] in ("PrometheusRule", "ConfigMap"):
            continue
        for path, s in strings(o):
            if NS in s:
                fail(f"namespace vip-system: {o['kind']}/{o['metadata']['name']}{path} still says {s!r}")
    print(f"check_chart: release namespace vip-system: {len(other)} objects follow it", file=sys.stderr)

    # 2b. values that change the Deployment do what values.yaml says
    def deployment(values):
        return next(o for o in chart(values) if o["kind"] == "Deployment")

    def args(values):
        return deployment(values)["spec"]["template"]["spec"]["containers"][0]["args"]

    behaviour = [
        ("replicas: 2 switches --leader-elect on even with leaderElect: false",
         "--leader-elect" in args({"replicas": 2, "leaderElect": False})),
        ("leaderElect: false with 1 replica drops --leader-elect",
         "--leader-elect" not in args({"leaderElect": False})),
        ("operator flags are passed in order, extraArgs last",
         args({"logFormat": "text", "logLevel": "debug", "poolAllowlist": ["a", "b.c"], "maxConcurrentReconciles": 4,
               "defaultPort": 443, "extraArgs": ["--log-format=json"]})[3:] ==
         ["--log-format=text", "--log-level=debug", "--pool-allowlist=a,b.c", "--max-concurrent-reconciles=4",
          "--default-port=443", "--log-format=json"]),
        ("extraPoolKinds renders --pool-kinds and one ClusterRole rule per kind",
         "--pool-kinds=IPPool.v1alpha1.ipam.metal3.io" in args(all_values)
         and "--pending-claim-timeout=5m" in args(all_values)
         and {"apiGroups": ["ipam.metal3.io"], "resources": ["ippools"], "verbs": ["get", "list", "watch"]} in
         next(o for o in chart(all_values) if o["kind"] == "ClusterRole")["rules"]),
        ("image.tag and image.digest",
         deployment({"image": {"tag": "v9.9.9"}})["spec"]["template"]["spec"]["containers"][0]["image"]
         == "ghcr.io/gorizond/capi-vip-allocator:v9.9.9"
         and deployment({"image": {"digest": "sha256:" + "a" * 64}})["spec"]["template"]["spec"]["containers"][0]
         ["image"] == "ghcr.io/gorizond/capi-vip-allocator@sha256:" + "a" * 64),
        ("networkPolicy.enabled: false drops the NetworkPolicy",
         not any(o["kind"] == "NetworkPolicy" for o in chart({"networkPolicy": {"enabled": False}}))),
        ("all-features values reach the pod spec",
         all(k in deployment(all_values)["spec"]["template"]["spec"] for k in
             ("imagePullSecrets", "nodeSelector", "tolerations", "affinity", "topologySpreadConstraints",
              "priorityClassName"))),
    ]
    for what, ok in behaviour:
        if not ok:
            fail(f"behaviour: {what}")
    print(f"check_chart: {sum(ok for _, ok in behaviour)}/{len(behaviour)} value behaviours hold", file=sys.stderr)

    # 3. byte copies of config/prometheus
    for name in ("prometheus_rule.yaml", "capi-vip-allocator-dashboard.json"):
        if (CHART / "files" / name).read_bytes() != (ROOT / "config" / "prometheus" / name).read_bytes():
            fail(f"charts/capi-vip-allocator/files/{name} is not a copy of config/prometheus/{name}: "
                 f"cp config/prometheus/{name} charts/capi-vip-allocator/files/")

    # 3b. Rancher's questions.yaml: every variable exists in values.yaml with the same default
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for q in yaml.safe_load((CHART / "questions.yaml").read_text())["questions"]:
        node = defaults
        for part in q["variable"].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != q.get("default"):
            fail(f"questions.yaml {q['variable']}: default {q.get('default')!r} != values.yaml {node!r}")

    # 4. versions
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text()).group(1)
    if not (meta["version"] == str(meta["appVersion"]) == cargo):
        fail(f"Chart.yaml version {meta['version']} / appVersion {meta['appVersion']} != Cargo.toml version {cargo}")

    # 5. lint (strict) and the renders for kubernetes-validate / checkov
    for label, values in (("default", {}), ("all-features", all_values)):
        if not h.lint(str(CHART), values, NS, "v1.32.0"):
            fail(f"helm lint --strict with {label} values")
        (OUT / f"{label}.yaml").write_text(h.render(CHART, values, namespace=NS))

    # 6. bad values are refused by the schema
    invalid = sorted((CHART / "tests" / "invalid").glob("*.yaml"))
    for f in invalid:
        expect = re.search(r"(?m)^# expect: (.+)$", f.read_text())
        if not expect:
            fail(f"{f.relative_to(ROOT)} has no '# expect: REGEX' line")
        elif not h.reject(str(CHART), yaml.safe_load(f.read_text()) or {}, expect.group(1)):
            fail(f"{f.relative_to(ROOT)} was not refused by values.schema.json as expected")
    if not invalid:
        fail("no negative values files in charts/capi-vip-allocator/tests/invalid/")

    print(f"check_chart: {'OK' if not failures else f'{len(failures)} failure(s)'}; renders in out/chart/",
          file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
