"""The shipped PTX: entry points, provenance, freshness, arch selection, and rebuilding with nvcc."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdmi.errors import BackendUnavailableError
from tdmi.plugins import build, ptx
from tdmi.plugins.launch_params import KERNEL_NAMES, KERNEL_PARAM_TYPES

EXPECTED_ENTRIES = {name: list(KERNEL_PARAM_TYPES) for name in KERNEL_NAMES.values()}


def test_one_ptx_ships_for_every_supported_generation() -> None:
    # compute_75 JITs forward to every GPU CUDA 13 supports; a later target needs a reason (build.py).
    assert ptx.shipped_archs() == list(build.DEFAULT_ARCHS) == [75]
    assert build.redundant_ptx() == []
    assert {ptx.select_arch((gpu // 10, gpu % 10)) for gpu in build.GPU_ARCHS} == {75}


@pytest.mark.parametrize("arch", build.DEFAULT_ARCHS)
def test_shipped_ptx_entry_points_and_target(arch: int) -> None:
    text = ptx.read_ptx(ptx.ptx_path(arch))
    assert ptx.parse_ptx_entries(text) == EXPECTED_ENTRIES
    assert ptx.ptx_target(text) == f"sm_{arch}"


@pytest.mark.parametrize("arch", build.DEFAULT_ARCHS)
def test_shipped_ptx_was_built_from_current_source(arch: int) -> None:
    # Drift guard that needs no nvcc: editing csrc/temporal_diff.cu without rebuilding fails here.
    header = ptx.ptx_header(ptx.read_ptx(ptx.ptx_path(arch)))
    assert header["source-sha256"] == ptx.source_sha256(), (
        "csrc/temporal_diff.cu changed: run `python -m tdmi.plugins.build` and commit src/tdmi/plugins/ptx/"
    )
    assert header["arch"] == f"compute_{arch}"
    assert header["flags"] == " ".join(build.NVCC_FLAGS)


def test_parse_ptx_entries_handles_pointer_and_alignment_qualifiers() -> None:
    text = """
    .visible .entry k1(
        .param .u64 .ptr .global .align 16 k1_param_0,
        .param .u32 k1_param_1,
        .param .f32 k1_param_2
    )
    { ret; }
    .visible .entry k2()
    { ret; }
    """
    assert ptx.parse_ptx_entries(text) == {"k1": ["u64", "u32", "f32"], "k2": []}


@pytest.mark.parametrize("cc", [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0), (12, 1)])
def test_every_gpu_loads_the_shipped_compute_75(cc: tuple[int, int]) -> None:
    assert ptx.select_arch(cc) == 75
    assert ptx.select_ptx(cc) == ptx.ptx_path(75)


@pytest.mark.parametrize(
    ("cc", "arch"),
    [
        ((7, 5), 75),
        ((8, 0), 75),
        ((9, 0), 75),
        ((10, 0), 100),
        ((10, 3), 100),
        ((12, 0), 120),
        ((12, 1), 120),
    ],
)
def test_select_arch_picks_highest_not_above_device(cc: tuple[int, int], arch: int) -> None:
    # Should a later target ship, a GPU takes the newest one not above it (PTX JITs forward only).
    assert ptx.select_arch(cc, archs=[75, 100, 120]) == arch


def test_select_arch_rejects_too_old_gpu_and_missing_ptx(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="older than"):
        ptx.select_arch((7, 0))
    with pytest.raises(BackendUnavailableError, match="no TemporalDiff PTX"):
        ptx.ptx_path(directory=tmp_path)
    with pytest.raises(BackendUnavailableError, match="compute_61"):
        ptx.ptx_path(61)
    assert ptx.ptx_path() == ptx.ptx_path(min(build.DEFAULT_ARCHS))


def test_build_without_nvcc_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with pytest.raises(BackendUnavailableError, match="nvcc not found"):
        build.build_ptx(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.nvcc
def test_rebuild_has_expected_entries_for_every_arch(tmp_path: Path) -> None:
    written = build.build_ptx(tmp_path, archs=list(build.DEFAULT_ARCHS))
    assert sorted(written) == list(build.DEFAULT_ARCHS)
    for arch, path in written.items():
        assert path.parent == tmp_path
        text = path.read_text()
        assert ptx.parse_ptx_entries(text) == EXPECTED_ENTRIES, arch
        assert ptx.ptx_target(text) == f"sm_{arch}"
        assert ptx.ptx_header(text)["source-sha256"] == ptx.source_sha256()


@pytest.mark.nvcc
def test_rebuild_reproduces_committed_ptx(tmp_path: Path) -> None:
    shipped_version = ptx.ptx_header(ptx.read_ptx(ptx.ptx_path()))["nvcc"]
    local_version = build.nvcc_version()
    if shipped_version != local_version:
        pytest.skip(f"shipped PTX from '{shipped_version}', local nvcc '{local_version}': codegen may differ")
    written = build.build_ptx(tmp_path)
    assert sorted(written) == ptx.shipped_archs()
    for arch, path in written.items():
        rebuilt = ptx.strip_comments(path.read_text())
        shipped = ptx.strip_comments(ptx.read_ptx(ptx.ptx_path(arch)))
        assert rebuilt == shipped, f"compute_{arch}: run `python -m tdmi.plugins.build` and commit the PTX"


@pytest.mark.nvcc
def test_full_rebuild_leaves_exactly_the_default_archs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = _copy_for(tmp_path, 90)
    assert build.main(["--out-dir", str(tmp_path)]) == 0
    assert ptx.shipped_archs(tmp_path) == list(build.DEFAULT_ARCHS) and not stale.exists()
    assert f"removed (not in DEFAULT_ARCHS): {stale}" in capsys.readouterr().out
    assert build.main(["--check", "--out-dir", str(tmp_path)]) == 0


@pytest.mark.nvcc
def test_explicit_unsupported_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot target"):
        build.build_ptx(tmp_path, archs=[52])


def entry_bodies(ptx: str) -> dict[str, str]:
    """Text of each ``.entry`` up to the next one."""
    parts = ptx.split(".entry ")[1:]
    return {part.split("(", 1)[0].strip(): part for part in parts}


@pytest.mark.parametrize("arch", build.DEFAULT_ARCHS)
def test_shipped_ptx_has_16_byte_vector_path(arch: int) -> None:
    # The fast path must really move 16 bytes per access: float4 for FP32, 4 x half2 (as u32) for FP16,
    # and FP16 must subtract in half2 pairs.
    bodies = entry_bodies(ptx.read_ptx(ptx.ptx_path(arch)))
    f32, f16 = bodies["temporal_diff_f32"], bodies["temporal_diff_f16"]
    assert "ld.global.nc.v4.f32" in f32 and "st.global.wb.v4.f32" in f32
    assert "ld.global.nc.v4.u32" in f16 and "st.global.wb.v4.u32" in f16
    assert "sub.f16x2" in f16 or "sub.rn.f16x2" in f16


@pytest.mark.nvcc
@pytest.mark.parametrize("gpu", build.GPU_ARCHS)
def test_shipped_ptx_assembles_for_every_gpu_generation(gpu: int) -> None:
    # ptxas is what the driver's JIT runs on the user's GPU: assembling the PTX that GPU selects
    # proves it JITs forward to valid SASS there, without spills and within the occupancy budget of
    # 256-thread blocks.
    report = build.assemble_ptx(ptx.select_ptx((gpu // 10, gpu % 10)), gpu)
    assert set(report) == set(KERNEL_NAMES.values())
    for name, res in report.items():
        assert res.spill_stores == 0 and res.spill_loads == 0 and res.stack_bytes == 0, (gpu, name, res)
        assert res.registers <= 64, (gpu, name, res)


@pytest.mark.nvcc
def test_freshness_check_flags_edited_ptx(tmp_path: Path) -> None:
    for arch in ptx.shipped_archs():
        (tmp_path / ptx.ptx_filename(arch)).write_text(ptx.read_ptx(ptx.ptx_path(arch)))
    if ptx.ptx_header(ptx.read_ptx(ptx.ptx_path()))["nvcc"] != build.nvcc_version():
        pytest.skip("shipped PTX comes from another nvcc release")
    assert build.stale_ptx(tmp_path) == []
    victim = tmp_path / ptx.ptx_filename(75)
    victim.write_text(victim.read_text().replace("sub.f16x2", "add.f16x2", 1))
    problems = build.stale_ptx(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("compute_75: rebuild differs")


def _copy_for(tmp_path: Path, arch: int) -> Path:
    """The shipped compute_75 PTX re-labelled for ``arch``, as nvcc 13 emits it for compute_80..90."""
    text = ptx.read_ptx(ptx.ptx_path(75))
    text = text.replace("// tdmi: arch compute_75", f"// tdmi: arch compute_{arch}")
    path = tmp_path / ptx.ptx_filename(arch)
    path.write_text(text.replace(".target sm_75", f".target sm_{arch}"))
    return path


def test_redundant_later_target_is_flagged(tmp_path: Path) -> None:
    (tmp_path / ptx.ptx_filename(75)).write_text(ptx.read_ptx(ptx.ptx_path(75)))
    assert build.redundant_ptx(tmp_path) == []
    _copy_for(tmp_path, 90)
    assert build.redundant_ptx(tmp_path) == [
        "compute_90: same kernel as compute_75 apart from .target; "
        "drop it (the driver JITs compute_75 forward)"
    ]
    different = _copy_for(tmp_path, 100)
    different.write_text(different.read_text().replace("sub.f16x2", "add.f16x2", 1))
    assert len(build.redundant_ptx(tmp_path)) == 1  # compute_100 is a different kernel


def test_kernel_sha256_names_the_kernel_not_the_arch(tmp_path: Path) -> None:
    (tmp_path / ptx.ptx_filename(75)).write_text(ptx.read_ptx(ptx.ptx_path(75)))
    relabelled = _copy_for(tmp_path, 90)
    relabelled.write_text(relabelled.read_text().replace("// tdmi: nvcc ", "// tdmi: nvcc other "))
    shipped = ptx.kernel_sha256(75)
    assert (
        ptx.kernel_sha256() == shipped == ptx.kernel_sha256(75, tmp_path) == ptx.kernel_sha256(90, tmp_path)
    )
    assert len(shipped) == 64 and int(shipped, 16) >= 0
    edited = tmp_path / ptx.ptx_filename(75)
    edited.write_text(edited.read_text().replace("sub.f16x2", "add.f16x2", 1))
    assert ptx.kernel_sha256(75, tmp_path) != shipped
