// pybind11 types of the crop_resize arguments (crop_resize_params.h), shared by both extension modules. They are
// module-local: _C and _cuda each register their own Python classes, which a process may load side by side.
// The Python side (midlevel_fast/ops/crop_resize/schema.py) builds them with keyword arguments of the same names.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "crop_resize_params.h"

namespace midlevel_fast {

inline void bind_params(pybind11::module_& m) {
    namespace py = pybind11;
    py::enum_<Padding>(m, "Padding", py::module_local())
        .value("edge", Padding::Edge)
        .value("reflect", Padding::Reflect)
        .value("zeros", Padding::Zeros);
    py::enum_<OutDType>(m, "OutDType", py::module_local())
        .value("float32", OutDType::F32)
        .value("float16", OutDType::F16);
    py::class_<ImageView>(m, "ImageView", py::module_local(),
                          "An image's address (host or device), shape and element strides; uint8 HWC or float32 CHW.")
        .def(py::init([](uintptr_t data, int64_t height, int64_t width, int64_t channels, int64_t stride_y,
                         int64_t stride_x, int64_t stride_c, bool uint8) {
                 const InputLayout layout = uint8 ? InputLayout::U8_HWC : InputLayout::F32_CHW;
                 return ImageView{reinterpret_cast<const void*>(data), layout, height, width, channels, stride_y,
                                  stride_x, stride_c};
             }),
             py::kw_only(), py::arg("data"), py::arg("height"), py::arg("width"), py::arg("channels"),
             py::arg("stride_y"), py::arg("stride_x"), py::arg("stride_c"), py::arg("uint8"));
    py::class_<CropResizeParams>(m, "CropResizeParams", py::module_local(),
                                 "Output size, normalisation, filter and output options of crop_resize.")
        .def(py::init([](int64_t out_h, int64_t out_w, std::vector<float> mean, std::vector<float> std,
                         bool antialias, Padding padding_mode, OutDType out_dtype, bool channels_last,
                         int num_threads) {
                 return CropResizeParams{out_h, out_w, std::move(mean), std::move(std), antialias, padding_mode,
                                         out_dtype, channels_last, num_threads};
             }),
             py::kw_only(), py::arg("out_h"), py::arg("out_w"), py::arg("mean"), py::arg("std"), py::arg("antialias"),
             py::arg("padding_mode"), py::arg("out_dtype"), py::arg("channels_last"), py::arg("num_threads"));
}

}  // namespace midlevel_fast
