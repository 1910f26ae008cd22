"""Load test of a Triton server serving TDMI, through tritonclient.

- a concurrency sweep (bounded by a request count and seconds per level): throughput, p50/p90/p99;
- every request accounted for: sent = answered + failed (an answer of the wrong shape, or with
  NaN/Inf, counts as failed), and nothing may be lost;
- answer parity with the local runtime on the same weights (heatmaps within ``tol`` abs);
- dynamic batching on (``tdmi``) vs off (``tdmi_nobatch``) at one concurrency, in paired rounds
  (alternating order), with the per-round throughput ratio and its spread, and the mean batch size
  the server executed (from its statistics API).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tdmi.errors import BackendUnavailableError, ConfigError, TdmiError
from tdmi.stats import percentiles

CONCURRENCY = (1, 2, 4, 8, 16)


@dataclass
class LoadTestOptions:
    url: str  # host:port of the HTTP (or, with protocol grpc, the gRPC) endpoint
    protocol: str = "http"
    model: str = "tdmi"
    nobatch_model: str | None = "tdmi_nobatch"
    concurrency: tuple[int, ...] = CONCURRENCY
    requests: int = 64  # at most this many requests per level
    seconds: float = 10.0  # and at most this long per level
    batch: int = 1  # clips per request
    compare_concurrency: int = 8
    compare_rounds: int = 3
    parity_requests: int = 4
    tol: float = 1e-4
    seed: int = 0


@dataclass
class LevelResult:
    model: str
    concurrency: int
    sent: int
    answered: int
    failed: int
    lost: int
    seconds: float
    throughput_rps: float  # answered requests per second
    clips_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: list[str] = field(default_factory=list)


@dataclass
class LoadTestReport:
    url: str
    protocol: str
    model: str
    input_shape: list[int]
    batch: int
    levels: list[LevelResult]
    parity: dict[str, Any]
    batching: dict[str, Any]
    totals: dict[str, int]
    environment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def all_levels(self) -> list[LevelResult]:
        """The sweep's levels, then the batching comparison's (on / off per round)."""
        return self.levels + _comparison_levels(self.batching)


def _comparison_levels(batching: dict[str, Any]) -> list[LevelResult]:
    if not batching.get("checked"):
        return []
    return [LevelResult(**v) for x in batching["rounds"] for v in x.values()]


def _client_module(protocol: str) -> Any:
    try:
        if protocol == "http":
            import tritonclient.http as mod
        elif protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            raise ConfigError(f"protocol must be http or grpc, got {protocol!r}")
    except ImportError:
        raise BackendUnavailableError(
            "the load test needs tritonclient: pip install 'tdmi-deploy[serve]' and "
            "pip install --no-deps tritonclient==2.73.0"
        ) from None
    return mod


def normalise_url(url: str) -> str:
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/")


class Client:
    """One connection (tritonclient clients are not shared between threads)."""

    def __init__(self, url: str, protocol: str, model: str) -> None:
        self.mod = _client_module(protocol)
        self.protocol = protocol
        self.model = model
        try:
            self.client = self.mod.InferenceServerClient(url)
        except Exception as e:  # tritonclient raises its own and socket errors
            raise TdmiError(f"cannot reach Triton at {url}: {e}") from None

    def io(self) -> tuple[str, list[int], str, str]:
        """Input name, per-item dims, datatype and output name of the model, from the server."""
        try:
            if self.protocol == "grpc":
                meta = self.client.get_model_metadata(self.model, as_json=True)
                cfg = self.client.get_model_config(self.model, as_json=True)["config"]
            else:
                meta = self.client.get_model_metadata(self.model)
                cfg = self.client.get_model_config(self.model)
        except Exception as e:
            raise TdmiError(f"model {self.model!r} is not served at this address: {e}") from None
        inp, out = meta["inputs"][0], meta["outputs"][0]
        dims = [int(d) for d in inp["shape"]]
        if int(cfg.get("max_batch_size", 0)) > 0:
            dims = dims[1:]
        return inp["name"], dims, inp["datatype"], out["name"]

    def infer(self, name: str, x: np.ndarray, datatype: str, out: str) -> np.ndarray:
        i = self.mod.InferInput(name, list(x.shape), datatype)
        i.set_data_from_numpy(x)
        return self.client.infer(self.model, [i]).as_numpy(out)

    def stats(self) -> tuple[int, int]:
        """(inference_count, execution_count) of the model so far: their ratio is the mean batch."""
        if self.protocol == "grpc":
            s = self.client.get_inference_statistics(self.model, as_json=True)["model_stats"][0]
        else:
            s = self.client.get_inference_statistics(self.model)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    def close(self) -> None:
        self.client.close()


def _percentiles(lat: list[float]) -> tuple[float, float, float]:
    """p50 / p90 / p99 in milliseconds (NaN without answers), by the package's one percentile."""
    if not lat:
        return float("nan"), float("nan"), float("nan")
    p50, p90, p99 = percentiles([s * 1e3 for s in lat], (50, 90, 99))
    return p50, p90, p99


