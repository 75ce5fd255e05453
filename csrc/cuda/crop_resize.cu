// CUDA crop_resize: one launch for every box; one block per tile of kTileH x kTileW output pixels of one box.
//
// The block computes the filter taps of its tile itself, from the box, with the CPU kernel's tap math (taps.h),
// and filters separably in the CPU kernel's order (each source row filtered horizontally, then the rows combined
// with the row weights, in tap order), so both round alike. The output rows of a tile read a contiguous range of
// source row positions before the padding mode, [first tap of row i0, first tap of the last row + taps), as the
// first tap never decreases; each position of that range is a slot of shared memory. A block works in three
// phases, one barrier each:
//   1. it loads the image bytes the tile reads (the slots' source rows, over the range of source columns its
//      taps read) into shared memory, one warp per slot row, in aligned 4-byte words with a batch of loads in
//      flight before the first is stored, and computes the tile's column taps and row weights meanwhile;
//   2. one warp per slot filters that row horizontally for the tile's 64 columns (two neighbouring columns per
//      thread, its taps in registers) from shared memory into shared memory;
//   3. each thread combines the slots of its output rows with their weights and writes two neighbouring columns
//      at once (float2 / half2, streaming stores: the output is not read back soon).
// A source row is therefore read and filtered once per tile instead of once per output row that uses it.
//
// The host sizes the slots and the staged row length from the largest row and column scales of the boxes
// (within the default 48 KiB of shared memory). A tile that needs more, or more than kRowTaps / kColTaps taps
// (shrink factors beyond 4), is computed directly instead, each thread computing the taps of its pixels and
// reading the image through the read-only cache. Every block checks its own tile against the allocation, so no
// bound or box makes it index shared memory out of range.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/crop_resize.h"
#include "taps.h"

// setup.py passes the targets as bare tokens (sm_80+sm_90+compute_90): no quotes to survive nvcc's command line.
#define MIDLEVEL_FAST_STR(...) #__VA_ARGS__
#define MIDLEVEL_FAST_XSTR(...) MIDLEVEL_FAST_STR(__VA_ARGS__)
#ifndef MIDLEVEL_FAST_CUDA_TARGETS
#define MIDLEVEL_FAST_CUDA_TARGETS unknown
#endif

