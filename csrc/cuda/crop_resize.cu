// CUDA crop_resize: one launch for every box; one block per tile of kTileH x kTileW output pixels of one box.
//
// The filter is applied separably in the CPU kernel's order (each source row filtered horizontally, then the
// rows combined with the row weights, in tap order), so both round alike. The output rows of a tile read a
// contiguous range of source row positions before the padding mode, [first[i0], first[i_last] + count), as
// `first` (the position of an output row's tap 0, from the tap tables) never decreases. Each position of that
// range is a slot of shared memory, and a block works in three phases:
//   1. it stages the tile's column taps and row weights, and each row tap (i, t) of the tile names the source
//      row of slot first[i] + t - first[i0] (taps sharing a slot name the same row);
//   2. one warp per slot filters that source row horizontally for the tile's 32 columns (one thread per
//      column, the image read through the read-only cache) into shared memory;
//   3. each thread combines the slots of its output rows with their weights and writes them normalised: a warp
//      writes 32 neighbouring columns of one row, a whole 128-byte line in float32.
// A source row is therefore read and filtered once per tile instead of once per output row that uses it.
//
// The host sizes the slots of a block from the largest row scale of the boxes (within the default 48 KiB of
// shared memory). A tile that needs more slots, or more row taps than kRowTaps (huge shrink factors), is
// computed directly instead, each thread gathering every tap of its pixels from the tables and the image. Every
// block checks its tile against its own tables, so no bound or box makes it index shared memory out of range.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
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

constexpr int kTileW = 32;  // output columns per tile: one warp
constexpr int kWarps = 8;   // warps per block
constexpr int kThreads = kTileW * kWarps;
// Blocks per SM the registers must allow: 64 registers a thread, which this kernel fits without spilling
// (ptxas otherwise trades spills for occupancy on its own).
constexpr int kMinBlocks = 4;
constexpr int kTileH = 32;  // output rows per tile: neighbouring tiles filter few source rows twice
// Taps a tile stages per axis: shrink factors up to 4. Wider row filters take the direct path; wider column
// filters read their remaining taps from the tables in global memory.
constexpr int kRowTaps = 8;
constexpr int kColTaps = 8;
constexpr int kUnusedSlot = -2;  // a slot no row tap of the tile reads (-1 is a zero-padded row)
// The dynamic shared memory a launch may use without opting in per device.
constexpr int kSmemBytes = 48 * 1024;

// A block's shared memory in 4-byte words: column indices and weights [kColTaps][kTileW] each, row weights
// [kTileH][kRowTaps], the first slot of each output row [kTileH], the source row of each slot [slots], then the
// filtered slot rows [C][slots][kTileW].
constexpr int kFixedWords = 2 * kColTaps * kTileW + kTileH * (kRowTaps + 1);
__host__ __device__ constexpr int smem_words(int slots, int channels) {
    return kFixedWords + slots * (1 + channels * kTileW);
}

struct Params {
    const void* image;
    int64_t stride_y, stride_x, stride_c;
    int64_t out_h, out_w;
    AxisTable rows, cols;
    float scale[3], shift[3];
    int slots;  // slots of shared memory per block
    void* out;
};

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

// Taps box n uses, never more than its table holds.
__device__ __forceinline__ int tap_count(const AxisTable& t, int64_t n) {
    return static_cast<int>(min(static_cast<int64_t>(__ldg(t.count + n)), t.taps));
}

// The column taps of one output column: taps t < kColTaps staged in shared memory at index[t * kTileW] (index
// -1 past the box's count), all of them in the global tables at offset table + t * out_w.
struct ColumnTaps {
    const int32_t* index;
    const float* weight;
    int64_t table;
    int count;
};

// Horizontal pass of one source row for one output column, all channels, taps in table order. Zero-padded taps
// (index -1) add nothing.
template <typename In, int C>
__device__ __forceinline__ void filter_row(const Params& p, const In* src_row, const ColumnTaps& ct,
                                           float (&h)[C]) {
#pragma unroll
    for (int c = 0; c < C; ++c) h[c] = 0.0f;
#pragma unroll
    for (int t = 0; t < kColTaps; ++t) {
        if (t >= ct.count) break;
        const int32_t col = ct.index[t * kTileW];
        if (col < 0) continue;
        const float w = ct.weight[t * kTileW];
        const In* px = src_row + col * p.stride_x;
#pragma unroll
        for (int c = 0; c < C; ++c) h[c] += w * load_pixel(px + c * p.stride_c);
    }
    for (int t = kColTaps; t < ct.count; ++t) {
        const int32_t col = __ldg(p.cols.index + ct.table + t * p.out_w);
        if (col < 0) continue;
        const float w = __ldg(p.cols.weight + ct.table + t * p.out_w);
        const In* px = src_row + col * p.stride_x;
#pragma unroll
        for (int c = 0; c < C; ++c) h[c] += w * load_pixel(px + c * p.stride_c);
    }
}

