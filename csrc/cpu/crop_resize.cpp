#include "crop_resize.h"

#include <omp.h>

#if defined(__x86_64__) || defined(__SSE2__)
#include <immintrin.h>
#endif


#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace midlevel_fast {
namespace {

// With few boxes, output rows are processed in bands so that one box can still use every thread. Every output
// value is computed by the same operations whatever the partition, which keeps results bit-identical across
// thread counts.
constexpr int64_t kBandRows = 32;
constexpr double kStreamBytes = 64.0 * 1024 * 1024;

// Taps for outputs [j0, j1) of one axis, laid out [j - j0][tap] (the tap math is in taps.h, shared with the
// CUDA kernel). The first tap is the first pixel whose centre lies strictly inside the filter support, so
// ceil(2 * fscale) taps always suffice.
void axis_taps_range(double b0, double b1, int64_t n_in, int64_t n_out, bool antialias, Padding padding,
                     int64_t taps, int64_t j0, int64_t j1, int32_t* index, float* weight) {
    filter::Axis a = filter::make_axis(b0, b1, n_in, n_out, antialias, padding);
    a.taps = taps;
    for (int64_t j = j0; j < j1; ++j) {
        const double c = filter::center(a, j);
        const int64_t first = filter::first_tap(a, c);
        const double total = filter::total_weight(a, c, first);
        for (int64_t t = 0; t < taps; ++t) {
            const size_t k = static_cast<size_t>((j - j0) * taps + t);
            index[k] = static_cast<int32_t>(filter::map_index(first + t, n_in, padding));
            weight[k] = filter::weight(a, c, first, t, total);
        }
    }
}

struct Workspace {
    std::vector<int32_t> ix, iy;
    std::vector<float> wx, wy, segment, rows, acc;
    // The horizontal taps in ix/wx belong to box `taps_box` of call `taps_call`; bands of the same box reuse them.
    uint64_t taps_call = 0;
    int64_t taps_box = -1, cx0 = 0, cx1 = 0;
};

// The horizontal pass holds pixels interleaved with P floats each: P = 4 for RGB (4th lane unused) so that one
// SIMD op filters all channels of a pixel, P = 1 for grey.
//
// Moves the used column range of image row `r` into `seg` (len pixels, then one zero pixel for zero-padded
// taps).
template <int P>
inline __attribute__((always_inline)) void load_segment(const ImageView& im, int64_t r, int64_t c0, int64_t len,
                                                        float* seg) {
    const int64_t C = im.channels;
    for (int c = 0; c < P; ++c) seg[len * P + c] = 0.0f;
    if (im.layout == InputLayout::U8_HWC) {
        const uint8_t* row = static_cast<const uint8_t*>(im.data) + r * im.stride_y + c0 * im.stride_x;
        if (P == 4 && im.stride_x == 3 && im.stride_c == 1) {
            for (int64_t x = 0; x < len; ++x) {
                seg[x * P] = row[3 * x];
                seg[x * P + 1] = row[3 * x + 1];
                seg[x * P + 2] = row[3 * x + 2];
                seg[x * P + 3] = 0.0f;
            }
            return;
        }
        for (int64_t x = 0; x < len; ++x)
            for (int64_t c = 0; c < C; ++c) seg[x * P + c] = row[x * im.stride_x + c * im.stride_c];
    } else {
        const float* row = static_cast<const float*>(im.data) + r * im.stride_y + c0 * im.stride_x;
        for (int64_t x = 0; x < len; ++x)
            for (int64_t c = 0; c < C; ++c) seg[x * P + c] = row[x * im.stride_x + c * im.stride_c];
    }
    if (P == 4)
        for (int64_t x = 0; x < len; ++x) seg[x * P + 3] = 0.0f;
}

// Rebases mapped indices onto [lo, hi) of the used range; the padding sentinel `n` becomes `hi - lo`.
// Indices come out multiplied by `scale` (the element stride of one index step in the consumer's buffer).
void rebase(int32_t* index, int64_t count, int64_t n, int64_t scale, int64_t* lo_out, int64_t* hi_out) {
    int64_t lo = n, hi = 0;
    for (int64_t k = 0; k < count; ++k) {
        if (index[k] < n) {
            lo = std::min<int64_t>(lo, index[k]);
            hi = std::max<int64_t>(hi, index[k] + 1);
        }
    }
    if (hi <= lo) lo = hi = 0;
    for (int64_t k = 0; k < count; ++k)
        index[k] = static_cast<int32_t>((index[k] < n ? index[k] - lo : hi - lo) * scale);
    *lo_out = lo;
    *hi_out = hi;
}

// IEEE binary16 with round-to-nearest-even, as torch's .half(): the portable path (GCC lowers _Float16 casts
// to a libgcc call per element).
inline uint16_t float_to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, sizeof(x));
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    // Subnormal results: adding 0.5 aligns the 10 mantissa bits at the bottom and rounds them (RNE).
    const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    float aligned;
    std::memcpy(&aligned, &x, sizeof(aligned));
    float magic;
    std::memcpy(&magic, &denorm_magic, sizeof(magic));
    aligned += magic;
    uint32_t sub;
    std::memcpy(&sub, &aligned, sizeof(sub));
    sub -= denorm_magic;
    const uint32_t normal = (x + ((15u - 127u) << 23) + 0xfffu + ((x >> 13) & 1u)) >> 13;
    const uint32_t special = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    const uint32_t h = x >= 0x47800000u ? special : (x < 0x38800000u ? sub : normal);
    return static_cast<uint16_t>(h | sign);
}

