"""POSTs SQL to `paystream serve`'s HTTP endpoint and prints what came back: JSON lines as they
are, or, with --arrow, the Arrow IPC stream read by pyarrow (a reader we did not write) as
JSON lines. Prints `status N: BODY` and exits 3 for anything but 200.
"""

import argparse
import base64
import http.client
import json
import os
import sys
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--sql", required=True)
    ap.add_argument("--arrow", action="store_true")
    ap.add_argument("--cafile", help="verify an https:// server against this CA")
    args = ap.parse_args()
    context = None
    if args.cafile:
        import ssl

        context = ssl.create_default_context(cafile=args.cafile)
    req = urllib.request.Request(args.url, data=args.sql.encode(), method="POST")
    req.add_header("Content-Type", "text/plain")
    if args.arrow:
        req.add_header("Accept", "application/vnd.apache.arrow.stream")
    if args.user:
        token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        print(f"status {e.code}: {e.read().decode(errors='replace')}")
        sys.stdout.flush()
        os._exit(3)
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
        print(f"no answer: {e}")
        sys.stdout.flush()
        os._exit(4)
    if args.arrow:
        import pyarrow.ipc

        table = pyarrow.ipc.open_stream(body).read_all()
        for row in table.to_pylist():
            print(json.dumps(row, default=str))
    else:
        sys.stdout.write(body.decode())
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
