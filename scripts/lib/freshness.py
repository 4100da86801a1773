"""The freshness benchmark's driver: runs the generator, and reads the freshness histograms of
a running pipeline's /metrics after a warm-up and at the end.

    freshness.py --metrics URL --warmup S --rate R --seconds N -- GENERATOR COMMAND...

Prints, for the events observed between the two snapshots, the 50th, 90th, 99th percentiles
and the count of paystream_event_to_metric_seconds (event time to window value published)
and of paystream_kafka_to_commit_seconds (Kafka timestamp to lake commit), from the
histograms' cumulative buckets (a quantile is reported as the upper bound of the bucket that
holds it), then the rate the generator reached and the consumer lag left at the end.
"""

import argparse
import re
import subprocess
import sys
import time
import urllib.request

SAMPLE = re.compile(r'^(\w+)(\{[^}]*\})? ([-+0-9.eEinfNa]+)')


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def buckets(sample, name):
    """Cumulative counts by upper bound for histogram `name`."""
    out = []
    for (metric, labels), v in sample.items():
        if metric == f"{name}_bucket":
            le = re.search(r'le="([^"]+)"', labels).group(1)
            out.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(out)


def quantiles(before, after, name):
    a = dict(buckets(after, name))
    b = dict(buckets(before, name))
    diff = sorted((le, a[le] - b.get(le, 0.0)) for le in a)
    total = diff[-1][1] if diff else 0.0
    res = {}
    for q in (0.5, 0.9, 0.99):
        res[q] = next((le for le, c in diff if c >= q * total), float("nan")) if total else float("nan")
    return res, int(total)


def lag(sample):
    return int(sum(v for (m, _), v in sample.items() if m == "paystream_consumer_lag_messages"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--metrics", required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    started = time.monotonic()
    gen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(a.warmup)
    before = scrape(a.metrics)
    _, err = gen.communicate()
    produced_for = time.monotonic() - started
    if gen.returncode != 0:
        sys.stderr.write(err[-4000:])
        sys.exit(f"generator exited {gen.returncode}")
    # Whatever was produced gets its chance to be published.
    time.sleep(3)
    after = scrape(a.metrics)
    print(f"generator: {a.rate * a.seconds} events in {produced_for:.1f} s = "
          f"{a.rate * a.seconds / produced_for:,.0f} events/s (asked {a.rate:,})")
    for name, what in [
        ("paystream_event_to_metric_seconds", "event time -> window value on /metrics"),
        ("paystream_kafka_to_commit_seconds", "Kafka timestamp -> row committed"),
    ]:
        q, n = quantiles(before, after, name)
        print(f"{what}: p50 <= {q[0.5]}s  p90 <= {q[0.9]}s  p99 <= {q[0.99]}s  ({n} observations after a {a.warmup:.0f} s warm-up)")
    print(f"consumer lag left 3 s after the generator stopped: {lag(after)} messages")


if __name__ == "__main__":
    main()
