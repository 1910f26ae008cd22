"""The GPU evidence kit: its CPU dry run inside the GPU image's package set, and its guards.

The dry run is what CI can prove before a GPU is ever borrowed: the kit starts from a plain checkout
with ``PYTHONPATH=src``, imports nothing outside the image's packages (everything else is made
unimportable for the child process), runs every section, and records a status for each.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tdmi.errors import TdmiError
from tdmi.gpukit import isolate, runner
from tdmi.gpukit.cli import main as kit_main
from tdmi.gpukit.dcn_forms import load_decomposed_dcn, section_dcn_forms
from tdmi.gpukit.kernel_correctness import ALIGNMENTS
from tdmi.gpukit.options import (
    DCN_IMPORT,
    IMAGE_PACKAGES,
    SECTIONS,
    STATUSES,
    TITLES,
    Options,
    SectionSkipped,
)
from tdmi.gpukit.record import Recorder, to_markdown
from tdmi.gpukit.runner import exit_code, run_kit
from tdmi.gpukit.torch_latency import LATENCY_VARIANTS

REPO = Path(__file__).resolve().parents[2]

# Makes the packages outside the image absent for the whole child interpreter: a blocked name is
# not found by the path finder, so ``import cv2`` fails and ``importlib.util.find_spec`` says None,
# exactly as on the GPU machine.
_SITECUSTOMIZE = """
import sys
from importlib.machinery import PathFinder

BLOCKED = frozenset({blocked!r})


class _ImageOnly:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return PathFinder.find_spec(name, path, target)

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()

    @staticmethod
    def find_distributions(*args, **kwargs):  # importlib.metadata asks meta-path finders
        return PathFinder.find_distributions(*args, **kwargs)


