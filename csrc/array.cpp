#include "array.hpp"

#include <sstream>

namespace edgert::py {

const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::f16: return "float16";
    case Dtype::f32: return "float32";
    case Dtype::f64: return "float64";
    case Dtype::c64: return "complex64";
    case Dtype::i32: return "int32";
    case Dtype::u32: return "uint32";
    case Dtype::i64: return "int64";
    case Dtype::u8: return "uint8";
    case Dtype::other: return "unsupported dtype";
  }
  return "?";
}

Dtype dtype_from_edgert(edgert_dtype d) {
  switch (d) {
    case EDGERT_F32: return Dtype::f32;
    case EDGERT_F16: return Dtype::f16;
    case EDGERT_I32: return Dtype::i32;
    case EDGERT_U32: return Dtype::u32;
    case EDGERT_C64: return Dtype::c64;
    case EDGERT_DTYPE_MAX_ENUM: break;
  }
  return Dtype::other;
}

namespace {

Dtype decode_dtype(const dlpack::DataType& t) {
  if (t.lanes != 1) return Dtype::other;
  switch (t.code) {
    case dlpack::kFloat:
      return t.bits == 16 ? Dtype::f16 : t.bits == 32 ? Dtype::f32 : t.bits == 64 ? Dtype::f64 : Dtype::other;
    case dlpack::kComplex: return t.bits == 64 ? Dtype::c64 : Dtype::other;
    case dlpack::kInt: return t.bits == 32 ? Dtype::i32 : t.bits == 64 ? Dtype::i64 : Dtype::other;
    case dlpack::kUInt: return t.bits == 32 ? Dtype::u32 : t.bits == 8 ? Dtype::u8 : Dtype::other;
    default: return Dtype::other;
  }
}

std::string join_shape(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

// torch's export pieces, looked up once torch is in sys.modules (never imported here). The references are
// kept for the life of the process on purpose: releasing them from a static destructor would run after
// the interpreter has finalised.
struct TorchExport {
  PyObject* tensor_type = nullptr;  // torch.Tensor
  PyObject* to_dlpack = nullptr;    // torch._C._to_dlpack
  PyObject* strided = nullptr;      // torch.strided
};

const TorchExport* torch_export() {
  static TorchExport found;  // written once, under the GIL
  if (found.tensor_type != nullptr) return &found;
  PyObject* torch = PyDict_GetItemString(PyImport_GetModuleDict(), "torch");  // borrowed
  if (torch == nullptr) return nullptr;
  const pyb::handle module(torch);
  if (!pyb::hasattr(module, "Tensor") || !pyb::hasattr(module, "_C") || !pyb::hasattr(module, "strided")) {
    return nullptr;
  }
  const pyb::object to_dlpack = pyb::getattr(module.attr("_C"), "_to_dlpack", pyb::none());
  if (to_dlpack.is_none()) return nullptr;
  found.to_dlpack = to_dlpack.inc_ref().ptr();
  found.strided = pyb::object(module.attr("strided")).release().ptr();
  found.tensor_type = pyb::object(module.attr("Tensor")).release().ptr();
  return &found;
}

// The DLPack capsule of a plain CPU torch.Tensor without __dlpack__'s Python-level work, or a null object.
// torch.Tensor.__dlpack__ is a Python method (~2.2 us per call: keyword arguments, torch-function dispatch,
// CUDA stream logic); for an exact torch.Tensor on the CPU its checks reduce to the ones below, and the export
// itself is torch._C._to_dlpack (~0.25 us). An MMNet training step passes 21 arrays. Anything these checks do
// not cover (a subclass, CUDA, the negative bit, a torch without _to_dlpack) takes __dlpack__ as before, which
// raises the same errors it always did.
pyb::object plain_cpu_torch_capsule(const pyb::handle& obj) {
  const TorchExport* torch = torch_export();
  if (torch == nullptr || Py_TYPE(obj.ptr()) != reinterpret_cast<PyTypeObject*>(torch->tensor_type)) return {};
  const bool plain = obj.attr("is_cpu").cast<bool>() && !obj.attr("requires_grad").cast<bool>() &&
                     !obj.attr("is_conj")().cast<bool>() && !obj.attr("is_neg")().cast<bool>() &&
                     obj.attr("layout").ptr() == torch->strided;
  if (!plain) return {};
  return pyb::reinterpret_borrow<pyb::object>(torch->to_dlpack)(obj);
}

}  // namespace

ArrayArg::ArrayArg(const pyb::handle& obj, std::string name) : name_(std::move(name)) {
  if (!pyb::hasattr(obj, "__dlpack__")) {
    throw pyb::type_error(name_ + ": expected an array (numpy, torch or cupy), got " +
                          std::string(pyb::str(pyb::type::handle_of(obj).attr("__name__"))));
  }
  capsule_ = plain_cpu_torch_capsule(obj);
  if (!capsule_) capsule_ = obj.attr("__dlpack__")();
  auto* raw = PyCapsule_GetPointer(capsule_.ptr(), "dltensor");
  if (raw == nullptr) {
    PyErr_Clear();
    throw pyb::type_error(name_ + ": __dlpack__ did not return a legacy 'dltensor' capsule");
  }
  // The capsule keeps ownership (its destructor calls the deleter); we only borrow.
  managed_ = static_cast<dlpack::ManagedTensor*>(raw);
  const dlpack::Tensor& t = managed_->dl_tensor;
  data_ = static_cast<char*>(t.data) + t.byte_offset;
  dtype_ = decode_dtype(t.dtype);
  shape_.assign(t.shape, t.shape + t.ndim);
  device_type_ = t.device.device_type;
  device_id_ = t.device.device_id;
  bool empty = false;
  for (int i = 0; i < t.ndim; ++i) empty = empty || t.shape[i] == 0;
  if (t.strides != nullptr && !empty) {
    int64_t expected = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && t.strides[i] != expected) contiguous_ = false;
      expected *= t.shape[i];
    }
  }
}

