#!/usr/bin/env bash
# Install the real Autobahn|Testsuite `wstest` (PyPI autobahntestsuite 25.10.1) into a
# Python 2.7 virtualenv at compliance/.venv-wstest, from the pinned lists next to this
# script (requirements-bootstrap.txt, requirements-wstest.txt).
#
# Idempotent: a stamp file inside the venv records the hash of both pin lists (and of
# this script); when it matches and wstest still imports, the script does nothing.
#
# Environment:
#   PYTHON27    path to a CPython 2.7 interpreter (default: pyenv's 2.7.18, then
#               python2.7 / python2 on PATH)
#   WSTEST_VENV venv location (default: compliance/.venv-wstest)
#
# Exit codes: 0 installed (or already up to date), 3 no Python 2.7 found (callers may
# skip), anything else: the installation failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${WSTEST_VENV:-$HERE/.venv-wstest}"
BOOT_REQS="$HERE/requirements-bootstrap.txt"
WSTEST_REQS="$HERE/requirements-wstest.txt"
STAMP="$VENV/.asyncws-wstest-stamp"

log() { echo "[install_wstest] $*" >&2; }

# A candidate counts only if it really runs and really is 2.7 (pyenv shims for a
# version that is not selected exist on PATH but fail when run).
is_py27() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' \
        >/dev/null 2>&1
}

find_python27() {
    local cands=()
    [ -n "${PYTHON27:-}" ] && cands+=("$PYTHON27")
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root="$(pyenv root 2>/dev/null || true)"
        [ -n "$root" ] && cands+=("$root/versions/2.7.18/bin/python2.7")
        if [ -n "$root" ] && [ -d "$root/versions" ]; then
            local d
            for d in "$root"/versions/2.7.*; do
                [ -x "$d/bin/python2.7" ] && cands+=("$d/bin/python2.7")
            done
        fi
    fi
    cands+=("$HOME/.pyenv/versions/2.7.18/bin/python2.7")
    local p
    for p in python2.7 python2; do
        command -v "$p" >/dev/null 2>&1 && cands+=("$(command -v "$p")")
    done
    local c
    for c in "${cands[@]}"; do
        if is_py27 "$c"; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if ! PY27="$(find_python27)"; then
    echo "================================================================" >&2
    echo "!!! NO PYTHON 2.7 FOUND: cannot install Autobahn wstest.       !!!" >&2
    echo "!!! Looked at \$PYTHON27, \$(pyenv root)/versions/2.7.*,         !!!" >&2
    echo "!!! python2.7 and python2 on PATH.                             !!!" >&2
    echo "================================================================" >&2
    exit 3
fi

want_stamp="$(cat "$BOOT_REQS" "$WSTEST_REQS" "${BASH_SOURCE[0]}" "$PY27" 2>/dev/null \
    | sha256sum | cut -d' ' -f1)"
want_stamp="$want_stamp $PY27"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
    && "$VENV/bin/python" -c 'import autobahntestsuite' >/dev/null 2>&1; then
    log "wstest already installed in $VENV (pins unchanged); nothing to do"
    exit 0
fi

log "using Python 2.7 at $PY27"
log "creating $VENV"
rm -rf "$VENV"
BOOT="$(mktemp -d "${TMPDIR:-/tmp}/wstest-bootstrap.XXXXXX")"
trap 'rm -rf "$BOOT"' EXIT

# pip 19.x on 2.7 prints a deprecation banner; keep it quiet and non-interactive.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONWARNINGS=ignore

"$PY27" -m pip install --quiet --no-deps --target "$BOOT" -r "$BOOT_REQS"
PYTHONPATH="$BOOT" "$PY27" -m virtualenv --quiet --no-periodic-update "$VENV"
"$VENV/bin/pip" install --quiet --no-deps -r "$WSTEST_REQS"
"$VENV/bin/pip" check
"$VENV/bin/python" -c 'import autobahntestsuite, twisted, autobahn' # import smoke test
test -x "$VENV/bin/wstest"

echo "$want_stamp" >"$STAMP"
log "wstest installed: $VENV/bin/wstest"
