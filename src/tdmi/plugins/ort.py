"""The one ONNX Runtime session factory: session options, providers and one-line load errors.

The runtime (files on disk, CPU or CUDA) and the exporter (in-memory graphs checked on the CPU) both
open sessions here, so thread, spinning and arena settings mean the same everywhere. It sits in the
plugins layer because both may import it while neither may import the other. ``onnxruntime`` is
imported only when a session is made (and checked by :func:`require_onnxruntime`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tdmi.errors import ExportError
from tdmi.plugins.availability import require_onnxruntime

CPU_PROVIDERS = ("CPUExecutionProvider",)


def session_options(
    ort: Any, threads: int | None = None, allow_spinning: bool | None = None, arena: bool = True
) -> Any:
    """``SessionOptions`` with ORT's log noise off and the toolkit's thread settings.

    ``arena=False`` for one-off checks and calibration probes: ORT's CPU arena keeps (and rounds
    up) the largest activations a session ever held until the session is gone. Spinning workers keep
    cores busy after each run: ``allow_spinning=False`` when timing side by side with torch.
    """
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
    if threads:
        so.intra_op_num_threads = threads
    if allow_spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return so


def check_model_file(path: Path, what: str = "ONNX file") -> None:
    """Missing and empty files in one line each (ORT's own message for them is a stack of C++ text)."""
    if not path.is_file():
        raise ExportError(f"{what} {path} not found")
    if path.stat().st_size == 0:
        raise ExportError(f"{path} is empty (0 bytes): the export was interrupted; export it again")


def create_session(
    model: str | Path | bytes,
    *,
    providers: Sequence[Any] = CPU_PROVIDERS,
    threads: int | None = None,
    allow_spinning: bool | None = None,
    arena: bool = True,
    what: str = "ONNX file",
    explain: Callable[[str], str | None] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for a file or a serialised graph.

    A file is checked first (``what`` names it in the message). A load failure is one
    :class:`ExportError` line; ``explain`` may turn ORT's message (say, about a custom op it has no
    kernel for) into the caller's hint, said instead.
    """
    ort = require_onnxruntime()
    source: str | bytes
    if isinstance(model, bytes):
        label, source = "the graph", model
    else:
        path = Path(model)
        check_model_file(path, what)
        label, source = str(path), str(path)
    so = session_options(ort, threads, allow_spinning, arena)
    try:
        return ort.InferenceSession(source, so, providers=list(providers))
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, NotImplemented)
        text = str(e)
        hint = explain(text) if explain is not None else None
        if hint is not None:
            raise ExportError(f"ONNX Runtime cannot run {label}: {hint}") from None
        first = (text.splitlines() or [type(e).__name__])[0][:240]
        raise ExportError(f"ONNX Runtime cannot load {label}: {first}") from None
