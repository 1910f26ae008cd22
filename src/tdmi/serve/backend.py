"""The Triton Python-backend models: heatmaps through ``tdmi.runtime``, our crop, our decoding.

These classes run inside Triton's ``triton_python_backend_stub``; ``triton_python_backend_utils``
exists only there, so it is imported when a model initialises. Tensors cross the stub boundary by
DLPack (numpy's own ``from_dlpack`` / ``__dlpack__``; no torch, so the models run in the deploy-only
install): the stub in nvidia-pytriton 0.7.0 is built against the numpy 1 ABI, and under numpy 2 its
``as_numpy()`` reads zeros and ``Tensor(name, ndarray)`` sends empty outputs (checked on 2026-11-30;
tests pin that served answers are non-empty and correct). DLPack works with either numpy.

A bad request gets an error response naming what is wrong, with Triton's ``INVALID_ARG`` code
(HTTP 400, gRPC INVALID_ARGUMENT); a failure on our side is ``INTERNAL`` (HTTP 500). The other
requests of the same batch are still answered, and the model keeps serving. No answer carries NaN:
``tdmi_post`` turns non-finite keypoints into an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.data.boxes import check_boxes
from tdmi.errors import TdmiError
from tdmi.serve.config import BOXES, CENTERS, IMAGES, KEYPOINTS, SCALES, SCORES, ServeConfig


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils

    return pb_utils


def to_numpy(tensor: Any) -> np.ndarray:
    """A Triton input tensor as a numpy array (by DLPack; see the module note)."""
    return np.array(np.from_dlpack(tensor), copy=True)


def from_numpy(name: str, array: np.ndarray) -> Any:
    """A numpy array as a Triton output tensor (by DLPack; see the module note)."""
    return _pb().Tensor.from_dlpack(name, np.array(array, copy=True, order="C"))


def error_response(message: str, *, client: bool = True) -> Any:
    """An error answer: ``client`` errors (the request is wrong) are 400, others 500."""
    pb = _pb()
    err = pb.TritonError
    code = getattr(err, "INVALID_ARG" if client else "INTERNAL", None)
    error = err(message) if code is None else err(message, code)  # codes: python backend >= 23.x
    return pb.InferenceResponse(output_tensors=[], error=error)


def _parameters(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    cfg = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
    return cfg, params


def _configs(params: dict[str, str]) -> tuple[Any, ServeConfig]:
    from tdmi.spec.config import TDMIConfig

    return TDMIConfig.from_json(params["tdmi_model_config"]), ServeConfig.from_json(params["tdmi_serve"])


def _input(request: Any, name: str) -> np.ndarray:
    t = _pb().get_input_tensor_by_name(request, name)
    if t is None:  # Triton refuses requests without a declared input; this is the backstop
        raise TdmiError(f"input {name!r} is missing")
    return to_numpy(t)


class HeatmapModel:
    """``tdmi``/``tdmi_nobatch``: clips -> heatmaps with ``tdmi.runtime`` (ONNX Runtime CPU, or TensorRT)."""

    def initialize(self, args: dict[str, Any]) -> None:
        from tdmi import runtime

        cfg, params = _parameters(args)
        self.input_name = cfg["input"][0]["name"]
        self.output_name = cfg["output"][0]["name"]
        _, serve = _configs(params)
        path = (Path(args["model_repository"]) / params["artifact"]).resolve()
        options: dict[str, Any] = (
            {"threads": serve.threads} if serve.threads and path.suffix == ".onnx" else {}
        )
        self.predictor = runtime.load(path, **options)

    def execute(self, requests: list[Any]) -> list[Any]:
        from tdmi.runtime.base import nonfinite_items

        responses: list[Any] = [None] * len(requests)
        good: list[tuple[int, np.ndarray]] = []
        for i, r in enumerate(requests):
            try:
                x = _input(r, self.input_name)
                bad = nonfinite_items(x)
                if bad:
                    raise TdmiError(
                        f"{self.input_name} contain NaN or Inf (batch index {bad[:8]}): "
                        "send finite, normalised clips"
                    )
                good.append((i, x))
            except TdmiError as e:
                responses[i] = error_response(str(e))
        if good:
            try:
                y = self.predictor.predict(np.concatenate([x for _, x in good], axis=0))
            except TdmiError as e:
                for i, _ in good:
                    responses[i] = error_response(str(e), client=False)
            else:
                start = 0
                for i, x in good:
                    n = x.shape[0]
                    part = y[start : start + n]
                    start += n
                    bad = nonfinite_items(part)
                    if bad:  # never 200 with NaN: the clips were finite, so the model is at fault
                        responses[i] = error_response(
                            f"the model gave NaN or Inf heatmaps for finite clips (batch index {bad[:8]})",
                            client=False,
                        )
                        continue
                    responses[i] = _pb().InferenceResponse([from_numpy(self.output_name, part)])
        return responses

    def finalize(self) -> None:
        self.predictor.close()


class PreprocessModel:
    """``tdmi_pre``: T frames + boxes -> clips cut with the key frame's box (``crop_clips``)."""

    def initialize(self, args: dict[str, Any]) -> None:
        cfg, params = _parameters(args)
        self.config, self.serve = _configs(params)
        frames = next(o for o in cfg["output"] if o["name"] == "frames")
        # An FP16 graph on Triton's own backend takes FP16 clips; the config says which.
        self.clip_dtype = np.float16 if frames["data_type"] == "TYPE_FP16" else np.float32

    def execute(self, requests: list[Any]) -> list[Any]:
        from tdmi.data.transforms import crop_clips, stack_crop_infos

        pb, out = _pb(), []
        for r in requests:
            try:
                images = _input(r, IMAGES)
                boxes = _input(r, BOXES)
                if images.ndim != 4:
                    raise TdmiError(f"images must be [T, H, W, 3], got shape {list(images.shape)}")
                check_boxes(boxes, images.shape[1:3], max_boxes=self.serve.max_batch_size)
                cfg = self.config
                clips, infos = crop_clips(
                    list(images), boxes, cfg.input_size, cfg.bbox_padding, bgr=self.serve.bgr
                )
                centers, scales = stack_crop_infos(infos)
            except TdmiError as e:
                out.append(error_response(str(e)))
                continue
            out.append(
                pb.InferenceResponse(
                    [
                        from_numpy("frames", clips.astype(self.clip_dtype, copy=False)),
                        from_numpy(CENTERS, centers.astype(np.float32)),
                        from_numpy(SCALES, scales.astype(np.float32)),
                    ]
                )
            )
        return out


