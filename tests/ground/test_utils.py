"""Atomic artifact writes: all or nothing, with ordinary file permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tdmi.errors import TdmiError
from tdmi.utils import atomic_path, sha256_file, write_text_atomic


def test_failure_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new but broken")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_artifacts_get_umask_permissions_not_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    write_text_atomic(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TdmiError, match="does not exist"):
        write_text_atomic(tmp_path / "nope" / "a.txt", "x")


def test_sha256(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_disk_full_names_the_artifact_and_leaves_nothing(tmp_path: Path) -> None:
    import errno

    target = tmp_path / "model.onnx"
    with (
        pytest.raises(TdmiError, match=r"cannot write .*model\.onnx: No space left on device"),
        atomic_path(target) as tmp,
    ):
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() reports it: no file name
    assert list(tmp_path.iterdir()) == []
