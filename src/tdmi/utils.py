"""Small shared helpers: atomic artifact writes, output-path checks, the per-run temp root, hashing."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tdmi.errors import ConfigError, TdmiError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


# Our temp names carry the writing process id, so a later run can tell a file orphaned by a killed
# process (SIGKILL, power loss) from one a live run is still writing. Every temp name beside an
# artifact is ``.<target name>.tdmi-<pid>-<random>.tmp`` (:func:`temp_prefix` + ``TMP_SUFFIX``), plus
# the target's own extension where a writer needs it (OpenCV picks the container by it):
# ``….tmp.mp4``. The sweeper matches exactly these names.
TMP_SUFFIX = ".tmp"
_TMP_FILE = re.compile(r"^\..+\.tdmi-(\d+)-[^.]+\.tmp(\.[A-Za-z0-9]{1,8})?$")
_RUN_ROOT = re.compile(r"^tdmi-run-(\d+)-")


def temp_prefix(target: str | os.PathLike[str]) -> str:
    """The start of every temp name beside ``target`` (the sweeper's pattern); end it with ``TMP_SUFFIX``."""
    return f".{Path(target).name}.tdmi-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows: os.kill(pid, 0) would send CTRL_C_EVENT
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove our own temp files/folders in ``folder`` whose writing process is gone; return them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_FILE.match(entry.name) or _RUN_ROOT.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # another run swept it first, or it is not ours to remove
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds.

    Artifacts (ONNX files, engines, reports) must never be left half-written: a crash or a
    failed check leaves the previous file (or nothing) in place, and temp files orphaned by a
    killed run are swept the next time something is written in that folder. ``keep_suffix``: the
    temp name ends with the target's extension too (``….tmp.mp4``), for writers that choose the
    format by it.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise TdmiError(f"output folder {parent} does not exist: create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise TdmiError(f"output folder {parent} is not writable: choose another path")
    sweep_stale_temps(parent)
    try:
        suffix = TMP_SUFFIX + (target.suffix if keep_suffix else "")
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix, dir=parent)
    except OSError as e:
        raise TdmiError(f"cannot write {target}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            # mkstemp makes the file owner-only; give the artifact the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, target)
        except OSError as e:  # disk full, quota, permissions: say which artifact could not be written
            if e.errno is None:
                raise
            raise TdmiError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str],
    force: bool = False,
    exclusive: bool = False,
    staging: str | os.PathLike[str] | None = None,
) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; move it to ``path`` only if the block succeeds.

    The folder form of :func:`atomic_path`, for artifacts that are several files (a Triton model
    repository). An existing non-empty ``path`` is refused unless ``force``; then it is replaced
    only after the new folder is complete. With ``exclusive`` the final rename itself is the
    check: if another process committed ``path`` while this block ran, nothing is replaced and
    :class:`FileExistsError` is raised (exactly-once outputs from retried workers). ``staging`` puts
    the temp folder (and the sweep of orphaned ones) in that folder instead of beside ``path``; it
    must be on the same file system. Writers on several hosts sharing one output folder each use
    their own, since a process id only tells a dead writer from a live one on its own host.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.exists() and not target.is_dir():
        raise TdmiError(f"{target} is a file: give a folder to write")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise TdmiError(f"{target} exists and is not empty: choose another folder or pass --force")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TdmiError(f"cannot create the folder {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TdmiError(f"output folder {parent} is not writable: choose another path")
    where = parent if staging is None else Path(staging)
    where.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(where)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=TMP_SUFFIX, dir=where))
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if exclusive:
            try:
                os.rename(tmp, target)  # onto a missing or empty folder only: ENOTEMPTY otherwise
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileExistsError(errno.EEXIST, "already written", str(target)) from None
                raise
            return
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=TMP_SUFFIX, dir=parent))
            os.rmdir(old)
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def run_temp_root() -> Iterator[Path]:
    """One temp folder for this whole run: every ``tempfile`` call inside goes there; removed at the end.

    Roots left by killed runs (their process is gone) are swept first.
    """
    base = Path(tempfile.gettempdir())
    sweep_stale_temps(base)
    root = Path(tempfile.mkdtemp(prefix=f"tdmi-run-{os.getpid()}-", dir=base))
    previous = tempfile.tempdir
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(root, ignore_errors=True)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def prepare_output(
    path: str | os.PathLike[str], option: str = "output", *, error: type[TdmiError] = TdmiError
) -> Path:
    """The one output-path policy: create the missing parent folders of an output file, refuse a
    folder where the file goes and an unwritable folder. Called before any work starts; the file
    itself is then written atomically (``atomic_path``), so it is never half-written.

    ``option`` names the path in the message (``--output``); ``error`` is the error type raised.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise error(f"{option} {path} is a folder: give a file name inside it")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the folder {parent} for {option} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"folder {parent} for {option} is not writable: choose another path")
    return path


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    *,
    input_dirs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    force: bool = False,
    force_option: str = "--force",
) -> None:
    """Check every output location before any work starts, naming the option the user typed.

    ``outputs``/``inputs`` map an option name (``--json``, ``SRC``) to a path (``None``: not given).
    ``input_dirs`` are folders read as a whole (a folder of frames): nothing may be written into them,
    since the next run would read it as input. Refused: an output that is an input (symlinks resolved;
    allowed in place with ``force``), an output inside an input folder, two outputs that are one
    file; then each output goes through ``prepare_output`` (parents created, folders refused).
    """
    outs = [(opt, Path(p)) for opt, p in outputs.items() if p is not None]
    ins = [(opt, Path(p)) for opt, p in (inputs or {}).items() if p is not None]
    in_dirs = [(opt, Path(p)) for opt, p in (input_dirs or {}).items() if p is not None]
    for i, (opt, path) in enumerate(outs):
        for other_opt, other in outs[:i]:
            if _same_file(path, other):
                raise TdmiError(
                    f"{opt} {path} is the same file as {other_opt} {other}: give each its own path"
                )
        for in_opt, src in ins:
            if src.is_file() and _same_file(path, src) and not force:
                hint = f", or pass {force_option} to rewrite it in place" if force_option else ""
                raise TdmiError(
                    f"{opt} {path} would overwrite the input {in_opt} {src}: choose another path{hint}"
                )
        parent = path.parent if str(path.parent) else Path(".")
        for in_opt, folder in in_dirs:
            if _same_file(parent, folder):
                raise TdmiError(
                    f"{opt} {path} would be written into the input folder {in_opt} {folder}, "
                    "which the next run would read as input: choose another output folder"
                )
        prepare_output(path, opt)


def json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or one ConfigError naming ``what`` (configs read from files)."""
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} must be a JSON object, got {type(data).__name__}")
    return data


def reject_unknown_fields(cls: type, data: Mapping[str, Any], what: str) -> None:
    """A config JSON with a misspelt field is an error, never a silently ignored setting."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_commit(short: bool = False) -> str | None:
    """HEAD of the source checkout this package runs from, if it is one (read-only git call).

    Reports and the GPU kit record it so a figure names the code it measured.
    """
    import subprocess

    src = Path(__file__).resolve().parents[2]
    if not (src / ".git").exists():
        return None
    cmd = ["git", "-C", str(src), "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
