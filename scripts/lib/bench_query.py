"""The SQL-serving benchmark's driver: paystream's query engine against DuckDB, same Parquet files.

    bench_query.py --paystream BIN --lake DIR [--runs N]

Five analyst queries over the lake that `paystream generate --lake` wrote. paystream runs each
as `BIN query --lake DIR --format csv --timing SQL` and reports, on its last stderr line
`timing: <float> ms`, planning plus execution inside the process (opening the lake excluded).
DuckDB runs in this process over views on the tables' Parquet files (hive partitions), created
before any timing; `con.execute(sql).fetchall()` is timed with time.perf_counter. Each engine
gets one warm-up run, then N timed runs; the medians are compared.

The answers of the two engines are compared (rows sorted, numbers normalised) and any
difference fails the run (exit 1), as does a failing command. A missed ratio target does not:
this is a measurement. Run with the test venv's Python (duckdb, deltalake).
"""

import argparse
import csv
import datetime as dt
import decimal
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import deltalake
import duckdb

TARGET_RATIO = 1.5
TIMING_LINE = re.compile(r"^timing: ([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?) ms$")

# One entry per query: "sql" is run by both engines; "paystream" or "duckdb" replaces it for one
# engine where the dialects differ. {payment_id} is filled in before timing.
# Written in the subset both dialects share: CAST(... AS DOUBLE) rather than 100.0 * (a DECIMAL
# in DuckDB), count(*) FILTER, date_trunc then CAST to DATE (a DATE, not a TIMESTAMPTZ, reaches
# Python as a plain date; DuckDB's session time zone is set to UTC, paystream's is UTC).
QUERIES = [
    {
        "name": "revenue per day and currency",
        "sql": """
SELECT CAST(date_trunc('day', event_time) AS DATE) AS day,
       currency,
       count(*) FILTER (WHERE event_type = 'PaymentCaptured') AS captures,
       sum(amount_minor) FILTER (WHERE event_type = 'PaymentCaptured') AS revenue_minor
FROM payments
GROUP BY 1, 2
ORDER BY 1, 2""",
    },
    {
        "name": "top 10 merchants by volume",
        # Per merchant and currency: minor units of different currencies do not add up.
        "sql": """
SELECT merchant_id,
       currency,
       count(*) AS captures,
       sum(amount_minor) AS volume_minor
FROM payments
WHERE event_type = 'PaymentCaptured'
GROUP BY merchant_id, currency
ORDER BY volume_minor DESC, merchant_id, currency
LIMIT 10""",
    },
    {
        "name": "rejection rate by reason",
        # Rate = rejections with that reason / all authorisation decisions (authorised or
        # rejected), in one scan: the window sums the groups' counts.
        "sql": """
SELECT reason, decisions, rate
FROM (
    SELECT event_type,
           rejection_reason AS reason,
           count(*) AS decisions,
           CAST(count(*) AS DOUBLE) / CAST(sum(count(*)) OVER () AS DOUBLE) AS rate
    FROM payments
    WHERE event_type IN ('PaymentAuthorized', 'PaymentRejected')
    GROUP BY event_type, rejection_reason
) AS d
WHERE event_type = 'PaymentRejected'
ORDER BY decisions DESC, reason""",
    },
    {
        "name": "refunds by merchant",
        "sql": """
SELECT merchant_id,
       currency,
       count(*) AS refunds,
       count(DISTINCT payment_id) AS refunded_payments,
       sum(amount_minor) AS refunded_minor
FROM refunds
GROUP BY merchant_id, currency
ORDER BY refunded_minor DESC, merchant_id, currency""",
        "needs": "refunds",
    },
    {
        "name": "point lookup by payment id",
        "sql": """
SELECT event_id, event_type, merchant_id, amount_minor, currency, rejection_reason, failure_reason
FROM payments
WHERE payment_id = '{payment_id}'
ORDER BY event_time, event_id""",
    },
]