namespace midlevel_fast {
namespace cuda {
namespace {

constexpr int kLanes = 32;
constexpr int kWarps = 8;  // warps per block
constexpr int kThreads = kLanes * kWarps;
constexpr int kTileW = 2 * kLanes;  // output columns per tile: two neighbouring ones per thread
// Output rows per tile: 16 keeps the slots of the paper grid's largest boxes (shrink 1.7) within 48 KiB next to
// 64 columns, so no tile of it takes the direct path.
constexpr int kTileH = 16;
// Blocks per SM the registers must allow: 64 registers a thread, which this kernel fits without spilling
// (ptxas otherwise trades spills for occupancy on its own).
constexpr int kMinBlocks = 4;
// Taps a tile stages per axis: shrink factors up to 4. Wider filters take the direct path.
constexpr int kRowTaps = 8;
constexpr int kColTaps = 8;
static_assert(kTileH * kRowTaps <= kThreads, "phase 1 computes one row tap per thread");
// The dynamic shared memory a launch may use without opting in per device.
constexpr int kSmemBytes = 48 * 1024;
// Staging loads a thread issues before it stores the first: a slot row of the paper grid's largest boxes (84
// words) in one round.
constexpr int kBatch = 3;
// Column taps the horizontal pass holds in registers (shrink factors up to 2, the paper grid's); wider filters
// read theirs from shared memory.
constexpr int kRegTaps = 4;

// A block's shared memory in 4-byte words: column offsets and weights [kColTaps][kTileW] each, row weights
// [kTileH][kRowTaps], the first slot of each output row [kTileH], the byte shift of each slot's staged row (-1:
// a zero row) [slots, rounded up to even], the filtered slot rows [C][slots][kTileW] (8-byte aligned: read as
// float2), then the staged image rows [slots][stage_words].
constexpr int kFixedWords = 2 * kColTaps * kTileW + kTileH * (kRowTaps + 1);
static_assert(kFixedWords % 2 == 0, "the filtered rows must stay 8-byte aligned");
__host__ __device__ constexpr int slot_shift_words(int slots) { return (slots + 1) / 2 * 2; }
__host__ __device__ constexpr int64_t smem_words(int slots, int channels, int stage_words) {
    return kFixedWords + slot_shift_words(slots) + static_cast<int64_t>(slots) * (channels * kTileW + stage_words);
}

struct Params {
    const void* image;
    int64_t height, width, stride_y, stride_x, stride_c;
    const double* boxes;
    int64_t out_h, out_w;
    bool antialias;
    bool paired;  // two neighbouring output columns (even first) can be stored as one aligned pair
    Padding padding;
    float scale[3], shift[3];
    int slots;        // slots of shared memory per block
    int stage_words;  // words of staged image per slot
    void* out;
};

// A byte as a float without the conversion unit (a quarter of the FP32 rate): 2^23 + b has b in its low
// mantissa bits.
__device__ __forceinline__ float byte_to_float(uint32_t b) { return __uint_as_float(0x4B000000u | b) - 8388608.0f; }

template <typename In>
__device__ __forceinline__ float load_pixel(const In* p) {
    return static_cast<float>(__ldg(p));
}

template <typename Out>
__device__ __forceinline__ void store_one(Out* dst, float v);
template <>
__device__ __forceinline__ void store_one<float>(float* dst, float v) {
    __stcs(dst, v);
}
template <>
__device__ __forceinline__ void store_one<__half>(__half* dst, float v) {
    __stcs(dst, __float2half_rn(v));
}
template <typename Out>
__device__ __forceinline__ void store_two(Out* dst, float v0, float v1);
template <>
__device__ __forceinline__ void store_two<float>(float* dst, float v0, float v1) {
    __stcs(reinterpret_cast<float2*>(dst), make_float2(v0, v1));
}
template <>
__device__ __forceinline__ void store_two<__half>(__half* dst, float v0, float v1) {
    __stcs(reinterpret_cast<__half2*>(dst), __floats2half2_rn(v0, v1));
}

// Output columns j and j + 1 of row i, normalised.
template <typename Out, int C>
__device__ __forceinline__ void store_pair(const Params& p, int64_t n, int64_t i, int64_t j, const float (&acc)[2][C]) {
    if (j >= p.out_w) return;
    Out* dst = static_cast<Out*>(p.out) + (n * C * p.out_h + i) * p.out_w + j;
    const bool both = j + 1 < p.out_w;
#pragma unroll
    for (int c = 0; c < C; ++c) {
        Out* d = dst + c * p.out_h * p.out_w;
        const float v0 = acc[0][c] * p.scale[c] + p.shift[c];
        const float v1 = acc[1][c] * p.scale[c] + p.shift[c];
        if (both && p.paired) {
            store_two<Out>(d, v0, v1);
        } else {
            store_one<Out>(d, v0);
            if (both) store_one<Out>(d + 1, v1);
        }
    }
}

// The pixels that positions [a, b] (a <= b) read, as the interval [*lo, *hi] (*lo > *hi: none, all zeros). Each
// padding mode maps an interval monotonically between its folds (0 and n - 1, every n - 1 positions for
// Reflect), so the end points and the folds inside bound it.
__device__ __forceinline__ void mapped_range(int64_t a, int64_t b, int64_t n, Padding padding, int64_t* lo,
                                             int64_t* hi) {
    if (padding == Padding::Zeros) {
        *lo = max(a, int64_t{0});
        *hi = min(b, n - 1);
        return;
    }
    const int64_t ma = filter::map_index(a, n, padding), mb = filter::map_index(b, n, padding);
    *lo = min(ma, mb);
    *hi = max(ma, mb);
    if (padding != Padding::Reflect || n == 1) return;
    // The first fold at or after a: position k * (n - 1), which reads 0 for even k and n - 1 for odd k.
    const int64_t k = a >= 0 ? (a + n - 2) / (n - 1) : -((-a) / (n - 1));
    if (k * (n - 1) > b) return;
    if ((k + 1) * (n - 1) <= b) {
        *lo = 0;
        *hi = n - 1;
    } else if (k % 2 == 0) {
        *lo = 0;
    } else {
        *hi = n - 1;
    }
}

// Where a tile's staged image lies: element `lo` of an image row (uint8: its byte offset, float: its column
// times stride_x) is staged first; `plane` elements per channel plane (uint8 HWC: one plane holding every
// channel), `words` words per slot.
struct Stage {
    int64_t lo;
    int plane, words;
};

// The staged extent for source columns [lo, hi] (lo > hi: none), or words > stage_words when it does not fit.
template <typename In, int C>
__device__ __forceinline__ Stage stage_extent(const Params& p, int64_t lo, int64_t hi) {
    Stage s{0, 0, 0};
    if (lo > hi) return s;
    s.lo = lo * p.stride_x;
    const int64_t last = hi * p.stride_x;
    // uint8: up to 3 bytes before the first element to align the words, up to 3 after the last.
    const int64_t plane = std::is_same<In, uint8_t>::value ? last + (C - 1) * p.stride_c + 1 - s.lo : last + 1 - s.lo;
    const int64_t words = std::is_same<In, uint8_t>::value ? (plane + 6) / 4 : C * plane;
    if (words > p.stage_words) {
        s.words = p.stage_words + 1;
        return s;
    }
    s.plane = static_cast<int>(plane);
    s.words = static_cast<int>(words);
    return s;
}

// The staged bytes of a uint8 slot row start this many bytes before its first element: the words are those of
// the image, aligned.
__device__ __forceinline__ int row_shift(const Params& p, int64_t src, const Stage& st) {
    return static_cast<int>(
        reinterpret_cast<uintptr_t>(static_cast<const uint8_t*>(p.image) + src * p.stride_y + st.lo) & 3);
}

// One slot's image row, as staging reads it: nullptr for a zero row. uint8: the aligned word its staged bytes
// start at, and the bytes [lo, hi) after it that lie inside the image row (words partly outside are read byte by
// byte, so nothing outside the row is read); as ints, so that a row stays in few registers across the taps.
// float: the element of its first staged column.
struct StageRow {
    const void* at;
    int lo, hi;
};

template <typename In, int C>
__device__ __forceinline__ StageRow stage_row(const Params& p, int64_t base, const Stage& st, int s) {
    StageRow r{nullptr, 0, 0};
    const int64_t src = filter::map_index(base + s, p.height, p.padding);
    if (src == p.height) return r;
    if (std::is_same<In, uint8_t>::value) {
        const uintptr_t row = reinterpret_cast<uintptr_t>(static_cast<const uint8_t*>(p.image) + src * p.stride_y);
        const uintptr_t end = row + (p.width - 1) * p.stride_x + (C - 1) * p.stride_c + 1;
        const uintptr_t first = row + st.lo;
        const uintptr_t aligned = first - (first & 3);
        r.at = reinterpret_cast<const void*>(aligned);
        // row <= first < row + 4 or aligned >= row, and end > first: 0 <= lo <= 3 < hi.
        r.lo = aligned < row ? static_cast<int>(row - aligned) : 0;
        r.hi = static_cast<int>(min(end - aligned, static_cast<uintptr_t>(0x7fffffff)));
    } else {
        r.at = static_cast<const float*>(p.image) + src * p.stride_y + st.lo;
    }
    return r;
}

// Staged word w of a slot row.
template <typename In, int C>
__device__ __forceinline__ uint32_t stage_word(const Params& p, const Stage& st, const StageRow& r, int w) {
    if (r.at == nullptr) return 0;
    if (std::is_same<In, uint8_t>::value) {
        const uint8_t* at = static_cast<const uint8_t*>(r.at) + 4 * w;
        if (4 * w >= r.lo && 4 * w + 4 <= r.hi) return __ldg(reinterpret_cast<const uint32_t*>(at));
        uint32_t v = 0;
        for (int q = 0; q < 4; ++q)
            if (4 * w + q >= r.lo && 4 * w + q < r.hi) v |= static_cast<uint32_t>(__ldg(at + q)) << (8 * q);
        return v;
    } else {
        // The channel plane of word w without a division: there are C < 4 of them.
        int c = 0;
#pragma unroll
        for (int k = 1; k < C; ++k) c += w >= k * st.plane;
        return __float_as_uint(__ldg(static_cast<const float*>(r.at) + c * p.stride_c + (w - c * st.plane)));
    }
}

// The general path: every output pixel of the tile computes its own taps and reads every tap from the image.
// Per row and column the raw weights are summed first (the normaliser), then each tap's weight is recomputed
// and normalised as it is used. Not inlined, so the tiled path keeps its registers; Params by value, as a reference
// would make every block copy the kernel's parameters to local memory.
template <typename In, typename Out, int C>
__device__ __noinline__ void direct_tile(const Params p, int64_t n, int64_t i0, int rows, int64_t j0) {
    const In* image = static_cast<const In*>(p.image);
    const double* box = p.boxes + 4 * n;
    const filter::Axis ax = filter::make_axis(__ldg(box), __ldg(box + 2), p.width, p.out_w, p.antialias, p.padding);
    const filter::Axis ay = filter::make_axis(__ldg(box + 1), __ldg(box + 3), p.height, p.out_h, p.antialias,
                                              p.padding);
    const int64_t j = j0 + 2 * threadIdx.x;
    double cx[2] = {0.0, 0.0}, tx[2] = {1.0, 1.0};
    int64_t fx[2] = {0, 0};
#pragma unroll
    for (int q = 0; q < 2; ++q) {
        if (j + q >= p.out_w) continue;
        cx[q] = filter::center(ax, j + q);
        fx[q] = filter::first_tap(ax, cx[q]);
        tx[q] = filter::total_weight(ax, cx[q], fx[q]);
    }
    for (int r = threadIdx.y; r < rows; r += kWarps) {
        const double cy = filter::center(ay, i0 + r);
        const int64_t fy = filter::first_tap(ay, cy);
        const double ty = filter::total_weight(ay, cy, fy);
        float acc[2][C];
#pragma unroll
        for (int q = 0; q < 2; ++q)
#pragma unroll
            for (int c = 0; c < C; ++c) acc[q][c] = 0.0f;
        for (int64_t t = 0; t < ay.taps; ++t) {
            const int64_t src = filter::map_index(fy + t, p.height, p.padding);
            if (src == p.height) continue;  // a zero row adds nothing
            const float wy = filter::weight(ay, cy, fy, t, ty);
            const In* row = image + src * p.stride_y;
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                if (j + q >= p.out_w) continue;
                float h[C];
#pragma unroll
                for (int c = 0; c < C; ++c) h[c] = 0.0f;
                for (int64_t u = 0; u < ax.taps; ++u) {
                    const int64_t col = filter::map_index(fx[q] + u, p.width, p.padding);
                    if (col == p.width) continue;
                    const float wx = filter::weight(ax, cx[q], fx[q], u, tx[q]);
#pragma unroll
                    for (int c = 0; c < C; ++c) h[c] += wx * load_pixel(row + col * p.stride_x + c * p.stride_c);
                }
#pragma unroll
                for (int c = 0; c < C; ++c) acc[q][c] += wy * h[c];
            }
        }
        store_pair<Out, C>(p, n, i0 + r, j, acc);
    }
}

// Phase 2 of the kernel: the horizontal pass of every slot row, one warp per slot, two neighbouring columns per
// thread, taps in order (at most T). Up to kRegTaps taps a thread holds its columns' offsets and weights in
// registers for all its slots; more would spill, so wider filters read them from shared memory per slot. uint8
// taps that read zero (and columns past the tile) read the slot's first staged byte with weight 0, which adds +0
// as the CPU kernel's zero pixel does, instead of a branch; a float pixel there could be infinite or NaN, so
// float skips them. Step: the element step between a pixel's channels when known at compile time (uint8 RGB
// interleaved: 1, so the channels are immediate offsets of one address), else 0.
template <typename In, int C, int T, int Step>
__device__ __forceinline__ void filter_slots(const Params& p, const Stage& st, int slots, int cx, const int* col_offset,
                                             const float* col_weight, const int* slot_shift, const uint32_t* staged,
                                             float* filtered) {
    constexpr bool u8 = std::is_same<In, uint8_t>::value;
    constexpr bool in_registers = T <= kRegTaps;
    const int lane = threadIdx.x;
    const auto tap = [&](int t, int q, int* offset, float* weight) {
        const int k = t * kTileW + 2 * lane + q;
        *offset = u8 ? max(col_offset[k], 0) : col_offset[k];
        *weight = col_weight[k];
    };
    int offset[T][2];
    float weight[T][2];
#pragma unroll
    for (int t = 0; t < T; ++t)
#pragma unroll
        for (int q = 0; q < 2; ++q)
            if (in_registers && t < cx) tap(t, q, &offset[t][q], &weight[t][q]);
    // Channel c of a staged pixel lies c * step elements after channel 0.
    const int step = Step ? Step : u8 ? static_cast<int>(p.stride_c) : st.plane;
    for (int s = threadIdx.y; s < slots; s += kWarps) {
        const int shift = slot_shift[s];
        float h[2][C];
#pragma unroll
        for (int q = 0; q < 2; ++q)
#pragma unroll
            for (int c = 0; c < C; ++c) h[q][c] = 0.0f;
        if (shift >= 0) {
            const uint32_t* row = staged + s * p.stage_words;
            const uint8_t* bytes = reinterpret_cast<const uint8_t*>(row) + shift;
#pragma unroll
            for (int t = 0; t < T; ++t) {
                if (t >= cx) break;
#pragma unroll
                for (int q = 0; q < 2; ++q) {
                    if (!in_registers) tap(t, q, &offset[t][q], &weight[t][q]);
                    const int o = offset[t][q];
                    if (!u8 && o < 0) continue;
#pragma unroll
                    for (int c = 0; c < C; ++c) {
                        const float v = u8 ? byte_to_float(bytes[o + c * step]) : __uint_as_float(row[o + c * step]);
                        h[q][c] += weight[t][q] * v;
                    }
                }
            }
        }
#pragma unroll
        for (int c = 0; c < C; ++c)
            reinterpret_cast<float2*>(filtered + (c * slots + s) * kTileW)[lane] = make_float2(h[0][c], h[1][c]);
    }
}

// A tile of `rows` x `cols` outputs from (i0, j0) of box n, and what every thread of its block derives alike from
// the box: the axes, `base` (the source row position, before the padding mode, of slot 0), `span` (the slots its
// output rows read) and the staged extent of the source columns its taps read.
struct Tile {
    int64_t n, i0, j0;
    int rows, cols;
    filter::Axis ax, ay;
    int64_t base, span;
    Stage st;
};

template <typename In, int C>
__device__ __forceinline__ Tile plan_tile(const Params& p) {
    Tile t;
    t.n = blockIdx.x;
    t.i0 = static_cast<int64_t>(blockIdx.y) * kTileH;
    t.j0 = static_cast<int64_t>(blockIdx.z) * kTileW;
    t.rows = static_cast<int>(min(static_cast<int64_t>(kTileH), p.out_h - t.i0));
    t.cols = static_cast<int>(min(static_cast<int64_t>(kTileW), p.out_w - t.j0));
    const double* box = p.boxes + 4 * t.n;
    t.ax = filter::make_axis(__ldg(box), __ldg(box + 2), p.width, p.out_w, p.antialias, p.padding);
    t.ay = filter::make_axis(__ldg(box + 1), __ldg(box + 3), p.height, p.out_h, p.antialias, p.padding);
    t.base = filter::first_tap(t.ay, filter::center(t.ay, t.i0));
    t.span = filter::first_tap(t.ay, filter::center(t.ay, t.i0 + t.rows - 1)) - t.base + t.ay.taps;
    const int64_t col_first = filter::first_tap(t.ax, filter::center(t.ax, t.j0));
    int64_t lo, hi;
    mapped_range(col_first, filter::first_tap(t.ax, filter::center(t.ax, t.j0 + t.cols - 1)) + t.ax.taps - 1,
                 p.width, p.padding, &lo, &hi);
    // A tile whose taps all read zeros still stages column 0, so that every staged row holds a byte that the
    // uint8 horizontal pass can read for its zero taps.
    if (lo > hi) lo = hi = 0;
    t.st = stage_extent<In, C>(p, lo, hi);
    return t;
}

// Phase 1, staging: warp w stages slots w, w + kWarps, ... of the tile's `slots`, its lanes over a slot's words,
// kBatch words per lane in flight. This loads the first batch of the warp's first slot into registers, so that
// the tap computation that follows hides its latency, and returns that slot's row.
template <typename In, int C>
__device__ __forceinline__ StageRow stage_first_batch(const Params& p, const Tile& t, int slots,
                                                      uint32_t (&batch)[kBatch]) {
    const int lane = threadIdx.x, warp = threadIdx.y;
    const StageRow sr = warp < slots ? stage_row<In, C>(p, t.base, t.st, warp) : StageRow{nullptr, 0, 0};
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
        const int w = lane + b * kLanes;
        batch[b] = w < t.st.words ? stage_word<In, C>(p, t.st, sr, w) : 0;
    }
    return sr;
}

// The rest of staging: stores the batch in flight into `staged`, loads the next one (the slot's next words, or
// the first words of the warp's next slot) before storing it, and so on until the warp's slots are staged.
template <typename In, int C>
__device__ __forceinline__ void stage_rest(const Params& p, const Tile& t, int slots, StageRow sr,
                                           uint32_t (&batch)[kBatch], uint32_t* staged) {
    const int lane = threadIdx.x;
    for (int stage_slot = threadIdx.y, w0 = 0; stage_slot < slots;) {
        uint32_t* row = staged + stage_slot * p.stage_words;
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
            const int w = w0 + lane + b * kLanes;
            if (w < t.st.words) row[w] = batch[b];
        }
        w0 += kBatch * kLanes;
        if (w0 >= t.st.words) {
            w0 = 0;
            stage_slot += kWarps;
            if (stage_slot >= slots) break;
            sr = stage_row<In, C>(p, t.base, t.st, stage_slot);
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
            const int w = w0 + lane + b * kLanes;
            batch[b] = w < t.st.words ? stage_word<In, C>(p, t.st, sr, w) : 0;
        }
    }
}

