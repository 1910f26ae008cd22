"""What every exported ONNX file says about itself: the ``metadata_props`` keys and their parsing.

A deployed file travels without the code that made it; the config, joint order, pixel
normalisation and precision variant stored here are what a runtime (or a person) needs to feed it
correctly and to know which network and which numeric variant it holds. This module only turns
the key/value strings into typed values, so both sides can use it without ``onnx``: the exporter
writes the strings with ``onnx`` (``tdmi.export.metadata``), the runtime gets them from ONNX
Runtime's ``get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, get_args

from tdmi.errors import ConfigError, ExportError
from tdmi.spec.config import TDMIConfig

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

# The one home of each fixed set of values: a Literal for type checkers and typer options, and its
# tuple for run-time checks of values read from files.
Precision = Literal["fp32", "fp16", "bf16", "int8"]  # bf16: an OpenVINO IR inferring in BF16
Target = Literal["any", "tensorrt", "onnxruntime", "openvino"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
TARGETS: tuple[Target, ...] = get_args(Target)
DeformConvForm = Literal["native", "decomposed"]  # the DCN as ONNX DeformConv, or GridSample + Conv
DEFORM_CONV_FORMS: tuple[DeformConvForm, ...] = get_args(DeformConvForm)
CalibChoice = Literal["auto", "max", "percentile", "entropy"]  # INT8 ranges; auto: the target's default
CALIB_CHOICES: tuple[CalibChoice, ...] = get_args(CalibChoice)
RangeMethod = Literal["max", "percentile", "entropy"]  # an INT8 recipe's calibration
Granularity = Literal["block", "node"]  # INT8 sensitivity regions: blocks or single nodes
Int8Target = Literal["onnxruntime", "tensorrt", "openvino"]  # the runtimes an INT8 recipe is for


def normalization_spec(config: TDMIConfig) -> dict[str, Any]:
    """How raw frames become the ``frames`` input (mirrors ``tdmi.data.transforms.normalize``)."""
    # numpy only here: the CLI imports this module for its value sets, and option errors stay light
    from tdmi.spec.normalization import IMAGENET_MEAN, IMAGENET_STD

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


def parse_metadata(props: Mapping[str, str], kind: str = "ONNX file") -> dict[str, Any]:
    """Parse the toolkit's metadata strings (ONNX ``metadata_props``, OpenVINO ``rt_info``); a file
    without them was not made by ``tdmi-export``."""
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
