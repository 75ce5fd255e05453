// The arguments of crop_resize, defined once for the CPU kernel (cpu/crop_resize.cpp), the CUDA kernel
// (cuda/crop_resize.cu) and both pybind11 modules (bind_params.h): the image as a strided view, and the
// CropResizeParams that midlevel_fast/ops/crop_resize/schema.py defines on the Python side, field for field.
//
// Torch-free and CUDA-free: the CUDA binding includes it with the host compiler alone.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "taps.h"

namespace midlevel_fast {

enum class InputLayout : int { U8_HWC = 0, F32_CHW = 1 };
enum class OutDType : int { F32 = 0, F16 = 1 };

// An image in host or device memory: uint8 HWC (0..255) or float32 CHW, any element strides.
struct ImageView {
    const void* data;
    InputLayout layout;
    int64_t height, width, channels;
    // Strides in elements along (row, column, channel), whatever the layout.
    int64_t stride_y, stride_x, stride_c;
};

struct CropResizeParams {
    int64_t out_h, out_w;
    std::vector<float> mean;  // one value per channel, in [0, 1] pixel units
    std::vector<float> std;   // one value per channel, > 0
    bool antialias;
    Padding padding_mode;
    OutDType out_dtype;
    // Output layout: false (N, C, out_h, out_w) contiguous; true channels_last, i.e. (N, out_h, out_w, C) in
    // memory. Only the CPU kernel writes it; the CUDA kernel refuses it (the Python side converts there).
    bool channels_last;
    int num_threads;  // CPU only; <= 0: OpenMP default
};

// Checks a binding makes before any pointer is touched.
inline void check_channels(const ImageView& image, const CropResizeParams& params) {
    if (image.channels != 1 && image.channels != 3)
        throw std::invalid_argument("crop_resize: channels must be 1 or 3");
    if (static_cast<int64_t>(params.mean.size()) != image.channels ||
        static_cast<int64_t>(params.std.size()) != image.channels)
        throw std::invalid_argument("crop_resize: mean and std need one value per channel");
}

// The per-channel affine map out = filtered * scale[c] + shift[c]: uint8's 1/255 and (x - mean) / std folded, in
// float32, so that every kernel normalises identically. scale and shift hold image.channels values.
inline void normalisation(const ImageView& image, const CropResizeParams& params, float* scale, float* shift) {
    const float in_scale = image.layout == InputLayout::U8_HWC ? 1.0f / 255.0f : 1.0f;
    for (int64_t c = 0; c < image.channels; ++c) {
        scale[c] = in_scale / params.std[c];
        shift[c] = -params.mean[c] / params.std[c];
    }
}

}  // namespace midlevel_fast
