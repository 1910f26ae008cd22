"""Serving TDMI with NVIDIA Triton Inference Server: repositories, a local server, the Python-backend models.

``write_repository`` writes a repository (``platform`` flavour for the official container,
``python`` for the bundled server); ``TritonServer`` runs the ``tritonserver`` binary of the
nvidia-pytriton wheel over one; ``resolve_artifact`` turns an ONNX file, an engine or a
config/checkpoint into the heatmap model both serve.
"""

from __future__ import annotations

from pathlib import Path

from tdmi.errors import UsageError
from tdmi.serve.config import HEATMAP_MODEL, NOBATCH_MODEL, POSE_MODEL, POST_MODEL, PRE_MODEL, ServeConfig
from tdmi.serve.repository import (
    HeatmapArtifact,
    artifact_from_engine,
    artifact_from_onnx,
    read_config,
    write_repository,
)
from tdmi.serve.server import PortInUseError, Ports, ServerError, TritonServer, find_tritonserver, free_port

MODELS = (HEATMAP_MODEL, PRE_MODEL, POST_MODEL, POSE_MODEL)
LOCAL_MODELS = (*MODELS, NOBATCH_MODEL)

__all__ = [
    "LOCAL_MODELS",
    "MODELS",
    "HeatmapArtifact",
    "PortInUseError",
    "Ports",
    "ServeConfig",
    "ServerError",
    "TritonServer",
    "artifact_from_engine",
    "artifact_from_onnx",
    "find_tritonserver",
    "free_port",
    "read_config",
    "resolve_artifact",
    "write_repository",
]


def resolve_artifact(
    workdir: str | Path,
    *,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    openvino: str | Path | None = None,
    config: str | None = None,
    checkpoint: str | Path | None = None,
    verify: bool = True,
) -> HeatmapArtifact:
    """The heatmap model to serve: a given ONNX file or engine, or one exported into ``workdir``."""
    given = [
        n for n, v in (("--onnx", onnx), ("--engine", engine), ("--openvino", openvino)) if v is not None
    ]
    if config is not None or checkpoint is not None:
        given.append("--config/--checkpoint")
    if len(given) != 1:
        raise UsageError(
            "say which model to serve: exactly one of --onnx FILE, --engine FILE, --openvino FILE.xml or "
            "--config/--checkpoint" + (f" (got {', '.join(given)})" if given else "")
        )
    if onnx is not None:
        return artifact_from_onnx(onnx)
    if engine is not None:
        return artifact_from_engine(engine)
    if openvino is not None:
        from tdmi.serve.repository import artifact_from_openvino

        return artifact_from_openvino(openvino)
    from tdmi.export.export_spec import ExportSpec
    from tdmi.export.pipeline import build

    spec = ExportSpec(
        config=config,
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        batch="dynamic",  # Triton's dynamic batcher
        verify=verify,
    )
    return artifact_from_onnx(build(spec, Path(workdir) / "model.onnx").path)
