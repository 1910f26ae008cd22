"""Which optional extra of ``tdmi-deploy`` brings a module, so a missing one is a one-line fix.

The base install is the runtime (numpy, onnxruntime, opencv, typer, rich); torch, onnx and the
rest come with extras (pyproject). Code that needs one asks :func:`require` before the work, and
the CLI turns any other ``ModuleNotFoundError`` for these modules into the same line.
"""

from __future__ import annotations

import importlib.util

from tdmi.errors import BackendUnavailableError

# top-level module -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "torch": "export",
    "torchvision": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnxslim": "export",
    "onnx_graphsurgeon": "export",
    "matplotlib": "bench",
    "filelock": "bench",
    "modelopt": "modelopt",
    "tensorrt": "trt",
    "cuda": "trt",
    "tritonclient": "serve",
}


class MissingExtraError(BackendUnavailableError):
    """A feature needs a package that only an optional extra installs."""


def missing_extra_message(
    module: str | None, what: str | None = None, extra: str | None = None
) -> str | None:
    """One line naming the extra for ``module`` (``None`` when no extra provides it)."""
    top = (module or "").split(".", 1)[0]
    extra = extra or EXTRA_OF.get(top)
    if extra is None:
        return None
    needs = f"{what} needs {top}" if what else f"this needs {top}"
    return f"{needs}, which this install does not have: pip install 'tdmi-deploy[{extra}]'"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (cheap: no torch start-up)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


def require(module: str, what: str, extra: str | None = None) -> None:
    """Raise :class:`MissingExtraError` (one line, names the extra) when ``module`` is not installed.

    ``extra`` overrides the module's own (``tdmi-bench`` needs torch, and ``[bench]`` brings it).
    """
    if not installed(module):
        raise MissingExtraError(missing_extra_message(module, what, extra) or f"{what} needs {module}")
