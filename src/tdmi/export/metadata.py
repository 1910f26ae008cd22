"""What every exported ONNX file says about itself, in ``metadata_props``.

A deployed file travels without the code that made it; the config, joint order, pixel
normalisation and precision variant stored here are what a runtime (or a person) needs to feed it
correctly and to know which network and which numeric variant it holds.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from tdmi.data.joints import POSETRACK_JOINTS
from tdmi.errors import ConfigError, ExportError
from tdmi.model.config import TDMIConfig

PREFIX = "tdmi."
KEY_CONFIG = "tdmi.config"
KEY_JOINTS = "tdmi.joints"
KEY_NORMALIZATION = "tdmi.normalization"
KEY_TOOLKIT = "tdmi.toolkit_version"
KEY_PRECISION = "tdmi.precision"
KEY_TARGET = "tdmi.target"
KEY_VARIANT = "tdmi.variant"
KEY_FUSED = "tdmi.fused"
KEY_BATCH = "tdmi.batch"
KEY_EXTRA = "tdmi.extra"  # JSON object: calibration, kept FP32 nodes, verification, ...

INPUT_NAME = "frames"
OUTPUT_NAME = "heatmaps"

Precision = str  # "fp32" | "fp16" | "bf16" | "int8"
Target = str  # "any" | "tensorrt" | "onnxruntime" | "openvino"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # bf16: OpenVINO IR whose recorded inference precision is BF16
TARGETS = ("any", "tensorrt", "onnxruntime", "openvino")


def normalization_spec(config: TDMIConfig) -> dict[str, Any]:
    """How raw frames become the ``frames`` input (mirrors ``tdmi.data.transforms.normalize``)."""
    from tdmi.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return {
        "input": INPUT_NAME,
        "layout": "[B, T, 3, H, W]",
        "color": "RGB",
        "scale": 1.0 / 255.0,
        "mean": [float(v) for v in IMAGENET_MEAN],
        "std": [float(v) for v in IMAGENET_STD],
        "formula": "(pixel / 255 - mean) / std",
        "num_frames": config.num_frames,
        "key_frame": config.key_frame,
        "input_size_hw": list(config.input_size),
        "bbox_padding": config.bbox_padding,
    }


def variant_name(precision: str, target: str, fused: bool) -> str:
    base = precision if target == "any" else f"{precision}-{target}"
    return f"{base}-fused" if fused else base


def _set_props(model: onnx.ModelProto, props: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in kept:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def metadata_props(
    config: TDMIConfig,
    *,
    precision: Precision = "fp32",
    target: Target = "any",
    fused: bool = False,
    batch: int | str = 1,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The toolkit's metadata as key -> text: ONNX ``metadata_props`` and OpenVINO IR ``rt_info`` alike."""
    from tdmi import __version__

    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}: use tensorrt, onnxruntime or openvino")
    return {
        KEY_CONFIG: config.to_json(),
        KEY_JOINTS: json.dumps(list(POSETRACK_JOINTS[: config.num_joints])),
        KEY_NORMALIZATION: json.dumps(normalization_spec(config), sort_keys=True),
        KEY_TOOLKIT: f"tdmi-deploy {__version__}",
        KEY_PRECISION: precision,
        KEY_TARGET: target,
        KEY_VARIANT: variant_name(precision, target, fused),
        KEY_FUSED: "true" if fused else "false",
        KEY_BATCH: str(batch),
        KEY_EXTRA: json.dumps(extra or {}, sort_keys=True),
    }


def write_metadata(
    model: onnx.ModelProto,
    config: TDMIConfig,
    *,
    precision: Precision = "fp32",
    target: Target = "any",
    fused: bool = False,
    batch: int | str = 1,
    extra: dict[str, Any] | None = None,
) -> onnx.ModelProto:
    """Stamp ``model`` (in place, also returned) with the toolkit's metadata."""
    props = metadata_props(config, precision=precision, target=target, fused=fused, batch=batch, extra=extra)
    _set_props(model, props)
    return model


