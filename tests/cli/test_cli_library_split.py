"""The library pieces the thin ``tdmi-infer`` / ``tdmi-train`` commands call (issue 23): the run
options of one video or a batch, what a run reports as written, and the TrainConfig built from the
command's options by field name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer

from tdmi.cli import train as train_cli
from tdmi.errors import DataError
from tdmi.train.config import TrainConfig
from tdmi.video.batch import VideoJob, VideoOptions, check_job_outputs
from tdmi.video.infer import InferOutputs
from tdmi.video.live import LiveOutputs


def test_video_options_need_exactly_one_box_source() -> None:
    for options in (VideoOptions(), VideoOptions(full_frame=True, boxes="gt")):
        with pytest.raises(DataError, match="say where person boxes come from"):
            options.check()
    VideoOptions(boxes="gt").check()


def test_video_options_resolved_makes_input_paths_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = VideoOptions(boxes="gt", annotations="ann.json", detector="det.onnx")
    resolved = options.resolved()
    assert resolved.annotations == str(tmp_path / "ann.json")
    assert resolved.detector == str(tmp_path / "det.onnx")
    assert dataclasses.replace(resolved, annotations="ann.json", detector="det.onnx") == options
    assert VideoOptions(full_frame=True).resolved() == VideoOptions(full_frame=True)


def test_job_output_must_not_be_its_input(tmp_path: Path) -> None:
    frames = tmp_path / "out" / "clip"
    frames.mkdir(parents=True)
    with pytest.raises(DataError, match="would overwrite the input"):
        check_job_outputs([VideoJob("clip", str(frames.resolve()))], tmp_path / "out")
    check_job_outputs([VideoJob("clip", str(frames.resolve()))], tmp_path / "elsewhere")


def test_written_files_in_report_order(tmp_path: Path) -> None:
    paths = {k: tmp_path / f"v.{k}" for k in ("json", "csv", "mp4", "png", "jsonl")}
    stored = InferOutputs(None, paths["json"], paths["csv"], paths["mp4"], None)
    assert stored.written() == [paths["json"], paths["csv"], paths["mp4"]]
    live = LiveOutputs(None, paths["json"], paths["csv"], None, paths["png"], jsonl=str(paths["jsonl"]))
    assert live.written() == [paths["json"], paths["csv"], paths["png"], paths["jsonl"]]
    to_stdout = LiveOutputs(None, paths["json"], paths["csv"], None, None, jsonl="-")
    assert to_stdout.written() == [paths["json"], paths["csv"]]


def _command_defaults() -> dict[str, object]:
    command = typer.main.get_command(train_cli.app)
    return {p.name: p.default for p in command.params if p.name}


def test_train_options_default_to_train_config_defaults() -> None:
    """Every option named as a TrainConfig field reaches it: the command's defaults are the config's."""
    options = _command_defaults()
    assert train_cli.train_config(options) == TrainConfig()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"lr", "schedule", "optimizer", "missing_frames", "clips_pool"} <= fields & set(options)


def test_train_options_set_their_fields() -> None:
    options = {**_command_defaults(), "lr": 0.5, "schedule": "cosine", "no_augment_flip": True}
    options |= {"milestones": "0.5", "data": "synthetic", "clips_pool": 3}
    tc = train_cli.train_config(options)
    assert (tc.lr, tc.schedule, tc.flip, tc.milestones, tc.clips_pool) == (0.5, "cosine", False, (0.5,), 3)
    with pytest.raises(typer.BadParameter, match="--milestones must be comma-separated fractions"):
        train_cli.train_config({**options, "milestones": "half"})
