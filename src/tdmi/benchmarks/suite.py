"""The cache of exported artifacts the benchmark runs: weights, FP32 ONNX and the precision variants.

Exporting and quantising a W48 model takes minutes on a CPU, so every artifact the benchmark needs
(weights, FP32 ONNX, the precision variants) is built once and kept in a cache folder keyed by
everything that changes its bytes: the model config, the weights, the toolkit version and the
export settings. A stale artifact can therefore never be benchmarked against a newer reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdmi.benchmarks.memory import MemoryLedger, run_in_child
from tdmi.errors import ConfigError, EngineError, ExportError
from tdmi.spec.config import TDMIConfig
from tdmi.utils import sha256_file, write_text_atomic
from tdmi.versions import installed_version as _version

RANDOM_SEED = 0
OPSET = 19
CACHE_ENV = "TDMI_CACHE_DIR"


# --------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "tdmi"


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
    # Build each missing artifact in a fresh child process (its memory is gone when it exits) and
    # record the child's peak RSS here; False: build in this process (tests, debugging).
    isolate: bool = False
    memory: MemoryLedger = field(default_factory=MemoryLedger)

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
            weights = f"random:seed{RANDOM_SEED}:torch{_version('torch')}"
        ident = {
            "config": config.to_dict(),
            "weights": weights,
            "toolkit": __version__,
            "opset": OPSET,
            "onnx": _version("onnx"),
            "modelopt": _version("nvidia-modelopt"),
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
        ov_tag = f"-ov{_version('openvino')}" + (f"-nncf{_version('nncf')}" if kind == "ov-int8" else "")
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

    def engines(self) -> list[Path]:
        return sorted(self.folder.glob("*.engine"))

    def weights(self) -> Path:
        """The toolkit checkpoint of the weights under test, written on first use."""
        path = self.weights_path
        with entry_lock(path):
            if _usable_checkpoint(path):
                return path
            return self._build("weights", path)

    def _make_weights(self, path: Path) -> Path:
        import torch

        from tdmi.model import TDMI, load_checkpoint, save_checkpoint

        if self.checkpoint is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = TDMI(self.config).eval()
        else:
            model = load_checkpoint(self.checkpoint, self.config)
        save_checkpoint(model, path, extra={"source": str(self.checkpoint) if self.checkpoint else "random"})
        self.built.append(path.name)
        return path

    def fp32_onnx(self) -> Path:
        path = self.artifact_path("fp32", 0)
        with entry_lock(path):
            if _usable_onnx(path):
                return path
            return self._build("fp32", path)

    def fp32_decomposed_onnx(self) -> Path:
        """The FP32 graph with the DCN as GridSample + Conv: the one OpenVINO reads."""
        if self.config.deform_conv == "decomposed":
            return self.fp32_onnx()
        path = self.artifact_path("fp32-decomposed", 0)
        with entry_lock(path):
            if _usable_onnx(path):
                return path
            return self._build("fp32-decomposed", path)

    def _make_fp32_onnx(self, path: Path, deform_conv: str | None = None) -> Path:
        from tdmi.export import export_onnx
        from tdmi.model import load_checkpoint

        model = load_checkpoint(self.weights(), self.config)
        _call(
            export_onnx,
            self.config,
            path,
            model=model,
            batch="dynamic",
            opset=OPSET,
            verify=True,
            simplify=True,
            progress=self.progress,
            **({"deform_conv": deform_conv} if deform_conv else {}),
        )
        self.built.append(path.name)
        return path

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
        if method == "auto" and (kind.startswith("int8-") or kind == "ov-int8"):
            from tdmi.export.precision import DEFAULT_CALIBRATION

            method = DEFAULT_CALIBRATION["openvino" if kind == "ov-int8" else kind.split("-", 1)[1]]
        path = self.artifact_path(kind, calib_clips, calib_data, method, op_types)
        with entry_lock(path):
            if kind.startswith("ov-"):
                if _usable_ir(path):
                    return path
                self.fp32_decomposed_onnx()  # its own entry (and build process) first
                return self._build(kind, path, calibration, method, op_types)
            if _usable_onnx(path):
                return path
            return self._build(kind, path, calibration, method, op_types)

    def _build(
        self,
        kind: str,
        path: Path,
        calibration: Callable[[], Any] | None = None,
        method: str = "max",
        op_types: tuple[str, ...] | None = None,
    ) -> Path:
        """Make one artifact (the caller holds its entry lock): here, or in a child when ``isolate``."""
        if not self.isolate:
            return _make_artifact(self, kind, path, calibration, method, op_types)
        out, built = run_in_child(
            f"build {path.name}",
            self.memory,
            _build_in_child,
            self.root,
            self.config,
            self.checkpoint,
            kind,
            path,
            calibration,
            method,
            op_types,
            self.progress,
        )
        self.built.extend(built)
        return Path(out)

    def _make_ir(
        self,
        kind: str,
        path: Path,
        calibration: Callable[[], Any] | None,
        method: str,
        op_types: tuple[str, ...] | None,
    ) -> Path:
        """An OpenVINO IR of the decomposed FP32 graph (checked against ORT FP32 before it stays)."""
        from tdmi.export.openvino_export import write_ir
        from tdmi.export.precision import default_recipe

        src = self.fp32_decomposed_onnx()
        precision = kind.split("-", 1)[1]
        if precision == "int8":
            recipe = default_recipe("openvino", method)
            if op_types is not None:
                recipe = dataclasses.replace(recipe, op_types=op_types)
            if calibration is None:
                raise ExportError("the ov-int8 variant needs calibration data")
            write_ir(src, path, "int8", calib=calibration(), recipe=recipe)
        else:
            write_ir(src, path, precision)
        self.built.append(path.name)
        return path

    def _make_variant(
        self,
        kind: str,
        path: Path,
        calibration: Callable[[], Any],
        method: str,
        op_types: tuple[str, ...] | None = None,
    ) -> Path:
        import dataclasses

        from tdmi.export import convert_fp16, quantize_int8
        from tdmi.export.precision import default_recipe

        src = self.fp32_onnx()
        if kind == "fp16-tensorrt":
            result = _call(convert_fp16, src, path, calibration(), progress=self.progress)
        elif kind in ("int8-onnxruntime", "int8-tensorrt"):
            target = kind.split("-", 1)[1]
            recipe = default_recipe(target, method)  # type: ignore[arg-type]
            if op_types is not None:
                recipe = dataclasses.replace(recipe, op_types=op_types)
            result = _call(
                quantize_int8,
                src,
                path,
                calibration(),
                target=target,
                recipe=recipe,
                progress=self.progress,
            )
        else:
            raise ExportError(f"unknown artifact kind {kind!r}")
        out = Path(getattr(result, "path", path))
        if out != path:
            raise ExportError(f"the {kind} conversion wrote {out} instead of {path}")
        self.built.append(path.name)
        return path


def _make_artifact(
    cache: ArtifactCache,
    kind: str,
    path: Path,
    calibration: Callable[[], Any] | None,
    method: str,
    op_types: tuple[str, ...] | None,
) -> Path:
    if kind == "weights":
        return cache._make_weights(path)
    if kind == "fp32":
        return cache._make_fp32_onnx(path)
    if kind == "fp32-decomposed":
        return cache._make_fp32_onnx(path, deform_conv="decomposed")
    if kind in ("ov-fp32", "ov-bf16"):
        return cache._make_ir(kind, path, None, method, op_types)
    if calibration is None:
        raise ExportError(f"the {kind} variant needs calibration data")
    if kind == "ov-int8":
        return cache._make_ir(kind, path, calibration, method, op_types)
    return cache._make_variant(kind, path, calibration, method, op_types)


def _build_in_child(
    root: Path,
    config: TDMIConfig,
    checkpoint: Path | None,
    kind: str,
    path: Path,
    calibration: Callable[[], Any] | None,
    method: str,
    op_types: tuple[str, ...] | None,
    progress: bool,
) -> tuple[Path, list[str]]:
    """The child side of ``ArtifactCache._build``: the same cache entry, built in this process."""
    cache = ArtifactCache.open(root, config, checkpoint)
    cache.progress = progress
    out = _make_artifact(cache, kind, path, calibration, method, op_types)
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


def _call(fn: Callable[..., Any], *args: Any, progress: bool, **kwargs: Any) -> Any:
    """Call an export function, passing ``progress`` only where it takes one (not part of its contract)."""
    import inspect

    if "progress" in inspect.signature(fn).parameters:
        kwargs["progress"] = progress
    return fn(*args, **kwargs)


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


# ------------------------------------------------------------------------------------------ engines


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