def log(msg: str) -> None:
    print(f"[bench-query {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> NoReturn:
    log(f"error: {msg}")
    sys.exit(1)


# --- answers -----------------------------------------------------------------------------------


def norm(value) -> str:
    """One spelling per value, whichever engine produced it: NULL and "" alike (CSV cannot tell
    them apart), integers as integers, other numbers to 9 significant digits (the engines add
    floats in different orders), dates and timestamps in ISO form, UTC."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (int, float, decimal.Decimal)):
        return norm_number(str(value))
    s = str(value)
    if s in ("true", "false"):
        return s
    try:
        return norm_number(s)
    except ValueError:
        pass
    if re.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?", s):
        return norm(dt.datetime.fromisoformat(s.replace("Z", "+00:00")))
    return s


def norm_number(s: str) -> str:
    if re.fullmatch(r"[-+]?\d+", s):
        return str(int(s))
    f = float(s)  # ValueError for anything else
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return f"{f:.9g}"


def canonical(rows) -> list:
    return sorted(tuple(norm(v) for v in row) for row in rows)


def parse_csv(text: str) -> list:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[1:] if rows else []  # the header names columns; the engines name them alike


def compare(name: str, ours: list, theirs: list) -> bool:
    a, b = canonical(ours), canonical(theirs)
    if a == b:
        return True
    log(f"ANSWERS DIFFER for {name!r}: paystream {len(a)} rows, duckdb {len(b)} rows")
    only_a = [r for r in a if r not in b][:5]
    only_b = [r for r in b if r not in a][:5]
    for r in only_a:
        log(f"  only paystream: {r}")
    for r in only_b:
        log(f"  only duckdb:    {r}")
    return False


# --- engines -----------------------------------------------------------------------------------


def run_paystream(bin_: str, lake: str, sql: str, timing: bool) -> tuple[float, str]:
    """One `paystream query` process: (milliseconds, CSV on stdout). With timing, the time is
    the process's own `timing:` line; without (--no-timing, for binaries that predate the flag),
    the wall-clock time of the whole process, lake opening included."""
    cmd = [bin_, "query", "--lake", lake, "--format", "csv"]
    if timing:
        cmd.append("--timing")
    cmd.append(sql)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = (time.perf_counter() - start) * 1000.0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        fail(f"paystream query exited {proc.returncode}: {sql.strip()}")
    if not timing:
        return wall, proc.stdout
    lines = proc.stderr.rstrip("\n").splitlines()
    m = TIMING_LINE.match(lines[-1].strip()) if lines else None
    if not m:
        sys.stderr.write(proc.stderr[-4000:])
        fail("paystream query printed no `timing: <float> ms` as its last stderr line")
    return float(m.group(1)), proc.stdout


def parquet_source(lake: Path, table: str) -> str:
    """The read_parquet() of one table: its hive-partitioned glob, once the glob is checked to
    hold exactly the table's live files (a file removed from the Delta log but still on disk
    would be counted by DuckDB alone; then the live files are listed instead)."""
    root = lake / table
    live = {os.path.normpath(u.removeprefix("file://")) for u in deltalake.DeltaTable(str(root)).file_uris()}
    on_disk = {os.path.normpath(str(p)) for p in root.glob("**/*.parquet")}
    if live == on_disk:
        return f"read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    log(f"{table}: {len(on_disk)} Parquet files on disk, {len(live)} live in the Delta log: listing the live ones")
    files = ", ".join(f"'{f}'" for f in sorted(live))
    return f"read_parquet([{files}], hive_partitioning = true)"


def duckdb_connection(lake: Path, tables: list[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for t in tables:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM {parquet_source(lake, t)}")
    return con


def run_duckdb(con, sql: str) -> tuple[float, list]:
    start = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return (time.perf_counter() - start) * 1000.0, rows


# --- report ------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{nproc} CPU(s) (nproc), {model}, {platform.system()} {platform.release()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paystream", required=True, help="the paystream binary")
    ap.add_argument("--lake", required=True, help="the lake folder")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query and engine (default 5)")
    # For checking the queries with a binary older than `query --timing`: times whole processes.
    ap.add_argument("--no-timing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.runs < 1:
        fail("--runs must be at least 1")
    lake = Path(args.lake).resolve()
    timing = not args.no_timing

    tables = [t for t in ("payments", "refunds") if (lake / t / "_delta_log").is_dir()]
    if "payments" not in tables:
        fail(f"no payments table in {lake}")
    queries = [q for q in QUERIES if q.get("needs", "payments") in tables]
    for q in QUERIES:
        if q not in queries:
            log(f"skipping {q['name']!r}: no {q['needs']} table in the lake")

    con = duckdb_connection(lake, tables)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    # A payment with a full lifecycle, chosen deterministically and not by position in the files.
    picked = con.execute(
        "SELECT payment_id FROM payments WHERE event_type = 'PaymentCaptured' "
        "ORDER BY hash(payment_id), payment_id LIMIT 1"
    ).fetchone()
    if picked is None:
        fail("no captured payment in the lake to look up")
    payment_id = picked[0]
    log(f"lake {lake}: " + ", ".join(f"{t} {n} rows" for t, n in counts.items()) + f"; lookup {payment_id}")

    results, mismatches = [], []
    for q in queries:
        sql_p = q.get("paystream", q["sql"]).format(payment_id=payment_id).strip()
        sql_d = q.get("duckdb", q["sql"]).format(payment_id=payment_id).strip()
        log(f"{q['name']}: warm-up, then {args.runs} runs each")
        _, csv_out = run_paystream(args.paystream, str(lake), sql_p, timing)
        _, duck_rows = run_duckdb(con, sql_d)
        if not compare(q["name"], parse_csv(csv_out), duck_rows):
            mismatches.append(q["name"])
        # Alternate the engines run by run, so drift on a shared machine hits both alike.
        p_ms, d_ms = [], []
        for _ in range(args.runs):
            p_ms.append(run_paystream(args.paystream, str(lake), sql_p, timing)[0])
            d_ms.append(run_duckdb(con, sql_d)[0])
        results.append((q["name"], statistics.median(p_ms), statistics.median(d_ms), len(duck_rows)))

    what = "in-process planning + execution" if timing else "WALL CLOCK of whole processes (--no-timing)"
    print()
    print(f"Query benchmark: median of {args.runs} runs after one warm-up; paystream: {what}; "
          f"duckdb {duckdb.__version__}: in-process execute + fetchall")
    print(f"Lake: {lake} (" + ", ".join(f"{t} {n} rows" for t, n in counts.items()) + ")")
    print(f"Machine: {machine()}")
    print()
    print(f"| query | rows | paystream ms | duckdb ms | ratio | target ≤{TARGET_RATIO}× |")
    print("|---|---:|---:|---:|---:|:---:|")
    for name, p, d, n in results:
        ratio = p / d if d > 0 else float("inf")
        ok = "yes" if ratio <= TARGET_RATIO else "**no**"
        print(f"| {name} | {n} | {p:.1f} | {d:.1f} | {ratio:.2f}× | {ok} |")
    print()
    if mismatches:
        fail(f"the engines' answers differ for: {', '.join(mismatches)}")
    print(f"answers: identical on all {len(results)} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
