"""A section in its own worker process: a CUDA fault or a hung compile cannot take the next one with it.

The worker writes its partial result after every row (:class:`~tdmi.gpukit.record.Recorder`), so a
worker killed at its timeout, or one that crashed, still leaves what it measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tdmi.gpukit.options import SOFT_MARGIN_S, Options


def _worker_cmd(name: str, opts: Options, out: Path, deadline: float) -> list[str]:
    """``python -m tdmi.gpukit --worker NAME``: the section in a fresh interpreter."""
    cmd = [sys.executable, "-m", "tdmi.gpukit", "--device", opts.device]
    cmd += ["--seed", str(opts.seed), "--worker", name, "--worker-out", str(out)]
    cmd += ["--worker-deadline", repr(deadline)]
    return [*cmd, "--quick"] if opts.quick else cmd


def run_isolated(name: str, opts: Options, timeout: float, workdir: Path) -> dict[str, Any]:
    """The section in a worker process, killed (with its children) at ``timeout``."""
    out = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    deadline = time.time() + timeout - SOFT_MARGIN_S
    t0 = time.perf_counter()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            _worker_cmd(name, opts, out, deadline),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: inductor workers die with it
        )
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    elapsed = time.perf_counter() - t0
    try:
        data: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError):
        data = {"status": "failed", "reason": "the worker left no result", "notes": []}
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    if timed_out:
        data["status"] = "timeout"
        data["reason"] = f"stopped by the time guard after {elapsed:.0f} s (kept what it measured)"
    elif rc != 0:  # a crash (CUDA fault, OOM kill): what it wrote before dying is kept
        why = f"worker exited with {rc}" + (f" (signal {-rc})" if rc < 0 else "")
        data["status"] = "failed"
        data["reason"] = "; ".join(r for r in (why, data.get("reason")) if r)
    if data["status"] in ("failed", "timeout") and tail:
        data["log_tail"] = tail
    data["seconds"] = round(elapsed, 2)
    return data