// Phase 1, meanwhile: the tile's cx column taps, [kColTaps][kTileW] by the block's threads `tid`, as offsets into
// a staged row (-1 and weight 0 where a tap reads zero, and past the tile's taps or columns).
__device__ __forceinline__ void column_taps(const Params& p, const Tile& t, int cx, int tid, int* col_offset,
                                            float* col_weight) {
    for (int k = tid; k < kColTaps * kTileW; k += kThreads) {
        const int tap = k / kTileW, x = k % kTileW;
        int offset = -1;  // reads zero
        float w = 0.0f;
        if (tap < cx && x < t.cols) {
            const double c = filter::center(t.ax, t.j0 + x);
            const int64_t f = filter::first_tap(t.ax, c);
            const int64_t col = filter::map_index(f + tap, p.width, p.padding);
            if (col < p.width) {
                offset = static_cast<int>(col * p.stride_x - t.st.lo);
                w = filter::weight(t.ax, c, f, tap, filter::total_weight(t.ax, c, f));
            }
        }
        col_offset[k] = offset;
        col_weight[k] = w;
    }
}

// Phase 1, meanwhile: row weight `tid / kTileH` of output row `tid % kTileH` (kTileH * kRowTaps <= kThreads, so
// one per thread) and each output row's first slot. Sets *direct when the row's taps start before slot 0 or end
// past the last slot: a first tap that decreased within the tile.
__device__ __forceinline__ void row_taps(const Tile& t, int cy, int slots, int tid, float* row_weight, int* row_slot,
                                         bool* direct) {
    const int r = tid % kTileH, tap = tid / kTileH;
    if (r < t.rows && tap < cy) {
        const double c = filter::center(t.ay, t.i0 + r);
        const int64_t f = filter::first_tap(t.ay, c);
        const int64_t s = f - t.base;
        if (s < 0 || s + cy > slots) {
            *direct = true;
        } else {
            row_weight[r * kRowTaps + tap] = filter::weight(t.ay, c, f, tap, filter::total_weight(t.ay, c, f));
            if (tap == 0) row_slot[r] = static_cast<int>(s);
        }
    }
}

