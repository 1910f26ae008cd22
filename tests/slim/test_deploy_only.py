"""What the deploy-only install (``pip install tdmi-deploy``: numpy, onnxruntime, opencv, typer,
rich) does with artifacts a full install made, and that it never loads torch or onnx doing it.

Every check runs in a fresh child process and reads that process's ``sys.modules`` at the end, so
it holds in the full install too (torch installed but not imported). Where torch must look absent,
the child blocks the heavy modules itself (``sys.modules[name] = None``: ``import`` raises and
``find_spec`` answers ``None``, as in the deploy-only venv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from .make_models import HERE, REQUIRED, full_install

HEAVY = ("torch", "torchvision", "onnx", "onnxscript")

PRELUDE = """
import json, sys
HEAVY = {heavy!r}
if {block!r}:
    for name in HEAVY:
        sys.modules[name] = None  # as if not installed
sys.path.insert(0, {here!r})
"""
POSTLUDE = """
loaded = [m for m, mod in list(sys.modules.items()) if mod is not None and m.split(".")[0] in HEAVY]
print("HEAVY=" + json.dumps(sorted(loaded)))
"""


def run_child(code: str, *args: str, block: bool = False) -> tuple[int, str, str, list[str]]:
    """(exit code, stdout, stderr, heavy modules loaded) of ``code`` in a fresh interpreter."""
    prelude = PRELUDE.format(heavy=HEAVY, block=block, here=str(HERE))
    program = prelude + textwrap.dedent(code) + POSTLUDE
    proc = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=600, check=False
    )
    heavy_lines = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY=")]
    heavy = json.loads(heavy_lines[-1][6:]) if heavy_lines else ["<child ended early>"]
    return proc.returncode, proc.stdout, proc.stderr, heavy


def test_runtime_predicts_keypoints_from_onnx_and_the_split_pair(
    slim_models: Path, fixture_video: Path
) -> None:
    rc, out, err, heavy = run_child(
        """
        import numpy as np, cv2
        import tdmi.runtime
        from tdmi.runtime.features import OnnxFramePredictor
        model, video = sys.argv[1], sys.argv[2]
        cap = cv2.VideoCapture(video)
        frames = [cap.read()[1] for _ in range(3)]
        h, w = frames[0].shape[:2]
        with tdmi.runtime.load(model) as p:
            kp, sc = p.predict_keypoints(frames, [[0, 0, w, h], [w / 4, h / 4, w / 2, h / 2]])
            t, (ih, iw) = p.config.num_frames, p.config.input_size
            clips = np.random.default_rng(0).standard_normal((2, t, 3, ih, iw)).astype(np.float32)
            whole = p.predict(clips)
        fp = OnnxFramePredictor(model)
        feats = [fp.frame_features(clips[:, i]) for i in range(t)]
        split = fp.head([np.stack([f[j] for f in feats], axis=1) for j in range(4)])
        print("RESULT=" + json.dumps({"kp": list(kp.shape), "sc": list(sc.shape),
              "finite": bool(np.isfinite(kp).all()), "split_diff": float(np.abs(split - whole).max())}))
        """,
        str(slim_models / "tiny.onnx"),
        str(fixture_video),
    )
    assert rc == 0, err
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT="))[7:])
    assert result["kp"] == [2, 17, 2] and result["sc"] == [2, 17] and result["finite"]
    assert result["split_diff"] < 1e-4  # the split pair composes to the whole graph
    assert heavy == []


def test_tdmi_infer_writes_every_output_and_matches_the_full_install(
    slim_models: Path, fixture_video: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    rc, out, err, heavy = run_child(
        """
        from pathlib import Path
        import numpy as np
        from tdmi.cli.common import run_app
        from tdmi.cli.infer import app
        import make_models
        video, model, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
        rc = run_app(app, [video, "--model", model, "--full-frame", "-o", str(out)], prog_name="tdmi-infer")
        if rc == 0:
            kp = make_models.infer_keypoints(Path(video), Path(model), out / "lib")
            np.save(out / "keypoints.npy", kp)
        print("RC=" + str(rc))
        """,
        str(fixture_video),
        str(slim_models / "tiny.onnx"),
        str(out_dir),
    )
    assert rc == 0 and "RC=0" in out, err
    stem = fixture_video.stem
    for name in (f"{stem}.json", f"{stem}.csv", f"{stem}_overlay.mp4", f"{stem}_sheet.png"):
        assert (out_dir / name).is_file() and (out_dir / name).stat().st_size > 0, name
    assert heavy == []
    # identical results: the deploy-only keypoints equal the full install's within 1e-4 px
    full = np.load(slim_models / "full_keypoints.npz")["keypoints"]
    here = np.load(out_dir / "keypoints.npy")
    assert here.shape == full.shape and here.size > 0
    assert float(np.abs(here - full).max()) <= 1e-4
    mine = json.loads((out_dir / f"{stem}.json").read_text())["annotations"]
    theirs = json.loads((slim_models / "full" / f"{stem}.json").read_text())["annotations"]
    assert len(mine) == len(theirs) > 0
    for a, b in zip(mine, theirs, strict=True):  # written rounded to 1e-3
        assert np.allclose(a["keypoints"], b["keypoints"], atol=1.01e-3, rtol=0)


def test_tdmi_infer_reuses_features_with_the_split_pair(
    slim_models: Path, fixture_video: Path, tmp_path: Path
) -> None:
    rc, out, err, heavy = run_child(
        """
        from tdmi.cli.common import run_app
        from tdmi.cli.infer import app
        video, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
        args = [video, "--model", model, "--full-frame", "--reuse-features", "--no-overlay", "-o", out]
        print("RC=" + str(run_app(app, args, prog_name="tdmi-infer")))
        """,
        str(fixture_video),
        str(slim_models / "tiny.onnx"),
        str(tmp_path / "out"),
    )
    assert rc == 0 and "RC=0" in out, err
    assert "cache hit rate" in out
    assert heavy == []


def test_tdmi_eval_scores_runtime_predictions(slim_models: Path, posetrack18: Path, tmp_path: Path) -> None:
    rc, out, err, heavy = run_child(
        """
        from pathlib import Path
        import cv2, numpy as np
        import tdmi.runtime
        from tdmi.cli.common import run_app
        from tdmi.cli.eval import app
        from tdmi.data.annotations import Person
        from tdmi.data.posetrack import load_split
        from tdmi.eval import write_predictions
        root, model, pred = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
        pred.mkdir()
        split = load_split(root)
        with tdmi.runtime.load(model) as p:
            for video in split:
                preds = {}
                for f in video.frames:
                    people = [q for q in f.persons if q.bbox_xywh is not None]
                    preds[f.image_id] = []
                    if not people:
                        continue
                    image = cv2.imread(str(split.image_root / f.file_name))
                    boxes = np.stack([q.bbox_xywh for q in people])
                    kp, sc = p.predict_keypoints([image] * p.config.num_frames, boxes)
                    preds[f.image_id] = [
                        Person(keypoints=np.concatenate([k, s[:, None]], axis=1), keypoint_scores=s,
                               track_id=q.track_id, score=float(s.mean()))
                        for q, k, s in zip(people, kp, sc)
                    ]
                write_predictions(pred, video.name, [f.raw for f in video.frames], preds)
        rc = run_app(app, [str(root / "annotations" / "val"), str(pred)], prog_name="tdmi-eval")
        print("RC=" + str(rc))
        """,
        str(posetrack18),
        str(slim_models / "tiny.onnx"),
        str(tmp_path / "pred"),
    )
    assert rc == 0 and "RC=0" in out, err
    assert "Total" in out and "14 GT people" in out  # every fixture person was predicted and scored
    assert heavy == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["tdmi.cli.infer", "--config", "tdmi-tiny"], "tdmi-deploy[export]"),
        (["tdmi.cli.infer", "VIDEO", "--model", "CKPT", "-o", "OUT"], "tdmi-deploy[export]"),
        (["tdmi.cli.export", "onnx", "--config", "tdmi-tiny", "-o", "OUT/x.onnx"], "tdmi-deploy[export]"),
        (["tdmi.cli.export", "inspect", "MODEL"], "tdmi-deploy[export]"),
        (["tdmi.cli.bench", "--config", "tdmi-tiny"], "tdmi-deploy[bench]"),
        (
            ["tdmi.cli.train", "--config", "tdmi-tiny", "--data", "synthetic", "-o", "OUT/run"],
            "tdmi-deploy[export]",
        ),
    ],
)
def test_a_torch_command_names_the_extra_in_one_line(
    args: list[str], fragment: str, slim_models: Path, fixture_video: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"not read: the extra is missing first")
    subs = {"VIDEO": str(fixture_video), "CKPT": str(ckpt), "MODEL": str(slim_models / "tiny.onnx")}
    argv = [subs.get(a, a.replace("OUT", str(tmp_path))) for a in args]
    rc, out, err, heavy = run_child(
        """
        import importlib
        from tdmi.cli.common import run_app
        module = importlib.import_module(sys.argv[1])
        print("RC=" + str(run_app(module.app, sys.argv[2:], prog_name=sys.argv[1].rsplit(".", 1)[1])))
        """,
        *argv,
        block=True,
    )
    assert rc == 0 and "RC=1" in out, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert heavy == []


def test_runtime_load_of_a_preset_names_the_extra() -> None:
    rc, out, err, heavy = run_child(
        """
        import tdmi.runtime
        from tdmi.extras import MissingExtraError
        try:
            tdmi.runtime.load("tdmi-tiny")
        except MissingExtraError as e:
            print("MSG=" + str(e))
        """,
        block=True,
    )
    assert rc == 0, err
    assert "tdmi-deploy[export]" in out and heavy == []


def test_the_deploy_only_install_itself(slim_models: Path) -> None:
    """In the deploy-only venv: no heavy package installed, and the console script answers as the
    README says (`tdmi-infer --config tdmi-tiny`: one line naming the extra, exit 1)."""
    if full_install():
        if REQUIRED:
            pytest.fail(
                "TDMI_SLIM_REQUIRED=1 but torch and onnx are installed here: not the deploy-only venv"
            )
        pytest.skip("torch and onnx are installed here: this runs in the deploy-only venv (.ci/run)")
    import importlib.util

    assert [m for m in HEAVY if importlib.util.find_spec(m) is not None] == []
    script = shutil.which("tdmi-infer", path=os.path.dirname(sys.executable))
    assert script is not None, "the tdmi-infer console script is not installed in this venv"
    proc = subprocess.run([script, "--config", "tdmi-tiny"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tdmi-deploy[export]" in lines[0], proc.stderr


def test_triton_model_code_needs_no_torch() -> None:
    """The Python-backend models (tdmi.serve.backend) import and convert tensors by numpy's DLPack."""
    rc, out, err, heavy = run_child(
        """
        import numpy as np
        import tdmi.serve, tdmi.serve.backend as backend
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        y = backend.to_numpy(x)  # anything with __dlpack__, as Triton's pb_utils.Tensor
        print("OK=" + str(bool(np.array_equal(x, y) and y.flags.writeable and not np.shares_memory(x, y))))
        """,
        block=True,
    )
    assert rc == 0, err
    assert "OK=True" in out and heavy == []
