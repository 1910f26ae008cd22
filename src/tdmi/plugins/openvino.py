"""OpenVINO glue that the runtime backend and the IR exporter share: the module (or which extra
brings it), reading a model with one-line errors, the CPU plug-in properties, and the ``rt_info``
section an IR keeps the toolkit's metadata in. Imports ``openvino`` only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tdmi.errors import BackendUnavailableError, ConfigError, ExportError

RT_SECTION = "tdmi"  # rt_info section an IR written by tdmi-export openvino carries its metadata in
KEY_INFERENCE_PRECISION = "tdmi.inference_precision"  # the hint tdmi-export recorded ("default": none)
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's hint values
# the toolkit's names for them (fp32 / bf16 / fp16), accepted as options and used in reports
_HINT_OF = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
_NAME_OF = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
DECOMPOSED_HINT = (
    "OpenVINO cannot run the native DeformConv graph (its ONNX frontend has no DeformConv rule): "
    "export the decomposed one with `tdmi-export onnx --deform-conv decomposed` or `tdmi-export openvino`"
)


def require_openvino() -> Any:
    """The ``openvino`` module, or a one-line error naming the extra that installs it."""
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailableError(
            "the OpenVINO backend needs OpenVINO: pip install 'tdmi-deploy[openvino]'"
        ) from None
    return ov


def _rt_section(model: Any, section: str) -> dict[str, str]:
    """One rt_info section as key -> text ({} when absent)."""
    if not model.has_rt_info([section]):
        return {}
    out: dict[str, str] = {}
    for key, value in model.get_rt_info()[section].items():
        try:
            out[str(key)] = value.astype(str) if hasattr(value, "astype") else str(value)
        except Exception:  # a nested map or a value that is no text: not ours
            continue
    return out


def rt_metadata(model: Any) -> dict[str, str]:
    """The toolkit's metadata keys (``tdmi.config``...) of an ``ov.Model``, IR section first."""
    framework = {k: v for k, v in _rt_section(model, "framework").items() if k.startswith("tdmi.")}
    ours = {f"tdmi.{k}": v for k, v in _rt_section(model, RT_SECTION).items()}
    return framework | ours


def read_model_checked(core: Any, path: Path) -> Any:
    """``core.read_model`` with one-line errors; a native DeformConv graph names the decomposed export."""
    if not path.is_file():
        raise ExportError(f"{path} not found")
    if path.stat().st_size == 0:
        raise ExportError(f"{path} is empty (0 bytes): the export was interrupted; export it again")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise ExportError(f"{path} has no weights file {path.with_suffix('.bin').name} beside it")
    try:
        return core.read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError / its own types with long C++ traces
        if path.suffix.lower() == ".onnx" and b"DeformConv" in path.read_bytes():
            raise ExportError(f"{path}: {DECOMPOSED_HINT}") from None
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ExportError(f"OpenVINO cannot read {path}: {first[:240]}") from None


def precision_name(value: Any) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``) in the toolkit's names (``bf16``, ``fp32``)."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    return {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16", "f32": "fp32", "f16": "fp16"}.get(
        text, text
    )


def compile_properties(
    threads: int | None, performance_hint: str | None, inference_precision: str | None
) -> dict[str, Any]:
    """The CPU plug-in properties for the options; unknown values are errors before compiling."""
    props: dict[str, Any] = {}
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be positive, got {threads}")
        props["INFERENCE_NUM_THREADS"] = int(threads)
    hint = (performance_hint or "LATENCY").upper()
    if hint not in PERFORMANCE_HINTS:
        raise ConfigError(
            f"unknown performance hint {performance_hint!r}: use {', '.join(PERFORMANCE_HINTS)}"
        )
    props["PERFORMANCE_HINT"] = hint
    if inference_precision not in (None, "default"):
        if inference_precision not in _HINT_OF:
            raise ConfigError(
                f"unknown inference precision {inference_precision!r}: use fp32, bf16, fp16 (or "
                "OpenVINO's f32, f16) or default (what the CPU runs best)"
            )
        props["INFERENCE_PRECISION_HINT"] = _HINT_OF[inference_precision]
    return props