// Phase 1, meanwhile: where each slot's staged row starts (uint8: its byte shift, float: 0), -1 for a zero row.
template <typename In>
__device__ __forceinline__ void slot_shifts(const Params& p, const Tile& t, int slots, int tid, int* slot_shift) {
    for (int s = tid; s < slots; s += kThreads) {
        const int64_t src = filter::map_index(t.base + s, p.height, p.padding);
        slot_shift[s] = src < p.height ? (std::is_same<In, uint8_t>::value ? row_shift(p, src, t.st) : 0) : -1;
    }
}

// Phase 2: filter_slots with the column taps in registers when there are at most kRegTaps, and uint8 RGB's
// channel step as a compile-time 1 when the channels are adjacent.
template <typename In, int C>
__device__ __forceinline__ void horizontal_pass(const Params& p, const Stage& st, int slots, int cx,
                                                const int* col_offset, const float* col_weight,
                                                const int* slot_shift, const uint32_t* staged, float* filtered) {
    constexpr bool interleaved = std::is_same<In, uint8_t>::value && C > 1;
    if (cx > kRegTaps)
        filter_slots<In, C, kColTaps, 0>(p, st, slots, cx, col_offset, col_weight, slot_shift, staged, filtered);
    else if (interleaved && p.stride_c == 1)
        filter_slots<In, C, kRegTaps, 1>(p, st, slots, cx, col_offset, col_weight, slot_shift, staged, filtered);
    else
        filter_slots<In, C, kRegTaps, 0>(p, st, slots, cx, col_offset, col_weight, slot_shift, staged, filtered);
}