sys.meta_path[:] = [_ImageOnly if f is PathFinder else f for f in sys.meta_path]
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: tuple[str, ...]) -> set[str]:
    """The distributions the roots need here (their requirements, recursively, extras left out)."""
    from packaging.requirements import Requirement

    dists = {_norm(d.metadata["Name"]): d for d in md.distributions()}
    seen: set[str] = set()
    todo = [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for text in dists[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return seen


def image_env(tmp: Path, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Environment for a child Python that sees only the GPU image's packages (plus ``extra``)."""
    allowed = _closure((*IMAGE_PACKAGES, *extra))
    blocked = sorted(
        mod
        for mod, owners in md.packages_distributions().items()
        if mod != "tdmi" and not any(_norm(d) in allowed for d in owners)
    )
    site = tmp / "image-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(blocked=blocked))
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO / 'src'}"}


@pytest.fixture(scope="module")
def image_site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return image_env(tmp_path_factory.mktemp("image"))


def test_blocker_removes_what_the_image_lacks(image_site: dict[str, str]) -> None:
    code = (
        "import importlib.util as u; "
        "print([m for m in ('cv2', 'matplotlib', 'onnxslim', 'onnx_graphsurgeon', 'modelopt', 'pytest') "
        "if u.find_spec(m) is not None])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=image_site, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # ~30 s on 2 cores; CI runs it: it is the proof the kit survives the GPU image
def test_cpu_dry_run_in_the_gpu_image(image_site: dict[str, str], tmp_path: Path) -> None:
    js, mdp = tmp_path / "gpu.json", tmp_path / "gpu.md"
    cmd = [sys.executable, "-m", "tdmi.gpukit", "--device", "cpu", "--quick"]
    cmd += ["--json", str(js), "--md", str(mdp), "--time-limit", "600"]
    proc = subprocess.run(cmd, env=image_site, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    report = json.loads(js.read_text())
    secs = report["sections"]
    detail = {n: (s["status"], s.get("reason"), s.get("log_tail", "")[-800:]) for n, s in secs.items()}
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], detail)
    assert list(secs) == list(SECTIONS)
    assert all(s["status"] in STATUSES and s["title"] == TITLES[n] for n, s in secs.items())
    for name in ("environment", "ort_cpu"):
        assert secs[name]["status"] == "ok", detail[name]
    # Nothing of the PTX kernel runs on a CPU: those sections are skipped (never ok), with counts.
    for name in ("kernel_correctness", "kernel_bandwidth"):
        assert secs[name]["status"] == "skipped" and "CUDA GPU" in secs[name]["reason"], detail[name]
        assert secs[name]["counts"]["ran"] == 0 and secs[name]["counts"]["skipped"] > 0
    assert secs["torch_latency"]["status"] == "partial", detail["torch_latency"]
    assert secs["torch_latency"]["counts"] == {"ran": 2, "failed": 0, "skipped": 10, "not_run": 0}
    assert "ran 2 of 12" in secs["torch_latency"]["reason"]
    assert "skipped 2. TemporalDiff kernel correctness" in " ".join(proc.stdout.split())

    env = secs["environment"]
    assert env["gpu"]["available"] is False and "CUDA GPU" in env["gpu"]["reason"]
    assert env["packages"]["torch"] and env["torch"]["version"]

    cases = secs["kernel_correctness"]["cases"]
    ref = [c for c in cases if c["path"] == "torch-vs-numpy"]
    assert ref and all(c["status"] == "ok" and c["bit_exact"] for c in ref)
    assert {c["frames"] for c in ref} == {2, 3, 5} and {c["dtype"] for c in ref} == {"float32", "float16"}
    assert {c["align"] for c in ref} == set(ALIGNMENTS) and any(c["shape"][0] == 0 for c in ref)
    gpu_rows = [c for c in cases if c["path"] in ("cuda-python", "cupy")]
    assert gpu_rows and all(c["status"] == "skipped" and "CUDA GPU" in c["reason"] for c in gpu_rows)

    bw = secs["kernel_bandwidth"]["rows"]
    assert len(bw) == 4 and all(r["status"] == "ok" for r in bw)
    assert all(r["kernel_gbps"] is None and r["copy_gbps"] > 0 and r["torch_gbps"] > 0 for r in bw)

    lat = secs["torch_latency"]["rows"]
    eager = [r for r in lat if r["variant"] == "eager-fp32"]
    assert [r["batch"] for r in eager] == [1, 2]
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 and r["keypoint_agreement"] == 1.0 for r in eager)
    others = [r for r in lat if r["variant"] != "eager-fp32"]
    assert {r["variant"] for r in others} == {v.name for v in LATENCY_VARIANTS[1:]}
    assert all(r["status"] == "skipped" and r["reason"] for r in others)

    dcn = secs["dcn_forms"]
    assert dcn["status"] in ("ok", "skipped")
    if dcn["status"] == "skipped":
        assert DCN_IMPORT in dcn["reason"]
    else:
        assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in dcn["rows"])

    ort = {r["backend"]: r for r in secs["ort_cpu"]["rows"]}
    assert ort["onnxruntime"]["p50_ms"] > 0 and ort["torch"]["p50_ms"] > 0
    assert ort["onnxruntime"]["keypoint_agreement"] == 1.0 and secs["ort_cpu"]["setup"]["simplified"] is False

    text = mdp.read_text()
    assert all(TITLES[n] in text for n in SECTIONS)


