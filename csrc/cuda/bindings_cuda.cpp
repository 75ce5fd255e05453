// pybind11 module midlevel_fast._cuda. Arguments arrive as raw device addresses (image, float64 boxes, output),
// shapes, element strides and a cudaStream_t as an integer (torch.cuda.current_stream().cuda_stream): the Python side
// (midlevel_fast/ops/crop_resize_cuda.py) validated them against the tensors that own the memory. Compiled with
// the host compiler; everything CUDA lives in crop_resize.cu.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

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

void crop_resize(uintptr_t image, int layout, int64_t height, int64_t width, int64_t channels, int64_t stride_y,
                 int64_t stride_x, int64_t stride_c, uintptr_t boxes, int64_t n_boxes, int64_t out_h, int64_t out_w,
                 bool antialias, int padding, double max_row_scale, double max_col_scale,
                 const std::vector<float>& scale, const std::vector<float>& shift, int out_dtype, uintptr_t out,
                 int device, uintptr_t stream) {
    require_device();
    // Checked here too, before args.scale (3 entries) is filled.
    if (channels != 1 && channels != 3) throw std::invalid_argument("crop_resize_cuda: channels must be 1 or 3");
    if (static_cast<int64_t>(scale.size()) != channels || static_cast<int64_t>(shift.size()) != channels)
        throw std::invalid_argument("scale and shift need one value per channel");
    cuda::CropResizeArgs args{};
    args.image = reinterpret_cast<const void*>(image);
    args.layout = layout;
    args.height = height;
    args.width = width;
    args.channels = channels;
    args.stride_y = stride_y;
    args.stride_x = stride_x;
    args.stride_c = stride_c;
    args.boxes = reinterpret_cast<const double*>(boxes);
    args.n_boxes = n_boxes;
    args.out_h = out_h;
    args.out_w = out_w;
    args.antialias = antialias;
    args.padding = padding;
    args.max_row_scale = max_row_scale;
    args.max_col_scale = max_col_scale;
    for (int64_t c = 0; c < channels; ++c) {
        args.scale[c] = scale[c];
        args.shift[c] = shift[c];
    }
    args.out_dtype = out_dtype;
    args.out = reinterpret_cast<void*>(out);
    cuda::crop_resize_cuda(args, device, reinterpret_cast<void*>(stream));
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "midlevel_fast CUDA kernels (torch-free; cudart linked statically)";
    m.def(
        "device_count",
        []() {
            std::string why;
            const int n = cuda::device_count(&why);
            return py::make_tuple(n, why);
        },
        "(number of CUDA devices, the runtime's reason when there is none)");
    m.def("compiled_targets", &cuda::compiled_targets, "GPU architectures this module carries code for");
    m.def("crop_resize", &crop_resize, py::arg("image"), py::arg("layout"), py::arg("height"), py::arg("width"),
          py::arg("channels"), py::arg("stride_y"), py::arg("stride_x"), py::arg("stride_c"), py::arg("boxes"),
          py::arg("n_boxes"), py::arg("out_h"), py::arg("out_w"), py::arg("antialias"), py::arg("padding"),
          py::arg("max_row_scale"), py::arg("max_col_scale"), py::arg("scale"), py::arg("shift"),
          py::arg("out_dtype"), py::arg("out"), py::arg("device"), py::arg("stream"),
          "Enqueues crop_resize on `stream`; raises RuntimeError('... no CUDA device ...') without a GPU.");
}
