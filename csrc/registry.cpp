// Registers the schemas of every alexnet_kernels operator (csrc/schemas.h).
//
// Backends register implementations in their own files (csrc/cpu/*.cpp with
// TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m), csrc/cuda/*.cu with CUDA);
// fake (meta) kernels and autograd formulas are registered from Python
// (alexnet_kernels/ops/*.py).
#include <Python.h>
#include <torch/library.h>

#include <exception>

#include "cpu/allocation.h"
#include "cpu/conv2d_relu_fusion.h"
#include "cpu/vectorize.h"
#include "schemas.h"

TORCH_LIBRARY(alexnet_kernels, m) {
  for (const char* schema : alexnet_kernels::schemas::kAll) {
    m.def(schema);
  }
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

PyObject* onednn_fusion_unavailable_reason(PyObject* /*self*/, PyObject* /*args*/) {
  return PyUnicode_FromString(alexnet_kernels::cpu::onednn_fusion_unavailable_reason().c_str());
}

PyObject* onednn_fusion_enabled(PyObject* /*self*/, PyObject* /*args*/) {
  return PyBool_FromLong(alexnet_kernels::cpu::onednn_fusion_enabled());
}

PyObject* set_onednn_fusion_enabled(PyObject* /*self*/, PyObject* enabled) {
  const int truth = PyObject_IsTrue(enabled);
  if (truth < 0) {
    return nullptr;
  }
  alexnet_kernels::cpu::set_onednn_fusion_enabled(truth != 0);
  Py_RETURN_NONE;
}

PyObject* release_cached_cpu_blocks(PyObject* /*self*/, PyObject* /*args*/) {
  return PyLong_FromSize_t(alexnet_kernels::cpu::release_cached_blocks());
}

PyMethodDef module_methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "Instruction set the CPU kernels run with: 'avx512', 'avx2' or 'default'."},
    {"detected_cpu_capability", detected_cpu_capability, METH_NOARGS,
     "Widest instruction set of this CPU that the kernels have a variant for."},
    {"set_cpu_capability", set_cpu_capability, METH_O,
     "Run the CPU kernels with the given instruction set (at most the detected one)."},
    {"onednn_fusion_unavailable_reason", onednn_fusion_unavailable_reason, METH_NOARGS,
     "Why the CPU conv2d_relu cannot fuse its ReLU into oneDNN's convolution ('' if it can)."},
    {"onednn_fusion_enabled", onednn_fusion_enabled, METH_NOARGS,
     "Whether the CPU conv2d_relu may fuse its ReLU into oneDNN's convolution."},
    {"set_onednn_fusion_enabled", set_onednn_fusion_enabled, METH_O,
     "Allow (True, the default) or forbid the oneDNN-fused ReLU of the CPU conv2d_relu."},
    {"release_cached_cpu_blocks", release_cached_cpu_blocks, METH_NOARGS,
     "Free the large CPU output blocks kept for reuse; returns the bytes freed."},
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
