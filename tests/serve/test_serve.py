"""Triton serving: the exported repository parses with Triton's protobuf, a real bundled tritonserver
answers like tdmi.runtime, refuses bad requests while it keeps serving, loses nothing under load, and
tdmi-serve starts and stops cleanly.

Server tests share one session server (a start loads four Python-backend stubs: tens of seconds on a
busy 2-core machine); the tdmi-serve CLI test starts one more. Both are always stopped.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tdmi import runtime
from tdmi.artifacts.sidecar import (
    BatchProfile,
    BuildEnvironment,
    EngineSidecar,
    GpuInfo,
    PluginInfo,
    TensorInfo,
    sidecar_path,
    write_sidecar,
)
from tdmi.cli import export as export_cli
from tdmi.cli.common import run_app
from tdmi.errors import ConfigError, TdmiError
from tdmi.serve import (
    LOCAL_MODELS,
    MODELS,
    PortInUseError,
    Ports,
    ServeConfig,
    TritonServer,
    artifact_from_engine,
    artifact_from_onnx,
    free_port,
    read_config,
    write_repository,
)
from tdmi.spec.config import get_preset

REPO = Path(__file__).resolve().parents[2]
T, H, W, J = 3, 128, 96, 17


@pytest.fixture(scope="session")
def reference(tiny_onnx_dynamic: Path) -> runtime.Predictor:
    return runtime.load(tiny_onnx_dynamic)


# -- the repository --------------------------------------------------------------------------------


def _io(cfg: object) -> tuple[dict[str, tuple[int, list[int]]], dict[str, tuple[int, list[int]]]]:
    ins = {i.name: (i.data_type, list(i.dims)) for i in cfg.input}  # type: ignore[attr-defined]
    outs = {o.name: (o.data_type, list(o.dims)) for o in cfg.output}  # type: ignore[attr-defined]
    return ins, outs


@pytest.mark.serve
def test_exported_repository_parses_and_wires_up(tiny_onnx_dynamic: Path, tmp_path: Path) -> None:
    out = tmp_path / "model_repository"
    serve = ServeConfig(
        max_batch_size=8, preferred_batch_sizes=(2, 8), max_queue_delay_us=500, instances=2, kind="gpu"
    )
    write_repository(out, artifact_from_onnx(tiny_onnx_dynamic), serve, flavour="platform")
    assert sorted(p.name for p in out.iterdir()) == sorted(MODELS)
    configs = {m: read_config(out / m / "config.pbtxt") for m in MODELS}
    from tritonclient.grpc import model_config_pb2 as pb

    hm = configs["tdmi"]
    assert hm.name == "tdmi" and hm.platform == "onnxruntime_onnx" and hm.max_batch_size == 8
    assert list(hm.dynamic_batching.preferred_batch_size) == [2, 8]
    assert hm.dynamic_batching.max_queue_delay_microseconds == 500
    assert hm.instance_group[0].count == 2 and hm.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert _io(hm) == ({"frames": (pb.TYPE_FP32, [T, 3, H, W])}, {"heatmaps": (pb.TYPE_FP32, [J, 32, 24])})
    assert (out / "tdmi" / "1" / "model.onnx").read_bytes() == tiny_onnx_dynamic.read_bytes()
    assert ServeConfig.from_json(hm.parameters["tdmi_serve"].string_value) == serve
    for m in ("tdmi_pre", "tdmi_post"):
        assert configs[m].backend == "python" and (out / m / "1" / "model.py").is_file()
        assert "sys.path" not in (out / m / "1" / "model.py").read_text()  # the container's own tdmi
    # The ensemble: every step's maps name real tensors of that model, every internal tensor is
    # produced before it is consumed, and the ensemble's own I/O are images/boxes -> keypoints/scores.
    pose = configs["tdmi_pose"]
    assert pose.platform == "ensemble"
    assert _io(pose) == (
        {"images": (pb.TYPE_UINT8, [T, -1, -1, 3]), "boxes": (pb.TYPE_FP32, [-1, 4])},
        {"keypoints": (pb.TYPE_FP32, [-1, J, 2]), "scores": (pb.TYPE_FP32, [-1, J])},
    )
    available = {"images", "boxes"}
    for step in pose.ensemble_scheduling.step:
        ins, outs = _io(configs[step.model_name])
        assert set(step.input_map) == set(ins) and set(step.output_map) == set(outs)
        assert set(step.input_map.values()) <= available
        available |= set(step.output_map.values())
    assert {"keypoints", "scores"} <= available


def _engine(tmp_path: Path, profile: BatchProfile, io_dtype: str = "float32") -> Path:
    tmp_path.mkdir(exist_ok=True)
    engine = tmp_path / "tdmi-fp16.engine"
    engine.write_bytes(b"not a real engine: only the Triton config is generated here")
    sc = EngineSidecar(
        model_config=get_preset("tdmi-tiny").to_dict(),
        precision="fp16",
        inputs=(TensorInfo("frames", (-1, T, 3, H, W), io_dtype),),
        outputs=(TensorInfo("heatmaps", (-1, J, 32, 24), io_dtype),),
        profile=profile,
        environment=BuildEnvironment("10.9.0", "12.8", "570.0", GpuInfo("NVIDIA H100", "9.0")),
        plugin=PluginInfo("TemporalDiff", "tdmi", "1", "ab" * 32),
        source_onnx_sha256="cd" * 32,
        engine_sha256="ef" * 32,
        toolkit_version="tdmi-deploy 0.1.0",
    )
    write_sidecar(sidecar_path(engine), sc)
    return engine


@pytest.mark.serve
def test_engine_repository_is_a_tensorrt_plan_within_the_profile(tmp_path: Path) -> None:
    engine = _engine(tmp_path, BatchProfile(1, 8, 16))
    out = tmp_path / "repo"
    write_repository(out, artifact_from_engine(engine), ServeConfig(kind="cpu"), flavour="platform")
    cfg = read_config(out / "tdmi" / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2 as pb

    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU  # a plan runs on a GPU only
    assert (out / "tdmi" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert (out / "tdmi" / "1" / "model.plan.json").read_text() == sidecar_path(engine).read_text()
    # An FP16-I/O engine: Triton's backend takes FP16 clips, so tdmi_pre sends FP16 and tdmi_post takes it.
    half = _engine(tmp_path / "half", BatchProfile(1, 8, 16), io_dtype="float16")
    write_repository(tmp_path / "r16", artifact_from_engine(half), ServeConfig(), flavour="platform")
    configs = {
        m: read_config(tmp_path / "r16" / m / "config.pbtxt") for m in ("tdmi", "tdmi_pre", "tdmi_post")
    }
    assert configs["tdmi"].input[0].data_type == pb.TYPE_FP16
    assert {o.name: o.data_type for o in configs["tdmi_pre"].output}["frames"] == pb.TYPE_FP16
    assert {i.name: i.data_type for i in configs["tdmi_post"].input}["heatmaps"] == pb.TYPE_FP16
    with pytest.raises(ConfigError, match="profile maximum 4"):
        write_repository(tmp_path / "r2", artifact_from_engine(_engine(tmp_path, BatchProfile(1, 2, 4))))
    assert not (tmp_path / "r2").exists()


@pytest.mark.serve
def test_export_triton_cli_refuses_fixed_batch_and_non_empty_output(
    tiny_onnx_dynamic: Path, tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed, dynamic = tiny_onnx, tiny_onnx_dynamic  # batch 1, dynamic batch
    out = tmp_path / "repo"
    assert run_app(export_cli.app, ["triton", "--onnx", str(fixed), "-o", str(out)], "tdmi-export") == 1
    err = capsys.readouterr().err
    assert "--batch dynamic" in err and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]
    assert run_app(export_cli.app, ["triton", "--onnx", str(dynamic), "-o", str(out)], "tdmi-export") == 0
    assert read_config(out / "tdmi_pose" / "config.pbtxt").name == "tdmi_pose"
    before = (out / "tdmi" / "config.pbtxt").read_text()
    argv = ["triton", "--onnx", str(dynamic), "-o", str(out), "--max-batch", "4", "--preferred-batch", "4"]
    assert run_app(export_cli.app, argv, "tdmi-export") == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "tdmi" / "config.pbtxt").read_text() == before
    assert run_app(export_cli.app, [*argv, "--force"], "tdmi-export") == 0
    assert read_config(out / "tdmi" / "config.pbtxt").max_batch_size == 4


def test_serve_config_is_checked_and_round_trips() -> None:
    s = ServeConfig(max_batch_size=4, preferred_batch_sizes=(2, 4), refine="quarter")
    assert ServeConfig.from_json(s.to_json()) == s
    with pytest.raises(ConfigError, match="preferred_batch_sizes must lie in"):
        ServeConfig(max_batch_size=4, preferred_batch_sizes=(8,))
    with pytest.raises(ConfigError, match="refine"):
        ServeConfig(refine="argmax")


@pytest.mark.serve
def test_taken_port_is_named_before_starting(tmp_path: Path) -> None:
    port = free_port()  # port, port + 1 and port + 2 free: take the gRPC one
    with socket.socket() as s:
        s.bind(("127.0.0.1", port + 1))
        s.listen()
        server = TritonServer(tmp_path, Ports.from_http(port))
        with pytest.raises(
            PortInUseError, match=rf"gRPC port {port + 1} on 127.0.0.1 is already in use.*--grpc-port"
        ):
            server.start()
    assert server.process is None and server.scratch is None


def _noop_repository(root: Path) -> Path:
    """A one-model repository whose Python model imports nothing: a server that starts in seconds."""
    model = root / "repo" / "noop"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "noop"\nbackend: "python"\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]\n'
    )
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    )
    return root / "repo"


@pytest.mark.serve
def test_server_that_fails_to_bind_is_a_port_error(tmp_path: Path) -> None:
    """A port taken after the check (a race) is still reported as a port problem, and nothing is left."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        server = TritonServer(_noop_repository(tmp_path), Ports.from_http(port), models=("noop",))
        server.check_ports = lambda: None  # type: ignore[method-assign]  # as if the port went after the check
        with pytest.raises(PortInUseError, match="could not bind"):
            server.start(timeout=120)
    assert server.process is None and server.scratch is None
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))


