"""Write a Triton model repository for TDMI: heatmaps, pre/post-processing and the end-to-end ensemble.

Two flavours of the same layout:

- ``platform`` (``tdmi-export triton``): ``tdmi`` runs on Triton's own ``onnxruntime_onnx`` or
  ``tensorrt_plan`` backend, for the official container on a GPU server, or on its ``openvino``
  backend (an OpenVINO IR, CPU instances). The bundled pytriton server has no openvino backend, so
  an OpenVINO repository is written and parsed here but never served here;
- ``python`` (``tdmi-serve``): ``tdmi`` (and ``tdmi_nobatch``, the same model without the dynamic
  batcher, for comparisons) run ``tdmi.runtime`` in the Python backend, which is the one backend the
  ``tritonserver`` bundled in the nvidia-pytriton wheel has.

``tdmi_pre`` (images + person boxes -> normalised clips, our affine crop), ``tdmi_post`` (heatmaps
-> image keypoints, DARK by default) and the ensemble ``tdmi_pose`` are the same in both. Every
config.pbtxt is generated from Triton's own model-config protobuf, so it parses by construction.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdmi.errors import BackendUnavailableError, ConfigError
from tdmi.serve.config import (
    BOXES,
    CENTERS,
    HEATMAP_MODEL,
    IMAGES,
    KEYPOINTS,
    NOBATCH_MODEL,
    POSE_MODEL,
    POST_MODEL,
    PRE_MODEL,
    SCALES,
    SCORES,
    ServeConfig,
)
from tdmi.spec.config import TDMIConfig
from tdmi.utils import atomic_dir

FLAVOURS = ("platform", "python")
_NP_TO_TRITON = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}


def model_config_pb2() -> Any:
    """Triton's model-config protobuf module (shipped with tritonclient)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError:
        raise BackendUnavailableError(
            "Triton repositories need tritonclient: pip install 'tdmi-deploy[serve]' and "
            "pip install --no-deps tritonclient==2.73.0 (see README, Serving)"
        ) from None
    return pb


@dataclass(frozen=True)
class HeatmapArtifact:
    """An exported heatmap model and what Triton must know about its I/O."""

    path: Path
    platform: str  # onnxruntime_onnx | tensorrt_plan | openvino (a Triton backend, not a platform)
    config: TDMIConfig
    input_name: str
    output_name: str
    input_dtype: str  # numpy name
    output_dtype: str
    batch: int | None  # fixed batch of the file, None when dynamic
    max_batch: int | None  # largest batch the file runs (engine profile), None: unbounded
    sidecar: Path | None = None

    @property
    def filename(self) -> str:
        return {"onnxruntime_onnx": "model.onnx", "openvino": "model.xml"}.get(self.platform, "model.plan")


def artifact_from_openvino(path: str | Path) -> HeatmapArtifact:
    """An OpenVINO IR (``.xml`` + ``.bin``, from ``tdmi-export openvino``) for Triton's openvino backend."""
    from tdmi.export.metadata import parse_metadata  # tdmi.artifacts once the ground layer lands
    from tdmi.plugins.openvino import read_model_checked, require_openvino, rt_metadata

    p = Path(path)
    if p.suffix.lower() != ".xml":
        raise ConfigError(f"Triton's openvino backend serves an IR .xml (with its .bin), got {p}")
    model = read_model_checked(require_openvino().Core(), p)
    meta = parse_metadata(rt_metadata(model), "OpenVINO model")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(
            f"{p} must have one input and one output to serve, has {len(model.inputs)} and "
            f"{len(model.outputs)}"
        )
    dim0 = model.inputs[0].get_partial_shape()[0]
    batch = dim0.get_length() if dim0.is_static else None
    return HeatmapArtifact(
        p,
        "openvino",
        meta["config"],
        model.inputs[0].get_any_name(),
        model.outputs[0].get_any_name(),
        "float32",
        "float32",
        batch,
        batch,
    )


def artifact_from_onnx(path: str | Path) -> HeatmapArtifact:
    """Read I/O names, dtypes and batch form from an exported ONNX file and its tdmi metadata."""
    import onnx

    from tdmi.export.metadata import load_onnx_checked, read_metadata

    p = Path(path)
    model = load_onnx_checked(p, load_external_data=False)
    meta = read_metadata(model)
    init = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ConfigError(
            f"{p} must have one input and one output to serve, has {len(inputs)} and "
            f"{len(model.graph.output)}"
        )

    def dtype(vi: Any) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    dim0 = inputs[0].type.tensor_type.shape.dim[0]
    batch = None if dim0.dim_param or not dim0.dim_value else int(dim0.dim_value)
    return HeatmapArtifact(
        p,
        "onnxruntime_onnx",
        meta["config"],
        inputs[0].name,
        model.graph.output[0].name,
        dtype(inputs[0]),
        dtype(model.graph.output[0]),
        batch,
        batch,
    )


