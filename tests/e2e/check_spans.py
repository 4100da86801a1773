"""Checks the `spans` table of a lake with readers we did not write (deltalake, pyarrow, duckdb).

--expect FILE (repeatable): the spans an OpenTelemetry SDK service acknowledged
(otlp_service.py --out); each must be in the table exactly once with the same fields, and
the table must hold nothing else.

--own --events-lake URI: the table holds paystream's own pipeline spans: batch spans with
their stage children and attributes, linked to producer traces that exist in the events lake.

Prints a summary; exits 1 with the list of differences.
"""

import argparse
import json
import os
import sys

import duckdb
from deltalake import DeltaTable


def read(uri, table):
    return DeltaTable(f"{uri.rstrip('/')}/{table}").to_pyarrow_table()


def check_expected(spans, files, problems):
    expected = []
    for path in files:
        with open(path) as f:
            expected.extend(json.load(f))
    rows = spans.to_pylist()
    by_key = {}
    for r in rows:
        by_key.setdefault((r["trace_id"], r["span_id"]), []).append(r)
    for e in expected:
        found = by_key.get((e["trace_id"], e["span_id"]), [])
        if len(found) != 1:
            problems.append(f"span {e['trace_id']}/{e['span_id']} ({e['name']}) is in the table {len(found)} times")
            continue
        r = found[0]
        for field in ["parent_span_id", "name", "kind", "service_name", "status_code", "duration_ns"]:
            if r[field] != e[field]:
                problems.append(f"span {e['span_id']}: {field} is {r[field]!r}, sent {e[field]!r}")
        if json.loads(r["attributes"]) != e["attributes"]:
            problems.append(f"span {e['span_id']}: attributes {r['attributes']} != sent {e['attributes']}")
        if [ev["name"] for ev in json.loads(r["events"])] != e["events"]:
            problems.append(f"span {e['span_id']}: events {r['events']} != sent {e['events']}")
        resource = json.loads(r["resource_attributes"])
        if resource.get("service.name") != e["service_name"]:
            problems.append(f"span {e['span_id']}: resource attributes {resource}")
        if r["end_time"] < r["start_time"]:
            problems.append(f"span {e['span_id']}: ends before it starts")
    if len(rows) != len(expected):
        problems.append(f"the table holds {len(rows)} spans, the services sent {len(expected)}")
    # A second engine over the same Arrow data: no (trace_id, span_id) twice.
    dup = duckdb.sql("SELECT count(*) FROM (SELECT trace_id, span_id FROM spans GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
    if dup:
        problems.append(f"duckdb finds {dup} span ids more than once")
    return f"{len(expected)} spans sent, {len(rows)} in the table"


def check_own(spans, events_lake, problems):
    rows = [r for r in spans.to_pylist() if r["service_name"] == "paystream"]
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    for name in ["batch", "consume", "decode", "write", "commit"]:
        if not by_name.get(name):
            problems.append(f"no `{name}` span from paystream (names seen: {sorted(by_name)})")
    batches = {r["span_id"]: r for r in by_name.get("batch", [])}
    for name in ["consume", "decode", "write", "commit"]:
        for r in by_name.get(name, []):
            parent = batches.get(r["parent_span_id"])
            if parent is None or parent["trace_id"] != r["trace_id"]:
                problems.append(f"`{name}` span {r['span_id']} is not a child of a batch span")
                break
    producer_traces = set()
    for table in ["payments", "orders", "refunds"]:
        t = read(events_lake, table).select(["trace_id"]).to_pylist()
        producer_traces.update(r["trace_id"] for r in t if r["trace_id"])
    linked = set()
    rows_total = 0
    for b in batches.values():
        attrs = json.loads(b["attributes"])
        for key in ["kafka.topics", "kafka.offsets", "rows", "messaging.batch.message_count"]:
            if key not in attrs:
                problems.append(f"batch span {b['span_id']} lacks attribute {key}: {attrs}")
                break
        rows_total += int(attrs.get("rows", 0))
        if b["kind"] != "consumer":
            problems.append(f"batch span kind is {b['kind']}")
        for link in json.loads(b["links"]):
            linked.add(link["trace_id"])
    if not linked:
        problems.append("no batch span links to a producer trace")
    stray = linked - producer_traces
    if stray:
        problems.append(f"{len(stray)} linked traces are not in the events lake, e.g. {sorted(stray)[:3]}")
    return (f"{len(batches)} batch spans covering {rows_total} rows, {len(rows)} paystream spans, "
            f"links to {len(linked)} producer traces (all in the events lake)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--own", action="store_true")
    ap.add_argument("--events-lake")
    args = ap.parse_args()
    spans = read(args.lake, "spans")
    problems = []
    if args.expect:
        summary = check_expected(spans, args.expect, problems)
    else:
        summary = check_own(spans, args.events_lake, problems)
    if problems:
        print(f"{len(problems)} problem(s) in {args.lake}/spans:")
        for p in problems[:50]:
            print(" -", p)
        sys.stdout.flush()
        os._exit(1)
    print(f"spans OK: {summary}")
    sys.stdout.flush()
    # deltalake/pyarrow sometimes abort at interpreter exit; the verdict is printed.
    os._exit(0)


if __name__ == "__main__":
    main()
