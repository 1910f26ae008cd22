"""tdmi-infer over many videos without Ray: inputs, OUT/<name>/ + run.json, resume, retries, Ctrl-C, eval."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tdmi.cli.common import Interrupted, run_app
from tdmi.cli.infer import app, load_predictors
from tdmi.errors import DataError
from tdmi.eval import evaluate
from tdmi.utils import atomic_dir
from tdmi.video.batch import (
    RUN_RECORD,
    VIDEO_RECORD,
    BatchEvent,
    LocalExecutor,
    VideoOptions,
    collect_jobs,
    run_batch,
    run_video_job,
    staging_dir,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, synthetic_videos: Callable[..., list[Path]]) -> Path:
    folder = tmp_path_factory.mktemp("batch") / "videos"
    synthetic_videos(folder, 4)
    return folder


@pytest.fixture(scope="module")
def predictors(tiny_onnx: Path) -> tuple[Any, Any]:
    return load_predictors(str(tiny_onnx), None, False, None, None)


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / RUN_RECORD).read_text())


def _poses(folder: Path, name: str) -> tuple[list[Any], str]:
    """The parts of a video's outputs that must be identical between runs (timings aside)."""
    doc = json.loads((folder / f"{name}.json").read_text())
    return doc["annotations"], (folder / f"{name}.csv").read_text()


def _settings(tiny_onnx: Path, options: VideoOptions) -> dict[str, Any]:
    return {"model": {"model": str(tiny_onnx)}, "options": options.to_dict()}