def run_level(
    opts: LoadTestOptions,
    model: str,
    concurrency: int,
    payload: np.ndarray,
    io: tuple[str, list[int], str, str],
    expect: tuple[int, ...],
    on_answer: Callable[[], None] | None = None,
) -> LevelResult:
    """``concurrency`` closed-loop clients until ``opts.requests`` are sent or ``opts.seconds`` pass."""
    name, _, datatype, out = io
    lock = threading.Lock()
    counts = {"sent": 0, "answered": 0, "failed": 0}
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + opts.seconds

    def worker() -> None:
        client = Client(opts.url, opts.protocol, model)
        try:
            while True:
                with lock:
                    if counts["sent"] >= opts.requests or time.perf_counter() >= deadline:
                        return
                    counts["sent"] += 1
                t0 = time.perf_counter()
                try:
                    y = client.infer(name, payload, datatype, out)
                    ok = y is not None and tuple(y.shape) == expect and bool(np.isfinite(y).all())
                    why = "" if ok else f"answer of shape {None if y is None else y.shape}, expected {expect}"
                except Exception as e:
                    ok, why = False, str(e).splitlines()[0][:200]
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        counts["answered"] += 1
                        latencies.append(dt)
                    else:
                        counts["failed"] += 1
                        if len(errors) < 5:
                            errors.append(why)
                if on_answer is not None:
                    on_answer()
        finally:
            client.close()

    t_start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    p50, p90, p99 = _percentiles(latencies)
    answered = counts["answered"]
    return LevelResult(
        model=model,
        concurrency=concurrency,
        sent=counts["sent"],
        answered=answered,
        failed=counts["failed"],
        lost=counts["sent"] - answered - counts["failed"],
        seconds=round(wall, 3),
        throughput_rps=answered / wall if wall > 0 else 0.0,
        clips_per_s=answered * payload.shape[0] / wall if wall > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        errors=errors,
    )


def check_parity(
    opts: LoadTestOptions, reference: Any, io: tuple[str, list[int], str, str]
) -> dict[str, Any]:
    """Served heatmaps vs ``reference.predict`` (a local ``tdmi.runtime`` predictor) on the same clips."""
    name, dims, datatype, out = io
    if opts.parity_requests <= 0:  # a comparison of nothing is not a pass
        return {"checked": False, "note": "0 parity requests asked: nothing compared"}
    rng = np.random.default_rng(opts.seed + 1)
    client = Client(opts.url, opts.protocol, opts.model)
    worst = 0.0
    try:
        for _ in range(opts.parity_requests):
            x = rng.standard_normal((opts.batch, *dims)).astype(np.float32)
            served = client.infer(name, x, datatype, out)
            local = np.asarray(reference.predict(x))
            if served is None or served.shape != local.shape:
                return {
                    "checked": True,
                    "ok": False,
                    "requests": opts.parity_requests,
                    "max_abs": None,
                    "tol": opts.tol,
                    "note": f"served shape {None if served is None else served.shape}, local {local.shape}",
                }
            worst = max(worst, float(np.abs(served.astype(np.float32) - local).max()))
    finally:
        client.close()
    return {
        "checked": True,
        "ok": worst <= opts.tol,
        "requests": opts.parity_requests,
        "max_abs": worst,
        "tol": opts.tol,
        "reference": f"{reference.backend} {getattr(reference, 'source', '')}",
    }


