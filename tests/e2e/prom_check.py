"""Asks a real Prometheus for every panel query of one or more Grafana dashboards, and for a few
exact totals, until each panel returns at least one series or the deadline passes.

Template variables are substituted as Grafana would with the dashboard's saved selection:
$__rate_interval as 1m, $__interval as 15s, a variable left at "All" as its allValue (or every
value it offers, as a regex), any other selection as itself, and a variable with no selection as
the first value its query offers. Each query variable's own query (`label_values(...)`) must offer
at least one value too, or the dashboard's selector would be empty.

Usage: prom_check.py --prometheus URL --dashboard FILE [--dashboard FILE ...]
                     [--expect EXPR=VALUE ...] [--timeout S]
Prints one line per panel query and variable; exits 1 listing the queries that never returned a
series, the variables that never offered a value, or the totals that never matched.
"""

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request

BUILTINS = {"__rate_interval": "1m", "__interval": "15s"}
ALL = ("$__all", "All")


def get(base, path, params):
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def query(base, expr):
    return get(base, "/api/v1/query", {"query": expr})["result"]


def label_values(base, definition):
    """The values Grafana's Prometheus data source offers for `label_values([selector,] label)`."""
    m = re.fullmatch(r"\s*label_values\(\s*(?:(.*?)\s*,\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", definition)
    if not m:
        raise ValueError(f"unsupported variable query {definition!r} (only label_values)")
    selector, label = m.groups()
    params = {"match[]": [selector]} if selector else {}
    return sorted(get(base, f"/api/v1/label/{label}/values", params))


def regex_escape(value):
    """A value as a regex inside a PromQL double-quoted string (Grafana's escaping)."""
    return re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", value)


class Variable:
    def __init__(self, spec):
        self.name = spec["name"]
        self.spec = spec
        q = spec.get("query", spec.get("definition", ""))
        self.definition = (q.get("query", "") if isinstance(q, dict) else q) or spec.get("definition", "")
        current = (spec.get("current") or {}).get("value")
        self.current = [current] if isinstance(current, str) else list(current or [])
        self.values = None  # what the variable's query offers, once Prometheus answered

    def options(self, base):
        kind = self.spec.get("type", "query")
        if kind == "query":
            return label_values(base, self.definition)
        if kind == "custom":
            return [v.strip() for v in self.definition.split(",") if v.strip()]
        return [self.definition] if self.definition else self.current

    def value(self):
        """The text replacing the variable, or None while it needs values not offered yet."""
        selected = [v for v in self.current if v != ""]
        if not selected and self.spec.get("includeAll"):
            selected = ["$__all"]  # Grafana's first option is then "All"
        if any(v in ALL for v in selected):
            if self.spec.get("allValue"):
                return self.spec["allValue"]
            selected = self.values
        elif not selected:
            selected = self.values[:1] if self.values else None
        if not selected:
            return None
        if self.spec.get("multi") or self.spec.get("includeAll"):
            escaped = [regex_escape(v) for v in selected]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return selected[0]


def substitute(expr, values):
    """expr with $name, ${name} and ${name:format} replaced; None if one has no value yet."""
    missing = []

    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            return m.group(0)
        if values[name] is None:
            missing.append(name)
            return m.group(0)
        return values[name]

    out = re.sub(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)", repl, expr)
    return None if missing else out


def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # collapsed rows hold their panels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True, action="append")
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()
    dashboards = []
    for path in args.dashboard:
        with open(path) as f:
            dash = json.load(f)
        variables = [Variable(v) for v in dash.get("templating", {}).get("list", [])]
        targets = [
            (panel["title"], t["expr"])
            for panel in panels(dash["panels"])
            for t in panel.get("targets", [])
            if t.get("expr")
        ]
        dashboards.append((dash.get("title", path), variables, targets))
    # (dashboard, what, expr as written) -> None; variables first, as "variable <name>".
    pending = {}
    for title, variables, targets in dashboards:
        for v in variables:
            pending[(title, f"variable {v.name}", v.definition)] = None
        for panel_title, expr in targets:
            pending[(title, panel_title, expr)] = None
    expects = dict(e.rsplit("=", 1) for e in args.expect)
    deadline = time.monotonic() + args.timeout
    last = {}
    while True:
        for title, variables, targets in dashboards:
            for v in variables:
                key = (title, f"variable {v.name}", v.definition)
                try:
                    v.values = v.options(args.prometheus)
                except Exception as e:  # a query Prometheus refuses never passes
                    last[key] = str(e)
                    continue
                last[key] = "no values"
                if v.values and key in pending:
                    del pending[key]
                    print(f"ok ({len(v.values)} values): {title}: variable {v.name}: {v.definition}")
            values = dict(BUILTINS, **{v.name: v.value() for v in variables})
            for panel_title, raw in targets:
                key = (title, panel_title, raw)
                if key not in pending:
                    continue
                expr = substitute(raw, values)
                if expr is None:
                    last[key] = "a variable has no value yet"
                    continue
                try:
                    result = query(args.prometheus, expr)
                except Exception as e:
                    last[key] = f"{expr}: {e}"
                    continue
                last[key] = f"{expr}: empty"
                if result:
                    del pending[key]
                    print(f"ok ({len(result)} series): {title}: {panel_title}: {expr}")
        for expr, want in list(expects.items()):
            result = query(args.prometheus, expr)
            got = result[0]["value"][1] if result else None
            last[expr] = got
            if got is not None and float(got) == float(want):
                print(f"ok: {expr} = {want}")
                del expects[expr]
        if not pending and not expects:
            return 0
        if time.monotonic() > deadline:
            for key in pending:
                title, what, raw = key
                print(f"NO SERIES: {title}: {what}: {raw} ({last.get(key, 'never asked')})")
            for expr, want in expects.items():
                print(f"MISMATCH: {expr}: want {want}, last {last.get(expr)}")
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