def artifact_from_engine(path: str | Path) -> HeatmapArtifact:
    """Read I/O and the batch profile from an engine's sidecar (TensorRT itself is not needed)."""
    from tdmi.artifacts.sidecar import load_sidecar, sidecar_path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"engine {p} not found")
    side = sidecar_path(p)
    sc = load_sidecar(side)
    if sc.target != "tensorrt":
        raise ConfigError(
            f"{p} is a {sc.target} engine: Triton's tensorrt_plan backend runs TensorRT engines only"
        )
    if len(sc.inputs) != 1 or len(sc.outputs) != 1:
        raise ConfigError(
            f"{side} lists {len(sc.inputs)} inputs and {len(sc.outputs)} outputs, expected 1 and 1"
        )
    i, o = sc.inputs[0], sc.outputs[0]
    fixed = sc.profile.max if sc.profile.is_static else None
    return HeatmapArtifact(
        p, "tensorrt_plan", sc.config(), i.name, o.name, i.dtype, o.dtype, fixed, sc.profile.max, side
    )


def _triton_type(np_dtype: str, what: str) -> str:
    try:
        return _NP_TO_TRITON[np_dtype]
    except KeyError:
        raise ConfigError(f"{what} has dtype {np_dtype}, which the served models do not take") from None


def _tensor(pb: Any, cls: Any, name: str, dtype: str, dims: list[int]) -> Any:
    return cls(name=name, data_type=pb.DataType.Value(dtype), dims=dims)


def _params(msg: Any, values: dict[str, str]) -> None:
    for k, v in values.items():
        msg.parameters[k].string_value = v


def _batching(msg: Any, serve: ServeConfig) -> None:
    msg.dynamic_batching.preferred_batch_size.extend(serve.preferred_batch_sizes)
    msg.dynamic_batching.max_queue_delay_microseconds = serve.max_queue_delay_us


def served_types(art: HeatmapArtifact, flavour: str) -> tuple[str, str]:
    """Triton types of the heatmap model's clips and heatmaps.

    ``tdmi.runtime`` (the python flavour) takes and returns float32 whatever the file holds; Triton's
    own backends take the file's types (an FP16 graph converted without keeping its I/O types).
    """
    if flavour == "python":
        return "TYPE_FP32", "TYPE_FP32"
    return (
        _triton_type(art.input_dtype, "the model input"),
        _triton_type(art.output_dtype, "the model output"),
    )


def heatmap_config(
    art: HeatmapArtifact, serve: ServeConfig, flavour: str, name: str = HEATMAP_MODEL, batching: bool = True
) -> Any:
    """``tdmi`` (or ``tdmi_nobatch``): clips [T, 3, H, W] per batch item -> heatmaps [J, h, w]."""
    pb = model_config_pb2()
    cfg = art.config
    h, w = cfg.input_size
    in_type, out_type = served_types(art, flavour)
    m = pb.ModelConfig(name=name, max_batch_size=serve.max_batch_size)
    m.input.append(_tensor(pb, pb.ModelInput, art.input_name, in_type, [cfg.num_frames, 3, h, w]))
    m.output.append(
        _tensor(pb, pb.ModelOutput, art.output_name, out_type, [cfg.num_joints, *cfg.heatmap_size])
    )
    group = m.instance_group.add()
    group.count = serve.instances
    if flavour == "python":
        m.backend = "python"
        group.kind = pb.ModelInstanceGroup.Kind.KIND_CPU
        artifact = f"1/{art.filename}" if name == HEATMAP_MODEL else f"../{HEATMAP_MODEL}/1/{art.filename}"
        _params(m, {"artifact": artifact})
    elif art.platform == "openvino":
        m.backend = "openvino"  # Triton's OpenVINO backend: CPU instances
        m.default_model_filename = art.filename
        group.kind = pb.ModelInstanceGroup.Kind.KIND_CPU
    else:
        m.platform = art.platform
        m.default_model_filename = art.filename
        gpu = art.platform == "tensorrt_plan" or serve.kind == "gpu"
        group.kind = pb.ModelInstanceGroup.Kind.KIND_GPU if gpu else pb.ModelInstanceGroup.Kind.KIND_CPU
    if batching:
        _batching(m, serve)
    _params(m, {"tdmi_serve": serve.to_json(), "tdmi_model_config": cfg.to_json()})
    return m


