"""One version parser and one installed-version lookup for the whole package.

Ground layer: no torch, no onnx. Release strings seen in the wild ("10.15.1.29", "1.25.0rc1",
"2.11.0+cu130", "v11") are compared by their leading dotted numbers; callers slice the tuple to the
precision they need (major.minor for a parser table, all parts for "same build").
"""

from __future__ import annotations

import importlib.metadata
import re

from tdmi.errors import ConfigError

_LEADING = re.compile(r"\s*v?(\d+(?:\.\d+)*)")


def version_tuple(text: str, what: str = "") -> tuple[int, ...]:
    """The leading dotted release numbers of ``text`` ("1.25.0rc1" -> (1, 25, 0)).

    Raises ConfigError naming ``what`` when ``text`` does not start with a number, so a typo in a
    ``--trt-version`` style option is refused rather than compared as ().
    """
    m = _LEADING.match(str(text))
    if m is None:
        label = f"{what} version" if what else "version"
        raise ConfigError(f"{label} {text!r} is not a version number (e.g. 11, 10.15, 1.25.0)")
    return tuple(int(p) for p in m.group(1).split("."))


def installed_version(dist: str) -> str | None:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
