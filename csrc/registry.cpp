// The schemas of every alexnet_kernels operator, in one place.
//
// Backends register implementations in their own files (csrc/cpu/*.cpp with
// TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m), csrc/cuda/*.cu with CUDA);
// fake (meta) kernels and autograd formulas are registered from Python
// (alexnet_kernels/ops/*.py).
#include <Python.h>
#include <torch/library.h>

#include <exception>

#include "cpu/vectorize.h"

TORCH_LIBRARY(alexnet_kernels, m) {
  // Cross-channel local response normalisation, with the semantics of
  // torch.nn.functional.local_response_norm (alpha is divided by size).
  m.def("lrn(Tensor x, int size, float alpha, float beta, float k) -> Tensor");
  m.def(
      "lrn_backward(Tensor grad_y, Tensor x, Tensor y, int size, float alpha, "
      "float beta, float k) -> Tensor");

  // 2-D max pooling of a 4-D (N, C, H, W) tensor with the window rules of
  // torch.nn.functional.max_pool2d. Returns (y, argmax): argmax holds, per
  // output, the offset kh * kernel_w + kw of the maximum inside its window
  // (uint8 for windows of up to 256 positions, int32 beyond) and is all the
  // backward needs.
  m.def(
      "max_pool2d(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  // max_pool2d's y alone, for inference: no argmax is computed or stored.
  m.def(
      "max_pool2d_values(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_backward(Tensor grad_y, Tensor argmax, SymInt[4] input_size, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");

  // Dropout with 0 < p < 1: y = x * mask / (1 - p), the mask drawn from
  // Philox4x32-10 keyed by seed_offset = (seed, offset), an int64 CPU tensor
  // (convention in csrc/kernels/philox.cuh). The mask is never stored: the
  // backward is this op applied to grad_y with the same seed_offset.
  m.def("dropout(Tensor x, Tensor seed_offset, float p) -> Tensor");

  // relu(conv2d(x, weight) + bias) for 4-D x, with F.conv2d's conventions
  // (symmetric padding; 'same' and asymmetric padding are resolved in Python).
  // The backward takes the output y (its ReLU mask is y > 0) and returns
  // (grad_x, grad_weight, grad_bias); a gradient not asked for in output_mask
  // is an empty tensor.
  m.def(
      "conv2d_relu(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  m.def(
      "conv2d_relu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor y, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
}

namespace {

PyObject* cpu_capability(PyObject* /*self*/, PyObject* /*args*/) {
  return PyUnicode_FromString(cpu_capability_name(alexnet_kernels::cpu::cpu_capability()));
}

PyObject* detected_cpu_capability(PyObject* /*self*/, PyObject* /*args*/) {
  return PyUnicode_FromString(cpu_capability_name(alexnet_kernels::cpu::detected_cpu_capability()));
}

PyObject* set_cpu_capability(PyObject* /*self*/, PyObject* name) {
  const char* text = PyUnicode_AsUTF8(name);
  if (text == nullptr) {
    return nullptr;
  }
  try {
    alexnet_kernels::cpu::set_cpu_capability(text);
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_ValueError, error.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef module_methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "Instruction set the CPU kernels run with: 'avx512', 'avx2' or 'default'."},
    {"detected_cpu_capability", detected_cpu_capability, METH_NOARGS,
     "Widest instruction set of this CPU that the kernels have a variant for."},
    {"set_cpu_capability", set_cpu_capability, METH_O,
     "Run the CPU kernels with the given instruction set (at most the detected one)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

// `import alexnet_kernels._C` loads the library (running the registrations
// above) and exposes how it was built, so that the Python side can refuse a
// library compiled against another torch with an actionable message.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "alexnet_kernels operator library (schemas and CPU/CUDA kernels)",
      -1,
      module_methods,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) {
    return nullptr;
  }
#ifdef AK_WITH_CUDA
  const int with_cuda = 1;
#else
  const int with_cuda = 0;
#endif
  if (PyModule_AddStringConstant(module, "torch_version", AK_BUILD_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(module, "cuda_arch_list", AK_BUILD_CUDA_ARCH_LIST) < 0 ||
      PyModule_AddIntConstant(module, "with_cuda", with_cuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