def pre_config(cfg: TDMIConfig, serve: ServeConfig, clip_type: str = "TYPE_FP32") -> Any:
    """``tdmi_pre``: T uint8 frames + N person boxes of the key frame -> N clips and their crop geometry."""
    pb = model_config_pb2()
    h, w = cfg.input_size
    m = pb.ModelConfig(name=PRE_MODEL, backend="python", max_batch_size=0)
    m.input.extend(
        [
            _tensor(pb, pb.ModelInput, IMAGES, "TYPE_UINT8", [cfg.num_frames, -1, -1, 3]),
            _tensor(pb, pb.ModelInput, BOXES, "TYPE_FP32", [-1, 4]),
        ]
    )
    m.output.extend(
        [
            _tensor(pb, pb.ModelOutput, "frames", clip_type, [-1, cfg.num_frames, 3, h, w]),
            _tensor(pb, pb.ModelOutput, CENTERS, "TYPE_FP32", [-1, 2]),
            _tensor(pb, pb.ModelOutput, SCALES, "TYPE_FP32", [-1, 2]),
        ]
    )
    group = m.instance_group.add()
    group.count, group.kind = serve.instances, pb.ModelInstanceGroup.Kind.KIND_CPU
    _params(m, {"tdmi_serve": serve.to_json(), "tdmi_model_config": cfg.to_json()})
    return m


def post_config(cfg: TDMIConfig, serve: ServeConfig, heatmap_type: str = "TYPE_FP32") -> Any:
    """``tdmi_post``: heatmaps + crop geometry -> image keypoints [N, J, 2] and scores [N, J]."""
    pb = model_config_pb2()
    m = pb.ModelConfig(name=POST_MODEL, backend="python", max_batch_size=0)
    m.input.extend(
        [
            _tensor(pb, pb.ModelInput, "heatmaps", heatmap_type, [-1, cfg.num_joints, *cfg.heatmap_size]),
            _tensor(pb, pb.ModelInput, CENTERS, "TYPE_FP32", [-1, 2]),
            _tensor(pb, pb.ModelInput, SCALES, "TYPE_FP32", [-1, 2]),
        ]
    )
    m.output.extend(
        [
            _tensor(pb, pb.ModelOutput, KEYPOINTS, "TYPE_FP32", [-1, cfg.num_joints, 2]),
            _tensor(pb, pb.ModelOutput, SCORES, "TYPE_FP32", [-1, cfg.num_joints]),
        ]
    )
    group = m.instance_group.add()
    group.count, group.kind = serve.instances, pb.ModelInstanceGroup.Kind.KIND_CPU
    _params(m, {"tdmi_serve": serve.to_json(), "tdmi_model_config": cfg.to_json()})
    return m


def pose_config(art: HeatmapArtifact) -> Any:
    """``tdmi_pose``: the ensemble a client calls with images + boxes to get keypoints + scores."""
    pb = model_config_pb2()
    cfg = art.config
    m = pb.ModelConfig(name=POSE_MODEL, platform="ensemble", max_batch_size=0)
    m.input.extend(
        [
            _tensor(pb, pb.ModelInput, IMAGES, "TYPE_UINT8", [cfg.num_frames, -1, -1, 3]),
            _tensor(pb, pb.ModelInput, BOXES, "TYPE_FP32", [-1, 4]),
        ]
    )
    m.output.extend(
        [
            _tensor(pb, pb.ModelOutput, KEYPOINTS, "TYPE_FP32", [-1, cfg.num_joints, 2]),
            _tensor(pb, pb.ModelOutput, SCORES, "TYPE_FP32", [-1, cfg.num_joints]),
        ]
    )
    steps = [
        (
            PRE_MODEL,
            {IMAGES: IMAGES, BOXES: BOXES},
            {"frames": "_clips", CENTERS: "_centers", SCALES: "_scales"},
        ),
        (HEATMAP_MODEL, {art.input_name: "_clips"}, {art.output_name: "_heatmaps"}),
        (
            POST_MODEL,
            {"heatmaps": "_heatmaps", CENTERS: "_centers", SCALES: "_scales"},
            {KEYPOINTS: KEYPOINTS, SCORES: SCORES},
        ),
    ]
    for model, ins, outs in steps:
        step = m.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for k, v in ins.items():
            step.input_map[k] = v
        for k, v in outs.items():
            step.output_map[k] = v
    return m


