"""Cost of CPU-only TensorRT-RTX engine builds: build time, peak memory and engine size per precision.

For one model (default: TDMI-W48 384x288, random weights) it exports the FP32 ONNX once, writes
each precision's final graph (DCN decomposed, FP16/INT8 variant, TemporalDiff fused) with
``tdmi-build-engine --onnx-only``, then builds each engine from that graph in a fresh process, so
the figures are the TensorRT-RTX build alone: wall time, the process's peak RSS (``wait4``) and the
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

from rich.console import Console
from rich.table import Table

from tdmi.utils import write_text_atomic

PRECISIONS = ("fp32", "fp16", "int8")
console = Console(highlight=False)


@dataclass(frozen=True)
class BuildRow:
    precision: str
    convert_s: float | None  # --onnx-only: lowering + variant + fusion + pre-flight (None: reused)
    process_s: float  # the whole tdmi-build-engine process (imports, checks, parse, build, writes)
    build_s: float  # TensorRT-RTX parse + build_serialized_network alone (the sidecar's build_seconds)
    peak_rss_mib: float  # of the build process
    engine_mib: float
    compute_capabilities: str


def _timed(args: list[str]) -> tuple[float, float]:
    """Run ``tdmi-build-engine args`` in a child; (wall seconds, the child's own peak RSS in MiB)."""
    t0 = time.perf_counter()
    # A child process, not an import: the benchmark measures the command as a user runs it, and
    # wait4 gives that one child's own peak RSS (ru_maxrss, KiB on Linux).
    proc = subprocess.Popen([sys.executable, "-m", "tdmi.cli.build_engine", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"tdmi-build-engine {' '.join(args)} failed with exit code {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024.0


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
        flag = [] if precision == "fp32" else [f"--{precision}", "--calib", str(calib)]
        final = workdir / f"final-{precision}.onnx"
        common = ["--target", "tensorrt-rtx", "--compute-capability", compute_capability]
        convert_s = None
        if not final.is_file():
            convert_s, _ = _timed([str(src), *flag, *common, "--onnx-only", "-o", str(final)])
        engine = workdir / f"{precision}.engine"
        process_s, rss = _timed([str(final), *common, "-o", str(engine)])
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
