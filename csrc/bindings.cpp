// pybind11 entry points. Arguments arrive as raw addresses, shapes and element strides: the Python side
// (midlevel_fast/ops/crop_resize.py) has already validated them against the tensors that own the memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <vector>

#include "cpu/crop_resize.h"

namespace py = pybind11;
using namespace midlevel_fast;

namespace {

void crop_resize(uintptr_t image, int layout, int64_t height, int64_t width, int64_t channels, int64_t stride_y,
                 int64_t stride_x, int64_t stride_c, uintptr_t boxes, int64_t n_boxes, int64_t out_h, int64_t out_w,
                 const std::vector<float>& mean, const std::vector<float>& std, bool antialias, int padding,
                 int out_dtype, uintptr_t out, int num_threads) {
    if (static_cast<int64_t>(mean.size()) != channels || static_cast<int64_t>(std.size()) != channels)
        throw std::invalid_argument("mean and std need one value per channel");
    if (layout < 0 || layout > 1 || padding < 0 || padding > 2 || out_dtype < 0 || out_dtype > 1)
        throw std::invalid_argument("unknown layout, padding or out_dtype code");
    const ImageView view{reinterpret_cast<const void*>(image), static_cast<InputLayout>(layout), height, width,
                         channels, stride_y, stride_x, stride_c};
    const CropResizeParams params{out_h, out_w, mean.data(), std.data(), antialias, static_cast<Padding>(padding),
                                  static_cast<OutDType>(out_dtype), num_threads};
    py::gil_scoped_release release;
    crop_resize_cpu(view, reinterpret_cast<const double*>(boxes), n_boxes, params, reinterpret_cast<void*>(out));
}

py::tuple taps(double b0, double b1, int64_t n_in, int64_t n_out, bool antialias, int padding) {
    if (n_in < 1 || n_out < 1 || padding < 0 || padding > 2 || !(b1 >= b0))
        throw std::invalid_argument("axis_taps: need n_in, n_out >= 1, b1 >= b0 and a known padding code");
    const int64_t t = axis_tap_count(b0, b1, n_out, antialias);
    py::array_t<int32_t> index({n_out, t});
    py::array_t<float> weight({n_out, t});
    axis_taps(b0, b1, n_in, n_out, antialias, static_cast<Padding>(padding), t, index.mutable_data(),
              weight.mutable_data());
    return py::make_tuple(index, weight);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "midlevel_fast CPU kernels (torch-free)";
    m.def("crop_resize", &crop_resize, py::arg("image"), py::arg("layout"), py::arg("height"), py::arg("width"),
          py::arg("channels"), py::arg("stride_y"), py::arg("stride_x"), py::arg("stride_c"), py::arg("boxes"),
          py::arg("n_boxes"), py::arg("out_h"), py::arg("out_w"), py::arg("mean"), py::arg("std"),
          py::arg("antialias"), py::arg("padding"), py::arg("out_dtype"), py::arg("out"), py::arg("num_threads"));
    m.def("axis_taps", &taps, py::arg("b0"), py::arg("b1"), py::arg("n_in"), py::arg("n_out"), py::arg("antialias"),
          py::arg("padding"),
          "Filter taps of one axis: (index[n_out, taps] int32, weight[n_out, taps] float32), padding-mapped.");
}
