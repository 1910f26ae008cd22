"""``tdmi-build-engine``: ONNX -> TensorRT engine + sidecar; ``check`` (pre-flight only); ``plugin``.

``tdmi-build-engine model.onnx -o model.engine`` is the build (the ``build`` sub-command name may be
omitted); ``--onnx-only`` writes the final, checked ONNX instead, on any machine.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tdmi.artifacts.onnx_meta import DeformConvForm
from tdmi.artifacts.sidecar import EngineTarget
from tdmi.cli.common import Verbose, check_input_paths, console, run_app
from tdmi.errors import ExportError, UsageError
from tdmi.utils import check_outputs

PROG = "tdmi-build-engine"
COMMANDS = ("build", "check", "plugin")

app = typer.Typer(
    name=PROG,
    help="Build strongly typed TensorRT engines (fused TemporalDiff plugin) from tdmi ONNX exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


if TYPE_CHECKING:
    from tdmi.artifacts.sidecar import BatchProfile


def _profile(batch: str | None) -> BatchProfile | None:
    from tdmi.artifacts.sidecar import BatchProfile

    return None if batch is None else BatchProfile.parse(batch)


Batch = Annotated[
    str | None, typer.Option("--batch", help="Batch profile MIN:OPT:MAX (default: from the ONNX).")
]
TrtVersion = Annotated[str, typer.Option("--trt-version", help="TensorRT release to check against (10.9+).")]
Target = Annotated[
    EngineTarget | None,
    typer.Option(
        "--target", help="tensorrt or tensorrt-rtx (default: whichever is installed, TensorRT first)."
    ),
]
DeformConv = Annotated[
    DeformConvForm | None,
    typer.Option(
        "--deform-conv",
        help="native (ONNX DeformConv, TensorRT plugin) or decomposed (GridSample + Conv); "
        "default: native for tensorrt, decomposed for tensorrt-rtx.",
    ),
]
ComputeCapability = Annotated[
    str | None,
    typer.Option(
        "--compute-capability", help="TensorRT-RTX GPUs to build for, e.g. 80,86,89,120 (the default)."
    ),
]


@app.command("build")
def build(
    onnx_path: Annotated[Path, typer.Argument(help="ONNX file from tdmi-export (FP32).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Engine path, or .onnx with --onnx-only.")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Build from the FP16-converted graph.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Build from the quantized (Q/DQ) graph.")] = False,
    calib: Annotated[
        Path | None, typer.Option("--calib", help="PoseTrack folder or calibration .npz.")
    ] = None,
    batch: Batch = None,
    workspace: Annotated[float, typer.Option("--workspace", help="Builder workspace limit, GiB.")] = 4.0,
    timing_cache: Annotated[
        Path | None, typer.Option("--timing-cache", help="Persistent timing cache.")
    ] = None,
    opt_level: Annotated[int, typer.Option("--opt-level", help="Builder optimisation level 0..5.")] = 3,
    no_fuse: Annotated[
        bool, typer.Option("--no-fuse", help="Keep the plain-ONNX temporal differences.")
    ] = False,
    onnx_only: Annotated[
        bool, typer.Option("--onnx-only", help="Write the final ONNX; no TensorRT.")
    ] = False,
    trt_version: TrtVersion = "11",
    force: Annotated[
        bool, typer.Option("--force", help="With --onnx-only: allow -o to be the source ONNX (in place).")
    ] = False,
    target: Target = None,
    deform_conv: DeformConv = None,
    compute_capability: ComputeCapability = None,
    verbose: Verbose = False,
) -> None:
    """Convert precision, fuse, pre-flight check, and build (or, with --onnx-only, write the final ONNX)."""
    check_input_paths({"ONNX_PATH": onnx_path, "--calib": calib}, folders=True)
    if fp16 and int8:
        raise UsageError("choose one of --fp16 and --int8")
    if calib is not None and not (fp16 or int8):
        raise UsageError("--calib only applies to --fp16 or --int8")
    _check_build_outputs(onnx_path, output, calib, timing_cache, onnx_only, force)
    from tdmi.cli.export import require_export
    from tdmi.export.engine import (
        EngineBuildOptions,
        build_engine,
        default_target,
        parse_compute_capabilities,
        write_final_onnx,
    )

    require_export("tdmi-build-engine")
    options = EngineBuildOptions(
        precision="int8" if int8 else "fp16" if fp16 else "fp32",
        calib=calib,
        profile=_profile(batch),
        workspace_gb=workspace,
        timing_cache=timing_cache,
        opt_level=opt_level,
        fuse=not no_fuse,
        trt_version=trt_version,
        target=target or default_target(),
        compute_capabilities=parse_compute_capabilities(compute_capability) if compute_capability else (),
        deform_conv=deform_conv,
    )
    if onnx_only:
        prepared = write_final_onnx(onnx_path, output, options)
        if prepared.report.findings:
            console.print(prepared.report.to_table())
        steps = ", ".join(prepared.steps)
        console.print(
            f"wrote {output} ({steps}; profile {prepared.profile}; pre-flight for TensorRT "
            f"{prepared.report.trt_version}: {len(prepared.report.warnings)} warning(s))"
        )
        return
    _print_engine(build_engine(onnx_path, output, options, verbose=verbose))


def _check_build_outputs(
    onnx_path: Path, output: Path, calib: Path | None, timing_cache: Path | None, onnx_only: bool, force: bool
) -> None:
    """The engine (and its sidecar and timing cache), or the ONNX with --onnx-only: checked before work."""
    suffix = output.suffix.lower()
    if onnx_only and suffix in (".engine", ".plan"):
        raise UsageError(f"--onnx-only writes an ONNX file: use -o {output.with_suffix('.onnx')}")
    if not onnx_only and suffix == ".onnx":
        raise UsageError(
            f"-o {output} is an ONNX name but this builds an engine: use .engine, or add --onnx-only"
        )
    outputs: dict[str, Path | None] = {"--output": output}
    if not onnx_only:
        from tdmi.artifacts.sidecar import sidecar_path

        outputs["--output (its sidecar)"] = sidecar_path(output)
        outputs["--timing-cache"] = timing_cache
    check_outputs(
        outputs,
        {"ONNX_PATH": onnx_path, "--calib": calib},
        force=force and onnx_only,
        force_option="--force" if onnx_only else "",
    )


def _print_engine(result: Any) -> None:
    if result.report.findings:
        console.print(result.report.to_table())
    meta = result.metadata
    from tdmi.artifacts.sidecar import TARGET_NAMES

    where = (
        f"for compute capabilities {', '.join(meta.compute_capabilities)}"
        if meta.target == "tensorrt-rtx"
        else f"on {meta.environment.gpu.name}"
    )
    console.print(
        f"wrote {result.engine} and {result.sidecar.name} ({meta.precision}, profile {meta.profile}, "
        f"{TARGET_NAMES[meta.target]} {meta.environment.tensorrt_version} {where})",
        markup=False,
    )


@app.command("check")
def check(
    onnx_path: Annotated[Path, typer.Argument(help="ONNX file to check.")],
    batch: Batch = None,
    trt_version: TrtVersion = "11",
    target: Annotated[EngineTarget, typer.Option("--target", help="tensorrt or tensorrt-rtx.")] = "tensorrt",
    verbose: Verbose = False,
) -> None:
    """Pre-flight only: will TensorRT's ONNX parser and our plugin accept this graph?"""
    from tdmi.export.preflight import check_onnx

    report = check_onnx(onnx_path, trt_version=trt_version, profile=_profile(batch), target=target)
    if report.findings:
        console.print(report.to_table())
    if not report.ok:
        # An error, not typer.Exit: run_app turns it into exit status 1 and one line on stderr.
        raise ExportError(f"{onnx_path}: {len(report.errors)} pre-flight error(s) (table above)")
    console.print(f"{onnx_path}: OK for TensorRT {report.trt_version} ({len(report.warnings)} warning(s))")


@app.command("plugin")
def plugin(
    print_ptx_path: Annotated[
        bool, typer.Option("--print-ptx-path", help="Print the PTX engines embed.")
    ] = False,
    arch: Annotated[
        int | None, typer.Option("--arch", help="Virtual arch, e.g. 80 (default: lowest).")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """The TemporalDiff plugin's kernel: where its PTX is."""
    from tdmi.plugins import ptx
    from tdmi.plugins.availability import compute_capability, cuda_gpu_available

    if not print_ptx_path:
        raise UsageError("nothing to do: pass --print-ptx-path")
    if arch is None and cuda_gpu_available():
        arch = ptx.select_arch(compute_capability())  # what an engine built here embeds
    path = ptx.ptx_path(arch)
    console.print(str(path), markup=False)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Let ``tdmi-build-engine model.onnx ...`` mean ``tdmi-build-engine build model.onnx ...``."""
    args = list(argv)
    first = next((a for a in args if not a.startswith("-")), None)
    if first is None or first in COMMANDS:
        return args
    return ["build", *args]


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point for tests and ``main``: returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_app(app, normalize_argv(args), prog_name=PROG)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