class PostprocessModel:
    """``tdmi_post``: heatmaps -> image keypoints and scores (``heatmaps_to_keypoints``, DARK by default)."""

    def initialize(self, args: dict[str, Any]) -> None:
        _, params = _parameters(args)
        self.config, self.serve = _configs(params)

    def execute(self, requests: list[Any]) -> list[Any]:
        from tdmi.data.transforms import heatmaps_to_keypoints

        pb, out = _pb(), []
        for r in requests:
            try:
                kps, scores = heatmaps_to_keypoints(
                    _input(r, "heatmaps").astype(np.float32, copy=False),
                    _input(r, CENTERS),
                    _input(r, SCALES),
                    refine=self.serve.refine,
                    sigma=self.config.sigma,
                )
            except TdmiError as e:
                out.append(error_response(str(e)))
                continue
            with np.errstate(over="ignore"):
                kps, scores = kps.astype(np.float32), scores.astype(np.float32)
            bad = ~(np.isfinite(kps).all(axis=(1, 2)) & np.isfinite(scores).all(axis=1))
            if bad.any():  # never answer 200 with NaN/Inf: tdmi_pre checked the boxes, so this is ours
                idx = np.flatnonzero(bad)[:8].tolist()
                out.append(error_response(f"non-finite keypoints for box index {idx}", client=False))
                continue
            out.append(pb.InferenceResponse([from_numpy(KEYPOINTS, kps), from_numpy(SCORES, scores)]))
        return out
