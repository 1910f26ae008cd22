"""``tdmi-serve``: a real Triton Inference Server on this machine, serving TDMI heatmaps and poses."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from tdmi.cli.common import Verbose, check_input_paths, console, err_console, main_for, preset_or_json
from tdmi.cli.options import (
    InstancesOpt,
    MaxBatchOpt,
    MaxQueueDelayOpt,
    PoseRefineOpt,
    PreferredBatchOpt,
    serve_settings,
)

app = typer.Typer(
    add_completion=False,
    help="Serve TDMI with the Triton server bundled in nvidia-pytriton: heatmaps (tdmi, tdmi_nobatch) and "
    "frames + boxes -> keypoints (tdmi_pose), over HTTP and gRPC, with dynamic batching. Ctrl-C stops it.",
)


@app.command()
def serve(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="Preset or config JSON (alone: random weights).", callback=preset_or_json
        ),
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="TDMI checkpoint to serve.")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Serve this exported ONNX file.")] = None,
    engine: Annotated[
        Path | None, typer.Option("--engine", help="Serve this TensorRT engine (with its sidecar; GPU).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="HTTP port.")] = 8000,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port (default: --port + 1).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Prometheus metrics port (default: --port + 2).")
    ] = None,
    max_batch: MaxBatchOpt = 16,
    preferred_batch: PreferredBatchOpt = "4,8,16",
    max_queue_delay_us: MaxQueueDelayOpt = 2000,
    instances: InstancesOpt = 1,
    threads: Annotated[
        int, typer.Option("--threads", help="ONNX Runtime threads per instance (0: its default).")
    ] = 0,
    refine: PoseRefineOpt = "dark",
    startup_timeout: Annotated[
        float, typer.Option("--startup-timeout", help="Seconds to wait for every model to be ready.")
    ] = 300.0,
    verbose: Verbose = False,
) -> None:
    """Export (if needed), write a model repository, start Triton and serve until Ctrl-C/SIGTERM."""
    check_input_paths({"--checkpoint": checkpoint, "--onnx": onnx, "--engine": engine})
    from tdmi.serve import LOCAL_MODELS, Ports, ServerError, TritonServer, resolve_artifact
    from tdmi.serve.repository import write_repository

    settings = serve_settings(
        max_batch, preferred_batch, max_queue_delay_us, instances, refine, threads=threads
    )
    ports = Ports.from_http(port, grpc_port, metrics_port)
    server = TritonServer(Path("."), ports, host=host, models=LOCAL_MODELS)
    server.check_ports()  # before a minute of exporting
    work = Path(tempfile.mkdtemp(prefix="tdmi-serve-"))  # inside the run's temp root: removed at exit
    artifact = resolve_artifact(work, onnx=onnx, engine=engine, config=config, checkpoint=checkpoint)
    server.repository = write_repository(work / "repository", artifact, settings, flavour="python")
    err_console.print(f"starting Triton ({', '.join(LOCAL_MODELS)}) ...")
    t0 = time.perf_counter()
    try:
        server.start(startup_timeout)
        console.print(
            f"serving {artifact.config.name} ({artifact.path.name}) in {time.perf_counter() - t0:.1f} s: "
            f"HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}\n"
            f"liveness http://{server.http_url}/v2/health/live, "
            f"readiness http://{server.http_url}/v2/health/ready; "
            "Ctrl-C to stop",
            highlight=False,
            markup=False,
        )
        while server.running():
            time.sleep(0.5)
        rc = server.process.returncode if server.process else None
        raise ServerError(f"Triton exited unexpectedly (status {rc}); last log lines:\n{server.log_tail()}")
    finally:
        if server.running():
            err_console.print("stopping Triton ...")
        server.stop()


def main() -> None:
    main_for(app, "tdmi-serve")


if __name__ == "__main__":
    main()
