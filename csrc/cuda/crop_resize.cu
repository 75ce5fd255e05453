// CUDA crop_resize: one thread per output pixel (all channels), one launch for every box.
//
// Thread (x, y) of block (n, by, bz) computes output pixel (row by*8 + y, column bz*32 + x) of box n. A warp
// therefore covers 32 neighbouring output columns of one row: its tap-table reads, its image reads (neighbouring
// source columns) and its output writes are coalesced, and the row taps it reads are the same for the whole warp.
// The filter is applied separably in the CPU kernel's order (each source row filtered horizontally, then the
// rows combined), so both round alike.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/crop_resize.h"

// setup.py passes the targets as bare tokens (sm_80+sm_90+compute_90): no quotes to survive nvcc's command line.
#define MIDLEVEL_FAST_STR(...) #__VA_ARGS__
#define MIDLEVEL_FAST_XSTR(...) MIDLEVEL_FAST_STR(__VA_ARGS__)
#ifndef MIDLEVEL_FAST_CUDA_TARGETS
#define MIDLEVEL_FAST_CUDA_TARGETS unknown
#endif

namespace midlevel_fast {
namespace cuda {
namespace {

constexpr int kBlockX = 32;  // output columns per block: one warp
constexpr int kBlockY = 8;   // output rows per block
// Column taps kept in registers: enough for shrink factors up to 4 (the paper's grid on images up to ~900 px);
// wider filters read the remaining taps from the table in global memory.
constexpr int kCachedTaps = 8;

template <typename In>
__device__ __forceinline__ float load_pixel(const In* p) {
    return static_cast<float>(__ldg(p));
}

template <typename Out>
__device__ __forceinline__ Out to_out(float v);
template <>
__device__ __forceinline__ float to_out<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ __half to_out<__half>(float v) {
    return __float2half_rn(v);
}

template <typename In, typename Out, int C>
__global__ void __launch_bounds__(kBlockX* kBlockY)
    crop_resize_kernel(const In* __restrict__ image, int64_t stride_y, int64_t stride_x, int64_t stride_c,
                       int64_t out_h, int64_t out_w, AxisTable rows, AxisTable cols, float3 scale, float3 shift,
                       Out* __restrict__ out) {
    const int64_t n = blockIdx.x;
    const int64_t i = static_cast<int64_t>(blockIdx.y) * kBlockY + threadIdx.y;
    const int64_t j = static_cast<int64_t>(blockIdx.z) * kBlockX + threadIdx.x;
    if (i >= out_h || j >= out_w) return;

    const int cy = __ldg(rows.count + n), cx = __ldg(cols.count + n);
    const int32_t* iy = rows.index + n * rows.taps * out_h + i;
    const float* wy = rows.weight + n * rows.taps * out_h + i;
    const int32_t* ix = cols.index + n * cols.taps * out_w + j;
    const float* wx = cols.weight + n * cols.taps * out_w + j;

    int32_t cix[kCachedTaps];
    float cwx[kCachedTaps];
#pragma unroll
    for (int t = 0; t < kCachedTaps; ++t) {
        cix[t] = t < cx ? __ldg(ix + t * out_w) : -1;
        cwx[t] = t < cx ? __ldg(wx + t * out_w) : 0.0f;
    }

    float acc[C];
#pragma unroll
    for (int c = 0; c < C; ++c) acc[c] = 0.0f;
    for (int ty = 0; ty < cy; ++ty) {
        const int32_t r = __ldg(iy + ty * out_h);
        if (r < 0) continue;  // a zero-padded row adds nothing
        const float w_row = __ldg(wy + ty * out_h);
        const In* src_row = image + r * stride_y;
        float h[C];
#pragma unroll
        for (int c = 0; c < C; ++c) h[c] = 0.0f;
#pragma unroll
        for (int t = 0; t < kCachedTaps; ++t) {
            if (cix[t] >= 0) {
                const In* p = src_row + cix[t] * stride_x;
#pragma unroll
                for (int c = 0; c < C; ++c) h[c] += cwx[t] * load_pixel(p + c * stride_c);
            }
        }
        for (int t = kCachedTaps; t < cx; ++t) {
            const int32_t col = __ldg(ix + t * out_w);
            if (col < 0) continue;
            const float w_col = __ldg(wx + t * out_w);
            const In* p = src_row + col * stride_x;
#pragma unroll
            for (int c = 0; c < C; ++c) h[c] += w_col * load_pixel(p + c * stride_c);
        }
#pragma unroll
        for (int c = 0; c < C; ++c) acc[c] += w_row * h[c];
    }

    const float sc[3] = {scale.x, scale.y, scale.z}, sh[3] = {shift.x, shift.y, shift.z};
    Out* dst = out + (n * C * out_h + i) * out_w + j;
#pragma unroll
    for (int c = 0; c < C; ++c) dst[c * out_h * out_w] = to_out<Out>(acc[c] * sc[c] + sh[c]);
}

template <typename In, typename Out, int C>
void launch(const CropResizeArgs& a, cudaStream_t stream) {
    const dim3 block(kBlockX, kBlockY);
    const dim3 grid(static_cast<unsigned>(a.n_boxes), static_cast<unsigned>((a.out_h + kBlockY - 1) / kBlockY),
                    static_cast<unsigned>((a.out_w + kBlockX - 1) / kBlockX));
    crop_resize_kernel<In, Out, C><<<grid, block, 0, stream>>>(
        static_cast<const In*>(a.image), a.stride_y, a.stride_x, a.stride_c, a.out_h, a.out_w, a.rows, a.cols,
        make_float3(a.scale[0], a.scale[1], a.scale[2]), make_float3(a.shift[0], a.shift[1], a.shift[2]),
        static_cast<Out*>(a.out));
}

template <typename In, typename Out>
void launch_channels(const CropResizeArgs& a, cudaStream_t stream) {
    if (a.channels == 3)
        launch<In, Out, 3>(a, stream);
    else
        launch<In, Out, 1>(a, stream);
}

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the lifetime of the guard, as the caller's tensors live there.
class DeviceGuard {
   public:
    explicit DeviceGuard(int device) {
        check(cudaGetDevice(&previous_), "cudaGetDevice");
        if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceGuard() { cudaSetDevice(previous_); }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

   private:
    int previous_ = 0;
};

}  // namespace

int device_count(std::string* why) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();  // consume the error so that the next runtime call does not report it again
        if (why) {
            // The runtime says "insufficient driver" also when there is no driver at all, the usual case here.
            *why = err == cudaErrorInsufficientDriver
                       ? "no NVIDIA driver, or one older than this module's CUDA " +
                             std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) +
                             " needs"
                       : std::string(cudaGetErrorString(err));
        }
        return 0;
    }
    if (count == 0 && why) *why = "the CUDA runtime reports 0 devices";
    return count;
}

