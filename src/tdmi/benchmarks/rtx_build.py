"""Cost of CPU-only TensorRT-RTX engine builds: build time, peak memory and engine size per precision.

For one model (default: TDMI-W48 384x288, random weights) it exports the FP32 ONNX once, writes
each precision's final graph (DCN decomposed, FP16/INT8 variant, TemporalDiff fused) as
``tdmi-build-engine --onnx-only`` does (:func:`tdmi.export.engine.write_final_onnx`), then builds each
engine from that graph (:func:`tdmi.export.engine.build_engine`) in a fresh process, so the figures
are the TensorRT-RTX build alone: wall time, the process's peak RSS (``wait4``) and the
engine's bytes. Conversion times are reported separately. No GPU is needed.

Peak memory is the build process's own ``VmHWM`` (read by the child at exit): ``ru_maxrss`` of a
child is not, since Linux carries the parent's peak over ``fork``/``exec`` into it.

``python -m tdmi.benchmarks.rtx_build [--config tdmi-tiny] [--precision fp16] [--json out.json]
[--workdir DIR]`` (a kept ``DIR`` is reused: an existing export or final graph is not made again)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tdmi.utils import write_text_atomic

PRECISIONS = ("fp32", "fp16", "int8")
STEP_FLAG = "--build-step"  # internal: one build step in a child process
console = Console(highlight=False)


@dataclass(frozen=True)
class BuildRow:
    precision: str
    convert_s: float | None  # --onnx-only: lowering + variant + fusion + pre-flight (None: reused)
    process_s: float  # the whole build process (imports, checks, parse, build, writes)
    build_s: float  # TensorRT-RTX parse + build_serialized_network alone (the sidecar's build_seconds)
    peak_rss_mib: float  # of the build process
    engine_mib: float
    compute_capabilities: str


def _timed(step: dict[str, Any]) -> tuple[float, float]:
    """Run one build ``step`` (see :func:`_build_step`) in a fresh child process; (wall seconds, the
    child's own peak RSS in MiB)."""
    t0 = time.perf_counter()
    # A child process, not a call here: the benchmark measures a build as a fresh process runs it,
    # and wait4 gives that one child's own peak RSS (ru_maxrss, KiB on Linux).
    proc = subprocess.Popen([sys.executable, "-m", "tdmi.benchmarks.rtx_build", STEP_FLAG, json.dumps(step)])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"build step {step} failed with exit code {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024.0


def _build_step(step: dict[str, Any]) -> None:
    """In the child: the final graph (``onnx_only``) or the engine, through the export library."""
    from tdmi.export.engine import (
        EngineBuildOptions,
        build_engine,
        parse_compute_capabilities,
        write_final_onnx,
    )

    calib = step.get("calib")
    options = EngineBuildOptions(
        precision=step["precision"],
        calib=Path(calib) if calib else None,
        target="tensorrt-rtx",
        compute_capabilities=parse_compute_capabilities(step["compute_capability"]),
    )
    if step["onnx_only"]:
        write_final_onnx(step["src"], step["output"], options)
    else:
        build_engine(step["src"], step["output"], options)


def run(config: str, precisions: tuple[str, ...], compute_capability: str, workdir: Path) -> list[BuildRow]:
    from tdmi.artifacts.sidecar import load_sidecar
    from tdmi.export import build_calibration_set, export_onnx

    src = workdir / "fp32.onnx"
    if not src.is_file():
        console.print(f"exporting {config} (FP32, batch 1) ...")
        export_onnx(config, src, batch=1, verify=False, progress=False)
    calib = workdir / "calib.npz"
    if not calib.is_file():
        build_calibration_set(config, None, num_clips=8).save(calib)
    rows = []
    for precision in precisions:
        final = workdir / f"final-{precision}.onnx"
        convert_s = None
        if not final.is_file():
            calib_arg = None if precision == "fp32" else str(calib)
            convert_s, _ = _timed(
                {"src": str(src), "output": str(final), "precision": precision, "calib": calib_arg,
                 "compute_capability": compute_capability, "onnx_only": True}
            )  # fmt: skip
        engine = workdir / f"{precision}.engine"
        process_s, rss = _timed(
            {"src": str(final), "output": str(engine), "precision": "fp32", "calib": None,
             "compute_capability": compute_capability, "onnx_only": False}
        )  # fmt: skip
        build_s = float(load_sidecar(engine).build_options["build_seconds"])
        rows.append(
            BuildRow(
                precision,
                convert_s,
                process_s,
                build_s,
                rss,
                engine.stat().st_size / 2**20,
                compute_capability,
            )
        )
        console.print(f"{precision}: build {build_s:.1f} s, peak RSS {rss:.0f} MiB")
    return rows


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == [STEP_FLAG]:  # a build step in this (child) process, see _timed
        _build_step(json.loads(args_in[1]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", default="tdmi-w48-384x288")
    parser.add_argument("--precision", action="append", choices=PRECISIONS)
    parser.add_argument("--compute-capability", default="80,86,89,120")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the exports and engines here")
    args = parser.parse_args(argv)
    precisions = tuple(args.precision or PRECISIONS)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = run(args.config, precisions, args.compute_capability, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="tdmi-rtx-build-") as tmp:
            rows = run(args.config, precisions, args.compute_capability, Path(tmp))
    table = Table(
        title=f"TensorRT-RTX CPU-only builds: {args.config}, compute capabilities {args.compute_capability}"
    )
    for col in ("precision", "convert s", "process s", "build s", "peak RSS MiB", "engine MiB"):
        table.add_column(col, justify="left" if col == "precision" else "right")
    for r in rows:
        table.add_row(
            r.precision,
            "reused" if r.convert_s is None else f"{r.convert_s:.1f}",
            f"{r.process_s:.1f}",
            f"{r.build_s:.1f}",
            f"{r.peak_rss_mib:.0f}",
            f"{r.engine_mib:.1f}",
        )
    console.print(table)
    if args.json:
        from tdmi.plugins.rtx import import_rtx

        trt = import_rtx()
        payload = {
            "config": args.config,
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
            "tensorrt_rtx": trt.__version__,
            "rows": [asdict(r) for r in rows],
        }
        write_text_atomic(args.json, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
