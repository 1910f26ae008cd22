"""The shipped TemporalDiff PTX: where it is, which one a GPU takes, and what its text declares.

The run-time half of the plugin's PTX handling (TensorRT registration, the cuda-python launcher,
engine checks), kept apart from the nvcc builder in :mod:`tdmi.plugins.build` so that running an
engine never imports the compiler driver. Standard library only.

One PTX ships (``compute_75``, see ``tdmi.plugins.build.DEFAULT_ARCHS``): the driver JIT-compiles
PTX forward, so every GPU from Turing on loads it, and :func:`select_arch` still picks the newest
shipped arch not above the GPU should a later target ever be added. :func:`kernel_sha256` names the
kernel an engine embeds, whichever arch asked for it.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from tdmi.errors import BackendUnavailableError, TdmiError

SOURCE_NAME = "temporal_diff.cu"
PTX_STEM = "temporal_diff"
HEADER_PREFIX = "// tdmi:"

_ENTRY_RE = re.compile(r"\.entry\s+([A-Za-z_$][\w$]*)\s*\(([^)]*)\)", re.S)
_PARAM_RE = re.compile(r"\.param\s+\.(\w+)(?:\s+\.ptr)?(?:\s+\.\w+)*(?:\s+\.align\s+\d+)?\s+([\w$]+)")


def package_dir() -> Path:
    return Path(str(resources.files("tdmi.plugins")))


def source_path() -> Path:
    return package_dir() / "csrc" / SOURCE_NAME


def ptx_dir() -> Path:
    return package_dir() / "ptx"


def ptx_filename(arch: int) -> str:
    return f"{PTX_STEM}.compute_{arch}.ptx"


def source_sha256(path: Path | None = None) -> str:
    return hashlib.sha256((path or source_path()).read_bytes()).hexdigest()


def shipped_archs(directory: Path | None = None) -> list[int]:
    d = directory or ptx_dir()
    pattern = re.compile(rf"{re.escape(PTX_STEM)}\.compute_(\d+)\.ptx$")
    return sorted(int(m.group(1)) for p in d.glob("*.ptx") if (m := pattern.match(p.name)))


def ptx_path(arch: int | None = None, directory: Path | None = None) -> Path:
    """The shipped PTX for ``arch``; ``None`` means the lowest one (JITs on every supported GPU)."""
    archs = shipped_archs(directory)
    if not archs:
        raise BackendUnavailableError(
            f"no TemporalDiff PTX found in {directory or ptx_dir()}: reinstall tdmi-deploy or run "
            "`python -m tdmi.plugins.build` (needs nvcc)"
        )
    chosen = archs[0] if arch is None else arch
    if chosen not in archs:
        raise BackendUnavailableError(f"no PTX for compute_{chosen}; shipped: {archs}")
    return (directory or ptx_dir()) / ptx_filename(chosen)


def select_arch(compute_capability: tuple[int, int], archs: list[int] | None = None) -> int:
    """Highest shipped virtual arch <= the device's compute capability (PTX JITs forward)."""
    major, minor = compute_capability
    cc = major * 10 + minor
    candidates = [a for a in (archs if archs is not None else shipped_archs()) if a <= cc]
    if not candidates:
        raise BackendUnavailableError(
            f"GPU compute capability {major}.{minor} is older than the oldest shipped PTX "
            f"(compute_{min(archs or shipped_archs() or [0])}); CUDA 13 supports sm_75 and newer"
        )
    return max(candidates)


def select_ptx(compute_capability: tuple[int, int]) -> Path:
    return ptx_path(select_arch(compute_capability))


def read_ptx(path: Path) -> str:
    return path.read_text()


def parse_ptx_entries(ptx: str) -> dict[str, list[str]]:
    """``{entry name: [param type, ...]}`` from the ``.entry`` declarations of a PTX module."""
    entries: dict[str, list[str]] = {}
    for match in _ENTRY_RE.finditer(ptx):
        params = [p.strip() for p in match.group(2).split(",") if p.strip()]
        types: list[str] = []
        for param in params:
            pm = _PARAM_RE.search(param)
            if pm is None:
                raise TdmiError(f"unparsable PTX parameter {param!r} of entry {match.group(1)}")
            types.append(pm.group(1))
        entries[match.group(1)] = types
    return entries


def ptx_header(ptx: str) -> dict[str, str]:
    """The ``// tdmi: key value`` lines this module writes at the top of each PTX file."""
    header: dict[str, str] = {}
    for line in ptx.splitlines():
        if not line.startswith(HEADER_PREFIX):
            continue
        key, _, value = line[len(HEADER_PREFIX) :].strip().partition(" ")
        if key in ("source-sha256", "arch", "nvcc", "flags"):
            header[key] = value
    return header


def ptx_target(ptx: str) -> str:
    match = re.search(r"^\.target\s+(\S+)", ptx, re.M)
    if match is None:
        raise TdmiError("PTX has no .target directive")
    return match.group(1).rstrip(",")


def strip_comments(ptx: str) -> str:
    """PTX without ``//`` comment lines: what must match between a rebuild and the shipped file."""
    return "\n".join(line for line in ptx.splitlines() if not line.lstrip().startswith("//")).strip()


def kernel_body(ptx: str) -> str:
    """PTX without comments and without its ``.target`` line: the kernel, whichever arch it names.

    Two PTX files with the same body are the same kernel (the driver JITs either forward), so a
    later target that only changes ``.target`` is redundant (the drift check says so).
    """
    return "\n".join(line for line in strip_comments(ptx).splitlines() if not line.startswith(".target"))


def kernel_sha256(arch: int | None = None, directory: Path | None = None) -> str:
    """SHA-256 of the kernel body of the shipped PTX for ``arch``: the engine sidecar's PTX hash.

    Independent of the arch that asked, of the ``// tdmi:`` header and of nvcc's comment lines, so
    it changes only when the kernel does.
    """
    return hashlib.sha256(kernel_body(read_ptx(ptx_path(arch, directory))).encode()).hexdigest()