def test_cuda_tests_collect_in_the_gpu_image(tmp_path: Path) -> None:
    """The evidence script's pytest run (image + a pytest wheelhouse) must not die on an import."""
    env = image_env(tmp_path, extra=("pytest",))
    files = sorted(str(p) for p in (REPO / "tests").rglob("test_*.py") if "pytest.mark.cuda" in p.read_text())
    assert files
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    proc = subprocess.run([*cmd, *files], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "test_kernel_matches_reference" in proc.stdout


# ------------------------------------------------------------------------------ guards, in-process


def _stub_sections(monkeypatch: pytest.MonkeyPatch, funcs: dict[str, Any]) -> None:
    table = {n: (lambda opts, rec: None) for n in SECTIONS}
    table.update(funcs)
    monkeypatch.setattr(runner, "SECTION_FUNCS", table)


def test_a_failing_section_is_recorded_and_the_next_one_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(opts: Options, rec: Recorder) -> None:
        rec.set("rows", [{"status": "ok", "value": 1}])
        raise RuntimeError("device fell off the bus")

    def fine(opts: Options, rec: Recorder) -> None:
        rec.set("rows", [{"status": "ok", "value": 2, "kernel_gbps": 900.0}])

    _stub_sections(monkeypatch, {"kernel_correctness": broken, "kernel_bandwidth": fine})
    js, mdp = tmp_path / "r.json", tmp_path / "r.md"
    report = run_kit(Options(device="cpu", quick=True), None, 300, js, mdp, isolate=False)
    on_disk = json.loads(js.read_text())
    bad = on_disk["sections"]["kernel_correctness"]
    assert bad["status"] == "failed" and "device fell off the bus" in bad["reason"]
    assert bad["rows"] == [{"status": "ok", "value": 1}]  # measured before the failure: kept
    assert on_disk["sections"]["kernel_bandwidth"]["status"] == "ok"
    assert exit_code(report) == 1 and "device fell off the bus" in mdp.read_text()


def _cases(*statuses: str) -> list[dict[str, Any]]:
    ref = [{"path": "torch-vs-numpy", "status": "ok", "bit_exact": True}] * 3
    ptx = [
        {"path": "cupy", "status": s, **({"reason": "no CUDA GPU"} if s == "skipped" else {})}
        for s in statuses
    ]
    return ref + ptx


@pytest.mark.parametrize(
    ("statuses", "status", "reason"),
    [
        (
            ("skipped", "skipped"),
            "skipped",
            "ran 0 of 2 PTX kernel cases (cuda-python, cupy); 2 skipped: no CUDA GPU",
        ),
        (
            ("ok", "skipped"),
            "partial",
            "ran 1 of 2 PTX kernel cases (cuda-python, cupy); 1 skipped: no CUDA GPU",
        ),
        (("ok", "ok"), "ok", ""),
        ((), "skipped", "no PTX kernel cases (cuda-python, cupy) to run"),
    ],
)
def test_a_section_is_ok_only_when_its_subject_ran(
    monkeypatch: pytest.MonkeyPatch, statuses: tuple[str, ...], status: str, reason: str
) -> None:
    """The reference (torch vs numpy) running is not the kernel running: the title's subject counts."""
    _stub_sections(monkeypatch, {"kernel_correctness": lambda opts, rec: rec.set("cases", _cases(*statuses))})
    report = run_kit(Options(device="cpu"), ["kernel_correctness"], 60, isolate=False)
    section = report["sections"]["kernel_correctness"]
    assert (section["status"], section["reason"]) == (status, reason)
    assert section["counts"]["ran"] == statuses.count("ok")
    assert section["counts"]["skipped"] == statuses.count("skipped")
    assert exit_code(report) == 0
    row = next(line for line in to_markdown(report).splitlines() if line.startswith("| 2. "))
    assert f"| {status} | {statuses.count('ok')} / {statuses.count('skipped')} |" in row


def test_bandwidth_rows_without_the_kernel_do_not_count_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"status": "ok", "kernel_gbps": None, "copy_gbps": 10.0, "kernel_note": "kernel not run: no GPU"}]
    _stub_sections(monkeypatch, {"kernel_bandwidth": lambda opts, rec: rec.set("rows", rows * 2)})
    section = run_kit(Options(device="cpu"), ["kernel_bandwidth"], 60, isolate=False)["sections"][
        "kernel_bandwidth"
    ]
    assert section["status"] == "skipped" and "2 skipped: kernel not run: no GPU" in section["reason"]


