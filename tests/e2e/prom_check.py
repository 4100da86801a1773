"""Asks a real Prometheus for every panel query of a Grafana dashboard (template variables
substituted as Grafana would: $__rate_interval as 1m, multi-value variables as .*), and for a
few exact totals, until each panel returns at least one series or the deadline passes.

Usage: prom_check.py --prometheus URL --dashboard FILE [--expect EXPR=VALUE ...] [--timeout S]
Prints one line per panel query; exits 1 listing the queries that never returned a series, or
the totals that never matched.
"""

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request


def query(base, expr):
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def substitute(expr, variables):
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    for name in variables:
        expr = re.sub(r"\$\{?" + re.escape(name) + r"\}?", ".*", expr)
    return expr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()
    dash = json.load(open(args.dashboard))
    variables = [v["name"] for v in dash.get("templating", {}).get("list", [])]
    pending = {}
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            pending[substitute(t["expr"], variables)] = panel["title"]
    expects = dict(e.rsplit("=", 1) for e in args.expect)
    deadline = time.monotonic() + args.timeout
    last = {}
    while True:
        for expr in list(pending):
            try:
                result = query(args.prometheus, expr)
            except Exception as e:  # a query Prometheus refuses never passes
                last[expr] = str(e)
                continue
            if result:
                print(f"ok ({len(result)} series): {pending.pop(expr)}: {expr}")
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
            for expr, title in pending.items():
                print(f"NO SERIES: {title}: {expr} ({last.get(expr, 'empty')})")
            for expr, want in expects.items():
                print(f"MISMATCH: {expr}: want {want}, last {last.get(expr)}")
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
