"""The training loop: single process or DistributedDataParallel, exact resume, atomic checkpoints.

A run folder holds ``last.pt`` (weights + embedded model and training configs + the full resume
state: estimator, optimiser, scheduler, AMP scaler, RNG, step), ``best.pt`` (best validation score,
weights only), ``log.jsonl`` (one line per logged step / validation) and, with ``plot``,
``curves.png``. Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from tdmi.errors import CheckpointError, TrainError
from tdmi.model import TDMI, TDMIConfig, load_checkpoint, load_hrnet_weights, make_loss, save_checkpoint
from tdmi.model.checkpoint import read_payload
from tdmi.train import distributed as D
from tdmi.train.config import RESUMABLE_CHANGES, TrainConfig
from tdmi.train.data import PoseTrackClips, StepBatchSampler, SyntheticClips, load_records, micro_batches
from tdmi.train.validate import posetrack_map, synthetic_pck
from tdmi.utils import write_text_atomic

LAST, BEST, LOG, PLOT = "last.pt", "best.pt", "log.jsonl", "curves.png"
TERMS = ("total", "heatmap", "mi", "mi_estimator")
StepCallback = Callable[[int, dict[str, float], TDMI], None]


class TrainModule(nn.Module):
    """Model + MI estimator behind one forward, so DDP synchronises the estimator's gradients too."""

    def __init__(self, model: TDMI, train: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = make_loss(model.config)
        self.weights = (
            train.heatmap_weight,
            model.config.mi_weight if train.mi_weight is None else train.mi_weight,
            train.estimator_weight,
        )

    def forward(self, frames: Tensor, target: Tensor, weight: Tensor) -> dict[str, Tensor]:
        terms = self.loss_fn(self.model(frames), target, weight)
        hw, mw, ew = self.weights
        terms["total"] = hw * terms["heatmap"] + mw * terms["mi"] + ew * terms["mi_estimator"]
        return terms


@dataclass
class TrainResult:
    """What a run produced; ``history`` holds this process's logged steps (all terms, lr, clips/s)."""

    run_dir: Path
    model: TDMI
    step: int
    total_steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    last: Path | None = None
    best: Path | None = None
    plot: Path | None = None


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (running statistics used and kept); return how many.

    The affine weights still train. Called after ``module.train()`` on each step of a frozen phase.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.eval()
    return len(bns)


def lr_factor(train: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """LR multiplier at optimiser step ``s``: linear warm-up, then multi-step decay or cosine to 0."""
    warm = train.warmup_steps
    marks = sorted(round(m * total_steps) for m in train.milestones)

    def f(s: int) -> float:
        w = min(1.0, (s + 1) / warm) if warm > 0 else 1.0
        if train.schedule == "multistep":
            return w * train.gamma ** sum(s >= m for m in marks)
        if train.schedule == "cosine":
            span = max(1, total_steps - warm)
            t = min(1.0, max(0, s - warm) / span)
            return w * 0.5 * (1.0 + math.cos(math.pi * t))
        return w

    return f


def make_optimizer(params: list[nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=train.lr, weight_decay=train.weight_decay)


def _config_diff(
    a: Mapping[str, Any], b: Mapping[str, Any], ignore: frozenset[str] = frozenset()
) -> list[str]:
    keys = sorted((set(a) | set(b)) - ignore)
    return [k for k in keys if a.get(k) != b.get(k)]


def _read_last(run_dir: Path, model_config: TDMIConfig, train: TrainConfig) -> dict[str, Any]:
    """The resume payload of ``run_dir``, after checking it belongs to this model and training config."""
    path = run_dir / LAST
    if not path.is_file():
        raise TrainError(f"--resume: {run_dir} holds no {LAST} to continue from; start without --resume")
    payload = read_payload(path)
    extra = payload.get("extra") if isinstance(payload, Mapping) else None
    if not isinstance(extra, Mapping) or "train_state" not in extra or "config" not in payload:
        raise TrainError(f"--resume: {path} is not a tdmi-train run checkpoint (no training state in it)")
    diff = _config_diff({**payload["config"], "name": None}, {**model_config.to_dict(), "name": None})
    if diff:
        raise TrainError(
            f"--resume: {run_dir} was trained with model config {payload['config'].get('name')!r}, "
            f"not {model_config.name!r} (differs in: {', '.join(diff)}); pass the run's --config"
        )
    stored = TrainConfig.from_dict(dict(extra["train_config"]))
    diff = _config_diff(stored.to_dict(), train.to_dict(), RESUMABLE_CHANGES)
    if diff:
        raise TrainError(
            f"--resume: {run_dir} was trained with other settings (differs in: {', '.join(diff)}); "
            "repeat the run's original options"
        )
    return dict(payload)


class _Log:
    """``log.jsonl`` of rank 0; a resumed run drops lines past its checkpoint so the curve stays one."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        lines: list[str] = []
        if resume_step is not None and path.is_file():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= resume_step:
                        lines.append(line)
        write_text_atomic(path, "".join(f"{x}\n" for x in lines))

    def write(self, record: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _progress(enabled: bool, total: int, done: int, name: str) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]train {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]} · {task.fields[speed]} clips/s · {task.fields[val]}"),
        TimeRemainingColumn(),
    )
    bar.start()
    return bar, bar.add_task("train", total=total, completed=done, loss="-", speed="-", val="")


def train(
    model_config: TDMIConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    *,
    init: str | Path | None = None,
    hrnet_weights: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    plot: bool = False,
    device: str | None = None,
    extra: Mapping[str, Any] | None = None,
    on_step: StepCallback | None = None,
    keep_checkpoints: bool = True,
) -> TrainResult:
    """Train TDMI; under torchrun every process calls this and DDP keeps them in step.

    ``stop_after`` ends the run (saving ``last.pt``) after that many total steps without changing the
    schedule, so the run can be continued bit-exactly with ``resume=True``. ``extra`` is stored in the
    checkpoints as is. ``on_step(step, record, model)`` runs on rank 0 after every step (library
    users: custom logging, snapshots). ``keep_checkpoints=False`` writes no ``last.pt`` / ``best.pt``
    (an in-memory run whose caller keeps the returned model; it cannot be resumed).
    """
    tc = train_config
    run = Path(run_dir)
    if init is not None and hrnet_weights is not None:
        raise TrainError("give --init (a TDMI checkpoint) or --hrnet-weights (a backbone), not both")
    info = D.setup(device)
    try:
        return _train(
            model_config,
            tc,
            run,
            info,
            init,
            hrnet_weights,
            resume,
            stop_after,
            progress,
            plot,
            extra,
            on_step,
            keep_checkpoints,
        )
    finally:
        D.teardown(info)


def _train(
    cfg: TDMIConfig,
    tc: TrainConfig,
    run: Path,
    info: D.DistInfo,
    init: str | Path | None,
    hrnet_weights: str | Path | None,
    resume: bool,
    stop_after: int | None,
    progress: bool,
    plot: bool,
    extra: Mapping[str, Any] | None,
    on_step: StepCallback | None,
    keep_checkpoints: bool,
) -> TrainResult:
    _check_run(tc, info, run, resume)
    payload = _read_last(run, cfg, tc) if resume else None
    # data first: a missing split or frame is reported before any model is built
    data = _Data.load(cfg, tc, info)
    total = tc.steps if tc.steps is not None else tc.epochs * data.spe
    end = min(total, stop_after) if stop_after is not None else total
    torch.manual_seed(tc.seed)
    model = _initial_model(cfg, init if payload is None else None, hrnet_weights if payload is None else None)
    t = _Trainer(model, cfg, tc, run, info, data, total, payload, extra, keep_checkpoints)
    bar = _Bar(progress and info.main, end, t.step, cfg.name)
    t.bar = bar
    try:
        while t.step < end:
            epoch, k0 = divmod(t.step, data.spe)
            data.dataset.set_epoch(epoch)
            data.sampler.set_epoch(epoch, k0)
            loader = DataLoader(
                data.dataset,
                batch_sampler=data.sampler,
                num_workers=tc.workers,
                pin_memory=info.device.type == "cuda",
            )
            t0 = time.perf_counter()
            for batch in loader:
                vals, lr = t.optimizer_step(batch)
                dt = time.perf_counter() - t0
                t0 = time.perf_counter()
                rec = t.record(vals, lr, dt, end)
                if on_step is not None and info.main:
                    on_step(t.step, rec, model)
                bar.update(completed=t.step, loss=f"{rec['total']:.3e}", speed=f"{rec['clips_per_s']:.1f}")
                t.checkpoint_due()
                if t.step >= end:
                    break
        if t.saved_at != t.step:
            t.save(run / LAST, True, t.last_metrics)
        D.barrier(info)
    finally:
        bar.stop()
    result = t.result
    result.last = run / LAST if keep_checkpoints else None
    if result.best is None and keep_checkpoints and (run / BEST).exists():
        result.best = run / BEST
    if plot and info.main:
        from tdmi.train.plot import plot_curves

        result.plot = plot_curves(run / LOG, run / PLOT)
    model.eval()
    return result


def _check_run(tc: TrainConfig, info: D.DistInfo, run: Path, resume: bool) -> None:
    """What this machine and run folder refuse, before any data or model is loaded."""
    if tc.amp and info.device.type != "cuda":
        raise TrainError("--amp (float16 mixed precision) needs a CUDA GPU; drop --amp on this machine")
    if tc.batch_size % (info.world * tc.grad_accum):
        raise TrainError(
            f"--batch-size {tc.batch_size} must be divisible by processes x --grad-accum "
            f"({info.world} x {tc.grad_accum})"
        )
    if run.exists() and not run.is_dir():
        raise TrainError(f"-o {run} is a file; pass a folder for the run")
    if not resume and (run / LAST).exists():
        raise TrainError(
            f"{run} already holds a run ({LAST}): pass --resume to continue it or choose another -o"
        )


@dataclass
class _Data:
    """The training clips, their step sampler and the validation split (PoseTrack, when validated)."""

    dataset: Any
    sampler: StepBatchSampler
    val_split: Any
    what: str  # the data as the checkpoints describe it

    @property
    def spe(self) -> int:
        return self.sampler.steps_per_epoch

    @classmethod
    def load(cls, cfg: TDMIConfig, tc: TrainConfig, info: D.DistInfo) -> _Data:
        val_split = None
        if tc.data == "synthetic":
            dataset: Any = SyntheticClips(cfg, tc.clips_pool, tc.seed, tc.fresh_clips)
            what = f"synthetic clips ({'fresh every epoch' if tc.fresh_clips else 'fixed pool'})"
        else:
            _, records = load_records(tc.data, tc.split, cfg.num_frames, tc.missing_frames)
            dataset = PoseTrackClips(records, cfg, tc, augment=True)
            if tc.val_every > 0:
                val_split, _ = load_records(tc.data, tc.val_split, cfg.num_frames, tc.missing_frames)
            what = f"PoseTrack {tc.split} ({len(records)} person clips)"
        sampler = StepBatchSampler(dataset, tc.batch_size, info.world, info.rank, tc.seed)
        return cls(dataset, sampler, val_split, what)


def _initial_model(cfg: TDMIConfig, init: str | Path | None, hrnet_weights: str | Path | None) -> TDMI:
    """A new model (seeded by the caller), from a TDMI checkpoint or canonical HRNet weights if given."""
    model = TDMI(cfg)
    if init is not None:
        try:
            model.load_state_dict(load_checkpoint(init, config=cfg).state_dict())
        except CheckpointError as e:
            raise TrainError(f"--init: {e}") from None
    if hrnet_weights is not None:
        try:
            load_hrnet_weights(model, hrnet_weights)
        except CheckpointError as e:
            raise TrainError(f"--hrnet-weights for preset {cfg.name!r}: {e}") from None
    # The backbone's own HRNet heatmap layer exists only to load canonical weights strictly; TDMI
    # predicts through its head, so the layer gets no gradient (and DDP rejects unused parameters).
    model.backbone.final_layer.requires_grad_(False)
    return model


class _Bar:
    """The rank-0 progress bar (a no-op when off)."""

    def __init__(self, enabled: bool, total: int, done: int, name: str) -> None:
        self.bar, self.task = _progress(enabled, total, done, name)

    def update(self, **fields: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, **fields)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Trainer:
    """One run's training state (model + estimator, optimiser, schedule, AMP scaler, step) and the
    three things done with it: an optimiser step, a validation, a checkpoint."""

    def __init__(
        self,
        model: TDMI,
        cfg: TDMIConfig,
        tc: TrainConfig,
        run: Path,
        info: D.DistInfo,
        data: _Data,
        total: int,
        payload: dict[str, Any] | None,
        extra: Mapping[str, Any] | None,
        keep_checkpoints: bool,
    ) -> None:
        dev = info.device
        self.model, self.cfg, self.tc, self.run, self.info, self.data = model, cfg, tc, run, info, data
        self.total, self.keep_checkpoints = total, keep_checkpoints
        self.module = module = TrainModule(model, tc).to(dev)
        self.optimizer = make_optimizer([p for p in module.parameters() if p.requires_grad], tc)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(tc, total))
        self.scaler = torch.amp.GradScaler("cuda", enabled=tc.amp)
        self.step, best = 0, None
        if payload is not None:
            best = self._restore(payload)
        self.net: nn.Module = module
        if info.world > 1:
            self.net = DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
        if info.main:
            run.mkdir(parents=True, exist_ok=True)
        self.log = _Log(run / LOG, info.main, self.step if payload is not None else None)
        self.result = TrainResult(
            run_dir=run, model=model, step=self.step, total_steps=total, best_metric=best
        )
        self.described = {
            "data": data.what,
            "world_size": info.world,
            "steps_per_epoch": data.spe,
            **dict(extra or {}),
        }
        self.micro = micro_batches(tc.batch_size // info.world, tc.grad_accum)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.last_metrics: dict[str, float] = {}
        self.saved_at = self.step if payload is not None else -1  # step of the last.pt on disk
        self.bar = _Bar(False, 0, 0, "")

    def _restore(self, payload: dict[str, Any]) -> float | None:
        """Continue from ``last.pt`` exactly: weights, estimator, optimiser, schedule, scaler, RNG, step."""
        state = payload["extra"]["train_state"]
        self.model.load_state_dict(payload["state_dict"])
        self.module.loss_fn.load_state_dict(state["estimator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step = int(payload["extra"]["step"])
        self.module.to(self.info.device)
        best: float | None = state.get("best_metric")
        return best

    def save(self, path: Path, with_state: bool, metrics: Mapping[str, float]) -> None:
        """A checkpoint (rank 0): weights, configs, metrics and, for ``last.pt``, the resume state."""
        if not (self.info.main and self.keep_checkpoints):
            return
        fields: dict[str, Any] = {
            "train_config": self.tc.to_dict(),
            "step": self.step,
            "epoch": self.step / self.data.spe,
            "total_steps": self.total,
            "metrics": dict(metrics),
            "trained_on": self.data.what,
            **self.described,
        }
        if with_state:
            fields["train_state"] = {
                "estimator": self.module.loss_fn.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "best_metric": self.result.best_metric,
            }
        save_checkpoint(self.model, path, extra=fields)

    def validate(self) -> None:
        """Score the model (PoseTrack mAP or synthetic PCK) on rank 0; keep ``best.pt`` when it improves."""
        result, run = self.result, self.run
        if self.info.main:
            dev = self.info.device
            if self.data.val_split is not None:
                m = posetrack_map(self.model, self.cfg, self.data.val_split, self.tc.missing_frames, dev)
                key = "val_map"
            else:
                m = synthetic_pck(self.model, self.cfg, n=self.tc.val_clips, device=dev)
                key = "pck"
            rec = {"step": self.step, "epoch": self.step / self.data.spe, **m}
            self.log.write({"kind": "val", **rec})
            result.val.append(rec)
            score = m[key]
            if not math.isnan(score) and (result.best_metric is None or score > result.best_metric):
                result.best_metric = score
                self.save(run / BEST, False, m)
                result.best = run / BEST if self.keep_checkpoints else None
            self.bar.update(val=f"{key} {score:.3g}")
        self.model.train()
        D.barrier(self.info)

    def optimizer_step(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, float]:
        """One optimiser step over the batch's micro-batches; the mean loss terms and the step's lr.

        A non-finite loss or non-finite weights stop the run before anything is saved.
        """
        tc, info, dev = self.tc, self.info, self.info.device
        frames, target, weight = (x.to(dev, non_blocking=True) for x in batch)
        self.module.train()
        if tc.freeze_bn_after is not None and self.step >= tc.freeze_bn_after:
            freeze_batchnorm(self.module)
        self.optimizer.zero_grad(set_to_none=True)
        sums = self._accumulate(frames, target, weight)
        vals = D.mean_across(sums, info).cpu()
        kept = f"{self.run / LAST} (step {self.saved_at})" if self.saved_at >= 0 else "none"
        if not bool(torch.isfinite(vals).all()):
            shown = ", ".join(f"{k} {float(v):.3g}" for k, v in zip(TERMS, vals, strict=True))
            raise TrainError(
                f"loss is not finite at step {self.step + 1} ({shown}); stopped without saving it. "
                f"Last good checkpoint: {kept}. Lower --lr, set --grad-clip or check the data"
            )
        if tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        # Non-finite weights would crash the next forward (torchvision's CPU deformable
        # convolution indexes memory with the offsets), so stop here with a clear line.
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise TrainError(
                f"weights are not finite after step {self.step} (loss {float(vals[0]):.3g}); stopped "
                f"without saving them. Last good checkpoint: {kept}. Lower --lr or set --grad-clip"
            )
        self.result.step = self.step
        return vals, lr

    def _accumulate(self, frames: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        """Forward and backward over the micro-batches (DDP syncs gradients on the last one only)."""
        tc, micro = self.tc, self.micro
        sums = torch.zeros(len(TERMS), device=self.info.device)
        try:
            for i, sl in enumerate(micro):
                last = self.net is self.module or i == len(micro) - 1
                sync = contextlib.nullcontext() if last else cast(DistributedDataParallel, self.net).no_sync()
                with sync:
                    amp = torch.autocast("cuda", dtype=torch.float16) if tc.amp else contextlib.nullcontext()
                    with amp:
                        terms = self.net(frames[sl], target[sl], weight[sl])
                    self.scaler.scale(terms["total"] / len(micro)).backward()
                sums += torch.stack([terms[k].detach().float() for k in TERMS]) / len(micro)
        except torch.cuda.OutOfMemoryError:
            per = tc.batch_size // self.info.world // tc.grad_accum
            raise TrainError(
                f"CUDA out of memory at step {self.step + 1} with {per} clips per micro-batch on "
                f"{self.info.device}: try --batch-size {max(1, tc.batch_size // 2)} or --grad-accum "
                f"{tc.grad_accum * 2}"
            ) from None
        return sums

    def record(self, vals: Tensor, lr: float, dt: float, end: int) -> dict[str, float]:
        """The step's line of the history (and of ``log.jsonl``, every ``log_every`` steps)."""
        self.last_metrics = {k: float(v) for k, v in zip(TERMS, vals, strict=True)}
        rec = {
            "step": self.step,
            "epoch": self.step / self.data.spe,
            **self.last_metrics,
            "lr": lr,
            "clips_per_s": self.tc.batch_size / dt,
        }
        self.result.history.append(rec)
        if self.tc.log_every and (self.step % self.tc.log_every == 0 or self.step == end):
            self.log.write({"kind": "train", **rec})
        return rec

    def checkpoint_due(self) -> None:
        """At an epoch end: validate (every ``val_every`` epochs) and save ``last.pt``; between, every
        ``save_every`` steps."""
        step, spe, tc = self.step, self.data.spe, self.tc
        if step % spe == 0:
            if tc.val_every and (step // spe) % tc.val_every == 0:
                self.validate()
        elif not (tc.save_every and step % tc.save_every == 0):
            return
        self.save(self.run / LAST, True, self.last_metrics)
        self.saved_at = step
