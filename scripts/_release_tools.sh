# shellcheck shell=bash
# Sourced by the release scripts: provides a private virtualenv with the pinned
# tools of scripts/release-tools.txt.  Idempotent: reinstalls only when the pin
# list changes (a hash of it is stamped into the venv).
#
#   ASYNCWS_TOOLS_VENV  venv location (default: <repo>/build/release-tools)
#   TOOLS_PYTHON        interpreter for the venv, >= 3.11 (default: python3)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_VENV="${ASYNCWS_TOOLS_VENV:-$REPO_ROOT/build/release-tools}"
TOOLS_REQS="$REPO_ROOT/scripts/release-tools.txt"

ensure_release_tools() {
    local py="${TOOLS_PYTHON:-python3}"
    local stamp="$TOOLS_VENV/.release-tools-stamp"
    local want
    want="$(sha256sum "$TOOLS_REQS" | cut -d' ' -f1)"
    if [ -x "$TOOLS_VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        echo "release tools need Python >= 3.11 (set TOOLS_PYTHON); $py is not" >&2
        return 1
    fi
    echo "[release-tools] installing $TOOLS_REQS into $TOOLS_VENV" >&2
    rm -rf "$TOOLS_VENV"
    "$py" -m venv "$TOOLS_VENV"
    if ! timeout 900 "$TOOLS_VENV/bin/python" -m pip install --disable-pip-version-check \
        -r "$TOOLS_REQS" >"$TOOLS_VENV/install.log" 2>&1; then
        tail -n 30 "$TOOLS_VENV/install.log" >&2
        return 1
    fi
    echo "$want" > "$stamp"
}
