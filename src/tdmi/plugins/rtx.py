"""TensorRT-RTX: import its bindings, and make its plugin path work from the pip wheels.

The wheels (``tensorrt-rtx-cu12-libs``) ship ``libtensorrt_rtx.so.1`` only. When the ONNX parser
creates an IPluginV3 plugin, ``libtensorrt_rtx.so.1`` ``dlopen``\\s itself by the development name
``libtensorrt_rtx.so``; when that fails it calls ``std::terminate`` and the process aborts
(``terminate called without an active exception``; traced with ``LD_DEBUG=libs``). The lookup
searches the library's RPATH first, which is its own folder (``tensorrt_rtx_libs/``), and an object
found there that is the same file as the loaded ``.so.1`` is reused, not loaded twice. So the fix
is the symlink ``libtensorrt_rtx.so -> libtensorrt_rtx.so.1`` in that folder, which a development
install of TensorRT-RTX has anyway. :func:`ensure_library_name` creates it (atomically) when it is
missing; when the folder is read-only it raises an error naming the one-time command instead of
letting TensorRT abort.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from tdmi.errors import BackendUnavailableError
from tdmi.plugins.availability import Availability
from tdmi.utils import TMP_SUFFIX, sweep_stale_temps, temp_prefix

RTX_MISSING = (
    "TensorRT-RTX is not installed: pip install 'tdmi-deploy[rtx]' "
    "(tensorrt-rtx-cu12-libs and tensorrt-rtx-cu12-bindings; no GPU needed to build engines)"
)
LIB_NAME = "libtensorrt_rtx.so"
LIB_SONAME = "libtensorrt_rtx.so.1"
# GPUs TensorRT-RTX targets (its ComputeCapability enum); there is no SM90: Hopper is not an RTX GPU.
COMPUTE_CAPABILITIES: tuple[int, ...] = (75, 80, 86, 89, 120, 121)
DEFAULT_COMPUTE_CAPABILITIES: tuple[int, ...] = (80, 86, 89, 120)
_LOCK = threading.Lock()


def rtx_available() -> Availability:
    """Both RTX wheels importable (no driver or GPU needed)."""
    if importlib.util.find_spec("tensorrt_rtx_libs") is None or (
        importlib.util.find_spec("tensorrt_rtx_bindings") is None
    ):
        return Availability(False, RTX_MISSING)
    try:
        _import_bindings()
    except Exception as exc:  # a broken or mismatched wheel pair
        return Availability(False, f"{RTX_MISSING} (import failed: {exc})")
    return Availability(True, "")


def import_rtx() -> Any:
    """The ``tensorrt_rtx_bindings`` module (same API as ``tensorrt``), or a one-line error."""
    rtx_available().require()
    return _import_bindings()


def _import_bindings() -> Any:
    # The libs package loads libtensorrt_rtx.so.1, which the bindings' extension links against:
    # it must come first (an import sorter would swap two import statements).
    importlib.import_module("tensorrt_rtx_libs")
    return importlib.import_module("tensorrt_rtx_bindings")


def library_dir() -> Path:
    """The folder holding ``libtensorrt_rtx.so.1`` (the library's own RPATH)."""
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or spec.origin is None:
        raise BackendUnavailableError(RTX_MISSING)
    return Path(spec.origin).resolve().parent


def ensure_library_name(libdir: Path | None = None) -> Path:
    """Make ``libtensorrt_rtx.so`` resolvable next to ``libtensorrt_rtx.so.1``; return the link.

    Idempotent and safe against concurrent callers (symlink to a temporary name, then rename).
    """
    libdir = library_dir() if libdir is None else Path(libdir)
    link, target = libdir / LIB_NAME, libdir / LIB_SONAME
    if not target.is_file():
        raise BackendUnavailableError(f"{target} not found: reinstall TensorRT-RTX ({RTX_MISSING})")
    with _LOCK:
        if link.exists():  # a file, or a link that resolves
            return link
        sweep_stale_temps(libdir)  # links left by killed runs
        tmp = libdir / f"{temp_prefix(link)}link{TMP_SUFFIX}"  # a name the sweeper knows
        try:
            if tmp.is_symlink():
                tmp.unlink()
            tmp.symlink_to(LIB_SONAME)
            os.replace(tmp, link)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BackendUnavailableError(
                f"TensorRT-RTX plugins need {link} (a link to {LIB_SONAME}; without it TensorRT-RTX "
                f"aborts the process) and it could not be created ({exc.strerror}): run once "
                f"`ln -s {LIB_SONAME} {link}` with write access to {libdir}"
            ) from None
    return link