// Phase 3: warp w combines the filtered slots of output rows w, w + kWarps, ... with their cy row weights, in tap
// order (the CPU kernel's), two neighbouring columns per thread, and stores them.
template <typename Out, int C>
__device__ __forceinline__ void vertical_pass(const Params& p, const Tile& t, int slots, int cy,
                                              const float* row_weight, const int* row_slot, const float* filtered) {
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int x0 = 2 * lane;
#pragma unroll
    for (int k = 0; k < kTileH / kWarps; ++k) {
        const int r = warp + k * kWarps;
        if (r >= t.rows) break;
        const float* w = row_weight + r * kRowTaps;
        const float2* h = reinterpret_cast<const float2*>(filtered + row_slot[r] * kTileW) + lane;
        float acc[2][C];
#pragma unroll
        for (int q = 0; q < 2; ++q)
#pragma unroll
            for (int c = 0; c < C; ++c) acc[q][c] = 0.0f;
#pragma unroll
        for (int tap = 0; tap < kRowTaps; ++tap) {
            if (tap >= cy) break;
            const float wt = w[tap];
#pragma unroll
            for (int c = 0; c < C; ++c) {
                const float2 v = h[(c * slots + tap) * (kTileW / 2)];
                acc[0][c] += wt * v.x;
                acc[1][c] += wt * v.y;
            }
        }
        store_pair<Out, C>(p, t.n, t.i0 + r, t.j0 + x0, acc);
    }
}

