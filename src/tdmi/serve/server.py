"""Run the ``tritonserver`` binary bundled in the nvidia-pytriton wheel over one of our repositories.

PyTriton's own Python layer is not used (it pins numpy < 2 and, under numpy 2, answers with empty
tensors); only its binary, its Python backend and the stub for this interpreter are. The server runs
in its own process group, so stopping it (SIGTERM, then SIGKILL after a grace period) leaves no
orphan stub process; its scratch folder (backend copy, log) and its shared-memory regions are
removed on stop. On Linux the server is also told to exit if the process that started it dies.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tdmi.errors import BackendUnavailableError, TdmiError

LOG_NAME = "tritonserver.log"  # in the server's scratch folder
INSTALL_HINT = "pip install --no-deps nvidia-pytriton==0.7.0 (see README, Serving)"


class ServerError(TdmiError):
    """The server could not start, or stopped."""


class PortInUseError(ServerError):
    """A port the server needs is taken."""


@dataclass(frozen=True)
class TritonDist:
    """Where the bundled server, its libraries and this Python's backend stub are."""

    binary: Path
    backend: Path  # backends/python (libtriton_python.so, triton_python_backend_utils.py)
    stub: Path
    libs: Path


def find_tritonserver() -> TritonDist:
    """Locate the wheel's files without importing pytriton (whose import needs numpy < 2)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            f"tdmi-serve needs the Triton server from nvidia-pytriton: {INSTALL_HINT}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonDist(
        binary=dist / "bin" / "tritonserver",
        backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=root.parent / "nvidia_pytriton.libs",
    )
    for what, path in (("server binary", found.binary), ("Python backend", found.backend)):
        if not path.exists():
            raise BackendUnavailableError(
                f"the nvidia-pytriton install lacks its {what} ({path}): {INSTALL_HINT}"
            )
    if not found.stub.exists():
        raise BackendUnavailableError(
            f"nvidia-pytriton has no Python-backend stub for Python {version} ({found.stub}): "
            "use Python 3.8-3.13"
        )
    return found


def server_env(dist: TritonDist, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: this interpreter's libpython and ``python`` first.

    The stub links ``libpython3.X.so``; the dynamic loader would otherwise pick the system's, whose
    patch release may not match this interpreter's standard library (model loading then fails with
    ``'_thread.RLock' object has no attribute '_recursion_count'``).
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    libs = [p for p in (libdir, str(dist.libs), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    # The stub finds its prefix (and site-packages) from the python first on PATH: make it this one.
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    return env


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", span: int = 3) -> int:
    """A port P with P..P+span-1 all free (HTTP, gRPC, metrics), for tests and throwaway servers."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port + span < 65536 and all(port_free(host, port + k) for k in range(span)):
            return port
    raise ServerError(f"no {span} consecutive free ports found on {host}")


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def from_http(cls, http: int, grpc: int | None = None, metrics: int | None = None) -> Ports:
        return cls(http, grpc if grpc is not None else http + 1, metrics if metrics is not None else http + 2)

    def items(self) -> list[tuple[str, int]]:
        return [("HTTP", self.http), ("gRPC", self.grpc), ("metrics", self.metrics)]


class TritonServer:
    """One ``tritonserver`` process over a model repository; a context manager that always stops it."""

    def __init__(
        self,
        repository: str | Path,
        ports: Ports,
        host: str = "127.0.0.1",
        models: tuple[str, ...] = (),
        log_verbose: int = 0,
    ) -> None:
        self.repository = Path(repository)
        self.ports = ports
        self.host = host
        self.models = models
        self.log_verbose = log_verbose
        self.process: subprocess.Popen[bytes] | None = None
        self.scratch: Path | None = None
        self.shm_prefix = f"tdmi-{os.getpid()}-{uuid.uuid4().hex[:8]}-"

    # -- addresses -------------------------------------------------------------------------------
    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("::1" if self.host == "::" else self.host)

    @property
    def http_url(self) -> str:
        return f"{self.client_host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.client_host}:{self.ports.metrics}/metrics"

    @property
    def log_path(self) -> Path | None:
        return self.scratch / LOG_NAME if self.scratch else None

    def log_tail(self, lines: int = 20) -> str:
        p = self.log_path
        if p is None or not p.exists():
            return ""
        text = p.read_text(errors="replace").splitlines()
        return "\n".join(line.strip() for line in text[-lines:])

    # -- lifetime --------------------------------------------------------------------------------
    def check_ports(self) -> None:
        for what, port in self.ports.items():
            if not 1 <= port <= 65535:
                raise ServerError(f"{what} port {port} is out of range 1..65535")
        seen = [p for _, p in self.ports.items()]
        if len(set(seen)) != len(seen):
            raise ServerError(f"HTTP, gRPC and metrics need three different ports, got {seen}")
        for what, port in self.ports.items():
            if not port_free(self.host, port):
                flag = {"HTTP": "--port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}[what]
                raise PortInUseError(
                    f"{what} port {port} on {self.host} is already in use: stop what holds it or pick "
                    f"another with {flag}"
                )

    def command(self, dist: TritonDist, backends: Path) -> list[str]:
        return [
            str(dist.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]

    def start(self, timeout: float = 180.0) -> TritonServer:
        """Start and wait until every model is ready; on any failure nothing is left running."""
        dist = find_tritonserver()
        self.check_ports()
        self.scratch = Path(tempfile.mkdtemp(prefix="tdmi-triton-"))
        try:
            backends = self.scratch / "backends"
            shutil.copytree(dist.backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(dist.stub, backends / "python" / "triton_python_backend_stub")
            log = open(self.scratch / LOG_NAME, "wb")  # noqa: SIM115 - the child owns it for its lifetime
            try:
                self.process = subprocess.Popen(
                    self.command(dist, backends),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_env(dist),
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            finally:
                log.close()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._start_failure()
            if self.ready():
                return
            time.sleep(0.25)
        raise ServerError(
            f"Triton did not become ready within {timeout:.0f} s; last log lines:\n{self.log_tail()}"
        )

    def _start_failure(self) -> ServerError:
        tail = self.log_tail(40)
        rc = self.process.returncode if self.process else None
        lowered = tail.lower()
        if "address already in use" in lowered or "failed to bind" in lowered or "failed to start" in lowered:
            return PortInUseError(
                f"Triton could not bind its ports {[p for _, p in self.ports.items()]} on {self.host} (taken "
                "by another process): pick others with --port/--grpc-port/--metrics-port"
            )
        errors = [line for line in tail.splitlines() if line.startswith("E") or "error" in line.lower()]
        detail = "\n".join(errors[-6:]) or tail
        return ServerError(f"Triton exited with status {rc} while starting:\n{detail}")

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (urllib.error.URLError, OSError):
            return 0

    def live(self) -> bool:
        return self._get("/v2/health/live") == 200

    def ready(self) -> bool:
        if self._get("/v2/health/ready") != 200:
            return False
        return all(self._get(f"/v2/models/{m}/ready") == 200 for m in self.models)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` s, remove scratch and shm."""
        proc, self.process = self.process, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # The stubs share the group: make sure none outlives the server.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        shm = Path("/dev/shm")
        if shm.is_dir():
            for leftover in shm.glob(f"{self.shm_prefix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
