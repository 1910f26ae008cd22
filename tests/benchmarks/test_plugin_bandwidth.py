"""The bandwidth benchmark: its unfused baseline is TemporalDiff, and it refuses to run without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi.benchmarks import plugin_bandwidth as pb
from tdmi.errors import TdmiError
from tdmi.plugins.availability import torch_cuda_available
from tdmi.plugins.temporal_diff import temporal_diff_reference

GPU = torch_cuda_available()


@pytest.mark.parametrize(("b", "t", "c"), [(1, 3, 256), (4, 3, 48), (2, 5, 3)])
def test_unfused_baseline_computes_temporal_diff(b: int, t: int, c: int) -> None:
    x = torch.randn(b * t, c, 6, 5)
    expected = temporal_diff_reference(x.numpy(), t)
    np.testing.assert_array_equal(pb.unfused_temporal_diff(x, t).numpy(), expected)


def test_w48_shapes() -> None:
    assert pb.W48_STAGES == (("stage1", 256, 96, 72), ("stage2-4", 48, 96, 72))


@pytest.mark.skipif(bool(GPU), reason="a GPU is present: the benchmark would run")
def test_without_gpu_exits_with_reason_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bw.json"
    assert pb.main(["--batch", "1", "--iters", "1", "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "GB/s" not in err
    assert not out.exists()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        pb.main(["--frames", "1"])
    with pytest.raises(SystemExit):
        pb.main(["--dtype", "bf16"])


@pytest.mark.cuda
def test_benchmark_runs_on_gpu(tmp_path: Path) -> None:
    import json

    out = tmp_path / "bw.json"
    assert pb.main(["--batch", "1", "--iters", "3", "--warmup", "1", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert len(payload["rows"]) == 2 * len(pb.W48_STAGES)
    for row in payload["rows"]:
        assert row["kernel_gbps"] > 0 and row["copy_gbps"] > 0 and row["torch_gbps"] > 0


def test_cpu_rows_leave_the_kernel_out_and_time_the_rest() -> None:
    row = pb.measure("toy", 4, 6, 5, 2, 3, "fp32", 0, 2, device="cpu", kernel=False)
    assert row.kernel_us is None and row.kernel_vs_copy is None and row.speedup_vs_torch is None
    assert row.copy_gbps > 0 and row.torch_gbps > 0 and row.device == "cpu"
    assert row.to_dict()["speedup_vs_compiled"] is None
    with pytest.raises(ValueError, match="CUDA only"):
        pb.measure("toy", 4, 6, 5, 2, 3, "fp32", 0, 2, device="cpu")


def test_compiled_baseline_is_checked_before_it_is_timed() -> None:
    def wrong(x: torch.Tensor, frames: int) -> torch.Tensor:
        return pb.unfused_temporal_diff(x, frames) + 1

    with pytest.raises(TdmiError, match=r"torch\.compile output"):
        pb.measure("toy", 4, 6, 5, 2, 3, "fp32", 0, 2, device="cpu", kernel=False, compiled=wrong)
    ok = pb.measure(
        "toy", 4, 6, 5, 2, 3, "fp32", 0, 2, device="cpu", kernel=False, compiled=pb.unfused_temporal_diff
    )
    assert ok.compiled_gbps is not None and ok.compiled_gbps > 0
