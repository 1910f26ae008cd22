#!/usr/bin/env bash
# The one command to run on a borrowed GPU machine (no network, no install, PYTHONPATH=src):
#
#   bash scripts/gpu-evidence.sh [OUTDIR]        # OUTDIR defaults to $OUT, else out/gpu-evidence
#
# 1. the evidence kit (python -m tdmi.gpukit): gpu.json, gpu.md, kit.log;
# 2. the CUDA-marked tests, if pytest is importable or ./wheelhouse holds its wheels
#    (fill it beforehand with scripts/fill-wheelhouse.sh): tests.log;
# 3. summary.txt, also printed.
# Everything lands directly in OUTDIR (five files). Extra kit flags: GPU_CHECK_ARGS="--sections ...".
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-out/gpu-evidence}}"
mkdir -p "$OUTDIR" || { echo "cannot create $OUTDIR" >&2; exit 2; }
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
KIT_TIMEOUT="${KIT_TIMEOUT:-420}"    # the kit stops itself at --time-limit (330 s); this is the backstop
TEST_TIMEOUT="${TEST_TIMEOUT:-120}"  # both backstops together stay under a 10-minute command
started=$(date +%s)
with_timeout() { if command -v timeout >/dev/null; then timeout -k 10 "$@"; else shift; "$@"; fi; }

echo "== GPU evidence kit -> $OUTDIR"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a flag list
with_timeout "$KIT_TIMEOUT" "$PY" -m tdmi.gpukit --json "$OUTDIR/gpu.json" --md "$OUTDIR/gpu.md" \
    ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUTDIR/kit.log"
kit_rc=${PIPESTATUS[0]}

echo "== CUDA-marked tests"
pytest_site=""
if ! "$PY" -c "import pytest" 2>/dev/null && ls wheelhouse/*.whl >/dev/null 2>&1; then
    # Pure-Python wheels: unpacking them onto a path is all an install does (no pip, no network).
    pytest_site=$(mktemp -d)
    "$PY" - "$pytest_site" wheelhouse/*.whl <<'PYEOF'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
PYEOF
fi
if PYTHONPATH="${pytest_site:+$pytest_site:}$PYTHONPATH" "$PY" -c "import pytest" 2>/dev/null; then
    mapfile -t cuda_files < <(grep -rl --include="test_*.py" "pytest.mark.cuda" tests | sort)
    PYTHONPATH="${pytest_site:+$pytest_site:}$PYTHONPATH" with_timeout "$TEST_TIMEOUT" \
        "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider "${cuda_files[@]}" 2>&1 | tee "$OUTDIR/tests.log"
    tests_rc=${PIPESTATUS[0]}
    tests_line=$(grep -E "(passed|failed|skipped|error|no tests ran)" "$OUTDIR/tests.log" | tail -1)
    # pytest exits 0 when every test skipped: a run where nothing passed is "skipped", never ok.
    if [ "$tests_rc" = 0 ] && ! grep -qE "[0-9]+ passed" <<<"$tests_line"; then tests_rc=skipped; fi
else
    tests_rc=skipped
    tests_line="pytest not importable and no wheelhouse/*.whl: CUDA tests not run (scripts/fill-wheelhouse.sh)"
    echo "$tests_line" | tee "$OUTDIR/tests.log"
fi
[ -n "$pytest_site" ] && rm -rf "$pytest_site"

{
    echo "tdmi GPU evidence, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(( $(date +%s) - started )) s"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (plain copy)')"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'nvidia-smi not available')"
    echo "kit exit: $kit_rc (0 = no section failed, timed out or was left out; skipped and partial sections say why)"
    "$PY" - "$OUTDIR/gpu.json" <<'PYEOF' || echo "  (no readable gpu.json)"
import json, sys
report = json.load(open(sys.argv[1]))
for name, s in report["sections"].items():
    reason = f": {s['reason']}" if s.get("reason") else ""
    print(f"  {s['status']:>8}  {s['title']}{reason}"[:240])
PYEOF
    echo "cuda tests: $tests_rc  $tests_line"
} | tee "$OUTDIR/summary.txt"

[ "$kit_rc" = 0 ] && { [ "$tests_rc" = 0 ] || [ "$tests_rc" = skipped ]; }
