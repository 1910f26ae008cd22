"""What can be benchmarked: the backend variants (rows), their named sets, and why one cannot run here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tdmi.errors import ConfigError, TdmiError, UsageError

CHECK_LABEL = "accuracy check (TensorRT-targeted graph)"


@dataclass(frozen=True)
class VariantSpec:
    """One row kind of the benchmark: which runtime runs which artifact, and why it is there."""

    name: str
    backend: str  # "torch" | "onnxruntime" | "openvino" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    device: str  # "cpu" | "cuda"
    artifact: str | None  # cache artifact kind, None for the PyTorch rows and engines
    check_only: bool  # a graph meant for another runtime, run here only to check its accuracy
    description: str


VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in (
        VariantSpec("torch", "torch", "fp32", "cpu", None, False, "PyTorch reference on the CPU"),
        VariantSpec("torch-cuda", "torch", "fp32", "cuda", None, False, "PyTorch reference on the GPU"),
        VariantSpec("ort-fp32", "onnxruntime", "fp32", "cpu", "fp32", False, "ONNX Runtime CPU, FP32"),
        VariantSpec(
            "ort-int8",
            "onnxruntime",
            "int8",
            "cpu",
            "int8-onnxruntime",
            False,
            "ONNX Runtime CPU, INT8 QDQ quantised for ONNX Runtime",
        ),
        VariantSpec(
            "ort-fp16-trtgraph",
            "onnxruntime",
            "fp16",
            "cpu",
            "fp16-tensorrt",
            True,
            "the TensorRT-targeted FP16 graph, run on ONNX Runtime CPU to check its accuracy",
        ),
        VariantSpec(
            "ort-int8-trtgraph",
            "onnxruntime",
            "int8",
            "cpu",
            "int8-tensorrt",
            True,
            "the TensorRT-targeted INT8 Q/DQ graph, run on ONNX Runtime CPU to check its accuracy",
        ),
        VariantSpec(
            "ov-fp32", "openvino", "fp32", "cpu", "ov-fp32", False, "OpenVINO CPU, FP32 IR (decomposed DCN)"
        ),
        VariantSpec(
            "ov-bf16",
            "openvino",
            "bf16",
            "cpu",
            "ov-bf16",
            False,
            "OpenVINO CPU, BF16 inference precision (FP32 where the CPU has no BF16)",
        ),
        VariantSpec(
            "ov-int8",
            "openvino",
            "int8",
            "cpu",
            "ov-int8",
            False,
            "OpenVINO CPU, NNCF INT8 IR (the rest at the CPU's default precision)",
        ),
        VariantSpec(
            "trt", "tensorrt", "engine", "cuda", None, False, "TensorRT engines (--engine or cached)"
        ),
    )
}
ALIASES: dict[str, str] = {
    "pytorch": "torch",
    "torch-cpu": "torch",
    "cuda": "torch-cuda",
    "onnxruntime": "ort-fp32",
    "ort": "ort-fp32",
    "tensorrt": "trt",
    "openvino": "ov-fp32",
    "ov": "ov-fp32",
}
DEFAULT_VARIANTS: tuple[str, ...] = ("torch", "torch-cuda", "ort-fp32", "ort-int8", "trt")
OPENVINO_VARIANTS: tuple[str, ...] = ("ov-fp32", "ov-bf16", "ov-int8")  # in the default job where installed
ALL_VARIANTS: tuple[str, ...] = tuple(VARIANTS)
VARIANT_SETS: dict[str, tuple[str, ...]] = {"default": DEFAULT_VARIANTS, "all": ALL_VARIANTS}


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def parse_backends(values: Sequence[str]) -> list[str]:
    """Canonical variant names from ``--backend`` values (comma lists allowed, aliases resolved)."""
    out: list[str] = []
    for value in values:
        for raw in value.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            name = ALIASES.get(name, name)
            if name not in VARIANTS:
                known = ", ".join([*VARIANTS, *ALIASES])
                raise UsageError(f"unknown backend {raw.strip()!r}; choose from: {known}")
            if name not in out:
                out.append(name)
    if not out:
        raise UsageError("no backend given: pass e.g. --backend torch,ort-fp32")
    return out


def variant_set(name: str) -> list[str]:
    """A named set, or a comma list of variant names (``ort-fp32,ort-int8``)."""
    if name == "default" and openvino_installed():
        # OpenVINO rows join the default job where it is installed (before the GPU engines)
        return [*DEFAULT_VARIANTS[:-1], *OPENVINO_VARIANTS, DEFAULT_VARIANTS[-1]]
    if name in VARIANT_SETS:
        return list(VARIANT_SETS[name])
    try:
        return parse_backends([name])
    except (ConfigError, UsageError):
        raise UsageError(
            f"unknown --variants {name!r}; choose a set ({', '.join(VARIANT_SETS)}) or a comma list of: "
            f"{', '.join(VARIANTS)}"
        ) from None


def parse_batches(text: str) -> list[int]:
    """``"1,4"`` -> ``[1, 4]``: positive, without duplicates, in the given order."""
    out: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        try:
            b = int(piece)
        except ValueError:
            raise UsageError(f"--batch must be a comma-separated list of integers, got {text!r}") from None
        if b < 1:
            raise UsageError(f"batch sizes must be positive, got {b}")
        if b not in out:
            out.append(b)
    if not out:
        raise UsageError(f"--batch must list at least one batch size, got {text!r}")
    return out


# -------------------------------------------------------------------------------------- availability


def backend_unavailable_reason(spec: VariantSpec) -> str | None:
    """Why this machine cannot run ``spec`` (None when it can)."""
    from tdmi.plugins.availability import tensorrt_available, torch_cuda_available

    if spec.device == "cuda" and spec.backend == "torch":
        avail = torch_cuda_available()
        return None if avail else avail.reason
    if spec.backend == "onnxruntime":
        try:
            from tdmi.plugins.availability import require_onnxruntime

            require_onnxruntime()
        except TdmiError as e:
            return str(e)
        return None
    if spec.backend == "openvino":
        if not openvino_installed():
            return "OpenVINO is not installed: pip install 'tdmi-deploy[openvino]'"
        if spec.precision == "int8":
            import importlib.util

            if importlib.util.find_spec("nncf") is None:
                return "INT8 for OpenVINO needs NNCF: pip install 'tdmi-deploy[openvino-int8]'"
        return None
    if spec.backend == "tensorrt":
        avail = tensorrt_available()
        if not avail:
            return avail.reason
        gpu = torch_cuda_available()
        return None if gpu else gpu.reason
    return None
