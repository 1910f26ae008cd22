"""The one export pipeline: ``build(spec)`` makes the chain FP32 ONNX -> precision variant.

The variant is FP16 / INT8 ONNX (for TensorRT or ONNX Runtime), or an OpenVINO IR (FP32, BF16, NNCF
INT8) of the decomposed FP32 graph. ``build`` writes to a given path (``tdmi-export``, the Triton
writer), or into an ``ArtifactCache`` (``tdmi-bench``): there each artifact is keyed by everything
that changes its bytes (config, weights, toolkit, export settings), made under a file lock, written
atomically, and checked before it is reused, so a stale or damaged artifact is never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdmi.errors import ConfigError, EngineError, ExportError
from tdmi.export.export_spec import OPSET, ExportSpec
from tdmi.spec.config import TDMIConfig
from tdmi.utils import sha256_file, write_text_atomic
from tdmi.versions import installed_version

RANDOM_SEED = 0
CACHE_ENV = "TDMI_CACHE_DIR"
Log = Callable[[str], None]
# A calibration set, or a function making one only when a variant is built (the bench's lazy one).
CalibrationLike = Any


@dataclass
class Built:
    """What ``build`` made: the artifact, and the results of the steps run for it (None: reused)."""

    path: Path
    spec: ExportSpec
    export: Any | None = None  # ExportResult / SplitExportResult of the FP32 step, when run here
    variant: Any | None = None  # PrecisionResult / OpenVINOResult of the precision step
    search: Any | None = None  # SearchResult with ``max_drop``


def build(
    spec: ExportSpec,
    output: str | Path | None = None,
    *,
    cache: ArtifactCache | None = None,
    calibration: CalibrationLike = None,
    source: str | Path | None = None,
    log: Log | None = None,
    progress: bool = True,
) -> Built:
    """Make the artifact ``spec`` describes, at ``output`` or in ``cache`` (reused when it is there).

    ``source`` starts from this FP32 graph instead of exporting one; ``calibration`` (a set or a
    function returning one) replaces loading ``spec.calib``.
    """
    if cache is not None:
        return Built(cache.get(spec, calibration), spec)
    if output is None:
        raise ExportError("build() needs an output path or a cache")
    out = Path(output)
    if spec.openvino:
        _check_openvino(spec, out)
    t0 = time.perf_counter()
    built = _make(spec, out, calibration, log, progress, Path(source) if source is not None else None)
    if built.variant is not None and hasattr(built.variant, "seconds") and spec.openvino:
        built.variant.seconds = time.perf_counter() - t0  # the IR's report counts the FP32 export too
    return built


def _make(
    spec: ExportSpec,
    out: Path,
    calibration: CalibrationLike,
    log: Log | None,
    progress: bool,
    source: Path | None = None,
    model: Any | None = None,
) -> Built:
    """One artifact at ``out``: the FP32 export, or the variant of ``source`` (exported here if None)."""
    if spec.split:
        return Built(out, spec, export=_export_split(spec, out, progress))
    if spec.precision == "fp32" and not spec.openvino:
        return Built(out, spec, export=_export_fp32(spec, out, progress, model))
    with tempfile.TemporaryDirectory(prefix="tdmi-export-") as tmp:
        export = None
        if source is None:
            source = Path(tmp) / "fp32.onnx"
            export = _export_fp32(spec.fp32_source(), source, progress, model)
            config = export.config
        else:  # read from the given graph only where it is needed (a W48 graph is large)
            needed = calibration is None or spec.max_drop is not None
            config = _config_of(source) if needed else None
        cs = _calibration(spec, config, calibration)
        variant, search = _make_variant(spec, source, out, cs, config, log, progress)
    return Built(out, spec, export=export, variant=variant, search=search)


def _export_fp32(spec: ExportSpec, out: Path, progress: bool, model: Any | None) -> Any:
    from tdmi.export.onnx_export import export_onnx

    return export_onnx(
        spec.config,
        out,
        checkpoint=spec.checkpoint if model is None else None,
        model=model,
        batch=spec.batch,
        opset=spec.opset,
        verify=spec.verify,
        simplify=spec.simplify,
        progress=progress,
        deform_conv=spec.deform_conv,
    )


def _export_split(spec: ExportSpec, out: Path, progress: bool) -> Any:
    """The backbone/head pair for ``tdmi-infer --reuse-features`` (FP32, dynamic batch)."""
    from tdmi.export.split_export import export_split_onnx

    return export_split_onnx(
        spec.config,
        out,
        checkpoint=spec.checkpoint,
        opset=spec.opset,
        verify=spec.verify,
        simplify=spec.simplify,
        progress=progress,
        deform_conv=None if spec.deform_conv == "native" else spec.deform_conv,
    )


def _config_of(source: Path) -> TDMIConfig:
    from tdmi.export.metadata import load_onnx_checked, read_metadata

    config: TDMIConfig = read_metadata(load_onnx_checked(source))["config"]
    return config


def _calibration(spec: ExportSpec, config: TDMIConfig | None, calibration: CalibrationLike) -> Any:
    """The calibration set a variant needs (None for the FP32/BF16 IR, which needs none)."""
    if spec.openvino and spec.precision != "int8":
        return None
    if calibration is not None:
        return calibration() if callable(calibration) else calibration
    from tdmi.export.calibration import load_calibration

    assert config is not None  # read by _make whenever no calibration is given
    return load_calibration(config, spec.calib, spec.calib_clips)


def _make_variant(
    spec: ExportSpec,
    src: Path,
    out: Path,
    cs: Any,
    config: TDMIConfig | None,
    log: Log | None,
    progress: bool,
) -> tuple[Any, Any]:
    """The precision step on the FP32 graph ``src``: (its result, the recipe search or None)."""
    from tdmi.export.int8_search import search_within_budget

    if spec.openvino:
        from tdmi.export.openvino_export import write_ir

        if spec.precision != "int8":
            return write_ir(src, out, spec.precision), None
        if spec.max_drop is None:
            return write_ir(src, out, "int8", calib=cs, recipe=spec.recipe()), None
        found, recipe = search_within_budget(spec, src, cs, config, log, keep="FP32/BF16")
        chosen = found.chosen
        assert chosen is not None  # search_within_budget raises when no recipe fits
        extra = {"search": {"max_drop": spec.max_drop, "chosen": chosen.to_dict()}}
        result = write_ir(src, out, "int8", calib=cs, recipe=recipe, extra=extra)
        result.search = found
        return result, found
    from tdmi.export.precision import convert_fp16, quantize_int8

    if spec.precision == "fp16":
        return convert_fp16(src, out, cs, progress=progress), None
    target = spec.resolved_target
    assert target in ("tensorrt", "onnxruntime")  # the spec's rules
    recipe = spec.recipe()
    if spec.max_drop is None:
        return quantize_int8(src, out, cs, target=target, recipe=recipe, progress=progress), None
    found, recipe = search_within_budget(spec, src, cs, config, log, keep="FP32")
    return quantize_int8(src, out, cs, target=target, recipe=recipe, progress=progress), found


def _check_openvino(spec: ExportSpec, output: Path) -> None:
    """What an IR needs, checked before minutes of export: a .xml path, OpenVINO, NNCF for INT8."""
    from tdmi.export.openvino_export import require_nncf
    from tdmi.plugins.openvino import require_openvino
    from tdmi.utils import prepare_output

    if output.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO IR is written as a .xml file (its .bin beside it), got {output}")
    prepare_output(output, error=ExportError)
    require_openvino()
    if spec.precision == "int8":
        require_nncf()


# --------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "tdmi"


# Runs ``fn(*args)`` in a child process and returns its result: (label, fn, *args) -> result.
Isolate = Callable[..., Any]


@dataclass
class ArtifactCache:
    """The cache folder for one (config, weights, toolkit) combination.

    ``weights`` is always a toolkit checkpoint (config embedded): the reference model and every
    exported file are made from it, so they hold the same numbers by construction.
    """

    root: Path
    config: TDMIConfig
    checkpoint: Path | None
    key: str
    folder: Path
    built: list[str] = field(default_factory=list)  # artifacts made in this run (for the report)
    progress: bool = True
    # Build each missing artifact through this (the bench: a fresh child process whose memory is
    # gone when it exits, its peak RSS recorded); None: build in this process (tests, debugging).
    isolate: Isolate | None = None

    @classmethod
    def open(
        cls, root: str | Path, config: TDMIConfig, checkpoint: str | Path | None = None
    ) -> ArtifactCache:
        from tdmi import __version__

        root = Path(root).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cannot create the cache folder {root} ({e.strerror}): pass another --cache-dir"
            ) from None
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and not ckpt.is_file():
            raise ConfigError(f"checkpoint {ckpt} not found")
        if ckpt is not None:
            weights = f"sha256:{sha256_file(ckpt)}"
        else:
            weights = f"random:seed{RANDOM_SEED}:torch{installed_version('torch')}"
        ident = {
            "config": config.to_dict(),
            "weights": weights,
            "toolkit": __version__,
            "opset": OPSET,
            "onnx": installed_version("onnx"),
            "modelopt": installed_version("nvidia-modelopt"),
        }
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        folder = root / f"{config.name}-{key}"
        folder.mkdir(exist_ok=True)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            write_text_atomic(manifest, json.dumps({"key": key, **ident}, indent=2, sort_keys=True) + "\n")
        return cls(root=root, config=config, checkpoint=ckpt, key=key, folder=folder)

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None

    @property
    def weights_path(self) -> Path:
        return self.folder / "weights.pt"

    def artifact_path(
        self,
        kind: str,
        calib_clips: int,
        calib_data: Path | None = None,
        method: str = "max",
        op_types: tuple[str, ...] | None = None,
    ) -> Path:
        if kind == "fp32":
            return self.folder / "model-fp32.onnx"
        if kind == "fp32-decomposed":
            return self.folder / "model-fp32-decomposed.onnx"
        # IRs (and NNCF's INT8) depend on the OpenVINO / NNCF versions, which the cache key leaves out
        ov_tag = f"-ov{installed_version('openvino')}" + (
            f"-nncf{installed_version('nncf')}" if kind == "ov-int8" else ""
        )
        if kind in ("ov-fp32", "ov-bf16"):
            return self.folder / f"model-{kind}{ov_tag}.xml"
        source = "builtin"
        if calib_data is not None:
            source = hashlib.sha256(str(Path(calib_data).resolve()).encode()).hexdigest()[:10]
        int8 = kind.startswith("int8") or kind == "ov-int8"
        how = f"-{method}" if int8 else ""
        if int8 and op_types is not None:
            how += "-ops-" + ("_".join(op_types) or "all")
        suffix = f"{ov_tag}.xml" if kind.startswith("ov-") else ".onnx"
        return self.folder / f"model-{kind}-calib{calib_clips}-{source}{how}{suffix}"

    def spec(
        self,
        kind: str,
        calib_clips: int = 0,
        calib_data: Path | None = None,
        method: str = "auto",
        op_types: tuple[str, ...] | None = None,
    ) -> ExportSpec:
        """The spec of a cache artifact kind (``fp32``, ``int8-onnxruntime``, ``ov-bf16``...)."""
        base = ExportSpec(config=self.config, checkpoint=self.checkpoint, batch="dynamic", opset=OPSET)
        if kind in ("fp32", "fp32-decomposed"):
            return _replace(base, deform_conv="decomposed" if kind == "fp32-decomposed" else None)
        precision, target = kind.split("-", 1)
        if precision == "ov":
            precision, target = target, "openvino"
        int8 = precision == "int8"
        return _replace(
            base,
            precision=precision,
            target=target,
            deform_conv="decomposed" if target == "openvino" else None,
            calib=calib_data,
            calib_clips=max(calib_clips, 1),
            calib_method=method if int8 else "auto",
            op_types=op_types if int8 else None,  # FP16 variants ignore it
        )

    def path_of(self, spec: ExportSpec) -> Path:
        """Where the artifact of ``spec`` lives in this cache (the layout of earlier releases)."""
        from tdmi.export.precision import DEFAULT_CALIBRATION

        kind = _kind(spec, self.config)
        method: str = spec.calib_method
        if method == "auto" and spec.precision == "int8":
            method = DEFAULT_CALIBRATION[spec.resolved_target or "tensorrt"]
        return self.artifact_path(kind, spec.calib_clips, spec.calib, method, spec.op_types)

    def engines(self) -> list[Path]:
        return sorted(self.folder.glob("*.engine"))

    def weights(self) -> Path:
        """The toolkit checkpoint of the weights under test, written on first use."""
        path = self.weights_path
        with entry_lock(path):
            if _usable_checkpoint(path):
                return path
            return self._build(None, path, None, None)

    def get(self, spec: ExportSpec, calibration: CalibrationLike = None) -> Path:
        """The artifact of ``spec``: reused when a usable one is cached, else built (under its lock)."""
        path = self.path_of(spec)
        usable = _usable_ir if spec.openvino else _usable_onnx
        with entry_lock(path):
            if usable(path):
                return path
            source = None
            if spec.openvino or spec.precision != "fp32":
                source = self.get(spec.fp32_source())  # its own entry (and build process) first
            return self._build(spec, path, calibration, source)

    def fp32_onnx(self) -> Path:
        return self.get(self.spec("fp32"))

    def fp32_decomposed_onnx(self) -> Path:
        """The FP32 graph with the DCN as GridSample + Conv: the one OpenVINO reads."""
        return self.get(self.spec("fp32-decomposed"))

    def variant(
        self,
        kind: str,
        calib_clips: int,
        calibration: Callable[[], Any],
        calib_data: Path | None = None,
        method: str = "max",
        op_types: tuple[str, ...] | None = None,
    ) -> Path:
        """A precision variant of the FP32 graph; ``calibration()`` is only called when one is built.

        ``op_types`` (INT8 only) replaces the target's default op types to quantize.
        """
        return self.get(self.spec(kind, calib_clips, calib_data, method, op_types), calibration)

    def _build(
        self, spec: ExportSpec | None, path: Path, calibration: CalibrationLike, source: Path | None
    ) -> Path:
        """Make one artifact (the caller holds its entry lock): here, or through ``isolate``."""
        if self.isolate is None:
            return _make_artifact(self, spec, path, calibration, source)
        out, built = self.isolate(
            f"build {path.name}",
            _build_in_child,
            self.root,
            self.config,
            self.checkpoint,
            spec,
            path,
            calibration,
            source,
            self.progress,
        )
        self.built.extend(built)
        return Path(out)

    def _make_weights(self, path: Path) -> Path:
        import torch

        from tdmi.model import TDMI, load_checkpoint, save_checkpoint

        model: Any
        if self.checkpoint is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = TDMI(self.config).eval()
        else:
            model = load_checkpoint(self.checkpoint, self.config)
        save_checkpoint(model, path, extra={"source": str(self.checkpoint) if self.checkpoint else "random"})
        self.built.append(path.name)
        return path


def _replace(spec: ExportSpec, **changes: Any) -> ExportSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _kind(spec: ExportSpec, config: TDMIConfig) -> str:
    """The cache's name for a spec's artifact kind."""
    if spec.openvino:
        return f"ov-{spec.precision}"
    if spec.precision == "fp32":
        decomposed = spec.deform_conv == "decomposed" and config.deform_conv != "decomposed"
        return "fp32-decomposed" if decomposed else "fp32"
    return f"{spec.precision}-{spec.resolved_target}"


def _make_artifact(
    cache: ArtifactCache,
    spec: ExportSpec | None,
    path: Path,
    calibration: CalibrationLike,
    source: Path | None,
) -> Path:
    """Build one cache entry with ``build``'s steps (``spec`` None: the weights checkpoint)."""
    if spec is None:
        return cache._make_weights(path)
    model = None
    if source is None:  # the FP32 graph, exported from the cached weights
        from tdmi.model import load_checkpoint

        model = load_checkpoint(cache.weights(), cache.config)
    elif calibration is None and (spec.precision == "int8" or spec.precision == "fp16"):
        raise ExportError(f"the {_kind(spec, cache.config)} variant needs calibration data")
    _make(spec, path, calibration, None, cache.progress, source, model)
    cache.built.append(path.name)
    return path


