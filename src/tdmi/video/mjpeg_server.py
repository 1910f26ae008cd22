"""A bounded HTTP MJPEG stream on loopback (``multipart/x-mixed-replace``), for tests and benchmarks.

It serves a fixed list of JPEG frames, at a given rate or as fast as the client reads, to each
client that asks for ``/stream.mjpg``; then it either closes the connection (the stream ends) or
holds it open without sending (a stalled camera) for ``hold_s`` seconds. It listens on 127.0.0.1
only and stops when its ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOUNDARY = "tdmiframe"
STREAM_PATH = "/stream.mjpg"


def _handler(
    frames: Sequence[bytes],
    fps: float | None,
    hold_s: float,
    stop: threading.Event,
    gate: Callable[[int], None] | None,
) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != STREAM_PATH:
                self.send_error(404, f"only {STREAM_PATH} is served")
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            t0 = time.perf_counter()
            try:
                for i, jpg in enumerate(frames):
                    if stop.is_set():
                        return
                    if gate is not None:
                        gate(i)  # the caller decides when frame i may go (tests of online emission)
                    if fps:
                        delay = t0 + i / fps - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpg + b"\r\n")
                    self.wfile.flush()
                stop.wait(hold_s)  # a stalled source: the connection stays open, nothing comes
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away

        def log_message(self, format: str, *args: object) -> None:  # quiet: tests read stderr
            return

    return Handler


@contextlib.contextmanager
def serve_mjpeg(
    frames: Sequence[bytes],
    fps: float | None = None,
    hold_s: float = 0.0,
    gate: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Serve ``frames`` (JPEG bytes) on 127.0.0.1; yields the stream's URL; stops on exit.

    ``fps`` paces the frames (None: as fast as the client reads); ``gate(i)`` blocks until frame ``i``
    may be sent; ``hold_s`` keeps the connection open and silent after the last frame (a stall).
    """
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(list(frames), fps, hold_s, stop, gate))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="mjpeg-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{STREAM_PATH}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
