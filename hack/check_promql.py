#!/usr/bin/env python3
"""Parse every PromQL expression of config/prometheus (PrometheusRule alerts and the Grafana dashboard) with a real
PromQL parser, and print the metric names they use, one per line (sorted).

Fails when an expression does not parse, when a metric name is outside what the operator can export
(`capi_vip_allocator_*`, `process_*`) or the scrape's own `up`, or when an alert lacks `for`/severity/summary.
tests/observability.rs checks the same names against a live /metrics of the real operator.
Usage: check_promql.py [config/prometheus]
"""
import json
import pathlib
import re
import sys

import promql_parser
import yaml

GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
ALLOWED = re.compile(r"^(capi_vip_allocator_[a-z0-9_]+|process_[a-z0-9_]+|up)$")


def exprs(root):
    rule_file = root / "prometheus_rule.yaml"
    rule = yaml.safe_load(rule_file.read_text())
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            where = f"{rule_file.name}:{r.get('alert') or r.get('record')}"
            if "alert" in r:
                for key in ("for",):
                    if key not in r:
                        yield where, None, f"alert without `{key}`"
                if "severity" not in r.get("labels", {}):
                    yield where, None, "alert without severity label"
                if "summary" not in r.get("annotations", {}):
                    yield where, None, "alert without summary"
            yield where, r["expr"], None
    for dash_file in sorted(root.glob("*.json")):
        dash = json.loads(dash_file.read_text())
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                yield f"{dash_file.name}:{panel['title']}/{t['refId']}", t["expr"], None


def main(root):
    root = pathlib.Path(root)
    names, problems, count = set(), [], 0
    for where, expr, problem in exprs(root):
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        count += 1
        text = expr
        for var, value in GRAFANA_VARS.items():
            text = text.replace(var, value)
        try:
            ast = promql_parser.parse(text)
        except Exception as err:  # the parser raises ValueError with the position
            problems.append(f"{where}: does not parse: {err}")
            continue
        found = []

        def visit(node):
            if isinstance(node, promql_parser.VectorSelector) and node.name:
                found.append(node.name)

        promql_parser.walk(ast, visit)
        if not found:
            problems.append(f"{where}: uses no metric")
        for n in found:
            if not ALLOWED.match(n):
                problems.append(f"{where}: metric {n} is not one the operator exports")
            names.add(n)
    for p in problems:
        print(f"check_promql: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    for n in sorted(names):
        print(n)
    print(f"check_promql: {count} expressions parse, {len(names)} metric names", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "config/prometheus")
