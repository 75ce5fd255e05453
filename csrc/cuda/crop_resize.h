// GPU crop + antialiased bilinear resize + normalise: the CUDA counterpart of cpu/crop_resize.h, torch-free.
//
// Same conventions and arguments as the CPU kernel (see cpu/crop_resize.h and crop_resize_params.h). The kernel
// computes the filter taps itself, from the boxes, with the CPU kernel's own tap math (taps.h), so the caller
// hands over only the boxes.
//
// This header needs no CUDA header, so the pybind11 binding compiles with the host compiler alone.
#pragma once
#include <cstdint>
#include <string>

#include "../crop_resize_params.h"

namespace midlevel_fast {
namespace cuda {

// Number of CUDA devices; 0 when there is none, with the runtime's reason in *why.
int device_count(std::string* why);

// Enqueues the kernel on `stream` (a cudaStream_t) of `device`; asynchronous. image.data, boxes (n_boxes x 4
// doubles (x0, y0, x1, y1), finite, x1 >= x0, y1 >= y0) and out (contiguous (n_boxes, channels, out_h, out_w) of
// params.out_dtype) are device pointers; element strides must be >= 0; params.num_threads is not used.
// max_row_scale and max_col_scale: the largest (y1 - y0) / out_h and (x1 - x0) / out_w over the boxes. They bound
// how many source rows and columns a tile of outputs reads, which sizes the kernel's shared memory; bounds too
// small are safe (those tiles take the slower path). Throws std::invalid_argument for arguments the launch cannot
// take and std::runtime_error for CUDA errors.
void crop_resize_cuda(const ImageView& image, const double* boxes, int64_t n_boxes, const CropResizeParams& params,
                      double max_row_scale, double max_col_scale, void* out, int device, void* stream);

// GPU code this module carries, e.g. "sm_80+sm_90+compute_90".
const char* compiled_targets();

}  // namespace cuda
}  // namespace midlevel_fast