def update_metadata(model: onnx.ModelProto, **changes: Any) -> onnx.ModelProto:
    """Rewrite some fields (precision, target, fused, batch, extra merged) keeping the rest."""
    meta = read_metadata(model)
    extra = dict(meta["extra"])
    extra.update(changes.pop("extra", None) or {})
    args = {
        "precision": meta["precision"],
        "target": meta["target"],
        "fused": meta["fused"],
        "batch": meta["batch"],
    }
    unknown = set(changes) - set(args)
    if unknown:
        raise ExportError(f"cannot update metadata field(s) {sorted(unknown)}")
    args.update(changes)
    return write_metadata(model, meta["config"], extra=extra, **args)


def raw_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """Parse the toolkit's metadata; a file without it was not made by ``tdmi-export``."""
    return parse_metadata(raw_metadata(model))


def parse_metadata(props: dict[str, str], kind: str = "ONNX file") -> dict[str, Any]:
    """The metadata from its key -> text form (ONNX ``metadata_props``, OpenVINO ``rt_info``)."""
    if KEY_CONFIG not in props:
        raise ExportError(
            f"this {kind} carries no tdmi metadata (not exported by tdmi-export): re-export it with "
            "`tdmi-export onnx`"
        )
    try:
        config = TDMIConfig.from_json(props[KEY_CONFIG])
        joints = json.loads(props.get(KEY_JOINTS, "[]"))
        norm = json.loads(props.get(KEY_NORMALIZATION, "{}"))
        extra = json.loads(props.get(KEY_EXTRA, "{}"))
    except (ConfigError, json.JSONDecodeError) as e:
        raise ExportError(
            f"the file's tdmi metadata is damaged ({e}): re-export it with `tdmi-export onnx`"
        ) from None
    batch_raw = props.get(KEY_BATCH, "1")
    batch: int | str = int(batch_raw) if batch_raw.isdigit() else batch_raw
    return {
        "config": config,
        "joints": joints,
        "normalization": norm,
        "toolkit_version": props.get(KEY_TOOLKIT, "unknown"),
        "precision": props.get(KEY_PRECISION, "fp32"),
        "target": props.get(KEY_TARGET, "any"),
        "variant": props.get(KEY_VARIANT, "fp32"),
        "fused": props.get(KEY_FUSED, "false") == "true",
        "batch": batch,
        "extra": extra,
    }


def _value_info_summary(vi: onnx.ValueInfoProto) -> dict[str, Any]:
    t = vi.type.tensor_type
    dims: list[int | str] = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
    return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}


def load_onnx_checked(path: str | os.PathLike[str], load_external_data: bool = True) -> onnx.ModelProto:
    """``onnx.load`` with one-line errors for missing, empty and corrupt files."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"ONNX file {p} not found")
    if p.stat().st_size == 0:
        raise ExportError(f"{p} is empty (0 bytes): the export was interrupted; export it again")
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except Exception as e:  # protobuf DecodeError and friends: the file is not an ONNX model
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ExportError(f"{p} is not a readable ONNX model ({first}); export it again") from None
    if not model.graph.node:
        raise ExportError(f"{p} is not a usable ONNX model (its graph is empty); export it again")
    return model


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything a deployer needs to know about an exported file, as plain JSON-able data."""
    model = load_onnx_checked(path, load_external_data=False)
    meta = read_metadata(model)
    ops = Counter(
        n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}::{n.op_type}"
        for n in model.graph.node
    )
    init_names = {i.name for i in model.graph.initializer}
    return {
        "path": str(path),
        "config": meta["config"].to_dict(),
        "joints": meta["joints"],
        "normalization": meta["normalization"],
        "toolkit_version": meta["toolkit_version"],
        "precision": meta["precision"],
        "target": meta["target"],
        "variant": meta["variant"],
        "fused": meta["fused"],
        "batch": meta["batch"],
        "extra": meta["extra"],
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        "inputs": [_value_info_summary(i) for i in model.graph.input if i.name not in init_names],
        "outputs": [_value_info_summary(o) for o in model.graph.output],
        "num_nodes": len(model.graph.node),
        "op_counts": dict(sorted(ops.items())),
        "file_bytes": Path(path).stat().st_size,
    }
