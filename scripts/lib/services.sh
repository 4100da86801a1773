# shellcheck shell=bash
# Starts the real services the end-to-end tests talk to, on free loopback ports, and stops them.
# Sourced after common.sh and setup.sh (needs $TANSU_BIN and $VENV).
#
#   start_services   starts tansu (Kafka API, in-memory storage) and moto (S3), waits until each
#                    answers a real request, creates the test bucket and exports the test env
#   stop_services    stops what start_services started (safe to call twice, or before start)
#   print_env        the exported test env as `export` lines
#
# Logs go to $SERVICES_DIR, a fresh temporary folder.

TEST_BUCKET=paystream-test
SERVICES_DIR=
SERVICE_PIDS=()

# The variables the tests read; print_env shows exactly these.
TEST_ENV_VARS=(
	PAYSTREAM_TEST_KAFKA PAYSTREAM_TANSU PAYSTREAM_TEST_S3_ENDPOINT PAYSTREAM_TEST_S3_BUCKET
	PAYSTREAM_PYTHON AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
	NO_PROXY no_proxy
)

# _start NAME PROBE_KIND TARGET_TEMPLATE CMD...: starts CMD with @PORT@ replaced by a free port
# (in CMD and in TARGET_TEMPLATE), probes it, and retries on a fresh port if the start fails
# (another process may take the port between our pick and the service's bind).
# Sets STARTED_PORT.
_start() {
	local name=$1 kind=$2 template=$3
	shift 3
	local attempt port pid target arg cmd
	for attempt in 1 2 3; do
		port=$(free_port)
		target=${template//@PORT@/$port}
		cmd=()
		for arg in "$@"; do cmd+=("${arg//@PORT@/$port}"); done
		"${cmd[@]}" >"$SERVICES_DIR/$name.log" 2>&1 &
		pid=$!
		local probe=("$VENV/bin/python" "$PAYSTREAM_ROOT/scripts/lib/probe.py" "$kind" "$target" --pid "$pid" --timeout 60)
		[[ $kind == s3 ]] && probe+=(--bucket "$TEST_BUCKET")
		if "${probe[@]}"; then
			SERVICE_PIDS+=("$pid")
			STARTED_PORT=$port
			STARTED_PID=$pid
			log "$name is up on 127.0.0.1:$port (pid $pid, log $SERVICES_DIR/$name.log)"
			return 0
		fi
		_stop_pid "$pid"
		log "$name did not start (attempt $attempt); its log ends with:"
		tail -n 20 "$SERVICES_DIR/$name.log" >&2 || true
	done
	die "could not start $name"
}

# Stops one process we started: SIGTERM, up to 10 s to exit, then SIGKILL.
_stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

start_services() {
	SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/paystream-services.XXXXXX")
	export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
	# Loopback must never go through a proxy that the environment might set.
	export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
	export no_proxy="$NO_PROXY"

	_start tansu kafka "127.0.0.1:@PORT@" \
		"$TANSU_BIN" broker \
		--listener-url "tcp://127.0.0.1:@PORT@" \
		--advertised-listener-url "tcp://127.0.0.1:@PORT@" \
		--storage-engine "memory://tansu/"
	local kafka_port=$STARTED_PORT
	TANSU_PID=$STARTED_PID

	_start moto s3 "http://127.0.0.1:@PORT@" "$VENV/bin/moto_server" -H 127.0.0.1 -p "@PORT@"
	local s3_port=$STARTED_PORT

	export PAYSTREAM_TEST_KAFKA="127.0.0.1:$kafka_port"
	export PAYSTREAM_TANSU="$TANSU_BIN"
	export PAYSTREAM_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
	export PAYSTREAM_TEST_S3_BUCKET="$TEST_BUCKET"
	export PAYSTREAM_PYTHON="$VENV/bin/python"
}

stop_services() {
	local pid
	for pid in "${SERVICE_PIDS[@]}"; do
		_stop_pid "$pid"
	done
	SERVICE_PIDS=()
}

print_env() {
	local v
	for v in "${TEST_ENV_VARS[@]}"; do
		printf 'export %s=%q\n' "$v" "${!v-}"
	done
}