// dst[j] = half(src[j] * a + b), with F16C conversions where the CPU has them (the common x86-64-v3 case).
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,f16c"))) void store_half_f16c(uint16_t* dst, const float* src, int64_t n, float a,
                                                              float b) {
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(src + j), va), vb);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; j < n; ++j) dst[j] = float_to_half(src[j] * a + b);
}

const bool kHasF16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif

inline void store_half(uint16_t* dst, const float* src, int64_t n, float a, float b) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (kHasF16c) {
        store_half_f16c(dst, src, n, a, b);
        return;
    }
#endif
    for (int64_t j = 0; j < n; ++j) dst[j] = float_to_half(src[j] * a + b);
}

// One pixel's channels as a GCC/Clang vector, so the horizontal pass filters them with one SIMD op.
typedef float Float4 __attribute__((vector_size(16)));

template <int P>
struct PixelType {
    using type = float;
};
template <>
struct PixelType<4> {
    using type = Float4;
};
template <int P>
using Pixel = typename PixelType<P>::type;

template <int P>
inline __attribute__((always_inline)) Pixel<P> load_pixel(const float* p) {
    Pixel<P> v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

inline float lane(float v, int64_t) { return v; }
inline float lane(Float4 v, int64_t c) { return v[c]; }

// Which output rows [i0, i1) of which box of which call a work item covers, and whether to write them with
// streaming stores: they skip the read-for-ownership of every destination line, which otherwise doubles the
// memory traffic of this store-bound kernel, but leave the output out of cache, so they are used only for
// outputs much larger than the last-level cache.
struct BandId {
    uint64_t call;
    int64_t box, i0, i1;
    bool stream;
};

// What the two passes of one band share: the taps per output column and row, the source rectangle the band
// reads (columns [cx0, cx0 + seg_len), rows [ry0, ry0 + n_rows)), and the floats per channel plane of the
// horizontally filtered rows (n_rows + 1 rows of out_w: the last one all zero, read by zero-padded row taps).
struct BandGeometry {
    int64_t tx, ty, cx0, seg_len, ry0, n_rows, plane;
};

// The column taps of the whole box into ws.ix / ws.wx, as offsets into the interleaved segment of the used
// columns [ws.cx0, ws.cx1). Every band of a box has the same ones, so a thread computes them once per box.
template <int P>
inline __attribute__((always_inline)) void box_column_taps(const ImageView& im, const double* box,
                                                           const CropResizeParams& p, const BandId& id, int64_t tx,
                                                           Workspace& ws) {
    if (ws.taps_call == id.call && ws.taps_box == id.box) return;
    const int64_t ow = p.out_w;
    ws.ix.resize(static_cast<size_t>(tx * ow));
    ws.wx.resize(static_cast<size_t>(tx * ow));
    axis_taps_range(box[0], box[2], im.width, ow, p.antialias, p.padding_mode, tx, 0, ow, ws.ix.data(),
                    ws.wx.data());
    rebase(ws.ix.data(), tx * ow, im.width, P, &ws.cx0, &ws.cx1);
    ws.taps_call = id.call;
    ws.taps_box = id.box;
}

// The row taps of the band's output rows into ws.iy / ws.wy, as offsets into one plane of the filtered rows
// (row r at r * out_w), and the source rows [*ry0, *ry1) they read.
inline __attribute__((always_inline)) void band_row_taps(const ImageView& im, const double* box,
                                                         const CropResizeParams& p, const BandId& id, int64_t ty,
                                                         Workspace& ws, int64_t* ry0, int64_t* ry1) {
    const int64_t rows_out = id.i1 - id.i0;
    ws.iy.resize(static_cast<size_t>(ty * rows_out));
    ws.wy.resize(static_cast<size_t>(ty * rows_out));
    axis_taps_range(box[1], box[3], im.height, p.out_h, p.antialias, p.padding_mode, ty, id.i0, id.i1,
                    ws.iy.data(), ws.wy.data());
    rebase(ws.iy.data(), ty * rows_out, im.height, p.out_w, ry0, ry1);
}

// One source row filtered horizontally: output column j from the segment's pixels at ix[j * tx + t], all
// channels of a pixel in one SIMD op, then de-interleaved into the planes (channel c at dst + c * plane).
template <int P>
inline __attribute__((always_inline)) void filter_row(const float* seg, const int32_t* ix, const float* wx,
                                                      int64_t tx, int64_t ow, int64_t C, int64_t plane, float* dst) {
    if (tx == 2) {
        // Enlarged boxes, the common case: two taps, unrolled so the pixel stays in one register.
        for (int64_t j = 0; j < ow; ++j) {
            Pixel<P> v = load_pixel<P>(seg + ix[2 * j]) * wx[2 * j] +
                         load_pixel<P>(seg + ix[2 * j + 1]) * wx[2 * j + 1];
            for (int64_t c = 0; c < C; ++c) dst[c * plane + j] = lane(v, c);
        }
        return;
    }
    for (int64_t j = 0; j < ow; ++j) {
        Pixel<P> v = load_pixel<P>(seg + ix[j * tx]) * wx[j * tx];
        for (int64_t t = 1; t < tx; ++t) v += load_pixel<P>(seg + ix[j * tx + t]) * wx[j * tx + t];
        for (int64_t c = 0; c < C; ++c) dst[c * plane + j] = lane(v, c);
    }
}

// Horizontal pass into the planes rows[c][r][j]. It runs on the band's source rows, fewer than its output rows
// whenever the box is enlarged, so the de-interleave costs least here; the vertical pass then reads contiguous
// plane rows. The zero row after the source rows stands for the zero-padded row taps.
template <int P>
inline __attribute__((always_inline)) void horizontal_pass(const ImageView& im, const BandGeometry& g, int64_t ow,
                                                           Workspace& ws) {
    const int64_t C = im.channels;
    float* seg = ws.segment.data();
    float* rows = ws.rows.data();
    const int32_t* ix = ws.ix.data();
    const float* wx = ws.wx.data();
    for (int64_t r = 0; r < g.n_rows; ++r) {
        load_segment<P>(im, g.ry0 + r, g.cx0, g.seg_len, seg);
        filter_row<P>(seg, ix, wx, g.tx, ow, C, g.plane, rows + r * ow);
    }
    for (int64_t c = 0; c < C; ++c) std::fill_n(rows + c * g.plane + g.n_rows * ow, ow, 0.0f);
}

// Two row taps, float32 (N, C, h, w) output: the enlarged boxes' common case, taps, scale and shift in one pass
// over the row, in the same order as combine_rows then store_row so the result is identical.
inline __attribute__((always_inline)) void two_tap_row_f32(const float* src0, const float* src1, float w0, float w1,
                                                           float ac, float bc, bool stream, int64_t ow, float* dst) {
    int64_t j = 0;
#if defined(__SSE2__)
    if (stream && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
        for (; j + 4 <= ow; j += 4) {
            const Float4 v = (w0 * load_pixel<4>(src0 + j) + w1 * load_pixel<4>(src1 + j)) * ac + bc;
            _mm_stream_ps(dst + j, reinterpret_cast<const __m128&>(v));
        }
    }
#endif
    for (; j < ow; ++j) dst[j] = (w0 * src0[j] + w1 * src1[j]) * ac + bc;
}

// acc[j] = sum over the taps t, in tap order, of w[t] * plane[iy[t] + j]: one output row of one channel, before
// normalising.
inline __attribute__((always_inline)) void combine_rows(const float* plane, const int32_t* iy, const float* w,
                                                        int64_t ty, int64_t ow, float* acc) {
    const float* src0 = plane + iy[0];
    for (int64_t j = 0; j < ow; ++j) acc[j] = w[0] * src0[j];
    for (int64_t t = 1; t < ty; ++t) {
        const float* src = plane + iy[t];
        const float wt = w[t];
        for (int64_t j = 0; j < ow; ++j) acc[j] += wt * src[j];
    }
}

// Output row `i` of channel c, acc normalised (acc * a[c] + b[c]) and stored in the output dtype and layout.
inline __attribute__((always_inline)) void store_row(const CropResizeParams& p, const float* acc, const float* a,
                                                     const float* b, int64_t c, int64_t C, int64_t i,
                                                     void* out_box) {
    const int64_t ow = p.out_w;
    if (p.channels_last) {
        // Channel c of pixel (i, j) at (i * ow + j) * C + c: strided stores of the same values, so that a
        // channels_last output needs no transposing copy (3-channel float32 NCHW -> NHWC by torch ran at a
        // quarter of memcpy speed, the largest copy of a Lite0 dense call).
        const int64_t at = i * ow * C + c;
        if (p.out_dtype == OutDType::F32) {
            float* dst = static_cast<float*>(out_box) + at;
            for (int64_t j = 0; j < ow; ++j) dst[j * C] = acc[j] * a[c] + b[c];
        } else {
            uint16_t* dst = static_cast<uint16_t*>(out_box) + at;
            for (int64_t j = 0; j < ow; ++j) dst[j * C] = float_to_half(acc[j] * a[c] + b[c]);
        }
        return;
    }
    const int64_t offset = (c * p.out_h + i) * ow;
    if (p.out_dtype == OutDType::F32) {
        float* dst = static_cast<float*>(out_box) + offset;
        for (int64_t j = 0; j < ow; ++j) dst[j] = acc[j] * a[c] + b[c];
    } else {
        store_half(static_cast<uint16_t*>(out_box) + offset, acc, ow, a[c], b[c]);
    }
}

// Vertical pass along contiguous plane rows, each output row normalised and stored as soon as it is combined.
inline __attribute__((always_inline)) void vertical_pass(const CropResizeParams& p, const float* a, const float* b,
                                                         const BandId& id, const BandGeometry& g, int64_t C,
                                                         Workspace& ws, void* out_box) {
    const int64_t ow = p.out_w, ty = g.ty, rows_out = id.i1 - id.i0;
    const float* rows = ws.rows.data();
    float* acc = ws.acc.data();
    for (int64_t c = 0; c < C; ++c) {
        const float* pc = rows + c * g.plane;
        for (int64_t i = 0; i < rows_out; ++i) {
            const float* w = ws.wy.data() + i * ty;
            const int32_t* iy = ws.iy.data() + i * ty;
            if (ty == 2 && p.out_dtype == OutDType::F32 && !p.channels_last) {
                float* dst = static_cast<float*>(out_box) + (c * p.out_h + id.i0 + i) * ow;
                two_tap_row_f32(pc + iy[0], pc + iy[1], w[0], w[1], a[c], b[c], id.stream, ow, dst);
                continue;
            }
            combine_rows(pc, iy, w, ty, ow, acc);
            store_row(p, acc, a, b, c, C, id.i0 + i, out_box);
        }
    }
}

// Filters the band of output rows [i0, i1) of one box and writes it normalised into out_box: (C, oh, ow), or
// (oh, ow, C) for a channels_last output. Separable: the box's source rows filtered horizontally, then combined
// vertically, each output value by the same operations whatever the band.
template <int P>
inline __attribute__((always_inline)) void band_kernel(const ImageView& im, const double* box,
                                                       const CropResizeParams& p, const float* a, const float* b,
                                                       const BandId& id, void* out_box, Workspace& ws) {
    BandGeometry g;
    g.tx = axis_tap_count(box[0], box[2], p.out_w, p.antialias);
    box_column_taps<P>(im, box, p, id, g.tx, ws);
    g.cx0 = ws.cx0;
    g.seg_len = ws.cx1 - ws.cx0;
    g.ty = axis_tap_count(box[1], box[3], p.out_h, p.antialias);
    int64_t ry1;
    band_row_taps(im, box, p, id, g.ty, ws, &g.ry0, &ry1);
    g.n_rows = ry1 - g.ry0;
    g.plane = (g.n_rows + 1) * p.out_w;

    ws.segment.resize(static_cast<size_t>((g.seg_len + 1) * P));
    ws.rows.resize(static_cast<size_t>(im.channels * g.plane));
    ws.acc.resize(static_cast<size_t>(p.out_w));
    horizontal_pass<P>(im, g, p.out_w, ws);
    vertical_pass(p, a, b, id, g, im.channels, ws, out_box);
}

// One clone per instruction set, picked at load time: the portable baseline plus AVX2/FMA/F16C.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MIDLEVEL_FAST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MIDLEVEL_FAST_CLONES
#endif

MIDLEVEL_FAST_CLONES void process_band_rgb(const ImageView& im, const double* box, const CropResizeParams& p,
                                           const float* a, const float* b, const BandId& id, void* out_box,
                                           Workspace& ws) {
    band_kernel<4>(im, box, p, a, b, id, out_box, ws);
}

MIDLEVEL_FAST_CLONES void process_band_grey(const ImageView& im, const double* box, const CropResizeParams& p,
                                            const float* a, const float* b, const BandId& id, void* out_box,
                                            Workspace& ws) {
    band_kernel<1>(im, box, p, a, b, id, out_box, ws);
}

void run(const ImageView& im, const double* boxes, int64_t n_boxes, const CropResizeParams& p, void* out) {
    const int64_t C = im.channels;
    std::vector<float> a(C), b(C);
    normalisation(im, p, a.data(), b.data());
    const int threads = p.num_threads > 0 ? p.num_threads : omp_get_max_threads();
    // Whole boxes when there are enough of them to keep every thread busy, bands of rows otherwise.
    const int64_t band_rows = n_boxes >= 4 * threads ? p.out_h : kBandRows;
    const int64_t n_bands = (p.out_h + band_rows - 1) / band_rows;
    static std::atomic<uint64_t> calls{0};
    const uint64_t call = ++calls;
    const int64_t items = n_boxes * n_bands;
    const int64_t per_box = C * p.out_h * p.out_w * (p.out_dtype == OutDType::F32 ? 4 : 2);
    const bool stream = static_cast<double>(per_box) * static_cast<double>(n_boxes) > kStreamBytes;
    std::atomic<bool> failed{false};
    std::string message;

#pragma omp parallel num_threads(threads)
    {
        // Kept across calls so that steady-state calls allocate nothing.
        static thread_local Workspace ws;
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < items; ++item) {
            if (failed.load(std::memory_order_relaxed)) continue;
            const int64_t n = item / n_bands, band = item % n_bands;
            const BandId id{call, n, band * band_rows, std::min(p.out_h, (band + 1) * band_rows), stream};
            void* out_box = static_cast<char*>(out) + n * per_box;
            try {
                if (C == 3)
                    process_band_rgb(im, boxes + 4 * n, p, a.data(), b.data(), id, out_box, ws);
                else
                    process_band_grey(im, boxes + 4 * n, p, a.data(), b.data(), id, out_box, ws);
#if defined(__SSE2__)
                if (stream) _mm_sfence();  // streaming stores are weakly ordered: publish them before the barrier
#endif
            } catch (const std::exception& e) {
#pragma omp critical
                {
                    if (!failed.exchange(true)) message = e.what();
                }
            }
        }
    }
    if (failed) throw std::runtime_error("crop_resize_cpu failed: " + message);
}

}  // namespace

