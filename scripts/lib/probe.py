"""Readiness probes for the services scripts/test starts, run with the test venv's Python.

    probe.py kafka BROKER --pid PID [--timeout S]
    probe.py s3 ENDPOINT --pid PID --bucket NAME [--timeout S]

Each polls until the service answers a real request (Kafka metadata; S3 ListBuckets, then
creates the bucket), gives up at the deadline, and gives up at once if the service's process
(PID) has died, so a broken start fails in seconds with a clear message instead of a time-out.
"""

import argparse
import os
import socket
import sys
import time


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); its state in /proc says it has exited.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def poll(what: str, pid: int, timeout: float, attempt) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if not alive(pid):
            sys.exit(f"probe: {what}: its process {pid} has exited (last error: {last})")
        try:
            attempt()
            return
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    sys.exit(f"probe: {what} not ready after {timeout:.0f}s (last error: {last})")


def tcp_open(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=1):
        pass


def probe_kafka(args) -> None:
    host, port = args.target.rsplit(":", 1)
    poll(f"kafka {args.target} (port)", args.pid, args.timeout, lambda: tcp_open(host, int(port)))

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": args.target,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
        }
    )

    def metadata():
        md = admin.list_topics(timeout=2)
        if not md.brokers:
            raise RuntimeError("metadata lists no broker")

    poll(f"kafka {args.target} (metadata)", args.pid, args.timeout, metadata)


def probe_s3(args) -> None:
    from urllib.parse import urlparse

    url = urlparse(args.target)
    poll(f"s3 {args.target} (port)", args.pid, args.timeout, lambda: tcp_open(url.hostname, url.port))

    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=args.target,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    poll(f"s3 {args.target} (ListBuckets)", args.pid, args.timeout, s3.list_buckets)

    def create():
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if args.bucket not in names:
            s3.create_bucket(Bucket=args.bucket)

    poll(f"s3 bucket {args.bucket}", args.pid, args.timeout, create)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("service", choices=["kafka", "s3"])
    p.add_argument("target", help="HOST:PORT for kafka, http://HOST:PORT for s3")
    p.add_argument("--pid", type=int, required=True, help="the service's process id")
    p.add_argument("--bucket", help="s3: bucket to create")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    if args.service == "kafka":
        probe_kafka(args)
    else:
        if not args.bucket:
            p.error("s3 needs --bucket")
        probe_s3(args)


if __name__ == "__main__":
    main()
