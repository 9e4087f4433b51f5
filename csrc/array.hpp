// Arrays crossing from Python: any object with __dlpack__ (torch, numpy, cupy).
// ArrayArg borrows the producer's memory for the duration of a call and checks
// dtype, rank, shape, device and contiguity with messages that say what was
// expected ("x: expected float32 [N, 3, H, W] on cpu, got float64 [2, 3] on cpu").
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dlpack_abi.h"
#include "edgert/edgert.h"

namespace edgert::py {

namespace pyb = pybind11;

enum class Dtype { f16, f32, f64, c64, i32, u32, i64, u8, other };

const char* dtype_name(Dtype d);
Dtype dtype_from_edgert(edgert_dtype d);

class ArrayArg {
 public:
  // Imports `obj` through __dlpack__ (stream=None for CUDA producers means the
  // producer's current stream is synchronised with the legacy default stream).
  ArrayArg(const pyb::handle& obj, std::string name);
  ~ArrayArg();
  ArrayArg(const ArrayArg&) = delete;
  ArrayArg& operator=(const ArrayArg&) = delete;

  const std::string& name() const { return name_; }
  Dtype dtype() const { return dtype_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(static_cast<size_t>(i)); }
  int64_t numel() const;
  bool on_cuda() const { return device_type_ == dlpack::kCUDA || device_type_ == dlpack::kCUDAManaged; }
  int device_id() const { return device_id_; }
  std::string device_string() const;
  std::string describe() const;  // "float32 [2, 3] on cpu"
  void* data() const { return data_; }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data_); }

  // Checks dtype (one of `allowed`), rank, the listed fixed dims (-1 = any),
  // C-contiguity and the device (cuda or cpu). `layout` names the dims in the
  // error message, e.g. "[G, Nr, Nt]". Throws ValueError/TypeError.
  void require(std::initializer_list<Dtype> allowed, const std::vector<int64_t>& dims, const char* layout,
               bool cuda) const;
  void require_dim(int i, int64_t expected, const char* what) const;

 private:
  std::string name_;
  pyb::object capsule_;
  dlpack::ManagedTensor* managed_ = nullptr;
  void* data_ = nullptr;
  Dtype dtype_ = Dtype::other;
  std::vector<int64_t> shape_;
  bool contiguous_ = true;
  int device_type_ = dlpack::kCPU;
  int device_id_ = 0;
};

// Raises the Python exception matching an edgert status, with edgert_last_error().
[[noreturn]] void raise_status(edgert_status status, const char* where);

inline void check(edgert_status status, const char* where) {
  if (status != EDGERT_OK) raise_status(status, where);
}

}  // namespace edgert::py
