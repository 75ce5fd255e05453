// pybind11 module midlevel_fast._cuda. The image, the float64 boxes and the output arrive as raw device addresses
// (with the image's shape and element strides in an ImageView), the stream as an integer
// (torch.cuda.current_stream().cuda_stream): the Python side (midlevel_fast/ops/crop_resize/cuda.py) validated them
// against the tensors that own the memory. Compiled with the host compiler; everything CUDA lives in crop_resize.cu.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "bind_params.h"
#include "cuda/crop_resize.h"

namespace py = pybind11;
using namespace midlevel_fast;

namespace {

// Raised before anything touches a device pointer, so that a machine without a GPU gets a clear message.
void require_device() {
    std::string why;
    if (cuda::device_count(&why) == 0)
        throw std::runtime_error("midlevel_fast._cuda: no CUDA device (" + why + ")");
}

void crop_resize(const ImageView& image, uintptr_t boxes, int64_t n_boxes, const CropResizeParams& params,
                 uintptr_t out, double max_row_scale, double max_col_scale, int device, uintptr_t stream) {
    require_device();
    cuda::crop_resize_cuda(image, reinterpret_cast<const double*>(boxes), n_boxes, params, max_row_scale,
                           max_col_scale, reinterpret_cast<void*>(out), device, reinterpret_cast<void*>(stream));
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "midlevel_fast CUDA kernels (torch-free; cudart linked statically)";
    bind_params(m);
    m.def(
        "device_count",
        []() {
            std::string why;
            const int n = cuda::device_count(&why);
            return py::make_tuple(n, why);
        },
        "(number of CUDA devices, the runtime's reason when there is none)");
    m.def("compiled_targets", &cuda::compiled_targets, "GPU architectures this module carries code for");
    m.def("crop_resize", &crop_resize, py::arg("image"), py::arg("boxes"), py::arg("n_boxes"), py::arg("params"),
          py::arg("out"), py::kw_only(), py::arg("max_row_scale"), py::arg("max_col_scale"), py::arg("device"),
          py::arg("stream"),
          "Enqueues crop_resize on `stream`; raises RuntimeError('... no CUDA device ...') without a GPU.");
}
