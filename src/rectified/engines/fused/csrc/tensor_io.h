// Reading and writing tensors of the dtypes the kernel takes, and which tensors those are.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/DispatchKey.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <typeinfo>

namespace rectified_fused {

inline bool supported(at::ScalarType type) {
  return type == at::kFloat || type == at::kDouble || type == at::kBFloat16 ||
         type == at::kHalf;
}

// A tensor whose memory holds its values as they read: a plain TensorImpl (no wrapper,
// functional, batched or nested tensor) on the CPU, dense, contiguous, with no lazy negation or
// conjugation and no Python dispatch (a subclass whose storage need not hold its values).
inline bool plain_memory(const at::Tensor& x) {
  return x.defined() && typeid(*x.unsafeGetTensorImpl()) == typeid(c10::TensorImpl) &&
         x.device().is_cpu() && x.layout() == at::kStrided && x.has_storage() &&
         x.is_contiguous() && !x.is_neg() && !x.is_conj() &&
         !x.key_set().has(c10::DispatchKey::Python) &&
         !x.key_set().has(c10::DispatchKey::PythonTLSSnapshot);
}

// A tensor the kernel may read as plain values of a dtype it computes with.
inline bool readable(const at::Tensor& x) {
  return plain_memory(x) && supported(x.scalar_type());
}

template <typename T, typename S>
void convert(const S* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

template <typename T>
void load(const void* base, at::ScalarType type, int64_t begin, T* dst, int64_t n) {
  switch (type) {
    case at::kFloat: convert(static_cast<const float*>(base) + begin, dst, n); break;
    case at::kDouble: convert(static_cast<const double*>(base) + begin, dst, n); break;
    case at::kBFloat16: convert(static_cast<const c10::BFloat16*>(base) + begin, dst, n); break;
    case at::kHalf: convert(static_cast<const c10::Half*>(base) + begin, dst, n); break;
    default: break;
  }
}

template <typename T>
void store(const T* src, void* base, at::ScalarType type, int64_t begin, int64_t n) {
  switch (type) {
    case at::kFloat: convert(src, static_cast<float*>(base) + begin, n); break;
    case at::kDouble: convert(src, static_cast<double*>(base) + begin, n); break;
    case at::kBFloat16: convert(src, static_cast<c10::BFloat16*>(base) + begin, n); break;
    case at::kHalf: convert(src, static_cast<c10::Half*>(base) + begin, n); break;
    default: break;
  }
}

}  // namespace rectified_fused
