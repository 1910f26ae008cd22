"""Which INT8 recipe keeps the keypoints: per-region sensitivity and the search under a PCK budget.

Every candidate graph is scored the way users read it: PCK@0.05 against the ground truth of
held-out synthetic clips, as a drop in points against the FP32 graph on the same clips (paired
bootstrap interval), and, for the ONNX Runtime target, its speed-up over the FP32 graph measured
in paired rounds (FP32 and candidate alternating, the median ratio and its spread reported).

``sensitivity`` quantizes one region at a time (everything else FP32) and ranks regions by PCK
loss and latency gain. ``search`` starts from everything quantized with the best calibration, then
keeps the most harmful regions FP32 one by one until the drop fits ``max_drop``; among the recipes
that fit, the fastest wins. The TensorRT-targeted graph is searched the same way for accuracy only
(its speed on ORT CPU says nothing about TensorRT). The OpenVINO target builds NNCF INT8 IRs (regions
kept in higher precision through NNCF's ignored scope) and scores and times them on OpenVINO
against the FP32 graph on OpenVINO at FP32.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx

from tdmi.artifacts.onnx_meta import Granularity, Int8Target
from tdmi.errors import ExportError
from tdmi.eval.metrics import task_scores
from tdmi.eval.synthetic import SyntheticSet, predict_keypoints
from tdmi.export.calibration import CalibrationSet
from tdmi.export.export_spec import DEFAULT_MIN_SPEEDUP, ExportSpec, int8_recipe
from tdmi.export.int8_recipes import (
    QUANTIZED_OPS,
    TARGET_CALIBRATIONS,
    ActivationStats,
    Int8Recipe,
    collect_stats,
    quantizable_regions,
)
from tdmi.export.ort_ops import make_session, static_batch

DEFAULT_MAX_DROP = 0.5  # PCK points
TIMING_ROUNDS = 5

Log = Callable[[str], None]


@dataclass
class CandidateResult:
    """One recipe, scored: task accuracy against the truth, drop and speed-up against FP32."""

    label: str
    recipe: dict[str, Any]
    pck: float  # percent
    drop_pck: float  # points, FP32 minus this
    drop_pck_ci: tuple[float, float]
    oks_ap: float
    drop_oks_ap: float
    failed_clips: int
    speedup: float | None = None  # median of paired per-round ratios FP32 / candidate (ORT only)
    speedup_spread: tuple[float, float] | None = None  # min, max of the per-round ratios
    meets_budget: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SensitivityRow:
    region: str
    nodes: int
    drop_pck: float  # points lost when only this region is quantized
    speedup: float | None  # over FP32, only this region quantized
    result: CandidateResult | None = None


@dataclass
class SearchResult:
    target: str
    max_drop: float
    fp32_pck: float
    chosen: CandidateResult | None
    candidates: list[CandidateResult] = field(default_factory=list)
    sensitivity: list[SensitivityRow] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed_target(target: str) -> bool:
    """Whether candidates are timed: on ORT and OpenVINO the CPU that scores them also runs them."""
    return target in ("onnxruntime", "openvino")


def candidate_suffix(target: str) -> str:
    return ".xml" if target == "openvino" else ".onnx"


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    if path.suffix == ".xml":
        path.with_suffix(".bin").unlink(missing_ok=True)


class _Evaluator:
    """Scores graphs on one held-out set against the FP32 graph's predictions (computed once).

    ``engine`` runs them: ONNX Runtime, or OpenVINO (the FP32 reference then at inference
    precision f32, the INT8 IRs at the CPU's default for their unquantized layers).
    """

    def __init__(
        self,
        fp32: onnx.ModelProto,
        data: SyntheticSet,
        timing_rounds: int,
        threads: int | None,
        engine: str = "onnxruntime",
        fp32_path: Path | None = None,
    ) -> None:
        self.data = data
        self.batch = static_batch(fp32) or 1
        self.threads = threads
        self.rounds = timing_rounds
        self.engine = engine
        if engine == "openvino":
            if fp32_path is None:
                raise ExportError("the OpenVINO evaluator needs the FP32 graph's path")
            self.fp32_session = self._ov(fp32_path, "f32")
        else:
            self.fp32_session = self._session(fp32)
        self.fp32_preds = predict_keypoints(self._runner(self.fp32_session), data, self.batch)[:2]

    def _ov(self, path: Path, precision: str | None) -> Any:
        from tdmi.runtime.openvino_backend import OpenVINOPredictor

        return OpenVINOPredictor(path, threads=self.threads, inference_precision=precision)

    def _session(self, model: onnx.ModelProto | Path) -> Any:
        if self.engine == "openvino":
            assert isinstance(model, Path)
            return self._ov(model, None)
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        return make_session(proto, threads=self.threads)

    def _runner(self, sess: Any) -> Callable[[np.ndarray], np.ndarray]:
        if self.engine == "openvino":
            return lambda clips: sess.predict(np.ascontiguousarray(clips, dtype=np.float32))
        name = sess.get_inputs()[0].name
        return lambda clips: sess.run(None, {name: clips})[0]

    def fp32_pck(self) -> float:
        s = task_scores({"fp32": self.fp32_preds}, self.data.keypoints, self.data.visible, self.data.boxes)
        return 100.0 * s["fp32"].pck

    def score(self, path: Path, recipe: Int8Recipe, timed: bool) -> CandidateResult:
        sess = self._session(path)
        kp, sc, _ = predict_keypoints(self._runner(sess), self.data, self.batch)
        s = task_scores(
            {"fp32": self.fp32_preds, "int8": (kp, sc)},
            self.data.keypoints,
            self.data.visible,
            self.data.boxes,
            reference="fp32",
        )["int8"]
        assert s.drop_pck is not None and s.drop_pck_ci is not None and s.drop_oks_ap is not None
        result = CandidateResult(
            label=recipe.label(),
            recipe=recipe.to_dict(),
            pck=100.0 * s.pck,
            drop_pck=s.drop_pck,
            drop_pck_ci=s.drop_pck_ci,
            oks_ap=100.0 * s.oks_ap,
            drop_oks_ap=s.drop_oks_ap,
            failed_clips=s.failed_clips,
        )
        if timed:
            result.speedup, result.speedup_spread = self.paired_speedup(sess)
        return result

    def paired_speedup(self, sess: Any) -> tuple[float, tuple[float, float]]:
        """FP32 and candidate alternate on the same clip each round; the ratio is taken per round."""
        clip = np.ascontiguousarray(self.data.clips[: self.batch])
        runs = [self._runner(self.fp32_session), self._runner(sess)]
        for run in runs:  # warm-up
            run(clip)
        ratios = []
        for i in range(self.rounds):
            times = [0.0, 0.0]
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                t0 = time.perf_counter()
                runs[k](clip)
                times[k] = time.perf_counter() - t0
            ratios.append(times[0] / max(times[1], 1e-9))
        return float(np.median(ratios)), (float(min(ratios)), float(max(ratios)))


def _build(
    fp32_path: Path,
    out: Path,
    calib: CalibrationSet,
    recipe: Int8Recipe,
    stats: ActivationStats | None,
) -> None:
    if recipe.target == "openvino":
        from tdmi.export.openvino_export import write_ir

        write_ir(fp32_path, out, "int8", calib=calib, recipe=recipe, check=False)
        return
    from tdmi.export.precision import quantize_int8

    target = cast("Int8Target", recipe.target)  # Int8Recipe checks its target
    quantize_int8(fp32_path, out, calib, target=target, recipe=recipe, stats=stats, progress=False)


def sensitivity(
    fp32_path: Path | str,
    calib: CalibrationSet,
    data: SyntheticSet,
    base: Int8Recipe,
    *,
    granularity: Granularity = "block",
    timing_rounds: int = TIMING_ROUNDS,
    threads: int | None = None,
    log: Log | None = None,
    _state: dict[str, Any] | None = None,
) -> list[SensitivityRow]:
    """Quantize one region at a time (the rest FP32) with ``base``'s calibration; rank by PCK loss.

    Rows come sorted by drop (largest first), then by speed-up (largest first).
    """
    say = log or (lambda _m: None)
    fp32_path = Path(fp32_path)
    model = onnx.load(str(fp32_path))
    regions = quantizable_regions(model, granularity, base.op_types or ("Conv", "Gemm", "MatMul"))
    if not regions:
        raise ExportError(f"{fp32_path} has no quantizable regions (no scoped Conv/Gemm/MatMul nodes)")
    state = _state if _state is not None else {}
    ev = state.get("evaluator") or _Evaluator(model, data, timing_rounds, threads, base.target, fp32_path)
    stats = state.get("stats")
    if stats is None and base.target == "onnxruntime":
        stats = collect_stats(model, calib.clips, static_batch(model) or 1)
    state.update(evaluator=ev, stats=stats)
    timed = timed_target(base.target)
    rows: list[SensitivityRow] = []
    with tempfile.TemporaryDirectory(prefix="tdmi-int8-sens-") as tmp:
        for i, (region, nodes) in enumerate(regions.items()):
            others = tuple(r for r in regions if r != region)
            recipe = dataclasses.replace(base, fp32_regions=others)
            out = Path(tmp, f"r{i}{candidate_suffix(base.target)}")
            _build(fp32_path, out, calib, recipe, stats)
            res = ev.score(out, recipe, timed)
            res.label = f"only {region} INT8 ({base.calibration})"
            rows.append(SensitivityRow(region, len(nodes), res.drop_pck, res.speedup, res))
            say(f"{region}: {len(nodes)} nodes, PCK drop {res.drop_pck:+.2f} pts, speed-up {_x(res.speedup)}")
            _remove(out)
    rows.sort(key=lambda r: (-r.drop_pck, -(r.speedup or 0.0)))
    return rows


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def search(
    fp32_path: Path | str,
    calib: CalibrationSet,
    data: SyntheticSet,
    *,
    target: str = "onnxruntime",
    max_drop: float = DEFAULT_MAX_DROP,
    calibrations: Sequence[str] | None = None,
    granularity: Granularity = "block",
    timing_rounds: int = TIMING_ROUNDS,
    threads: int | None = None,
    log: Log | None = None,
    known_sensitivity: list[SensitivityRow] | None = None,
    min_speedup: float = DEFAULT_MIN_SPEEDUP,
    op_types: Sequence[str] | None = None,
) -> SearchResult:
    """The smallest set of FP32 regions (and the calibration) that keeps the PCK drop within ``max_drop``.

    1. every calibration method with everything quantized; the one with the least drop is kept;
    2. if it misses the budget: per-region sensitivity, then regions kept FP32 one at a time in
       order of harm until the drop fits (each step measured, not predicted);
    3. for ONNX Runtime, per-tensor weights and A16W8 activations are tried on the best point too,
       and the shipped default recipe is always measured beside them (the incumbent to beat).
    Among the measured recipes that fit the budget the fastest wins (ORT), provided it runs at
    least ``min_speedup`` times as fast as FP32 (A16W8 fits budgets easily but has no fast CPU
    kernels); for TensorRT, the one with the fewest FP32 regions, then the one quantizing the most
    op types. ``known_sensitivity`` reuses rows already measured with the same calibration method
    and op types instead of measuring them again.

    ``op_types`` fixes the op types to quantize. Left ``None`` for TensorRT, ModelOpt's own choice
    (convolutions plus residual adds, pooling, resize, concat) comes first and, when it misses the
    budget, convolutions only (ORT's set) are measured too: the non-convolution Q/DQ pairs sit on
    the HRNet fuse sums, whose ranges are the widest in the network, so they are the first
    suspects; which base wins is measured, then regions are kept FP32 on top of it.
    """
    if max_drop < 0:
        raise ExportError(f"--max-drop must be 0 or more PCK points, got {max_drop}")
    if min_speedup < 0:
        raise ExportError(f"--min-speedup must be 0 or more, got {min_speedup}")
    say = log or (lambda _m: None)
    fp32_path = Path(fp32_path)
    model = onnx.load(str(fp32_path))
    ort = target == "onnxruntime"
    timed = timed_target(target)
    if target not in TARGET_CALIBRATIONS:
        raise ExportError(f"unknown INT8 target {target!r}: use {', '.join(TARGET_CALIBRATIONS)}")
    methods = list(calibrations or TARGET_CALIBRATIONS[target])
    ev = _Evaluator(model, data, timing_rounds, threads, target, fp32_path)
    stats = collect_stats(model, calib.clips, static_batch(model) or 1) if ort else None
    state: dict[str, Any] = {"evaluator": ev, "stats": stats}
    result = SearchResult(target=target, max_drop=max_drop, fp32_pck=ev.fp32_pck(), chosen=None)
    result.data = data.describe() | {"calibration": calib.describe()}

    with tempfile.TemporaryDirectory(prefix="tdmi-int8-search-") as tmp:
        counter = iter(range(10_000))

        def measure(recipe: Int8Recipe) -> CandidateResult:
            out = Path(tmp, f"c{next(counter)}{candidate_suffix(target)}")
            _build(fp32_path, out, calib, recipe, stats)
            res = ev.score(out, recipe, timed=timed)
            _remove(out)
            res.meets_budget = res.drop_pck <= max_drop
            result.candidates.append(res)
            say(f"{res.label}: PCK {res.pck:.2f} (drop {res.drop_pck:+.2f} pts), speed-up {_x(res.speedup)}")
            return res

        base_kw: dict[str, Any] = {"target": target, "fp32_regions": ()}
        if op_types is not None:
            base_kw["op_types"] = tuple(op_types)
        elif not ort:
            base_kw["op_types"] = ()  # ModelOpt's / NNCF's default op types
        if ort:
            measure(int8_recipe("onnxruntime"))
        scored = [(measure(Int8Recipe(calibration=m, **base_kw)), m) for m in methods]
        best_res, best_method = min(scored, key=lambda t: (t[0].drop_pck, -(t[0].speedup or 0.0)))
        base = Int8Recipe(calibration=best_method, **base_kw)
        current, current_res = base, best_res
        if not ort and op_types is None and current_res.drop_pck > max_drop:
            convs = dataclasses.replace(base, op_types=QUANTIZED_OPS)
            convs_res = measure(convs)
            if convs_res.drop_pck < current_res.drop_pck:
                base, current, current_res = convs, convs, convs_res
        if current_res.drop_pck > max_drop:
            result.sensitivity = _sensitivity_rows(
                fp32_path, calib, data, base, granularity, say, state, known_sensitivity
            )
            current, current_res = _keep_regions(
                result.sensitivity, base, current, current_res, max_drop, measure
            )
        if timed:
            measure(dataclasses.replace(current, per_channel=False))
            if ort and current_res.drop_pck > max_drop:
                measure(dataclasses.replace(current, activations="int16"))
    _choose(result, max_drop, min_speedup, timed)
    return result


def _choose(result: SearchResult, max_drop: float, min_speedup: float, timed: bool) -> None:
    """Among the measured recipes that fit the budget: the fastest (timed), else the fewest FP32
    regions, then the fewest op types; without one, ``result.note`` says what came closest."""
    fitting = [c for c in result.candidates if c.meets_budget]
    fast = [c for c in fitting if (c.speedup or 0.0) >= min_speedup] if timed else fitting
    if fast:
        if timed:
            result.chosen = max(fast, key=lambda c: (c.speedup or 0.0, -c.drop_pck))
        else:
            result.chosen = min(
                fast,
                key=lambda c: (len(c.recipe["fp32_regions"]), bool(c.recipe["op_types"]), c.drop_pck),
            )
    elif fitting:
        best = max(fitting, key=lambda c: c.speedup or 0.0)
        result.note = (
            f"recipes keep the PCK drop within {max_drop} points, but none runs at {min_speedup:g}x "
            f"FP32 or faster; the fastest of them reached {_x(best.speedup)} ({best.label})"
        )
    else:
        best = min(result.candidates, key=lambda c: c.drop_pck)
        result.note = (
            f"no recipe tried keeps the PCK drop within {max_drop} points; the best reached "
            f"{best.drop_pck:+.2f} points ({best.label})"
        )


def _sensitivity_rows(
    fp32_path: Path,
    calib: CalibrationSet,
    data: SyntheticSet,
    base: Int8Recipe,
    granularity: Granularity,
    say: Log,
    state: dict[str, Any],
    known: list[SensitivityRow] | None,
) -> list[SensitivityRow]:
    """Per-region sensitivity of ``base``: ``known`` rows when measured with its calibration and ops."""
    reuse = known and all(
        r.result is not None
        and r.result.recipe.get("calibration") == base.calibration
        and tuple(r.result.recipe.get("op_types", ())) == base.op_types
        for r in known
    )
    if reuse:
        return list(known or [])
    return sensitivity(fp32_path, calib, data, base, granularity=granularity, log=say, _state=state)


def _keep_regions(
    rows: list[SensitivityRow],
    base: Int8Recipe,
    current: Int8Recipe,
    current_res: CandidateResult,
    max_drop: float,
    measure: Callable[[Int8Recipe], CandidateResult],
) -> tuple[Int8Recipe, CandidateResult]:
    """Keep regions FP32 one at a time, in order of harm, until the measured drop fits the budget."""
    kept: list[str] = []
    for row in rows:
        if row.drop_pck <= 0 and kept:
            break  # the rest cost nothing when quantized alone
        kept.append(row.region)
        current = dataclasses.replace(base, fp32_regions=tuple(kept))
        current_res = measure(current)
        if current_res.drop_pck <= max_drop:
            break
    return current, current_res


def search_within_budget(
    spec: ExportSpec, fp32_path: Path, calib: CalibrationSet, config: Any, log: Log | None, keep: str
) -> tuple[SearchResult, Int8Recipe]:
    """``--max-drop``: the searched recipe for ``spec`` (an INT8 spec), scored on held-out synthetic
    clips. A budget no recipe meets is an error and nothing is written (the message names the best
    point; ``keep`` names the precisions left to the user)."""
    from tdmi.eval.synthetic import synthetic_set

    assert spec.max_drop is not None and spec.resolved_target is not None
    found = search(
        fp32_path,
        calib,
        synthetic_set(config, spec.eval_clips),
        target=spec.resolved_target,
        max_drop=spec.max_drop,
        calibrations=None if spec.calib_method == "auto" else [spec.calib_method],
        log=log,
        min_speedup=spec.resolved_min_speedup,
        op_types=spec.op_types,
    )
    if found.chosen is None:
        raise ExportError(f"{found.note}: nothing written; raise --max-drop or keep {keep}")
    return found, Int8Recipe.from_dict(found.chosen.recipe)


@dataclass
class SensitivityStudy:
    """``tdmi-export int8-sensitivity``: the per-region rows of one base recipe, and what made them."""

    src: Path
    target: str
    base: Int8Recipe
    op_types: tuple[str, ...] | None
    calib: CalibrationSet
    data: SyntheticSet
    rows: list[SensitivityRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.src),
            "target": self.target,
            "recipe": self.base.to_dict(),
            "data": self.data.describe() | {"calibration": self.calib.describe()},
            "sensitivity": [
                {
                    "region": r.region,
                    "nodes": r.nodes,
                    "drop_pck": r.drop_pck,
                    "speedup": r.speedup,
                    "result": r.result.to_dict() if r.result else None,
                }
                for r in self.rows
            ],
        }


def sensitivity_study(
    src: Path,
    target: Int8Target,
    calib: Path | None,
    calib_clips: int,
    method: str,
    op_types: tuple[str, ...] | None,
    eval_clips: int,
    *,
    granularity: Granularity = "block",
    rounds: int = TIMING_ROUNDS,
    log: Log | None = None,
) -> SensitivityStudy:
    """Quantize one region of the FP32 graph ``src`` at a time (the target's recipe, nothing kept FP32)."""
    from tdmi.eval.synthetic import synthetic_set
    from tdmi.export.calibration import load_calibration
    from tdmi.export.metadata import load_onnx_checked, read_metadata

    meta = read_metadata(load_onnx_checked(src))
    if meta["precision"] != "fp32" or meta["fused"]:
        raise ExportError(f"{src} is {meta['variant']}: give the unfused FP32 export")
    config = meta["config"]
    if target == "openvino" and config.deform_conv != "decomposed":
        raise ExportError(
            f"{src} has the native DeformConv, which OpenVINO cannot read: give the export of "
            "`tdmi-export onnx --deform-conv decomposed`"
        )
    cs = load_calibration(config, calib, calib_clips)
    data = synthetic_set(config, eval_clips)
    base = dataclasses.replace(int8_recipe(target, method, op_types), fp32_regions=())
    rows = sensitivity(src, cs, data, base, granularity=granularity, timing_rounds=rounds, log=log)
    return SensitivityStudy(src, target, base, op_types, cs, data, rows)