def _first_answer(
    opts: LoadTestOptions,
) -> tuple[tuple[str, list[int], str, str], np.ndarray, tuple[int, ...]]:
    """(the model's input / output names and shape, the payload, the answer's shape): one warm-up request."""
    probe = Client(opts.url, opts.protocol, opts.model)
    try:
        io = probe.io()
    finally:
        probe.close()
    name, dims, datatype, out = io
    if datatype != "FP32":
        raise ConfigError(f"model {opts.model!r} takes {datatype}; the load test drives FP32 heatmap models")
    payload = np.random.default_rng(opts.seed).standard_normal((opts.batch, *dims)).astype(np.float32)
    expect_client = Client(opts.url, opts.protocol, opts.model)
    try:
        first = expect_client.infer(name, payload, datatype, out)  # warm-up, and the answer's shape
    except Exception as e:
        raise TdmiError(f"the first request to {opts.model!r} failed: {str(e).splitlines()[0]}") from None
    finally:
        expect_client.close()
    if first is None or first.size == 0:
        raise TdmiError(f"{opts.model!r} answered with an empty {out!r} tensor: the server is broken")
    return io, payload, tuple(first.shape)


def _compare_batching(
    opts: LoadTestOptions,
    payload: np.ndarray,
    io: tuple[str, list[int], str, str],
    expect: tuple[int, ...],
    show: Callable[[str], None],
    tick: Callable[[], None],
) -> dict[str, Any]:
    """Dynamic batching on vs off in paired rounds (alternating order), with the executed batch sizes."""
    assert opts.nobatch_model is not None
    nb = Client(opts.url, opts.protocol, opts.nobatch_model)
    try:
        nb_io = nb.io()
        nb.infer(nb_io[0], payload, nb_io[2], nb_io[3])  # warm-up
    finally:
        nb.close()
    stats_on, stats_off = (
        Client(opts.url, opts.protocol, opts.model),
        Client(opts.url, opts.protocol, opts.nobatch_model),
    )
    before = {"on": stats_on.stats(), "off": stats_off.stats()}
    rounds = []
    for r in range(opts.compare_rounds):
        order = [("on", opts.model), ("off", opts.nobatch_model)]
        if r % 2:
            order.reverse()
        res = {}
        for key, model in order:
            show(f"batching {key} x{opts.compare_concurrency} round {r + 1}")
            level_io = nb_io if key == "off" else io
            res[key] = run_level(opts, model, opts.compare_concurrency, payload, level_io, expect, tick)
        rounds.append(res)
    after = {"on": stats_on.stats(), "off": stats_off.stats()}
    stats_on.close()
    stats_off.close()
    ratios = [x["on"].throughput_rps / x["off"].throughput_rps for x in rounds if x["off"].throughput_rps > 0]

    def mean_batch(k: str) -> float | None:
        inf = after[k][0] - before[k][0]
        exe = after[k][1] - before[k][1]
        return round(inf / exe, 2) if exe else None

    return {
        "checked": True,
        "concurrency": opts.compare_concurrency,
        "rounds": [{k: asdict(v) for k, v in x.items()} for x in rounds],
        "throughput_on_rps": [x["on"].throughput_rps for x in rounds],
        "throughput_off_rps": [x["off"].throughput_rps for x in rounds],
        "ratio_median": float(np.median(ratios)) if ratios else None,
        "ratio_min": float(min(ratios)) if ratios else None,
        "ratio_max": float(max(ratios)) if ratios else None,
        "mean_batch_on": mean_batch("on"),
        "mean_batch_off": mean_batch("off"),
    }


