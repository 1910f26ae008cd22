"""CPU training throughput of ``tdmi-train`` (clips/s) and its 1 -> 2 gloo process scaling.

Synthetic clips from a fixed pool (drawn before timing), so the figures are forward + backward +
optimiser step. The first step of every run is warm-up and not counted. The process comparison
runs ``torchrun -m tdmi.cli.train`` with 1 and 2 processes in alternating order, paired rounds, the same
global batch and ``--threads`` threads per process (data-parallel scaling: each process brings its
own core), and reports each round's ratio and their spread.

``python -m tdmi.benchmarks.train_throughput --configs tdmi-tiny,tdmi-w32-256x192 --rounds 3``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tdmi.model import resolve_config
from tdmi.train import LOG, TrainConfig, train


def _clips_per_s(history: list[dict[str, float]]) -> float:
    timed = history[1:] or history
    return statistics.median(h["clips_per_s"] for h in timed)


def single_process(config: str, steps: int, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    cfg = resolve_config(config)
    tc = TrainConfig(steps=steps, batch_size=batch, clips_pool=batch, val_every=0)
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, tc, Path(d) / "run", progress=False)
    return _clips_per_s(res.history)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(config: str, nproc: int, steps: int, batch: int, threads: int) -> float:
    """clips/s (whole job) of ``torchrun --nproc_per_node nproc -m tdmi.cli.train`` on loopback gloo."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc)]
        cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_port()), "-m", "tdmi.cli.train"]
        cmd += ["--config", config, "--steps", str(steps), "--batch-size", str(batch)]
        cmd += ["--clips-pool", str(batch), "--val-every", "0", "--no-progress", "-o", str(run)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun failed: {proc.stderr[-2000:]}")
        hist = [json.loads(x) for x in (run / LOG).read_text().splitlines()]
    return _clips_per_s([h for h in hist if h.get("kind") == "train"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdmi.benchmarks.train_throughput", description=__doc__)
    p.add_argument(
        "--configs", default="tdmi-tiny,tdmi-w32-256x192", help="single-process runs ('' for none)"
    )
    p.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    p.add_argument("--batch", type=int, default=4, help="global batch")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--rounds", type=int, default=3, help="paired 1-vs-2-process rounds (tdmi-tiny)")
    p.add_argument("--ddp-config", default="tdmi-tiny")
    a = p.parse_args(argv)
    for name in filter(None, a.configs.split(",")):
        cps = single_process(name, a.steps, a.batch, a.threads)
        print(
            f"{name}: {cps:.2f} clips/s (1 process, {a.threads} threads, batch {a.batch}, median of "
            f"{a.steps - 1} steps)",
            flush=True,
        )
    ratios = []
    for r in range(a.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        got = {n: torchrun(a.ddp_config, n, a.steps, a.batch, a.threads) for n in order}
        ratios.append(got[2] / got[1])
        print(
            f"round {r + 1}: 1 proc {got[1]:.2f} clips/s, 2 procs {got[2]:.2f} clips/s, "
            f"2/1 = {ratios[-1]:.2f}",
            flush=True,
        )
    if ratios:
        print(
            f"{a.ddp_config} 2 gloo processes / 1 process: median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} rounds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
