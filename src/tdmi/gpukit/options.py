"""The kit's sections, their titles, time limits and goals, and the options every section reads."""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS: tuple[str, ...] = (
    "environment",
    "kernel_correctness",
    "kernel_bandwidth",
    "torch_latency",
    "dcn_forms",
    "ort_cpu",
)
TITLES: dict[str, str] = {
    "environment": "1. Environment",
    "kernel_correctness": "2. TemporalDiff kernel correctness (shipped PTX vs PyTorch, bit-exact)",
    "kernel_bandwidth": "3. TemporalDiff kernel bandwidth",
    "torch_latency": "4. End-to-end PyTorch latency",
    "dcn_forms": "5. DCN forms (torchvision deform_conv2d vs decomposed GridSample)",
    "ort_cpu": "6. ONNX Runtime CPU on the same machine (FP32, batch 1)",
}
# Cheap sections first; the PyTorch latency section (compiles) takes whatever time is left.
RUN_ORDER: tuple[str, ...] = (
    "environment",
    "kernel_correctness",
    "kernel_bandwidth",
    "dcn_forms",
    "ort_cpu",
    "torch_latency",
)
# ok: everything of the section's subject ran; partial: some of it was skipped, failed in a row or was
# cut by the time guard (the reason says how much ran); skipped: nothing of the subject ran here (with
# the reason); failed: an error or a wrong result; timeout: the worker was stopped.
STATUSES: tuple[str, ...] = ("ok", "partial", "skipped", "failed", "timeout", "not_run")
# The packages of the GPU image this kit is written for (the CPU dry run blocks everything else).
IMAGE_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "cupy-cuda13x",
    "cuda-bindings",
    "cuda-python",
    "typer",
    "rich",
)
DEFAULT_TIME_LIMIT_S = 330.0  # 5.5 min: inside the 6-minute goal with start-up to spare
# Longest any one section may run (seconds); the global limit still bounds the sum.
SECTION_CAPS_S: dict[str, float] = {
    "environment": 30,
    "kernel_correctness": 60,
    "kernel_bandwidth": 75,
    "torch_latency": 240,
    "dcn_forms": 40,
    "ort_cpu": 90,
}
RESERVE_PER_LATER_SECTION_S = 8.0  # what each later section keeps of the global limit
SOFT_MARGIN_S = 4.0  # a worker stops starting rows this long before it would be killed
GOAL_KERNEL_VS_COPY = 0.9
GOAL_SPEEDUP_VS_UNFUSED = 2.0
W48_PRESET = "tdmi-w48-384x288"
TOY_PRESET = "tdmi-tiny"
DCN_IMPORT = "tdmi.model.dcn.deform_conv2d_decomposed"


@dataclass(frozen=True)
class Options:
    device: str = "cuda"  # "cuda" or "cpu"
    quick: bool = False  # toy sizes, few iterations (the CI dry run)
    seed: int = 0

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def compile_enabled(self) -> bool:
        """torch.compile costs minutes of inductor work on a 2-core CPU: not in the quick CPU run."""
        return self.cuda or not self.quick


class SectionSkipped(Exception):
    """The whole section has nothing to run on this machine; the message says why."""


class TimeGuard(Exception):
    """The section ran out of its time budget; what it measured so far is kept."""
