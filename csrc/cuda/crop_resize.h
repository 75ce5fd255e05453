// GPU crop + antialiased bilinear resize + normalise: the CUDA counterpart of cpu/crop_resize.h, torch-free.
//
// Same conventions as the CPU kernel (see cpu/crop_resize.h). The kernel computes the filter taps itself, from
// the boxes, with the CPU kernel's own tap math (taps.h), so the caller hands over only the boxes.
//
// This header needs no CUDA header, so the pybind11 binding compiles with the host compiler alone.
#pragma once
#include <cstdint>
#include <string>

namespace midlevel_fast {
namespace cuda {

struct CropResizeArgs {
    const void* image;        // device pointer
    int layout;               // 0: uint8 HWC, 1: float32 CHW (the CPU enum's codes)
    int64_t height, width, channels;
    int64_t stride_y, stride_x, stride_c;  // in elements, >= 0
    const double* boxes;      // device pointer, n_boxes x 4 (x0, y0, x1, y1), finite, x1 >= x0, y1 >= y0
    int64_t n_boxes, out_h, out_w;
    bool antialias;
    int padding;              // the CPU enum's codes
    // The largest (y1 - y0) / out_h and (x1 - x0) / out_w over the boxes: they bound how many source rows and
    // columns a tile of outputs reads, which sizes the kernel's shared memory. Bounds too small are safe (those
    // tiles take the slower path).
    double max_row_scale, max_col_scale;
    float scale[3], shift[3];  // out = filtered * scale[c] + shift[c]
    int out_dtype;             // 0: float32, 1: float16
    void* out;                 // device pointer, contiguous (n_boxes, channels, out_h, out_w)
};

// Number of CUDA devices; 0 when there is none, with the runtime's reason in *why.
int device_count(std::string* why);

// Enqueues the kernel on `stream` (a cudaStream_t) of `device`; asynchronous. Throws std::invalid_argument for
// arguments the launch cannot take and std::runtime_error for CUDA errors.
void crop_resize_cuda(const CropResizeArgs& args, int device, void* stream);

// GPU code this module carries, e.g. "sm_80+sm_90+compute_90".
const char* compiled_targets();

}  // namespace cuda
}  // namespace midlevel_fast