template <typename In, typename Out, int C>
__global__ void __launch_bounds__(kThreads, kMinBlocks) crop_resize_kernel(const Params p) {
    // Plain locals, not a struct: the compiler keeps them 32-bit shared-memory addresses (in a struct they become
    // 64-bit generic pointers and the kernel spills more).
    extern __shared__ float smem[];
    int* col_offset = reinterpret_cast<int*>(smem);                          // [kColTaps][kTileW]
    float* col_weight = smem + kColTaps * kTileW;                            // [kColTaps][kTileW]
    float* row_weight = smem + 2 * kColTaps * kTileW;                        // [kTileH][kRowTaps]
    int* row_slot = reinterpret_cast<int*>(row_weight + kTileH * kRowTaps);  // [kTileH]
    int* slot_shift = row_slot + kTileH;                                     // [slots]
    float* filtered = smem + kFixedWords + slot_shift_words(p.slots);        // [C][slots][kTileW]
    uint32_t* staged = reinterpret_cast<uint32_t*>(filtered + C * p.slots * kTileW);  // [slots][stage_words]

    const int tid = threadIdx.y * kLanes + threadIdx.x;
    const Tile t = plan_tile<In, C>(p);
    // The tiled path needs at most kRowTaps / kColTaps taps, and its slots and staged rows within the allocation.
    const bool tiled = t.ay.taps <= kRowTaps && t.ax.taps <= kColTaps && t.span <= p.slots &&
                       t.st.words <= p.stage_words;
    const int slots = tiled ? static_cast<int>(t.span) : 0;
    const int cx = static_cast<int>(t.ax.taps), cy = static_cast<int>(t.ay.taps);

    // Phase 1: staging, its first loads in flight while the taps are computed.
    uint32_t batch[kBatch];
    const StageRow first = stage_first_batch<In, C>(p, t, slots, batch);
    bool direct = !tiled;
    if (tiled) {
        column_taps(p, t, cx, tid, col_offset, col_weight);
        row_taps(t, cy, slots, tid, row_weight, row_slot, &direct);
        slot_shifts<In>(p, t, slots, tid, slot_shift);
    }
    stage_rest<In, C>(p, t, slots, first, batch, staged);
    if (__syncthreads_or(direct)) {
        direct_tile<In, Out, C>(p, t.n, t.i0, t.rows, t.j0);
        return;
    }

    horizontal_pass<In, C>(p, t.st, slots, cx, col_offset, col_weight, slot_shift, staged, filtered);
    __syncthreads();

    vertical_pass<Out, C>(p, t, slots, cy, row_weight, row_slot, filtered);
}

