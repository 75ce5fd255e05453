// Filter taps of one axis of one box, written once for the CPU kernel (cpu/crop_resize.cpp) and the CUDA kernel
// (cuda/crop_resize.cu, which computes them on the device): both then use bit-identical weights.
//
// Output j of an axis with box [b0, b1] is centred at c = b0 + (j + 0.5) * scale, scale = (b1 - b0) / n_out.
// With f the filter scale (max(scale, 1) when antialiasing, else 1), its ceil(2f) taps start at the first pixel
// whose centre lies strictly inside (c - f, c + f) and weigh max(0, 1 - |x + 0.5 - c| / f), normalised over the
// taps in float64 (summed in tap order) and rounded to float once. Positions outside the image follow the
// padding mode.
//
// No CUDA header needed: under nvcc the functions are also __device__, elsewhere plain inline C++.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MIDLEVEL_FAST_HD __host__ __device__ __forceinline__
#else
#define MIDLEVEL_FAST_HD inline
#endif

namespace midlevel_fast {

enum class Padding : int { Edge = 0, Reflect = 1, Zeros = 2 };

namespace filter {

// A product rounded on its own. nvcc fuses a product and a following sum into one FMA by default, which would
// round the tap centres differently from the CPU build (compiled with -ffp-contract=off).
MIDLEVEL_FAST_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

// The pixel that position i reads on an axis of n pixels; n for a zero (Padding::Zeros outside the image).
MIDLEVEL_FAST_HD int64_t map_index(int64_t i, int64_t n, Padding padding) {
    if (i >= 0 && i < n) return i;
    switch (padding) {
        case Padding::Edge:
            return i < 0 ? 0 : n - 1;
        case Padding::Reflect: {
            // Mirror without repeating the edge pixel (numpy "reflect"), periodic so far-away taps stay defined.
            if (n == 1) return 0;
            const int64_t period = 2 * (n - 1);
            int64_t m = i % period;
            if (m < 0) m += period;
            return m < n ? m : period - m;
        }
        case Padding::Zeros:
        default:
            return n;
    }
}

// std::floor is a libm call on baseline x86-64 (no SSE4.1 roundsd); this runs for every tap of every box.
MIDLEVEL_FAST_HD int64_t floor_int(double v) {
    const int64_t i = static_cast<int64_t>(v);
    return i - (static_cast<double>(i) > v);
}

MIDLEVEL_FAST_HD double filter_scale(double b0, double b1, int64_t n_out, bool antialias) {
    const double scale = (b1 - b0) / static_cast<double>(n_out);
    return antialias && scale > 1.0 ? scale : 1.0;
}

MIDLEVEL_FAST_HD int64_t tap_count(double fscale) { return static_cast<int64_t>(ceil(2.0 * fscale)); }

// One axis of one box.
struct Axis {
    double b0, scale, fscale, inv;
    int64_t n_in, taps;
    Padding padding;
};

MIDLEVEL_FAST_HD Axis make_axis(double b0, double b1, int64_t n_in, int64_t n_out, bool antialias,
                                Padding padding) {
    Axis a;
    a.b0 = b0;
    a.scale = (b1 - b0) / static_cast<double>(n_out);
    a.fscale = filter_scale(b0, b1, n_out, antialias);
    a.inv = 1.0 / a.fscale;
    a.n_in = n_in;
    a.taps = tap_count(a.fscale);
    a.padding = padding;
    return a;
}

MIDLEVEL_FAST_HD double center(const Axis& a, int64_t j) {
    return a.b0 + mul(static_cast<double>(j) + 0.5, a.scale);
}

// Position (before the padding mode) of the first tap of the output centred at c; nondecreasing in c.
MIDLEVEL_FAST_HD int64_t first_tap(const Axis& a, double c) { return floor_int(c - a.fscale - 0.5) + 1; }

// The weight of position x before normalisation.
MIDLEVEL_FAST_HD double raw_weight(const Axis& a, double c, int64_t x) {
    const double d = fabs(mul(static_cast<double>(x) + 0.5 - c, a.inv));
    return d < 1.0 ? 1.0 - d : 0.0;
}

// The normaliser of the output centred at c: its raw weights summed in tap order.
MIDLEVEL_FAST_HD double total_weight(const Axis& a, double c, int64_t first) {
    double total = 0.0;
    for (int64_t t = 0; t < a.taps; ++t) total += raw_weight(a, c, first + t);
    return total;
}

// The weight of tap t of the output centred at c, whose first tap is `first` and normaliser `total`; 0 for a tap
// that reads zero.
MIDLEVEL_FAST_HD float weight(const Axis& a, double c, int64_t first, int64_t t, double total) {
    const int64_t x = first + t;
    if (a.padding == Padding::Zeros && (x < 0 || x >= a.n_in)) return 0.0f;
    return static_cast<float>(raw_weight(a, c, x) / total);
}

}  // namespace filter
}  // namespace midlevel_fast