template <typename Out, int C>
__device__ __forceinline__ void store_pixel(const Params& p, int64_t n, int64_t i, int64_t j, const float (&acc)[C]) {
    Out* dst = static_cast<Out*>(p.out) + (n * C * p.out_h + i) * p.out_w + j;
#pragma unroll
    for (int c = 0; c < C; ++c) dst[c * p.out_h * p.out_w] = to_out<Out>(acc[c] * p.scale[c] + p.shift[c]);
}

// The general path: output rows i0 .. i0 + rows - 1 of column j, every row tap read from the tables and every
// source row filtered for each output row that uses it.
template <typename In, typename Out, int C>
__device__ __forceinline__ void direct_tile(const Params& p, int64_t n, int64_t i0, int rows, int64_t j,
                                         const ColumnTaps& ct) {
    const In* image = static_cast<const In*>(p.image);
    const int cy = tap_count(p.rows, n);
    for (int r = threadIdx.y; r < rows; r += kWarps) {
        const int64_t row_taps = n * p.rows.taps * p.out_h + i0 + r;
        float acc[C];
#pragma unroll
        for (int c = 0; c < C; ++c) acc[c] = 0.0f;
        for (int t = 0; t < cy; ++t) {
            const int32_t src = __ldg(p.rows.index + row_taps + t * p.out_h);
            if (src < 0) continue;  // a zero-padded row adds nothing
            const float w = __ldg(p.rows.weight + row_taps + t * p.out_h);
            float h[C];
            filter_row<In, C>(p, image + src * p.stride_y, ct, h);
#pragma unroll
            for (int c = 0; c < C; ++c) acc[c] += w * h[c];
        }
        store_pixel<Out, C>(p, n, i0 + r, j, acc);
    }
}

template <typename In, typename Out, int C>
__global__ void __launch_bounds__(kThreads, kMinBlocks) crop_resize_kernel(const Params p) {
    extern __shared__ float smem[];
    int* col_index = reinterpret_cast<int*>(smem);                           // [kColTaps][kTileW]
    float* col_weight = smem + kColTaps * kTileW;                            // [kColTaps][kTileW]
    float* row_weight = smem + 2 * kColTaps * kTileW;                        // [kTileH][kRowTaps]
    int* row_slot = reinterpret_cast<int*>(row_weight + kTileH * kRowTaps);  // [kTileH]
    int* slot_row = row_slot + kTileH;                                       // [slots]
    float* filtered = smem + kFixedWords + p.slots;                          // [C][slots][kTileW]

    const int64_t n = blockIdx.x;
    const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTileH;
    const int64_t j0 = static_cast<int64_t>(blockIdx.z) * kTileW;
    const int rows = static_cast<int>(min(static_cast<int64_t>(kTileH), p.out_h - i0));
    const int x = threadIdx.x, tid = threadIdx.y * kTileW + threadIdx.x;
    const int64_t j = j0 + x;
    // Threads past the last column take part in the staging and the barriers only.
    const bool active = j < p.out_w;
    const ColumnTaps ct{col_index + x, col_weight + x, n * p.cols.taps * p.out_w + j, tap_count(p.cols, n)};

    // Block-uniform: every thread reads the same table entries.
    const int cy = tap_count(p.rows, n);
    const int32_t* first = p.rows.first + n * p.out_h + i0;
    const int64_t base = __ldg(first);
    const int64_t span = __ldg(first + rows - 1) - base + cy;
    const bool tiled = cy >= 1 && cy <= kRowTaps && span >= 1 && span <= p.slots;
    const int slots = tiled ? static_cast<int>(span) : 0;

    // Phase 1: the column taps, the source row of each slot and the row weights.
    for (int k = tid; k < kColTaps * kTileW; k += kThreads) {
        const int t = k / kTileW, xx = k % kTileW;
        const bool used = t < ct.count && j0 + xx < p.out_w;
        const int64_t at = n * p.cols.taps * p.out_w + t * p.out_w + j0 + xx;
        col_index[k] = used ? __ldg(p.cols.index + at) : -1;
        col_weight[k] = used ? __ldg(p.cols.weight + at) : 0.0f;
    }
    for (int s = tid; s < slots; s += kThreads) slot_row[s] = kUnusedSlot;
    __syncthreads();
    bool direct = !tiled;
    if (tiled) {
        const int64_t row_taps = n * p.rows.taps * p.out_h + i0;
        for (int k = tid; k < rows * cy; k += kThreads) {
            const int r = k % rows, t = k / rows;
            const int64_t s = __ldg(first + r) - base;
            // Tables whose `first` decreases within the tile would place taps outside the slots.
            if (s < 0 || s + cy > slots) {
                direct = true;
                continue;
            }
            slot_row[s + t] = __ldg(p.rows.index + row_taps + t * p.out_h + r);
            row_weight[r * kRowTaps + t] = __ldg(p.rows.weight + row_taps + t * p.out_h + r);
            if (t == 0) row_slot[r] = static_cast<int>(s);
        }
    }
    if (__syncthreads_or(direct)) {
        if (active) direct_tile<In, Out, C>(p, n, i0, rows, j, ct);
        return;
    }

    // Phase 2: the horizontal pass of every slot row the tile reads.
    const In* image = static_cast<const In*>(p.image);
    if (active) {
        for (int s = threadIdx.y; s < slots; s += kWarps) {
            const int src = slot_row[s];
            if (src == kUnusedSlot) continue;
            float h[C];
            if (src >= 0) {
                filter_row<In, C>(p, image + src * p.stride_y, ct, h);
            } else {
#pragma unroll
                for (int c = 0; c < C; ++c) h[c] = 0.0f;
            }
#pragma unroll
            for (int c = 0; c < C; ++c) filtered[(c * p.slots + s) * kTileW + x] = h[c];
        }
    }
    __syncthreads();
    if (!active) return;

    // Phase 3: the vertical combination, in tap order, and the store.
#pragma unroll
    for (int k = 0; k < kTileH / kWarps; ++k) {
        const int r = threadIdx.y + k * kWarps;
        if (r >= rows) break;
        const float* w = row_weight + r * kRowTaps;
        const float* h = filtered + row_slot[r] * kTileW + x;
        float acc[C];
#pragma unroll
        for (int c = 0; c < C; ++c) acc[c] = 0.0f;
        for (int t = 0; t < cy; ++t) {
#pragma unroll
            for (int c = 0; c < C; ++c) acc[c] += w[t] * h[(c * p.slots + t) * kTileW];
        }
        store_pixel<Out, C>(p, n, i0 + r, j, acc);
    }
}

