# shellcheck shell=bash
# Shared helpers of scripts/test and its libraries: logging, the cache layout, a file lock.
# Sourced, never run; callers have `set -euo pipefail`.

PAYSTREAM_ROOT="${PAYSTREAM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-$HOME/.cache/paystream}"
export PAYSTREAM_ROOT PAYSTREAM_CACHE

TANSU_VERSION=0.6.0
TANSU_ROOT="$PAYSTREAM_CACHE/tansu"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
VENV="$PAYSTREAM_CACHE/venv"
REQUIREMENTS="$PAYSTREAM_ROOT/scripts/requirements-test.txt"

log() { printf '[test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Runs "$@" holding an exclusive lock on $1's lock file, so two scripts/test runs on one machine
# never install the same thing at once (the second waits, then finds it installed).
with_lock() {
	local name=$1
	shift
	mkdir -p "$PAYSTREAM_CACHE"
	(
		flock 9
		"$@"
	) 9>"$PAYSTREAM_CACHE/$name.lock"
}

# A loopback port that was free a moment ago (the kernel's pick for port 0).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1, for at most $2 seconds.
wait_for_port() {
	python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}
