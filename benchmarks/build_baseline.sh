#!/usr/bin/env bash
# Build another revision of asyncws beside this one, for before/after ratios from one run:
#   bash benchmarks/build_baseline.sh 72a91fd /tmp/asyncws-0.2.0
#   python benchmarks/echo.py --baseline /tmp/asyncws-0.2.0 ...
# It exports REV's tree into DIR (no .git) and compiles its extension(s) in place there, with
# the Cython of the current environment. Usage: build_baseline.sh REV DIR
set -euo pipefail
rev="${1:?usage: build_baseline.sh REV DIR}"
dir="${2:?usage: build_baseline.sh REV DIR}"
top="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
rm -rf "$dir"
mkdir -p "$dir"
git -C "$top" archive "$rev" | tar -x -C "$dir"
(cd "$dir" && python setup.py -q build_ext --inplace)
python -c "import sys; sys.path.insert(0, '$dir'); import asyncws; assert asyncws.HAS_SPEEDUPS, 'no extension'; print('baseline', '$rev', 'in', asyncws.__file__)"