// Slots a tile of kTileH output rows may need: `first` advances by at most floor(k * scale) + 2 over k rows
// (midlevel_fast/ops/taps.py), and the last row adds its taps. Capped by the shared-memory budget.
int tile_slots(const CropResizeArgs& a) {
    const int budget = (kSmemBytes / 4 - kFixedWords) / (1 + static_cast<int>(a.channels) * kTileW);
    const double need = std::floor((kTileH - 1) * a.max_row_scale) + 2.0 + static_cast<double>(a.rows.taps);
    return need < budget ? static_cast<int>(need) : budget;
}

template <typename In, typename Out, int C>
void launch(const CropResizeArgs& a, cudaStream_t stream) {
    Params p{};
    p.image = a.image;
    p.stride_y = a.stride_y;
    p.stride_x = a.stride_x;
    p.stride_c = a.stride_c;
    p.out_h = a.out_h;
    p.out_w = a.out_w;
    p.rows = a.rows;
    p.cols = a.cols;
    for (int c = 0; c < 3; ++c) {
        p.scale[c] = a.scale[c];
        p.shift[c] = a.shift[c];
    }
    p.slots = tile_slots(a);
    p.out = a.out;
    const dim3 block(kTileW, kWarps);
    const dim3 grid(static_cast<unsigned>(a.n_boxes), static_cast<unsigned>((a.out_h + kTileH - 1) / kTileH),
                    static_cast<unsigned>((a.out_w + kTileW - 1) / kTileW));
    const size_t smem = sizeof(float) * static_cast<size_t>(smem_words(p.slots, C));
    crop_resize_kernel<In, Out, C><<<grid, block, smem, stream>>>(p);
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
        a.rows.count == nullptr || a.rows.first == nullptr || a.cols.index == nullptr || a.cols.weight == nullptr ||
        a.cols.count == nullptr || a.cols.first == nullptr)
        throw std::invalid_argument("crop_resize_cuda: null pointer");
    if (a.channels != 1 && a.channels != 3) throw std::invalid_argument("crop_resize_cuda: channels must be 1 or 3");
    if (a.layout != 0 && a.layout != 1) throw std::invalid_argument("crop_resize_cuda: unknown layout code");
    if (a.out_dtype != 0 && a.out_dtype != 1) throw std::invalid_argument("crop_resize_cuda: unknown out_dtype code");
    if (a.n_boxes < 0 || a.out_h < 1 || a.out_w < 1 || a.rows.taps < 1 || a.cols.taps < 1)
        throw std::invalid_argument("crop_resize_cuda: sizes must be positive");
    if (!(a.max_row_scale >= 0.0)) throw std::invalid_argument("crop_resize_cuda: max_row_scale must be >= 0");
    // Grid limits: boxes on x (2^31 - 1), row and column tiles on y and z (65535 each).
    if (a.n_boxes > 0x7fffffffLL || (a.out_h + kTileH - 1) / kTileH > 65535 ||
        (a.out_w + kTileW - 1) / kTileW > 65535)
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
