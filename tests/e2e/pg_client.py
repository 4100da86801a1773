"""A Postgres client through psycopg (extended protocol, server-side parameters), as BI tools and
Grafana's data source talk to `paystream serve`. Runs one query with parameters and prints the
rows as JSON lines; exits 2 with the server's SQLSTATE and message when the query is refused.
"""

import argparse
import json
import os
import sys

import psycopg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--sql", required=True)
    ap.add_argument("--param", action="append", default=[])
    args = ap.parse_args()
    try:
        with psycopg.connect(args.dsn, connect_timeout=30) as conn:
            cur = conn.execute(args.sql, args.param or None, prepare=True)
            names = [d.name for d in cur.description] if cur.description else []
            for row in cur.fetchall():
                print(json.dumps(dict(zip(names, row)), default=str))
    except psycopg.Error as e:
        print(f"refused: {e.sqlstate}: {str(e).strip()}")
        sys.stdout.flush()
        os._exit(2)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