ArrayArg::~ArrayArg() = default;

int64_t ArrayArg::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string ArrayArg::device_string() const {
  if (on_cuda()) return "cuda:" + std::to_string(device_id_);
  if (device_type_ == dlpack::kCPU || device_type_ == dlpack::kCUDAHost) return "cpu";
  return "device type " + std::to_string(device_type_);
}

std::string ArrayArg::describe() const {
  return std::string(dtype_name(dtype_)) + " " + join_shape(shape_) + " on " + device_string() +
         (contiguous_ ? "" : " (non-contiguous)");
}

void ArrayArg::require(std::initializer_list<Dtype> allowed, const std::vector<int64_t>& dims,
                       const char* layout, bool cuda) const {
  std::string want;
  bool dtype_ok = false;
  for (Dtype d : allowed) {
    want += (want.empty() ? "" : "|") + std::string(dtype_name(d));
    dtype_ok = dtype_ok || d == dtype_;
  }
  bool shape_ok = static_cast<int>(dims.size()) == ndim();
  for (size_t i = 0; shape_ok && i < dims.size(); ++i) shape_ok = dims[i] < 0 || dims[i] == shape_[i];
  const bool device_ok = cuda ? on_cuda() : (device_type_ == dlpack::kCPU || device_type_ == dlpack::kCUDAHost);
  if (dtype_ok && shape_ok && device_ok && contiguous_) return;
  std::string msg = name_ + ": expected " + (contiguous_ ? "" : "contiguous ") + want + " " + layout;
  bool any_fixed = false;
  for (int64_t d : dims) any_fixed = any_fixed || d >= 0;
  if (any_fixed) msg += " = " + join_shape(dims);
  msg += std::string(" on ") + (cuda ? "cuda" : "cpu") + ", got " + describe();
  // -1 prints as a wildcard in the joined shape.
  for (size_t pos; (pos = msg.find("-1")) != std::string::npos;) msg.replace(pos, 2, "*");
  if (!dtype_ok) throw pyb::type_error(msg);
  throw pyb::value_error(msg);
}

void ArrayArg::require_dim(int i, int64_t expected, const char* what) const {
  if (i >= ndim() || shape_[static_cast<size_t>(i)] != expected) {
    throw pyb::value_error(name_ + ": dimension " + std::to_string(i) + " must equal " + what + " = " +
                           std::to_string(expected) + ", got " + describe());
  }
}

void raise_status(edgert_status status, const char* where) {
  // Kernel messages already name the op; `where` only fills in when there is none.
  const std::string detail = edgert_last_error();
  const std::string msg = detail.empty() ? std::string(where) + ": " + edgert_status_name(status) : detail;
  auto edgert_module = pyb::module_::import("edgert._edgert");
  pyb::object cls;
  if (status == EDGERT_ERR_DTYPE) {
    throw pyb::type_error(msg);
  } else if (status >= 1 && status < 100) {
    throw pyb::value_error(msg);
  } else if (status >= 100 && status < 200) {
    cls = edgert_module.attr("PacketError");
  } else {
    cls = edgert_module.attr("EdgertError");
  }
  pyb::object exc = cls(msg);
  exc.attr("status") = static_cast<int>(status);
  exc.attr("status_name") = edgert_status_name(status);
  PyErr_SetObject(cls.ptr(), exc.ptr());
  throw pyb::error_already_set();
}

}  // namespace edgert::py