void crop_resize_cuda(const CropResizeArgs& a, int device, void* stream) {
    if (a.n_boxes == 0) return;
    if (a.image == nullptr || a.out == nullptr || a.rows.index == nullptr || a.rows.weight == nullptr ||
        a.rows.count == nullptr || a.cols.index == nullptr || a.cols.weight == nullptr || a.cols.count == nullptr)
        throw std::invalid_argument("crop_resize_cuda: null pointer");
    if (a.channels != 1 && a.channels != 3) throw std::invalid_argument("crop_resize_cuda: channels must be 1 or 3");
    if (a.layout != 0 && a.layout != 1) throw std::invalid_argument("crop_resize_cuda: unknown layout code");
    if (a.out_dtype != 0 && a.out_dtype != 1) throw std::invalid_argument("crop_resize_cuda: unknown out_dtype code");
    if (a.n_boxes < 0 || a.out_h < 1 || a.out_w < 1 || a.rows.taps < 1 || a.cols.taps < 1)
        throw std::invalid_argument("crop_resize_cuda: sizes must be positive");
    // Grid limits: boxes on x (2^31 - 1), row and column tiles on y and z (65535 each).
    if (a.n_boxes > 0x7fffffffLL || (a.out_h + kBlockY - 1) / kBlockY > 65535 ||
        (a.out_w + kBlockX - 1) / kBlockX > 65535)
        throw std::invalid_argument("crop_resize_cuda: too many boxes or output too large for one launch");
    DeviceGuard guard(device);
    const auto s = static_cast<cudaStream_t>(stream);
    if (a.layout == 0) {
        if (a.out_dtype == 0)
            launch_channels<uint8_t, float>(a, s);
        else
            launch_channels<uint8_t, __half>(a, s);
    } else {
        if (a.out_dtype == 0)
            launch_channels<float, float>(a, s);
        else
            launch_channels<float, __half>(a, s);
    }
    check(cudaGetLastError(), "crop_resize_cuda launch");
}

const char* compiled_targets() { return MIDLEVEL_FAST_XSTR(MIDLEVEL_FAST_CUDA_TARGETS); }

}  // namespace cuda
}  // namespace midlevel_fast