def run_load_test(
    opts: LoadTestOptions, reference: Any | None = None, progress: bool = True
) -> LoadTestReport:
    """The sweep, parity and batching comparison against a running server."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    opts.url = normalise_url(opts.url)
    if not opts.concurrency or min(opts.concurrency) < 1:
        raise ConfigError(f"concurrency levels must be positive, got {opts.concurrency}")
    if opts.requests < 1 or opts.seconds <= 0 or opts.batch < 1:
        raise ConfigError("requests per level, seconds per level and batch must be positive")
    io, payload, expect = _first_answer(opts)
    compare = opts.nobatch_model is not None and opts.compare_rounds > 0
    total = len(opts.concurrency) * opts.requests + (
        2 * opts.compare_rounds * opts.requests if compare else 0
    )
    levels: list[LevelResult] = []
    batching: dict[str, Any] = {"checked": False}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("load test", total=total)

        def tick() -> None:
            bar.advance(task)

        def show(description: str) -> None:
            bar.update(task, description=description)

        for c in opts.concurrency:
            show(f"{opts.model} x{c}")
            levels.append(run_level(opts, opts.model, c, payload, io, expect, tick))
        if compare:
            batching = _compare_batching(opts, payload, io, expect, show, tick)
    parity = (
        check_parity(opts, reference, io)
        if reference is not None
        else {"checked": False, "note": "no local model given (--model FILE, or --config/--checkpoint)"}
    )
    all_levels = levels + _comparison_levels(batching)
    totals = {
        key: sum(getattr(lv, key) for lv in all_levels) for key in ("sent", "answered", "failed", "lost")
    }
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    env = {"cpus": os.cpu_count(), "loadavg_1m_end": round(load[0], 2) if load else None}
    return LoadTestReport(
        opts.url, opts.protocol, opts.model, io[1], opts.batch, levels, parity, batching, totals, env
    )


def render(report: LoadTestReport, console: Any) -> None:
    from rich.table import Table

    t = Table(
        title=f"Triton load test: {report.model} at {report.url} "
        f"({report.protocol}, {report.batch} clip/request)"
    )
    for col in (
        "model",
        "conc.",
        "sent",
        "answered",
        "failed",
        "req/s",
        "clips/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    rows = report.all_levels()
    for lv in rows:
        t.add_row(
            lv.model,
            str(lv.concurrency),
            str(lv.sent),
            str(lv.answered),
            str(lv.failed),
            f"{lv.throughput_rps:.1f}",
            f"{lv.clips_per_s:.1f}",
            f"{lv.p50_ms:.1f}",
            f"{lv.p90_ms:.1f}",
            f"{lv.p99_ms:.1f}",
        )
    console.print(t)
    for line in summary_lines(report, rows):
        console.print(line, highlight=False, markup=False)


def summary_lines(report: LoadTestReport, rows: list[LevelResult]) -> list[str]:
    """The lines under the table: request accounting, batching on/off, parity, each error."""
    tot, b, p = report.totals, report.batching, report.parity
    counts = f"{tot['sent']} sent, {tot['answered']} answered, {tot['failed']} failed, {tot['lost']} lost"
    lines = [f"requests: {counts}"]
    if b.get("checked"):
        lines.append(
            f"dynamic batching on/off at concurrency {b['concurrency']}: throughput ratio median "
            f"{b['ratio_median']:.2f} (rounds {b['ratio_min']:.2f}..{b['ratio_max']:.2f}); "
            f"mean executed batch {b['mean_batch_on']} on, {b['mean_batch_off']} off"
        )
    if p.get("checked"):
        lines.append(
            f"parity with the local runtime: max abs {p['max_abs']:.3g} over {p['requests']} requests "
            f"(tol {p['tol']:g}): {'ok' if p['ok'] else 'FAILED'}"
        )
    else:
        lines.append(f"parity not checked: {p.get('note', '')}")
    lines += [f"error ({lv.model} x{lv.concurrency}): {e}" for lv in rows for e in lv.errors]
    return lines
