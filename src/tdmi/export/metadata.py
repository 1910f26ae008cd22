"""Writing (and reading back, with ``onnx``) the toolkit's ONNX ``metadata_props``.

The keys and their parsing live in :mod:`tdmi.artifacts.onnx_meta`, which the runtime reads
without ``onnx``; this module is the exporter's side: stamping a ``ModelProto``, and inspecting one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from tdmi.artifacts.onnx_meta import (
    INPUT_NAME,
    KEY_BATCH,
    KEY_CONFIG,
    KEY_EXTRA,
    KEY_FUSED,
    KEY_JOINTS,
    KEY_NORMALIZATION,
    KEY_PRECISION,
    KEY_TARGET,
    KEY_TOOLKIT,
    KEY_VARIANT,
    OUTPUT_NAME,
    PRECISIONS,
    TARGETS,
    Precision,
    Target,
    normalization_spec,
    parse_metadata,
    variant_name,
)
from tdmi.errors import ExportError
from tdmi.spec.config import TDMIConfig
from tdmi.spec.joints import POSETRACK_JOINTS


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


def check_graph_io(model: onnx.ModelProto, config: TDMIConfig, source: str | os.PathLike[str]) -> None:
    """The graph's ``frames`` input and ``heatmaps`` output have the shapes its tdmi metadata promises.

    A foreign graph carrying tdmi metadata (keys copied onto another model, a file edited after the
    export) would otherwise fail deep inside a numeric check; this says so in one line first. Split
    (backbone / head) files have other I/O and are left to their own loader.
    """
    if '"split"' in raw_metadata(model).get(KEY_EXTRA, ""):
        return
    inits = {i.name for i in model.graph.initializer}
    graph_io = (
        ("input", INPUT_NAME, [vi for vi in model.graph.input if vi.name not in inits],
         (config.num_frames, 3, *config.input_size), "[B, T, 3, H, W]"),
        ("output", OUTPUT_NAME, list(model.graph.output), (config.num_joints, *config.heatmap_size),
         "[B, J, H/4, W/4]"),
    )  # fmt: skip
    for kind, name, values, want, layout in graph_io:
        vi = next((v for v in values if v.name == name), None)
        promised = (
            f"its tdmi metadata (config {config.name}) says {layout} = [B, {', '.join(map(str, want))}]"
        )
        if vi is None:
            got = ", ".join(v.name for v in values) or "none"
            problem = f"has no graph {kind} '{name}' (it has: {got})"
        else:
            dims = _value_info_summary(vi)["shape"]
            fits = len(dims) == len(want) + 1 and all(
                not isinstance(d, int) or d <= 0 or d == w for d, w in zip(dims[1:], want, strict=True)
            )
            if fits:
                continue
            problem = f"{kind} '{name}' is [{', '.join(map(str, dims))}]"
        raise ExportError(
            f"{source} {problem} but {promised}: not a graph tdmi-export made (or edited since); "
            "re-export it with `tdmi-export onnx`"
        )


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