def _build_in_child(
    root: Path,
    config: TDMIConfig,
    checkpoint: Path | None,
    spec: ExportSpec | None,
    path: Path,
    calibration: CalibrationLike,
    source: Path | None,
    progress: bool,
) -> tuple[Path, list[str]]:
    """The child side of ``ArtifactCache._build``: the same cache entry, built in this process."""
    cache = ArtifactCache.open(root, config, checkpoint)
    cache.progress = progress
    out = _make_artifact(cache, spec, path, calibration, source)
    return out, cache.built


@dataclass
class Calibration:
    """The calibration set of a run, made on first use (picklable, so a child process can make it)."""

    config: TDMIConfig
    data: Path | None
    clips: int
    _made: Any = field(default=None, repr=False, compare=False)

    def __call__(self) -> Any:
        if self._made is None:
            from tdmi.export import build_calibration_set

            if self.data is None:
                with warnings.catch_warnings():  # said once, in the report's notes, instead
                    warnings.simplefilter("ignore", UserWarning)
                    self._made = build_calibration_set(self.config, data=None, num_clips=self.clips)
            else:
                self._made = build_calibration_set(self.config, data=self.data, num_clips=self.clips)
        return self._made


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """One builder per cache entry: a concurrent run waits, then finds the artifact made."""
    from filelock import FileLock

    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield


