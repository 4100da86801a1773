"""Cancels a running query the way a Postgres client does (psql's Ctrl-C sends the same
CancelRequest): starts SQL on one connection, cancels it from another thread after --after
seconds, and prints what happened as JSON: the error's SQLSTATE and message and how long the
query lasted. Exits 0 only when the query ended cancelled.
"""

import argparse
import json
import os
import sys
import threading
import time

import psycopg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--sql", required=True)
    ap.add_argument("--after", type=float, default=1.0)
    args = ap.parse_args()
    conn = psycopg.connect(args.dsn, connect_timeout=30, autocommit=True)
    timer = threading.Timer(args.after, conn.cancel)
    started = time.monotonic()
    timer.start()
    outcome = {"sqlstate": None, "message": None}
    try:
        conn.execute(args.sql).fetchall()
    except psycopg.Error as e:
        outcome = {"sqlstate": e.sqlstate, "message": str(e).strip()}
    outcome["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(outcome))
    sys.stdout.flush()
    os._exit(0 if outcome["sqlstate"] == "57014" else 1)


if __name__ == "__main__":
    main()
