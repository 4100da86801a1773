# shellcheck shell=bash
# Installs what the tests need, reusing the cache when it is there: Debian packages (only the
# missing ones), the tansu broker (built once by cargo, about 9 minutes on 2 cores) and the
# Python venv of scripts/requirements-test.txt (reinstalled when that file changes).
# Sourced after common.sh.

# Debian packages, each as "command:package": the package is installed when the command is
# missing. `apt-get update` runs at most once per scripts/test run, and only if something is.
ensure_debs() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing Debian packages: ${missing[*]}"
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

_install_tansu() {
	[[ -x $TANSU_BIN ]] && return 0
	local install_log="$PAYSTREAM_CACHE/tansu-install.log"
	log "building tansu $TANSU_VERSION into $TANSU_ROOT (once; about 9 minutes on 2 cores; log: $install_log)"
	if ! cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --locked \
		--root "$TANSU_ROOT" >"$install_log" 2>&1; then
		tail -n 40 "$install_log" >&2
		die "cargo install tansu failed (full log: $install_log)"
	fi
}

ensure_tansu() {
	[[ -x $TANSU_BIN ]] || with_lock tansu _install_tansu
	[[ -x $TANSU_BIN ]] || die "no tansu binary at $TANSU_BIN"
}

_requirements_hash() {
	sha256sum "$REQUIREMENTS" | cut -d' ' -f1
}

_install_venv() {
	local want have=
	want=$(_requirements_hash)
	[[ -f $VENV/.requirements.sha256 ]] && have=$(<"$VENV/.requirements.sha256")
	if [[ -x $VENV/bin/python && $have == "$want" ]]; then
		return 0
	fi
	if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
		log "creating the Python venv $VENV"
		rm -rf "$VENV"
		python3 -m venv "$VENV"
	fi
	log "installing Python test tools into $VENV (requirements changed or new venv)"
	local pip_log="$PAYSTREAM_CACHE/venv-pip.log"
	if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$REQUIREMENTS" >"$pip_log" 2>&1; then
		tail -n 40 "$pip_log" >&2
		die "pip install failed (full log: $pip_log)"
	fi
	# Written last: an interrupted install leaves no hash, so the next run installs again.
	printf '%s\n' "$want" >"$VENV/.requirements.sha256"
}

ensure_venv() {
	with_lock venv _install_venv
}
