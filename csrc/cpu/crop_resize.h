// Fused multi-box crop + antialiased bilinear resize + normalise, torch-free.
//
// Convention: boxes are (x0, y0, x1, y1) in continuous pixel coordinates; pixel i covers [i, i+1) and its
// centre is i + 0.5 (align_corners=False). Output pixel j of a box samples the image at
// x0 + (j + 0.5) * (x1 - x0) / out_w with a triangle filter whose support widens by the shrink factor when
// antialiasing. Taps outside the image follow the padding mode. The tap math is in taps.h, shared with the CUDA
// kernel; the arguments are in crop_resize_params.h, shared with it and the bindings.
#pragma once
#include <cstdint>

#include "../crop_resize_params.h"

namespace midlevel_fast {

// boxes: n_boxes x 4 doubles, contiguous. out: contiguous (n_boxes, channels, out_h, out_w) of out_dtype.
// The caller validates shapes and dtypes; this throws std::invalid_argument on what it can still check.
void crop_resize_cpu(const ImageView& image, const double* boxes, int64_t n_boxes,
                     const CropResizeParams& params, void* out);

// Filter taps of one axis, exposed for tests: for each of n_out outputs, `taps` (index, weight) pairs laid
// out [output][tap]. Indices are already mapped through the padding mode into [0, n_in); with Padding::Zeros
// an out-of-image tap has index n_in and weight 0.
int64_t axis_tap_count(double b0, double b1, int64_t n_out, bool antialias);
void axis_taps(double b0, double b1, int64_t n_in, int64_t n_out, bool antialias, Padding padding,
               int64_t taps, int32_t* index, float* weight);

}  // namespace midlevel_fast
