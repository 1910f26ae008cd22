"""``ExportSpec``: what one exported artifact is, validated once.

Every caller of the export chain (``tdmi-export onnx``/``openvino``, the bench cache, the INT8 search,
the Triton writer) states what it wants as an ``ExportSpec`` and hands it to
``tdmi.export.pipeline.build``. The rules about which options combine live here, in
``ExportSpec.__post_init__``, and nowhere else; their messages name the CLI option, since that is
where a user meets them (like ultralytics' exporter format table).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tdmi.artifacts.onnx_meta import CALIB_CHOICES, CalibChoice, DeformConvForm, Int8Target, Precision, Target
from tdmi.errors import ExportError, UsageError

if TYPE_CHECKING:
    from tdmi.export.int8_recipes import Int8Recipe
    from tdmi.spec.config import TDMIConfig

OV_CALIB_CHOICES = ("auto", "max", "percentile")  # NNCF has no entropy calibrator
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
OV_PRECISIONS = ("fp32", "bf16", "int8")
OPSET = 19
DEFAULT_MIN_SPEEDUP = 1.0  # never an INT8 graph slower than FP32 (int8_search)


def parse_batch(text: str | int) -> int | Literal["dynamic"]:
    """``--batch``: a positive integer or 'dynamic'."""
    if text == "dynamic":
        return "dynamic"
    if isinstance(text, int) and not isinstance(text, bool) and text >= 1:
        return text
    if isinstance(text, str) and text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--batch must be a positive integer or 'dynamic', got {text!r}")


def int8_recipe(
    target: Int8Target, method: str = "auto", op_types: tuple[str, ...] | None = None
) -> Int8Recipe:
    """The INT8 recipe for a target: its measured default, with ``op_types`` in place of its op set.

    The one place the default recipe and an ``--op-types`` choice are combined.
    """
    from tdmi.export.precision import default_recipe

    recipe = default_recipe(target, method)
    return recipe if op_types is None else dataclasses.replace(recipe, op_types=tuple(op_types))


@dataclass(frozen=True)
class ExportSpec:
    """One artifact of the chain fp32 ONNX -> precision variant (ONNX or OpenVINO IR).

    ``config`` is a preset name, a config JSON path, a ``TDMIConfig``, or None (the checkpoint's
    own); ``checkpoint`` None means random weights. ``target`` None is the FP32 graph for every
    runtime; FP16/INT8 ONNX default to TensorRT (``resolved_target``). ``target="openvino"`` makes
    an IR (fp32, bf16 or int8) of the decomposed FP32 graph. ``calib`` is a PoseTrack folder or an
    ``.npz`` (None: the built-in smoke-test clips).
    """

    config: str | TDMIConfig | None = None
    checkpoint: Path | None = None
    precision: Precision = "fp32"
    target: Target | None = None
    deform_conv: DeformConvForm | None = None  # None: the config's own form
    batch: int | Literal["dynamic"] = 1
    opset: int = OPSET
    verify: bool = True
    simplify: bool = True
    split: bool = False
    calib: Path | None = None
    calib_clips: int = 32
    calib_method: CalibChoice = "auto"
    op_types: tuple[str, ...] | None = None  # INT8: op types to quantize; None: the target's default
    max_drop: float | None = None  # INT8: search the recipe within this PCK budget
    min_speedup: float | None = None  # with max_drop; None: DEFAULT_MIN_SPEEDUP
    eval_clips: int = 32  # with max_drop: held-out synthetic clips per candidate

    def __post_init__(self) -> None:
        self._check_precision_target()
        self._check_int8_options()
        self._check_shape()

    def _check_precision_target(self) -> None:
        p, t = self.precision, self.target
        if t == "openvino":
            if p not in OV_PRECISIONS:
                raise UsageError(f"--precision must be {', '.join(OV_PRECISIONS)}, got {p!r}")
            if self.deform_conv == "native":
                raise UsageError(
                    "OpenVINO reads the DCN only as GridSample + Conv: give the decomposed FP32 graph"
                )
            if self.calib_method not in OV_CALIB_CHOICES:
                raise UsageError(
                    f"--calib-method must be auto, max or percentile (NNCF), got {self.calib_method!r}"
                )
            if p != "int8" and (self.calib, self.max_drop, self.op_types) != (None, None, None):
                raise UsageError("--calib, --max-drop and --op-types apply to --precision int8 only")
            return
        if p not in ONNX_PRECISIONS:
            raise UsageError(f"--precision must be fp32, fp16 or int8, got {p!r}")
        if t not in (None, "tensorrt", "onnxruntime"):
            raise UsageError(f"--target must be tensorrt or onnxruntime, got {t!r}")
        if p == "fp32" and t is not None:
            raise UsageError(
                "--target applies to --precision fp16/int8 only (the FP32 graph suits every runtime)"
            )
        if p == "fp16" and t == "onnxruntime":
            raise UsageError(
                "FP16 is built for TensorRT (ONNX Runtime CPU has no fast FP16 kernels): use int8 for ORT"
            )
        if self.deform_conv not in (None, "native", "decomposed"):
            raise UsageError(f"--deform-conv must be native or decomposed, got {self.deform_conv!r}")
        if self.calib_method not in CALIB_CHOICES:
            raise UsageError(
                f"--calib-method must be auto, max, percentile or entropy, got {self.calib_method!r}"
            )

    def _check_int8_options(self) -> None:
        if self.precision != "int8":
            for value, opt in ((self.max_drop, "--max-drop"), (self.op_types, "--op-types")):
                if value is not None:
                    raise UsageError(f"{opt} applies to --precision int8 only")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError(f"--max-drop must be 0 or more PCK points, got {self.max_drop}")
        if self.min_speedup is not None and self.max_drop is None:
            raise UsageError("--min-speedup applies with --max-drop only (it constrains the recipe search)")
        if self.min_speedup is not None and self.min_speedup < 0:
            raise UsageError(f"--min-speedup must be 0 or more, got {self.min_speedup}")
        if self.calib_clips < 1 or self.eval_clips < 1:
            raise UsageError("--calib-clips and --eval-clips must be positive")
        if self.op_types is not None:  # checked before the export, not after minutes of it
            from tdmi.export.int8_recipes import check_op_types

            check_op_types(self.op_types, self.resolved_target)  # ExportError, as the library says it

    def _check_shape(self) -> None:
        parse_batch(self.batch)
        if self.split and (self.precision != "fp32" or self.batch not in (1, "dynamic")):
            raise UsageError("--split writes FP32 graphs with a dynamic batch: drop --precision/--batch")
        if self.split and self.target == "openvino":
            raise UsageError("--split writes ONNX graphs: drop --target openvino")

    @property
    def resolved_target(self) -> Target | None:
        """The runtime the graph is for: TensorRT when an FP16/INT8 ONNX names none."""
        if self.target is None and self.precision != "fp32":
            return "tensorrt"
        return self.target

    @property
    def openvino(self) -> bool:
        return self.target == "openvino"

    @property
    def resolved_min_speedup(self) -> float:
        return DEFAULT_MIN_SPEEDUP if self.min_speedup is None else self.min_speedup

    def recipe(self) -> Int8Recipe:
        """The INT8 recipe this spec asks for (without ``max_drop``: the one used)."""
        target = self.resolved_target
        if self.precision != "int8" or target is None or target == "any":
            raise ExportError(f"a {self.precision} artifact has no INT8 recipe")
        return int8_recipe(target, self.calib_method, self.op_types)

    def fp32_source(self) -> ExportSpec:
        """The FP32 graph this variant is made from (OpenVINO reads the decomposed DCN)."""
        return dataclasses.replace(
            self,
            precision="fp32",
            target=None,
            deform_conv="decomposed" if self.openvino else self.deform_conv,
            calib=None,
            calib_method="auto",
            op_types=None,
            max_drop=None,
            min_speedup=None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what the artifact is), embedded in reports and cache manifests."""
        out = dataclasses.asdict(self)
        if self.config is not None and not isinstance(self.config, str):
            out["config"] = self.config.to_dict()
        for key in ("checkpoint", "calib"):
            out[key] = None if out[key] is None else str(out[key])
        out["op_types"] = None if self.op_types is None else list(self.op_types)
        return out