def test_server_exits_when_its_starter_is_killed(tmp_path: Path) -> None:
    """kill -9 of the process that started the server (no chance to clean up) still ends the server."""
    repo = _noop_repository(tmp_path)
    code = (
        "import sys, time\n"
        "from tdmi.serve import TritonServer, Ports, free_port\n"
        f"s = TritonServer({str(repo)!r}, Ports.from_http(free_port()), models=('noop',)).start(120)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert starter.stdout is not None and starter.stdout.readline().strip() == "ready"
        assert any("tritonserver" in a for a in _server_processes_of(starter.pid))
    finally:
        starter.kill()
        starter.wait()
    deadline = time.monotonic() + 60
    while _server_processes_of(starter.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _server_processes_of(starter.pid) == []


# -- a real server ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(tiny_onnx_dynamic: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("serve-repo") / "repository"
    serve = ServeConfig(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=1000)
    write_repository(repo, artifact_from_onnx(tiny_onnx_dynamic), serve, flavour="python")
    srv = TritonServer(repo, Ports.from_http(free_port()), models=LOCAL_MODELS)
    try:
        srv.start(timeout=300)
        pgid = srv.process.pid if srv.process else None
        prefix = srv.shm_prefix
        yield srv
    finally:
        scratch = srv.scratch
        srv.stop()
    # Stopped means stopped: no process of its group, no scratch folder, no shared memory left.
    assert pgid is not None and not _group_alive(pgid)
    assert scratch is not None and not scratch.exists()
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _http(srv: TritonServer) -> object:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(srv.http_url)


def _inp(mod: object, name: str, x: np.ndarray, dtype: str) -> object:
    i = mod.InferInput(name, list(x.shape), dtype)  # type: ignore[attr-defined]
    i.set_data_from_numpy(x)
    return i


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_heatmaps_equal_the_runtime(
    server: TritonServer, reference: runtime.Predictor, protocol: str
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    x = np.random.default_rng(3).standard_normal((3, T, 3, H, W)).astype(np.float32)
    for model in ("tdmi", "tdmi_nobatch"):
        got = client.infer(model, [_inp(mod, "frames", x, "FP32")]).as_numpy("heatmaps")
        # Not empty, not zeros (the numpy-2 failure modes of the stub's numpy path), and equal.
        assert got.shape == (3, J, 32, 24) and np.abs(got).max() > 0
        np.testing.assert_allclose(got, reference.predict(x), rtol=0, atol=1e-4)


@pytest.mark.serve
@pytest.mark.slow
def test_served_pose_equals_runtime_keypoints(server: TritonServer, reference: runtime.Predictor) -> None:
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (T, 180, 240, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 90, 140], [120.5, 5.25, 100, 160], [200, 150, 80, 60]], np.float32)
    import tritonclient.http as httpclient

    res = _http(server).infer(  # type: ignore[attr-defined]
        "tdmi_pose", [_inp(httpclient, "images", frames, "UINT8"), _inp(httpclient, "boxes", boxes, "FP32")]
    )
    kps, scores = reference.predict_keypoints(list(frames), boxes, refine="dark")
    assert res.as_numpy("keypoints").shape == (3, J, 2)
    np.testing.assert_allclose(res.as_numpy("keypoints"), kps, rtol=0, atol=1e-3)
    np.testing.assert_allclose(res.as_numpy("scores"), scores, rtol=0, atol=1e-4)


def _bad_requests() -> list[tuple[str, str, list[tuple[str, np.ndarray, str]], str]]:
    ok_frames = np.zeros((T, 120, 160, 3), np.uint8)
    ok_box = np.array([[10, 10, 50, 80]], np.float32)
    nan_clip = np.zeros((1, T, 3, H, W), np.float32)
    nan_clip[0, 1, 0, 5, 5] = np.nan
    inf_clip = np.zeros((2, T, 3, H, W), np.float32)
    inf_clip[1, 0, 2, 0, 0] = np.inf
    return [
        ("wrong shape", "tdmi", [("frames", np.zeros((1, T, 3, H, W + 1), np.float32), "FP32")], r"shape"),
        (
            "wrong dtype",
            "tdmi",
            [("frames", np.zeros((1, T, 3, H, W), np.float64), "FP64")],
            r"data-type|datatype",
        ),
        ("missing input", "tdmi_pose", [("images", ok_frames, "UINT8")], r"missing|expected 2 inputs"),
        ("batch over max", "tdmi", [("frames", np.zeros((9, T, 3, H, W), np.float32), "FP32")], r"batch"),
        ("NaN clip", "tdmi", [("frames", nan_clip, "FP32")], r"NaN or Inf \(batch index \[0\]\)"),
        ("Inf clip", "tdmi", [("frames", inf_clip, "FP32")], r"NaN or Inf \(batch index \[1\]\)"),
        (
            "box outside",
            "tdmi_pose",
            [("images", ok_frames, "UINT8"), ("boxes", np.array([[500, 10, 50, 80]], np.float32), "FP32")],
            r"box 0 .* outside the 160x120 frame",
        ),
        (
            "empty batch",
            "tdmi_pose",
            [("images", ok_frames, "UINT8"), ("boxes", np.zeros((0, 4), np.float32), "FP32")],
            r"boxes is empty",
        ),
        (
            "too many boxes",
            "tdmi_pose",
            [("images", ok_frames, "UINT8"), ("boxes", np.repeat(ok_box, 9, 0), "FP32")],
            r"9 boxes in one request, at most 8",
        ),
        (  # answered 200 with NaN keypoints before the scale check
            "huge box",
            "tdmi_pose",
            [("images", ok_frames, "UINT8"), ("boxes", np.array([[0, 0, 3e38, 3e38]], np.float32), "FP32")],
            r"box 0 .* is more than 16x the 160x120 frame",
        ),
        (
            "NaN box",
            "tdmi_pose",
            [("images", ok_frames, "UINT8"), ("boxes", np.array([[0, np.nan, 5, 5]], np.float32), "FP32")],
            r"box 0 .* contains NaN or Inf",
        ),
    ]


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.parametrize("case", _bad_requests(), ids=lambda c: c[0])
def test_bad_request_is_refused_and_the_server_keeps_serving(
    server: TritonServer, reference: runtime.Predictor, case: tuple
) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    _, model, inputs, message = case
    client = _http(server)
    with pytest.raises(InferenceServerException, match=message) as refused:
        client.infer(model, [_inp(httpclient, n, x, d) for n, x, d in inputs])  # type: ignore[attr-defined]
    assert refused.value.status() == "400", (
        refused.value.status(),
        refused.value.message(),
    )  # a client error
    assert server.running() and server.ready()
    x = np.random.default_rng(5).standard_normal((1, T, 3, H, W)).astype(np.float32)
    got = client.infer("tdmi", [_inp(httpclient, "frames", x, "FP32")]).as_numpy("heatmaps")  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, reference.predict(x), rtol=0, atol=1e-4)


