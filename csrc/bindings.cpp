// pybind11 module midlevel_fast._C. The image and the boxes arrive as raw addresses (with the image's shape and
// element strides in an ImageView): the Python side (midlevel_fast/ops/crop_resize/cpu.py) has already validated
// them against the tensors that own the memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "bind_params.h"
#include "cpu/crop_resize.h"

namespace py = pybind11;
using namespace midlevel_fast;

namespace {

void crop_resize(const ImageView& image, uintptr_t boxes, int64_t n_boxes, const CropResizeParams& params,
                 uintptr_t out) {
    py::gil_scoped_release release;
    crop_resize_cpu(image, reinterpret_cast<const double*>(boxes), n_boxes, params, reinterpret_cast<void*>(out));
}

py::tuple taps(double b0, double b1, int64_t n_in, int64_t n_out, bool antialias, Padding padding_mode) {
    if (n_in < 1 || n_out < 1 || !(b1 >= b0))
        throw std::invalid_argument("axis_taps: need n_in, n_out >= 1 and b1 >= b0");
    const int64_t t = axis_tap_count(b0, b1, n_out, antialias);
    py::array_t<int32_t> index({n_out, t});
    py::array_t<float> weight({n_out, t});
    axis_taps(b0, b1, n_in, n_out, antialias, padding_mode, t, index.mutable_data(), weight.mutable_data());
    return py::make_tuple(index, weight);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "midlevel_fast CPU kernels (torch-free)";
    bind_params(m);
    m.def("crop_resize", &crop_resize, py::arg("image"), py::arg("boxes"), py::arg("n_boxes"), py::arg("params"),
          py::arg("out"),
          "Writes the crops of n_boxes float64 boxes (x0, y0, x1, y1) into out, contiguous (n_boxes, C, out_h, "
          "out_w).");
    m.def("axis_taps", &taps, py::arg("b0"), py::arg("b1"), py::arg("n_in"), py::arg("n_out"), py::arg("antialias"),
          py::arg("padding_mode"),
          "Filter taps of one axis: (index[n_out, taps] int32, weight[n_out, taps] float32), padding-mapped.");
}
