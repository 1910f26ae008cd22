"""Start-up (issue 20): ``-h``, ``--version`` and errors about option values answer without
importing torch or onnx, for every ``tdmi-*`` command: heavy imports happen where work starts.

Each case runs the command's typer app through ``run_app`` in a fresh interpreter and reads that
process's ``sys.modules`` at the end: unlike a timing, this does not depend on the machine's load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "onnxslim",
    "onnx_graphsurgeon",
    "modelopt",
    "tensorrt",
)

CHILD = """
import importlib, json, sys
from tdmi.cli.common import run_app
module = importlib.import_module(sys.argv[1])
rc = run_app(module.app, sys.argv[3:], prog_name=sys.argv[2])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("RESULT=" + json.dumps({{"rc": rc, "heavy": heavy}}))
"""

COMMANDS = {
    "tdmi-bench": "tdmi.cli.bench",
    "tdmi-export": "tdmi.cli.export",
    "tdmi-infer": "tdmi.cli.infer",
    "tdmi-eval": "tdmi.cli.eval",
    "tdmi-build-engine": "tdmi.cli.build_engine",
    "tdmi-train": "tdmi.cli.train",
    "tdmi-serve": "tdmi.cli.serve",
}


def answer(prog: str, args: list[str]) -> tuple[int, list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(heavy=set(HEAVY)), COMMANDS[prog], prog, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    assert lines, proc.stderr
    result = json.loads(lines[-1][7:])
    return result["rc"], result["heavy"], proc.stderr


@pytest.mark.parametrize("prog", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["-h", "--version"])
def test_help_and_version_import_nothing_heavy(prog: str, flag: str) -> None:
    rc, heavy, err = answer(prog, [flag])
    assert rc == 0, err
    assert heavy == []


@pytest.mark.parametrize(
    ("prog", "args", "rc_want", "fragment"),
    [
        ("tdmi-bench", ["--config", "nope"], 2, "unknown preset 'nope'"),
        ("tdmi-bench", ["--checkpoint", "TMP/missing.pt"], 1, "--checkpoint"),
        ("tdmi-export", ["onnx", "--config", "nope", "-o", "TMP/x.onnx"], 2, "unknown preset"),
        ("tdmi-export", ["onnx", "--config", "TMP/missing.json", "-o", "TMP/x.onnx"], 2, "not found"),
        ("tdmi-export", ["onnx", "--checkpoint", "TMP/missing.pt", "-o", "TMP/x.onnx"], 1, "--checkpoint"),
        ("tdmi-infer", ["TMP/missing.mp4", "--config", "tdmi-tiny", "-o", "TMP/out"], 1, "SOURCE"),
        ("tdmi-infer", ["TMP/missing.mp4", "--model", "TMP/m.onnx", "-o", "TMP/out"], 1, "--model"),
        ("tdmi-infer", ["TMP/missing.mp4", "--config", "nope", "-o", "TMP/out"], 2, "--config"),
        ("tdmi-build-engine", ["build", "TMP/missing.onnx", "-o", "TMP/x.engine"], 1, "ONNX_PATH"),
        ("tdmi-train", ["--config", "nope", "--data", "synthetic", "-o", "TMP/run"], 2, "--config"),
        ("tdmi-train", ["--config", "tdmi-tiny", "--data", "TMP/nodata", "-o", "TMP/run"], 1, "--data"),
        ("tdmi-serve", ["--config", "nope"], 2, "--config"),
        ("tdmi-eval", ["TMP/gt", "TMP/pred"], 1, "TMP"),
    ],
)
def test_option_value_errors_answer_before_heavy_imports(
    prog: str, args: list[str], rc_want: int, fragment: str, tmp_path: Path
) -> None:
    rc, heavy, err = answer(prog, [a.replace("TMP", str(tmp_path)) for a in args])
    assert rc == rc_want, err
    assert fragment.replace("TMP", str(tmp_path)) in " ".join(err.split()), err
    assert heavy == []


@pytest.mark.parametrize("prog", sorted(set(COMMANDS) - {"tdmi-eval"}))
def test_command_modules_load_no_numpy_or_opencv(prog: str) -> None:
    """The typed option value sets come from numpy-free modules, so `-h` and option errors stay light
    (tdmi-eval's module imports the metrics, which are numpy)."""
    code = f"import sys, {COMMANDS[prog]}; print(sorted(m for m in ('numpy', 'cv2') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