SHIM = '''"""Triton Python-backend entry point written by tdmi (the code is tdmi.serve.backend)."""
{path_setup}
from tdmi.serve.backend import {cls} as TritonPythonModel  # noqa: F401
'''

# The stub's embedded interpreter ignores PYTHONPATH: a repository for the bundled server makes it
# import the very tdmi (and packages) of the process that wrote it.
LOCAL_PATH_SETUP = """
import site
import sys

for _dir in {site_dirs!r}:
    if _dir not in sys.path:
        site.addsitedir(_dir)
if {root!r} not in sys.path[:1]:
    sys.path.insert(0, {root!r})
"""


def _path_setup(flavour: str) -> str:
    if flavour != "python":
        return ""
    import site

    import tdmi

    root = str(Path(tdmi.__file__).resolve().parents[1])
    return LOCAL_PATH_SETUP.format(site_dirs=list(site.getsitepackages()), root=root)


def _check_batch(art: HeatmapArtifact, serve: ServeConfig, flavour: str) -> None:
    if flavour == "python":
        return  # tdmi.runtime splits and pads batches to whatever the file runs
    if art.platform in ("onnxruntime_onnx", "openvino") and art.batch is not None:
        how = "openvino" if art.platform == "openvino" else "onnx"
        raise ConfigError(
            f"{art.path} was exported with a fixed batch of {art.batch}; Triton's dynamic batcher needs a "
            f"dynamic batch: re-export it with `tdmi-export {how} --batch dynamic`"
        )
    if art.max_batch is not None and serve.max_batch_size > art.max_batch:
        raise ConfigError(
            f"--max-batch {serve.max_batch_size} exceeds the engine's profile maximum {art.max_batch} "
            f"({art.sidecar}): lower --max-batch or rebuild with a larger --batch profile"
        )


def write_repository(
    output: str | Path,
    artifact: HeatmapArtifact,
    serve: ServeConfig | None = None,
    *,
    flavour: str = "platform",
    force: bool = False,
) -> Path:
    """Write the whole repository to a temp folder and move it to ``output`` when complete."""
    from google.protobuf import text_format

    if flavour not in FLAVOURS:
        raise ConfigError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    serve = serve or ServeConfig()
    _check_batch(artifact, serve, flavour)
    if flavour == "platform" and artifact.platform == "tensorrt_plan" and serve.kind != "gpu":
        serve = ServeConfig(**{**serve.to_dict(), "kind": "gpu"})
    cfg = artifact.config
    configs = {
        HEATMAP_MODEL: heatmap_config(artifact, serve, flavour),
        PRE_MODEL: pre_config(cfg, serve, served_types(artifact, flavour)[0]),
        POST_MODEL: post_config(cfg, serve, served_types(artifact, flavour)[1]),
        POSE_MODEL: pose_config(artifact),
    }
    shims = {PRE_MODEL: "PreprocessModel", POST_MODEL: "PostprocessModel"}
    if flavour == "python":
        configs[NOBATCH_MODEL] = heatmap_config(artifact, serve, flavour, NOBATCH_MODEL, batching=False)
        shims[HEATMAP_MODEL] = shims[NOBATCH_MODEL] = "HeatmapModel"
    with atomic_dir(output, force=force) as tmp:
        for name, msg in configs.items():
            version = tmp / name / "1"
            version.mkdir(parents=True)
            (tmp / name / "config.pbtxt").write_text(text_format.MessageToString(msg))
            if name in shims:
                (version / "model.py").write_text(
                    SHIM.format(cls=shims[name], path_setup=_path_setup(flavour))
                )
        dest = tmp / HEATMAP_MODEL / "1" / artifact.filename
        shutil.copyfile(artifact.path, dest)
        if artifact.platform == "openvino":
            shutil.copyfile(artifact.path.with_suffix(".bin"), dest.with_suffix(".bin"))
        if artifact.sidecar is not None:
            shutil.copyfile(artifact.sidecar, dest.with_name(dest.name + ".json"))
    return Path(output)


def read_config(path: str | Path) -> Any:
    """Parse a config.pbtxt with Triton's protobuf (what the server does when it loads the model)."""
    from google.protobuf import text_format

    pb = model_config_pb2()
    return text_format.Parse(Path(path).read_text(), pb.ModelConfig())