def test_collect_jobs_folder_manifest_and_errors(tmp_path: Path, videos: Path, posetrack18: Path) -> None:
    opts = VideoOptions(full_frame=True)
    names = [j.name for j in collect_jobs([videos], opts)]
    assert names == ["clip00", "clip01", "clip02", "clip03"]
    # a folder of frame folders (PoseTrack images/val) gives one job per sequence, with its annotation file
    gt = VideoOptions(boxes="gt", annotations=str(posetrack18 / "annotations" / "val"))
    jobs = collect_jobs([posetrack18 / "images" / "val"], gt)
    assert [j.name for j in jobs] == ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"]
    assert jobs[0].annotations == str(posetrack18 / "annotations" / "val" / "003418_mpii_test.json")
    # a manifest: relative paths, comments, blank lines; a path listed twice runs once
    manifest = tmp_path / "list.txt"
    manifest.write_text(
        f"# two clips\n\n{os.path.relpath(videos / 'clip01.mp4', tmp_path)}\n{videos / 'clip02.mp4'}\n"
    )
    assert [j.name for j in collect_jobs([manifest, videos / "clip01.mp4"], opts)] == ["clip01", "clip02"]
    # two different inputs with one name would write one folder
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(videos / "clip01.mp4", other / "clip01.mp4")
    with pytest.raises(DataError, match="two inputs are named 'clip01'"):
        collect_jobs([videos, other / "clip01.mp4"], opts)
    (tmp_path / "bad.txt").write_text("nope.mp4\n")
    with pytest.raises(DataError, match=r"line 1: nope\.mp4 does not exist"):
        collect_jobs([tmp_path / "bad.txt"], opts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no videos"):
        collect_jobs([tmp_path / "empty"], opts)


def test_which_inputs_make_a_batch(tmp_path: Path, videos: Path, posetrack18: Path) -> None:
    from tdmi.cli.infer_batch import is_batch

    frames = posetrack18 / "images" / "val" / "003418_mpii_test"
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text(str(videos / "clip00.mp4"))
    assert not is_batch([str(videos / "clip00.mp4")], None)  # one video: today's OUT/<name>.* layout
    assert not is_batch([str(frames)], None)  # one frame folder
    assert not is_batch([str(tmp_path / "empty")], None)  # today's "holds no images" error
    assert is_batch([str(videos)], None) and is_batch([str(frames.parent)], None)
    assert is_batch([str(tmp_path / "list.txt")], None)
    assert is_batch([str(videos / "clip00.mp4"), str(videos / "clip01.mp4")], None)
    assert is_batch([str(videos / "clip00.mp4")], "auto")


def test_cli_many_videos_equal_single_runs_and_resume(tmp_path: Path, videos: Path, tiny_onnx: Path) -> None:
    out = tmp_path / "out"
    args = [str(videos), "--model", str(tiny_onnx), "--full-frame", "--no-overlay", "-o", str(out)]
    assert run_app(app, args) == 0
    rec = _record(out)
    assert rec["runs"] == 1 and rec["summary"]["done"] == 4 and rec["summary"]["frames"] == 4 * 12
    for name, v in rec["videos"].items():
        assert v["status"] == "done" and v["frames"] == 12 and v["persons"] == 1 and v["seconds"] > 0
        assert "errors" not in v and "error" not in v
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(
            [f"{name}.json", f"{name}.csv", f"{name}_sheet.png", VIDEO_RECORD]
        )
    # the same outputs as a one-video run
    single = tmp_path / "single"
    assert (
        run_app(
            app, [str(videos / "clip02.mp4"), "--model", str(tiny_onnx), "--full-frame", "-o", str(single)]
        )
        == 0
    )
    assert _poses(out / "clip02", "clip02") == _poses(single, "clip02")
    # run again: every video is skipped (finished in run 1, files untouched)
    stamps = {n: (out / n / f"{n}.json").stat().st_mtime_ns for n in rec["videos"]}
    assert run_app(app, args) == 0
    rec2 = _record(out)
    assert rec2["runs"] == 2 and all(v["run"] == 1 for v in rec2["videos"].values())
    assert stamps == {n: (out / n / f"{n}.json").stat().st_mtime_ns for n in rec["videos"]}
    # a removed output is redone, and only it
    shutil.rmtree(out / "clip01")
    assert run_app(app, args) == 0
    rec3 = _record(out)
    assert {n: v["run"] for n, v in rec3["videos"].items()} == {
        "clip00": 1,
        "clip01": 3,
        "clip02": 1,
        "clip03": 1,
    }
    # other settings for the same OUT are refused before any work
    assert run_app(app, [*args, "--box-policy", "frame"]) == 1
    assert _record(out)["runs"] == 3


def test_pool_options_need_ray(tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(videos), "--config", "tdmi-tiny", "--full-frame", "-o", str(tmp_path / "out")]
    assert run_app(app, [*args, "--workers", "3"]) == 2
    assert "--workers and --gpus-per-worker need --ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failed_video_recorded_then_retried_with_reason_kept(
    tmp_path: Path, videos: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    shutil.copytree(videos, src)
    (src / "clip01.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    args = [str(src), "--model", str(tiny_onnx), "--full-frame", "--no-overlay", "-o", str(out)]
    assert run_app(app, args) == 1
    err = capsys.readouterr().err
    assert "failed: clip01: cannot open video" in err and "1 video(s) failed" in err
    rec = _record(out)
    bad = rec["videos"]["clip01"]
    assert bad["status"] == "failed" and "cannot open video" in bad["error"] and bad["attempts"] == 1
    assert not (out / "clip01").exists()  # nothing half-written
    assert [rec["videos"][n]["status"] for n in ("clip00", "clip02", "clip03")] == ["done"] * 3
    shutil.copy(videos / "clip01.mp4", src / "clip01.mp4")  # fixed: the retry succeeds
    assert run_app(app, args) == 0
    rec = _record(out)
    fixed = rec["videos"]["clip01"]
    assert fixed["status"] == "done" and fixed["attempts"] == 2 and fixed["run"] == 2
    assert len(fixed["errors"]) == 1 and "cannot open video" in fixed["errors"][0] and "error" not in fixed
    assert all(rec["videos"][n]["run"] == 1 for n in ("clip00", "clip02", "clip03"))


def test_interrupted_run_resumes_and_committed_but_unrecorded_video_counts(
    tmp_path: Path, videos: Path, tiny_onnx: Path, predictors: tuple[Any, Any]
) -> None:
    opts = VideoOptions(full_frame=True, overlay=False, sheet=False)
    jobs = collect_jobs([videos], opts)
    out = tmp_path / "out"
    done: list[str] = []

    def stop_after_two(e: BatchEvent) -> None:
        done.append(e.name)
        if len(done) == 2:
            raise Interrupted(signal.SIGINT)  # what Ctrl-C raises in the CLI

    with pytest.raises(Interrupted):
        run_batch(jobs, out, LocalExecutor(predictors, out, opts), _settings(tiny_onnx, opts), stop_after_two)
    rec = _record(out)
    assert [rec["videos"][n]["status"] for n in ("clip00", "clip01", "clip02", "clip03")] == [
        "done", "done", "pending", "pending"
    ]  # fmt: skip
    # clip02 was committed by its worker but the recorder died before writing run.json down
    run_video_job(jobs[2], out, opts, *predictors)
    committed = json.loads((out / "clip02" / VIDEO_RECORD).read_text())
    ran: list[str] = []
    rec = run_batch(
        jobs,
        out,
        LocalExecutor(predictors, out, opts),
        _settings(tiny_onnx, opts),
        lambda e: ran.append(e.kind),
    )
    assert sorted(ran) == ["done", "skipped", "skipped", "skipped"]
    assert {n: v["run"] for n, v in rec["videos"].items()} == {
        "clip00": 1,
        "clip01": 1,
        "clip02": 2,
        "clip03": 2,
    }
    assert rec["videos"]["clip02"]["finished"] == committed["finished"]  # not run a second time
    assert rec["summary"] == {"videos": 4, "done": 4, "failed": 0, "pending": 0, "frames": 48, "persons": 4}


def test_commit_is_exclusive(tmp_path: Path) -> None:
    """A second attempt that finishes after the first never replaces the committed folder."""
    target = tmp_path / "video"
    with pytest.raises(FileExistsError), atomic_dir(target, force=True, exclusive=True) as tmp:
        (tmp / "a.txt").write_text("second")
        target.mkdir()
        (target / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["video"]  # the loser's temp folder is gone


def test_ctrl_c_then_restart_finishes_the_rest(tmp_path: Path, videos: Path, tiny_onnx: Path) -> None:
    """The real signal path: SIGINT to a running tdmi-infer, then the same command finishes the rest."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(4):  # 8 videos: enough that Ctrl-C lands with some left
        for n in ("clip00", "clip01"):
            shutil.copy(videos / f"{n}.mp4", src / f"{n}_{k}.mp4")
    out = tmp_path / "out"
    args = [str(src), "--model", str(tiny_onnx), "--full-frame", "-o", str(out)]
    cmd = [sys.executable, "-m", "tdmi.cli.infer", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _record(out)["summary"]["done"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to do the rest" in err
    first = _record(out)
    finished = {n for n, v in first["videos"].items() if v["status"] == "done"}
    assert 2 <= len(finished) < 8 and first["summary"]["pending"] == 8 - len(finished)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".tdmi-staging"]
    assert not any(staging_dir(out).iterdir())  # the interrupted video's temp folder is gone
    assert run_app(app, args) == 0
    rec = _record(out)
    assert rec["summary"]["done"] == 8
    assert {n for n, v in rec["videos"].items() if v["run"] == 1} == finished


def test_eval_over_a_many_video_output(tmp_path: Path, posetrack18: Path, tiny_onnx: Path) -> None:
    """tdmi-infer over PoseTrack val frame folders with GT boxes, then tdmi-eval over the merged OUT/."""
    from tdmi.cli.eval import app as eval_app

    out = tmp_path / "out"
    ann = posetrack18 / "annotations" / "val"
    args = [str(posetrack18 / "images" / "val"), "--model", str(tiny_onnx), "--boxes", "gt"]
    assert run_app(app, [*args, "--annotations", str(ann), "--no-overlay", "-o", str(out)]) == 0
    result = evaluate(ann, out)
    gt_people = sum(len(json.loads(f.read_text())["annotations"]) for f in ann.glob("*.json"))
    assert result.counts["videos"] == 3 and result.counts["pred_persons"] == gt_people == 14
    # the same scores as the flat layout (one prediction file per GT file, GT file names)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in ann.glob("*.json"):
        doc = json.loads((out / f.stem / f.name).read_text())
        gt_images = json.loads(f.read_text())["images"]
        # with --boxes gt the output already names the annotation's images and ids
        assert {i["id"] for i in doc["images"]} <= {i["id"] for i in gt_images}
        assert {a["image_id"] for a in doc["annotations"]} <= {i["id"] for i in gt_images}
        (flat / f.name).write_text(json.dumps(doc))
    assert evaluate(ann, flat).groups == pytest.approx(result.groups, nan_ok=True)
    assert run_app(eval_app, [str(ann), str(out), "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["counts"]["pred_persons"] == 14
    shutil.rmtree(out / "009473_mpii_test")
    with pytest.raises(DataError, match=r"no prediction file .*009473_mpii_test"):
        evaluate(ann, out)
