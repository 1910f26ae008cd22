"""Run csrc/temporal_diff.cu itself on the CPU, under AddressSanitizer, with the shared launch grid.

No GPU here, so the CUDA source is compiled with g++ against a tiny stand-in for the CUDA builtins
(blockIdx/threadIdx, float4/uint4, __ldg/__stwb, __half via _Float16) and every thread of the grid
from ``launch_params.launch_config`` is executed in turn. This checks the kernel's own index
arithmetic, vector/scalar path selection and tail handling against the reference, and ASan turns
any out-of-bounds load or store into a failure. It does not check nvcc's code generation (the
ptxas tests and the GPU tests do that).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tdmi.plugins import launch_params, ptx
from tdmi.plugins.temporal_diff import temporal_diff_reference

GXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found (runs the kernel source on the CPU)")

CUDA_STANDIN = r"""
#pragma once
#include <cstdint>
#include <cstring>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
struct HostDim { unsigned x = 0, y = 0, z = 0; };
inline HostDim blockIdx, threadIdx, blockDim;
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
using __half = _Float16;
struct alignas(4) __half2 { _Float16 x, y; };
inline __half __hsub(__half a, __half b) { return a - b; }
inline __half2 __hsub2(__half2 a, __half2 b) { return __half2{a.x - b.x, a.y - b.y}; }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
"""

HARNESS = r"""
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "temporal_diff.cu"

template <typename T>
int run(int argc, char** argv, void (*kernel)(const T*, int, int, int, T*)) {
    const int B = atoi(argv[2]), Tn = atoi(argv[3]), plane = atoi(argv[4]);
    const unsigned grid = strtoul(argv[5], nullptr, 10), block = strtoul(argv[6], nullptr, 10);
    const int xoff = atoi(argv[7]), yoff = atoi(argv[8]);
    const size_t nx = size_t(B) * Tn * plane, ny = size_t(B) * (Tn - 1) * plane;
    // Exact-size heap blocks (plus the requested misalignment): ASan flags any access outside.
    T* xbuf = static_cast<T*>(malloc((nx + xoff) * sizeof(T) + 1));
    T* ybuf = static_cast<T*>(malloc((ny + yoff) * sizeof(T) + 1));
    T* x = xbuf + xoff;
    T* y = ybuf + yoff;
    FILE* in = fopen(argv[9], "rb");
    if (fread(x, sizeof(T), nx, in) != nx) return 3;
    fclose(in);
    memset(y, 0xFF, ny * sizeof(T));  // NaN pattern: unwritten outputs cannot pass
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b)
        for (unsigned t = 0; t < block; ++t) {
            blockIdx.x = b;
            threadIdx.x = t;
            kernel(x, B, Tn, plane, y);
        }
    FILE* out = fopen(argv[10], "wb");
    fwrite(y, sizeof(T), ny, out);
    fclose(out);
    free(xbuf);
    free(ybuf);
    return 0;
}

int main(int argc, char** argv) {
    if (argv[1][1] == '3') return run<float>(argc, argv, temporal_diff_f32);
    return run<__half>(argc, argv, temporal_diff_f16);
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kernel_host")
    (d / "cuda_fp16.h").write_text(CUDA_STANDIN)
    (d / "harness.cpp").write_text(HARNESS)
    exe = d / "harness"
    flags = ["-std=c++17", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    includes = [f"-I{d}", f"-I{ptx.source_path().parent}", "-Wno-unknown-pragmas"]
    cmd = [str(GXX), *flags, *includes, str(d / "harness.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"harness does not compile:\n{proc.stderr}")
    return exe


def run_on_cpu(exe: Path, x: np.ndarray, num_frames: int, xoff: int, yoff: int, tmp: Path) -> np.ndarray:
    cfg = launch_params.launch_config(x.shape, num_frames, x.dtype)
    src, dst = tmp / "x.bin", tmp / "y.bin"
    x.tofile(src)
    args = ["f32" if x.dtype == np.float32 else "f16", *map(str, cfg.scalar_args[:2]), str(cfg.plane)]
    args += [str(cfg.grid[0]), str(cfg.block[0]), str(xoff), str(yoff), str(src), str(dst)]
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"kernel run failed (ASan/UBSan?):\n{proc.stderr[-3000:]}"
    return np.fromfile(dst, dtype=x.dtype).reshape(cfg.num_clips, (num_frames - 1) * x.shape[1], *x.shape[2:])


@pytest.mark.parametrize(
    ("b", "t", "c", "h", "w"),
    [(2, 3, 3, 5, 7), (1, 5, 4, 8, 8), (3, 2, 1, 1, 1), (2, 3, 2, 3, 2), (1, 4, 5, 1, 3), (2, 3, 48, 12, 9)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("xoff", "yoff"), [(0, 0), (1, 0), (0, 3)])
def test_kernel_source_matches_reference_without_out_of_bounds_access(
    harness: Path, tmp_path: Path, b: int, t: int, c: int, h: int, w: int, dtype: type, xoff: int, yoff: int
) -> None:
    rng = np.random.default_rng(b * 7 + t * 11 + c * 13 + h + w)
    x = rng.standard_normal((b * t, c, h, w)).astype(dtype)
    y = run_on_cpu(harness, x, t, xoff, yoff, tmp_path)
    np.testing.assert_array_equal(y, temporal_diff_reference(x, t))