def test_global_time_guard_leaves_sections_out_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_sections(monkeypatch, {})
    report = run_kit(Options(device="cpu"), ["environment", "ort_cpu"], 2.0, isolate=False)
    assert {s["status"] for s in report["sections"].values()} == {"not_run"}
    assert "global time guard" in report["sections"]["ort_cpu"]["reason"]
    assert exit_code(report) == 1


def test_unknown_section_is_refused() -> None:
    with pytest.raises(TdmiError, match="unknown section"):
        run_kit(Options(device="cpu"), ["environment", "warp_drive"], 10, isolate=False)


def test_row_time_guard_marks_the_section_partial(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "w.json", deadline=time.time() + 1.0)
    rec.row("rows", {"batch": 1}, lambda: {"p50_ms": 3.0})
    rec.row("rows", {"batch": 8}, lambda: {"p50_ms": 9.0}, need_s=60.0)
    rows = json.loads((tmp_path / "w.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "not_run"] and "time guard" in rows[1]["reason"]
    assert rec.data["status"] == "partial"


def test_worker_killed_at_its_timeout_keeps_partial_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = (
        "import json, sys, time; "
        "open(sys.argv[1], 'w').write(json.dumps({'status': 'ok', 'reason': '', 'rows': [{'batch': 1}]})); "
        "time.sleep(60)"
    )
    monkeypatch.setattr(
        isolate, "_worker_cmd", lambda name, opts, out, deadline: [sys.executable, "-c", script, str(out)]
    )
    t0 = time.perf_counter()
    result = isolate.run_isolated("torch_latency", Options(device="cpu"), 8.0, tmp_path)
    assert time.perf_counter() - t0 < 30
    assert result["status"] == "timeout" and result["rows"] == [{"batch": 1}]
    assert "time guard" in result["reason"]


def test_worker_crash_is_a_failed_section_with_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = "import sys; print('segfault-ish trouble', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(
        isolate, "_worker_cmd", lambda name, opts, out, deadline: [sys.executable, "-c", script]
    )
    result = isolate.run_isolated("kernel_correctness", Options(device="cpu"), 30.0, tmp_path)
    assert result["status"] == "failed" and "exited with 3" in result["reason"]
    assert "segfault-ish trouble" in result["log_tail"]


def test_dcn_section_compares_forms(tmp_path: Path) -> None:
    """With a decomposed form present (here torchvision's own op stands in), rows carry time and error."""
    from torchvision.ops import deform_conv2d

    def stand_in(x: Any, offset: Any, weight: Any, bias: Any = None, **kw: Any) -> Any:
        return deform_conv2d(
            x, offset, weight, bias, stride=kw["stride"], padding=kw["padding"], mask=kw["mask"]
        )

    rec = Recorder(None, deadline=time.time() + 120)
    section_dcn_forms(Options(device="cpu", quick=True), rec, decomposed=stand_in)
    rows = rec.data["rows"]
    assert {(r["form"], r["batch"]) for r in rows} == {
        (f, b) for f in ("torchvision", "decomposed") for b in (1, 2)
    }
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 and r["max_abs_err"] < 1e-5 for r in rows)
    assert all("time_vs_torchvision" in r for r in rows)


def test_missing_decomposed_dcn_is_a_skip_with_the_reason() -> None:
    import importlib.util

    if importlib.util.find_spec("tdmi.model.dcn") is not None:
        assert callable(load_decomposed_dcn())
        return
    with pytest.raises(SectionSkipped, match=r"tdmi\.model\.dcn"):
        load_decomposed_dcn()


def test_bench_cli_dispatches_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tdmi.cli import bench

    monkeypatch.setattr(sys, "argv", ["tdmi-bench", "gpu", "--help"])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == 0 and "tdmi-bench gpu" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["tdmi-bench", "gpu", "--device", "cpu", "--sections", "nope"])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == 1 and "unknown section" in capsys.readouterr().err


def test_output_folder_must_exist(tmp_path: Path) -> None:
    assert kit_main(["--device", "cpu", "--json", str(tmp_path / "missing" / "gpu.json")]) == 2
    assert not (tmp_path / "missing").exists()