@pytest.mark.serve
@pytest.mark.slow
def test_load_test_loses_nothing_and_matches_the_runtime(
    server: TritonServer, reference: runtime.Predictor
) -> None:
    from tdmi.serve.load_test import LoadTestOptions, run_load_test

    opts = LoadTestOptions(
        url=f"http://{server.http_url}",
        concurrency=(1, 4),
        requests=12,
        seconds=30,
        batch=2,
        compare_concurrency=4,
        compare_rounds=1,
        parity_requests=2,
    )
    report = run_load_test(opts, reference, progress=False)
    assert [lv.concurrency for lv in report.levels] == [1, 4]
    assert report.totals == {"sent": 48, "answered": 48, "failed": 0, "lost": 0}  # 2 levels + on/off
    assert all(lv.p50_ms <= lv.p90_ms <= lv.p99_ms and lv.clips_per_s > 0 for lv in report.levels)
    assert report.parity["ok"] and report.parity["max_abs"] <= 1e-4
    b = report.batching
    # Mean clips per model execution: without the batcher each execution is one 2-clip request.
    assert b["checked"] and b["mean_batch_off"] == 2.0 and b["mean_batch_on"] >= 2.0 and b["ratio_median"] > 0


@pytest.mark.serve
@pytest.mark.slow
def test_tdmi_bench_server_cli_writes_the_report(
    server: TritonServer, tiny_onnx_dynamic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tdmi.cli import bench

    out = tmp_path / "out" / "load.json"
    argv = [
        "--server",
        server.grpc_url,
        "--protocol",
        "grpc",
        "--model",
        str(tiny_onnx_dynamic),
        "--concurrency",
        "1,2",
        "--requests",
        "4",
        "--compare-rounds",
        "1",
        "--json",
        str(out),
        "--no-progress",
    ]
    assert run_app(bench.app, argv, prog_name="tdmi-bench") == 0
    text = " ".join(capsys.readouterr().out.split())  # the console wraps at its width
    # 2 levels x 4 requests + 1 round of batching on and off x 4 requests.
    assert (
        "16 sent, 16 answered, 0 failed, 0 lost" in text and "parity with the local runtime: max abs" in text
    )
    report = json.loads(out.read_text())
    assert report["protocol"] == "grpc" and report["parity"]["ok"] and report["totals"]["lost"] == 0


@pytest.mark.serve
def test_load_test_names_an_unreachable_server() -> None:
    from tdmi.serve.load_test import LoadTestOptions, run_load_test

    with pytest.raises(TdmiError, match=r"not served|cannot reach"):
        run_load_test(LoadTestOptions(url=f"127.0.0.1:{free_port()}"), progress=False)


# -- tdmi-serve, as a user runs it -----------------------------------------------------------------


@pytest.mark.serve
@pytest.mark.slow
def test_tdmi_serve_config_tiny_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, reference: runtime.Predictor
) -> None:
    import tritonclient.http as httpclient

    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdmi.cli.serve",
            "--config",
            "tdmi-tiny",
            "--port",
            str(port),
            "--max-batch",
            "4",
            "--preferred-batch",
            "2,4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any("serving tdmi-tiny" in s for s in lines), "".join(lines)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tdmi_pose")
        x = np.random.default_rng(6).standard_normal((2, T, 3, H, W)).astype(np.float32)
        got = client.infer("tdmi", [_inp(httpclient, "frames", x, "FP32")]).as_numpy("heatmaps")
        # No checkpoint: the same seeded random weights as every other command, so the same answers.
        np.testing.assert_allclose(got, reference.predict(x), rtol=0, atol=1e-4)
        assert re.search(r"metrics http://127\.0\.0\.1:\d+/metrics", "".join(lines))
        assert any("tritonserver" in a for a in _server_processes_of(proc.pid))  # the check below can see it
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + out
    assert _server_processes_of(proc.pid) == []
    # Export, repository, server scratch: all removed. (.ses is onnxruntime's own session-id file,
    # which `import onnxruntime` writes to $TMPDIR in any process.)
    assert [p.name for p in scratch.iterdir() if p.name != ".ses"] == []
    assert not list(Path("/dev/shm").glob(f"tdmi-{proc.pid}-*"))
    assert not any(_port_open(port + k) for k in range(3))