def _usable_checkpoint(path: Path) -> bool:
    """Like ``_usable_onnx``: a truncated or damaged cached checkpoint is removed and rebuilt."""
    if not path.is_file():
        return False
    from tdmi.errors import CheckpointError
    from tdmi.model.checkpoint import read_checkpoint_config

    try:
        read_checkpoint_config(path)
    except CheckpointError:
        path.unlink(missing_ok=True)
        return False
    return True


def _usable_ir(path: Path) -> bool:
    """A cached IR is reused only with its weights beside it, both non-empty and readable."""
    bin_path = path.with_suffix(".bin")
    if not (path.is_file() and bin_path.is_file() and path.stat().st_size and bin_path.stat().st_size):
        return False
    from tdmi.plugins.openvino import require_openvino

    try:
        require_openvino().Core().read_model(str(path))
    except Exception:  # a damaged cache entry is rebuilt, whatever OpenVINO says about it
        path.unlink(missing_ok=True)
        bin_path.unlink(missing_ok=True)
        return False
    return True


def _usable_onnx(path: Path) -> bool:
    """A cached file is reused only if it is a non-empty ONNX model (an interrupted write never is)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:  # a damaged cache file is rebuilt, whatever protobuf says about it
        path.unlink(missing_ok=True)
        return False
    return True


def check_engine(engine: str | Path, config: TDMIConfig) -> Any:
    """Load an engine's sidecar and make sure it holds this config (before TensorRT sees the file)."""
    from tdmi.artifacts.sidecar import load_sidecar

    path = Path(engine)
    if not path.is_file():
        raise EngineError(f"engine {path} not found")
    sidecar = load_sidecar(path)
    try:
        theirs = TDMIConfig.from_dict(dict(sidecar.model_config)).to_dict()
    except ConfigError as e:
        raise EngineError(
            f"engine {path}: its sidecar holds an invalid model config ({e}); rebuild it"
        ) from None
    ours = config.to_dict()
    theirs.pop("name", None)
    ours.pop("name", None)
    if theirs != ours:
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise EngineError(
            f"engine {path} was built for config {sidecar.model_config.get('name', '?')!r}, not "
            f"{config.name!r} (differs in: {', '.join(diff)}): pass the matching --config or rebuild it"
        )
    return sidecar
