// TemporalDiff: fused temporal difference of consecutive frames (TDMI, ARCHITECTURE.md §2).
//
//   x: [B*T, C, h, w]  (the T frames of each clip are consecutive)
//   y: [B, (T-1)*C, h, w]   y[b, k*C + c] = x[b*T + k + 1, c] - x[b*T + k, c],  k = 0 .. T-2
//
// With plane = C*h*w, a clip is T contiguous planes in x and T-1 contiguous planes in y, so
//   y_flat[(b*(T-1) + k)*plane + e] = x_flat[(b*T + k + 1)*plane + e] - x_flat[(b*T + k)*plane + e].
//
// One pass: thread t owns one "slot" of VEC consecutive plane positions of one clip
// (b = t / nvec, slot = t % nvec, nvec = ceil(plane / VEC)) and walks the T frames, keeping the
// previous frame's values in registers. Every input element is read once, every output element
// written once; the unfused graph (slice, slice, sub, concat) reads the middle frames twice and
// writes the result twice.
//
// Vectorised path: 16-byte loads/stores (float4 for FP32, 8 halves = 4 x half2 for FP16) when
// plane % VEC == 0 and both base pointers are 16-byte aligned (then every slot of every frame is
// aligned). The condition is uniform over the grid, so there is no divergence. Otherwise each
// thread handles its <= VEC positions with scalar accesses (the tail slot of a plane may be short).
//
// Launch (shared with tdmi.plugins.launch_params, TensorRT AOT and the cuda-python launcher):
//   block = 256 threads (1-D), grid = ceil(B * ceil(plane / VEC) / 256), no shared memory.
//
// ABI (stable PTX entry names; TensorRT AOT plugins receive the input tensors, then the extra
// scalar arguments, then the output tensors):
//   extern "C" __global__ void temporal_diff_f32(const float* x, int num_clips, int num_frames,
//                                                int plane, float* y);
//   extern "C" __global__ void temporal_diff_f16(const __half* x, int num_clips, int num_frames,
//                                                int plane, __half* y);
//   num_clips = B >= 0, num_frames = T >= 2, plane = C*h*w >= 0 (all int32; offsets use int64).

#include <cuda_fp16.h>
#include <stdint.h>

namespace {

__device__ __forceinline__ float4 sub_vec(const float4 a, const float4 b)
{
    return make_float4(a.x - b.x, a.y - b.y, a.z - b.z, a.w - b.w);
}

// 8 halves packed in a uint4: subtract as four half2 pairs.
__device__ __forceinline__ uint4 sub_vec(const uint4 a, const uint4 b)
{
    uint4 r;
    const __half2* ah = reinterpret_cast<const __half2*>(&a);
    const __half2* bh = reinterpret_cast<const __half2*>(&b);
    __half2* rh = reinterpret_cast<__half2*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        rh[i] = __hsub2(ah[i], bh[i]);
    }
    return r;
}

__device__ __forceinline__ float sub_scalar(const float a, const float b)
{
    return a - b;
}

__device__ __forceinline__ __half sub_scalar(const __half a, const __half b)
{
    return __hsub(a, b);
}

template <typename T, typename V>
__device__ __forceinline__ void temporal_diff_impl(
    const T* __restrict__ x, const int num_clips, const int num_frames, const int plane, T* __restrict__ y)
{
    constexpr int kVec = static_cast<int>(sizeof(V) / sizeof(T));
    if (num_frames < 2 || plane <= 0 || num_clips <= 0)
    {
        return;
    }
    const long long nvec = (static_cast<long long>(plane) + kVec - 1) / kVec;
    const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= static_cast<long long>(num_clips) * nvec)
    {
        return;
    }
    const long long b = t / nvec;
    const long long e0 = (t - b * nvec) * kVec;
    const long long p = plane;
    const T* __restrict__ xc = x + b * num_frames * p + e0;
    T* __restrict__ yc = y + b * (num_frames - 1) * p + e0;

    const bool vectorised = (plane % kVec == 0)
        && ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) % sizeof(V) == 0);
    if (vectorised)
    {
        V prev = __ldg(reinterpret_cast<const V*>(xc));
        for (int k = 1; k < num_frames; ++k)
        {
            const V cur = __ldg(reinterpret_cast<const V*>(xc + k * p));
            // __stwb (= a plain write-back store) keeps nvcc from splitting the 16-byte store
            __stwb(reinterpret_cast<V*>(yc + (k - 1) * p), sub_vec(cur, prev));
            prev = cur;
        }
        return;
    }

    const long long left = p - e0;
    const int n = left < kVec ? static_cast<int>(left) : kVec;
    T prev[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i)
    {
        if (i < n)
        {
            prev[i] = xc[i];
        }
    }
    for (int k = 1; k < num_frames; ++k)
    {
#pragma unroll
        for (int i = 0; i < kVec; ++i)
        {
            if (i < n)
            {
                const T cur = xc[k * p + i];
                yc[(k - 1) * p + i] = sub_scalar(cur, prev[i]);
                prev[i] = cur;
            }
        }
    }
}

} // namespace

extern "C" __global__ void __launch_bounds__(256) temporal_diff_f32(
    const float* __restrict__ x, int num_clips, int num_frames, int plane, float* __restrict__ y)
{
    temporal_diff_impl<float, float4>(x, num_clips, num_frames, plane, y);
}

extern "C" __global__ void __launch_bounds__(256) temporal_diff_f16(
    const __half* __restrict__ x, int num_clips, int num_frames, int plane, __half* __restrict__ y)
{
    temporal_diff_impl<__half, uint4>(x, num_clips, num_frames, plane, y);
}
