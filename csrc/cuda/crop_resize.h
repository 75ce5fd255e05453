// GPU crop + antialiased bilinear resize + normalise: the CUDA counterpart of cpu/crop_resize.h, torch-free.
//
// Same conventions as the CPU kernel (see cpu/crop_resize.h). The filter taps are not computed here: the caller
// hands over per-box tap tables already on the device (midlevel_fast/ops/taps.py builds them, shared with the
// Triton kernel), laid out [box][tap][output] so that neighbouring threads read neighbouring entries.
//
// This header needs no CUDA header, so the pybind11 binding compiles with the host compiler alone.
#pragma once
#include <cstdint>
#include <string>

namespace midlevel_fast {
namespace cuda {

// One axis of tap tables, all device pointers: index[n][t][j] (int32, -1 reads zero), weight[n][t][j] (float),
// count[n] (taps used by box n, <= taps), first[n][j] (int32: position of tap 0 before the padding mode,
// nondecreasing in j; index[n][t][j] is that position + t after the padding mode).
struct AxisTable {
    const int32_t* index;
    const float* weight;
    const int32_t* count;
    const int32_t* first;
    int64_t taps;
};

struct CropResizeArgs {
    const void* image;        // device pointer
    int layout;               // 0: uint8 HWC, 1: float32 CHW (the CPU enum's codes)
    int64_t height, width, channels;
    int64_t stride_y, stride_x, stride_c;  // in elements
    int64_t n_boxes, out_h, out_w;
    AxisTable rows, cols;
    // The largest (y1 - y0) / out_h over the boxes: it bounds how many source rows a tile of output rows reads,
    // which sizes the kernel's shared memory. A bound too small is safe (those tiles take the slower path).
    double max_row_scale;
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