// Slots a tile of kTileH output rows may need, and words a slot's staged image row may need: the first tap
// advances by at most floor(k * scale) + 2 over k outputs, and the last output adds its taps. The slots are
// capped by the shared-memory budget.
struct Geometry {
    int slots, stage_words;
};

Geometry tile_geometry(const ImageView& im, bool antialias, double max_row_scale, double max_col_scale) {
    const auto span = [&](double scale, int64_t tile, int64_t n_in) {
        const double taps = static_cast<double>(filter::tap_count(antialias && scale > 1.0 ? scale : 1.0));
        return std::min(std::floor(static_cast<double>(tile - 1) * scale) + 2.0 + taps, static_cast<double>(n_in));
    };
    const double cols = span(max_col_scale, kTileW, im.width);
    const bool u8 = im.layout == InputLayout::U8_HWC;
    const double plane = (cols - 1.0) * static_cast<double>(im.stride_x) +
                         (u8 ? static_cast<double>((im.channels - 1) * im.stride_c) : 0.0) + 1.0;
    const double words = u8 ? std::floor((plane + 6.0) / 4.0) : static_cast<double>(im.channels) * plane;
    const double per_slot = 1.0 + static_cast<double>(im.channels * kTileW) + words;
    const double budget = std::floor((kSmemBytes / 4 - kFixedWords - 1) / per_slot);
    const double row_fscale = antialias && max_row_scale > 1.0 ? max_row_scale : 1.0;
    const double rows = std::floor((kTileH - 1) * max_row_scale) + 2.0 +
                        static_cast<double>(filter::tap_count(row_fscale));
    Geometry g;
    g.slots = static_cast<int>(std::max(0.0, std::min(rows, budget)));
    g.stage_words = g.slots > 0 ? static_cast<int>(words) : 0;
    return g;
}

