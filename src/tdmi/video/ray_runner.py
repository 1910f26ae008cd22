"""Videos over a Ray cluster: a pool of actors, each holding one loaded predictor (``tdmi-infer --ray``).

Videos are the unit of work; each actor runs one at a time and commits its outputs itself
(:func:`tdmi.video.batch.run_video_job`). An actor that dies (SIGKILL, OOM, a lost node) is
restarted by Ray (``max_restarts=-1``, predictor reloaded); its video is not retried inside Ray
(``max_task_retries=0``) but handed back to the scheduler, which gives it to the next free worker and
counts the death in ``run.json``. Ray is imported only here, when a run asks for it (extra ``[ray]``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tdmi.errors import ConfigError, TdmiError
from tdmi.video.batch import (
    Executor,
    LocalExecutor,
    Outcome,
    VideoJob,
    VideoOptions,
    error_line,
    run_video_job,
)

WAIT_S = 0.5  # ray.wait slice: short, so Ctrl-C is handled between slices
RESTART_TIMEOUT_S = 300.0  # a dead worker that Ray has not brought back by then ends the run


class VideoWorker:
    """A Ray actor body: loads the predictor once, then runs videos (not decorated: Ray stays optional)."""

    def __init__(self, factory: Callable[[], tuple[Any, Any]]) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the driver already showed the loader's warnings
            self.predictor, self.frame_predictor = factory()
        self.label = f"{socket.gethostname()}:{os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: VideoJob, out_dir: str, options: VideoOptions) -> dict[str, Any]:
        try:
            entry = run_video_job(job, out_dir, options, self.predictor, self.frame_predictor, self.label)
        except Exception as e:  # the video failed, the worker did not: report it as data
            return {"status": "failed", "error": error_line(e), "worker": self.label}
        return entry


# Ray's switch for its single-machine mode (named for Windows/macOS, where it is the default): with it
# off, a local cluster's servers bind 127.0.0.1 only instead of every interface. Read when Ray is
# imported, so it is set before the import when this run starts its own cluster.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def starts_local_cluster(address: str) -> bool:
    return address == "auto" and not os.environ.get("RAY_ADDRESS")


def _import_ray(local: bool) -> Any:
    if local:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'tdmi-deploy[ray]'") from None
    return ray


class RayExecutor:
    """Runs videos on ``workers`` Ray actors; connects to a cluster or starts a private local one.

    ``address``: ``"auto"`` uses ``RAY_ADDRESS`` when set and otherwise starts a local cluster on
    loopback sized for the pool (never joins some other user's cluster found under /tmp/ray); any
    other value is a cluster address (``host:port`` or ``ray://host:10001``). A cluster this
    executor started is stopped by :meth:`close`; one it joined (or one already initialised in this
    process, as in tests) is left running.
    """

    def __init__(
        self,
        factory: Callable[[], tuple[Any, Any]],
        out_dir: str | os.PathLike[str],
        options: VideoOptions,
        *,
        workers: int = 2,
        threads: int = 1,
        gpus_per_worker: float = 0.0,
        address: str = "auto",
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        if gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        ray = _import_ray(starts_local_cluster(address))
        self._ray = ray
        self.slots = workers
        self.out_dir = str(out_dir)
        self.options = options
        self._started = False
        self._running: dict[Any, tuple[Any, VideoJob]] = {}
        self._probes: dict[Any, tuple[Any, float]] = {}
        self._queue: deque[VideoJob] = deque()
        self.actors: list[Any] = []
        if not ray.is_initialized():
            self._init(address, workers * threads, runtime_env)
        try:
            self._check_fits(workers, threads, gpus_per_worker)
        except BaseException:
            self.close()
            raise
        actor_cls = ray.remote(VideoWorker).options(
            num_cpus=threads,
            num_gpus=gpus_per_worker,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=1,
        )
        self.actors = [actor_cls.remote(factory) for _ in range(workers)]
        self._idle: deque[Any] = deque()
        try:
            self.pids = self._wait_ready()
        except BaseException:
            self.close()
            raise
        self._idle.extend(self.actors)

    def _init(
        self,
        address: str,
        num_cpus: int,
        runtime_env: dict[str, Any] | None,
    ) -> None:
        ray = self._ray
        term = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit; keep ours
        common: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
            "runtime_env": runtime_env,
        }
        try:
            if starts_local_cluster(address):
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    _node_ip_address="127.0.0.1",
                    **common,
                )
            else:
                ray.init(address=None if address == "auto" else address, **common)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise TdmiError(f"cannot start or join the Ray cluster ({address}): {e}") from None
        finally:
            if term is not None and signal.getsignal(signal.SIGTERM) is not term:
                with contextlib.suppress(ValueError):  # not the main thread: Ray installed none either
                    signal.signal(signal.SIGTERM, term)
        self._started = True

    def _check_fits(self, workers: int, threads: int, gpus: float) -> None:
        """Refuse a pool the cluster cannot place (Ray would wait for it forever)."""
        fits = 0
        for node in self._ray.nodes():
            if not node.get("Alive", False):
                continue
            res = node.get("Resources", {})
            k = int(res.get("CPU", 0) // threads)
            if gpus > 0:
                k = min(k, int(res.get("GPU", 0) // gpus))
            fits += k
        if fits < workers:
            want = f"{threads} CPU" + (f" and {gpus:g} GPU" if gpus > 0 else "")
            total = self._ray.cluster_resources()
            raise ConfigError(
                f"the Ray cluster ({total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU) fits {fits} of "
                f"{workers} workers needing {want} each: lower --workers/--threads/--gpus-per-worker"
            )

    def _wait_ready(self) -> list[int]:
        """Every actor's pid, once its predictor is loaded; a loader error is the run's error."""
        ray = self._ray
        refs = [a.pid.remote() for a in self.actors]
        pending = list(refs)
        while pending:
            _done, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
        try:
            return [int(p) for p in ray.get(refs)]
        except ray.exceptions.RayActorError as e:
            cause = getattr(e, "__cause__", None) or e
            raise TdmiError(f"a Ray worker could not load the model: {error_line(cause)}") from None

    def submit(self, job: VideoJob) -> None:
        self._queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        """Queued videos to idle workers; a restarting worker gets none until its probe answers."""
        while self._queue and self._idle:
            actor, job = self._idle.pop(), self._queue.popleft()
            self._running[actor.run.remote(job, self.out_dir, self.options)] = (actor, job)

    def _probe(self, actor: Any, since: float) -> None:
        self._probes[actor.pid.remote()] = (actor, since)

    def next_outcome(self) -> Outcome:
        ray = self._ray
        while True:
            self._dispatch()
            ready, _ = ray.wait([*self._running, *self._probes], num_returns=1, timeout=WAIT_S)
            if not ready:
                continue
            ref = ready[0]
            if ref in self._probes:  # a restarted worker: back in the pool once it answers
                actor, since = self._probes.pop(ref)
                try:
                    self.pids.append(int(ray.get(ref)))
                    self._idle.appendleft(actor)
                except ray.exceptions.RayActorError:
                    if time.monotonic() - since > RESTART_TIMEOUT_S:
                        raise TdmiError(
                            f"a Ray worker did not come back within {RESTART_TIMEOUT_S:.0f} s of dying"
                        ) from None
                    time.sleep(WAIT_S)
                    self._probe(actor, since)
                continue
            actor, job = self._running.pop(ref)
            try:
                entry = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the worker died (SIGKILL, OOM, node lost)
                self._probe(actor, time.monotonic())  # Ray restarts it; it takes work once it answers
                return Outcome(job, error=f"worker died ({type(e).__name__})", worker_died=True)
            except ray.exceptions.RayError as e:
                self._idle.append(actor)
                return Outcome(job, error=error_line(e), worker="ray")
            self._idle.append(actor)
            if entry.get("status") == "failed":
                return Outcome(job, error=entry["error"], worker=entry.get("worker", ""))
            return Outcome(job, entry=entry, worker=entry.get("worker", ""))

    def close(self) -> None:
        ray = self._ray
        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a, no_restart=True)
        self._running.clear()
        self._probes.clear()
        self._queue.clear()
        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False


def make_executor(
    loader: Callable[..., tuple[Any, Any]],
    out_dir: Path,
    options: VideoOptions,
    ray: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    threads: int | None = None,
) -> tuple[Executor, str]:
    """Where the videos run, and its name for the progress line: this process with one predictor
    (``loader(threads=...)``), or ``workers`` Ray actors (``ray``: an address or 'auto'), each with
    its own predictor and one intra-op thread unless told otherwise."""
    if ray is None:
        return LocalExecutor(loader(threads=threads), out_dir, options), "this process"
    executor = RayExecutor(
        functools.partial(loader, threads=threads or 1),
        out_dir,
        options,
        workers=workers or 2,
        threads=threads or 1,
        gpus_per_worker=gpus_per_worker,
        address=ray,
    )
    return executor, f"{workers or 2} Ray worker(s)"