int64_t axis_tap_count(double b0, double b1, int64_t n_out, bool antialias) {
    return filter::tap_count(filter::filter_scale(b0, b1, n_out, antialias));
}

void axis_taps(double b0, double b1, int64_t n_in, int64_t n_out, bool antialias, Padding padding, int64_t taps,
               int32_t* index, float* weight) {
    axis_taps_range(b0, b1, n_in, n_out, antialias, padding, taps, 0, n_out, index, weight);
}

void crop_resize_cpu(const ImageView& image, const double* boxes, int64_t n_boxes, const CropResizeParams& params,
                     void* out) {
    if (image.data == nullptr || ((out == nullptr || boxes == nullptr) && n_boxes > 0))
        throw std::invalid_argument("crop_resize_cpu: null pointer");
    check_channels(image, params);
    if (image.height < 1 || image.width < 1)
        throw std::invalid_argument("crop_resize_cpu: image must be HxWxC with H, W >= 1");
    if (params.out_h < 1 || params.out_w < 1 || n_boxes < 0)
        throw std::invalid_argument("crop_resize_cpu: output size must be positive");
    for (int64_t c = 0; c < image.channels; ++c)
        if (!(params.std[c] > 0.0f) || !std::isfinite(params.mean[c]))
            throw std::invalid_argument("crop_resize_cpu: std must be > 0 and mean finite");
    for (int64_t k = 0; k < 4 * n_boxes; ++k)
        if (!std::isfinite(boxes[k])) throw std::invalid_argument("crop_resize_cpu: non-finite box coordinate");
    for (int64_t n = 0; n < n_boxes; ++n)
        if (boxes[4 * n + 2] < boxes[4 * n] || boxes[4 * n + 3] < boxes[4 * n + 1])
            throw std::invalid_argument("crop_resize_cpu: inverted box (x1 < x0 or y1 < y0)");
    run(image, boxes, n_boxes, params, out);
}

}  // namespace midlevel_fast