template <typename In, typename Out, int C>
void launch(const ImageView& im, const double* boxes, int64_t n_boxes, const CropResizeParams& prm,
            const Geometry& g, void* out, cudaStream_t stream) {
    Params p{};
    p.image = im.data;
    p.height = im.height;
    p.width = im.width;
    p.stride_y = im.stride_y;
    p.stride_x = im.stride_x;
    p.stride_c = im.stride_c;
    p.boxes = boxes;
    p.out_h = prm.out_h;
    p.out_w = prm.out_w;
    p.antialias = prm.antialias;
    p.padding = prm.padding_mode;
    p.paired = prm.out_w % 2 == 0 && reinterpret_cast<uintptr_t>(out) % (2 * sizeof(Out)) == 0;
    normalisation(im, prm, p.scale, p.shift);
    p.slots = g.slots;
    p.stage_words = g.stage_words;
    p.out = out;
    const dim3 block(kLanes, kWarps);
    const dim3 grid(static_cast<unsigned>(n_boxes), static_cast<unsigned>((prm.out_h + kTileH - 1) / kTileH),
                    static_cast<unsigned>((prm.out_w + kTileW - 1) / kTileW));
    const size_t smem = sizeof(float) * static_cast<size_t>(smem_words(p.slots, C, p.stage_words));
    crop_resize_kernel<In, Out, C><<<grid, block, smem, stream>>>(p);
}

template <typename In, typename Out>
void launch_channels(const ImageView& im, const double* boxes, int64_t n_boxes, const CropResizeParams& prm,
                     const Geometry& g, void* out, cudaStream_t stream) {
    if (im.channels == 3)
        launch<In, Out, 3>(im, boxes, n_boxes, prm, g, out, stream);
    else
        launch<In, Out, 1>(im, boxes, n_boxes, prm, g, out, stream);
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

void crop_resize_cuda(const ImageView& image, const double* boxes, int64_t n_boxes, const CropResizeParams& params,
                      double max_row_scale, double max_col_scale, void* out, int device, void* stream) {
    if (n_boxes == 0) return;
    if (image.data == nullptr || out == nullptr || boxes == nullptr)
        throw std::invalid_argument("crop_resize_cuda: null pointer");
    check_channels(image, params);
    if (params.channels_last)
        throw std::invalid_argument("crop_resize_cuda: writes (N, C, h, w) only; channels_last is converted by the "
                                    "caller");
    if (n_boxes < 0 || params.out_h < 1 || params.out_w < 1 || image.height < 1 || image.width < 1)
        throw std::invalid_argument("crop_resize_cuda: sizes must be positive");
    if (image.stride_y < 0 || image.stride_x < 0 || image.stride_c < 0)
        throw std::invalid_argument("crop_resize_cuda: strides must be >= 0");
    if (!(max_row_scale >= 0.0) || !(max_col_scale >= 0.0))
        throw std::invalid_argument("crop_resize_cuda: max_row_scale and max_col_scale must be >= 0");
    // Grid limits: boxes on x (2^31 - 1), row and column tiles on y and z (65535 each).
    if (n_boxes > 0x7fffffffLL || (params.out_h + kTileH - 1) / kTileH > 65535 ||
        (params.out_w + kTileW - 1) / kTileW > 65535)
        throw std::invalid_argument("crop_resize_cuda: too many boxes or output too large for one launch");
    DeviceGuard guard(device);
    const auto s = static_cast<cudaStream_t>(stream);
    const Geometry g = tile_geometry(image, params.antialias, max_row_scale, max_col_scale);
    const bool f32 = params.out_dtype == OutDType::F32;
    if (image.layout == InputLayout::U8_HWC) {
        if (f32)
            launch_channels<uint8_t, float>(image, boxes, n_boxes, params, g, out, s);
        else
            launch_channels<uint8_t, __half>(image, boxes, n_boxes, params, g, out, s);
    } else {
        if (f32)
            launch_channels<float, float>(image, boxes, n_boxes, params, g, out, s);
        else
            launch_channels<float, __half>(image, boxes, n_boxes, params, g, out, s);
    }
    check(cudaGetLastError(), "crop_resize_cuda launch");
}

const char* compiled_targets() { return MIDLEVEL_FAST_XSTR(MIDLEVEL_FAST_CUDA_TARGETS); }

}  // namespace cuda
}  // namespace midlevel_fast