def _server_processes_of(pid: int) -> list[str]:
    """tritonserver/stub processes started by the tdmi process ``pid`` (their shm prefix names it)."""
    out = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"tdmi-{pid}-" in line]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- error codes of the Python models, without a server ------------------------------------------


class _FakeTritonError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self.message, self.code = message, code


class _FakeResponse:
    def __init__(self, output_tensors: list, error: _FakeTritonError | None = None) -> None:
        self.outputs, self.error = output_tensors, error


@pytest.fixture()
def fake_pb(monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """``triton_python_backend_utils`` as the stub has it: requests are dicts of numpy inputs."""
    import types

    from tdmi.serve import backend

    pb = types.SimpleNamespace(
        TritonError=_FakeTritonError,
        InferenceResponse=_FakeResponse,
        get_input_tensor_by_name=lambda request, name: request.get(name),
    )
    monkeypatch.setattr(backend, "_pb", lambda: pb)
    monkeypatch.setattr(backend, "to_numpy", lambda t: np.asarray(t))
    monkeypatch.setattr(backend, "from_numpy", lambda name, a: (name, np.asarray(a)))
    return {}


def test_client_errors_are_invalid_arg_and_nan_answers_are_internal(fake_pb: dict) -> None:
    from tdmi.serve import backend

    class NanModel:  # finite clips in, NaN heatmaps out (broken weights, FP16 overflow)
        def predict(self, x: np.ndarray) -> np.ndarray:
            y = np.zeros((x.shape[0], J, 32, 24), np.float32)
            y[-1, 0, 0, 0] = np.nan
            return y

    heat = backend.HeatmapModel()
    heat.input_name, heat.output_name, heat.predictor = "frames", "heatmaps", NanModel()
    nan_clip = np.zeros((1, T, 3, H, W), np.float32)
    nan_clip[0, 0, 0, 0, 0] = np.nan
    ok, bad_in, bad_out = heat.execute(
        [
            {"frames": np.zeros((2, T, 3, H, W), np.float32)},
            {"frames": nan_clip},
            {"frames": np.zeros((1, T, 3, H, W), np.float32)},
        ]
    )
    assert ok.error is None and ok.outputs[0][1].shape == (2, J, 32, 24)
    assert bad_in.error.code == "INVALID_ARG" and "NaN or Inf" in bad_in.error.message
    assert bad_out.error.code == "INTERNAL" and "NaN or Inf heatmaps" in bad_out.error.message

    pre = backend.PreprocessModel()
    pre.config, pre.serve = (
        get_preset("tdmi-tiny").replace(num_frames=T),
        ServeConfig(max_batch_size=8, preferred_batch_sizes=(8,)),
    )
    pre.clip_dtype = np.float32
    frames = np.zeros((T, 120, 160, 3), np.uint8)
    (huge,) = pre.execute([{"images": frames, "boxes": np.array([[0, 0, 3e38, 3e38]], np.float32)}])
    assert huge.error.code == "INVALID_ARG" and "more than 16x" in huge.error.message

    post = backend.PostprocessModel()
    post.config, post.serve = (
        get_preset("tdmi-tiny"),
        ServeConfig(max_batch_size=8, preferred_batch_sizes=(8,)),
    )
    hm = np.zeros((2, J, 32, 24), np.float32)
    hm[:, :, -1, -1] = 1.0  # every joint at the far corner of the crop
    centers = np.array([[50.0, 60.0], [3e38, 3e38]], np.float32)  # finite, but not in float32 once added to
    scales = np.array([[40.0, 50.0], [3e38, 3e38]], np.float32)
    (nan_kp,) = post.execute([{"heatmaps": hm, "centers": centers, "scales": scales}])
    assert nan_kp.error is not None and nan_kp.error.code == "INTERNAL", nan_kp.error
