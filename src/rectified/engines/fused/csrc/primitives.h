// The primitive instructions: one loop each over a chunk, in the computing type T.
#pragma once
#include <cmath>
#include <cstdint>

#include "program.h"

namespace rectified_fused {

template <typename T>
void run_primitive(const Instruction& in, T* const* reg, int64_t n) {
  T* d = reg[in.r[0]];
  const T* a = reg[in.r[1]];
  const T* b = kRegisterCount[in.op] > 2 ? reg[in.r[2]] : a;
  const T* c = kRegisterCount[in.op] > 3 ? reg[in.r[3]] : a;
  const T s0 = static_cast<T>(in.s[0]);
  const T s1 = static_cast<T>(in.s[1]);
  switch (in.op) {
    case kNeg: for (int64_t i = 0; i < n; ++i) d[i] = -a[i]; break;
    case kCopy: for (int64_t i = 0; i < n; ++i) d[i] = a[i]; break;
    case kSqrt: for (int64_t i = 0; i < n; ++i) d[i] = std::sqrt(a[i]); break;
    case kAdd: for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * b[i]; break;
    case kAddScalar: for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0; break;
    case kMulScalar: for (int64_t i = 0; i < n; ++i) d[i] = a[i] * s0; break;
    case kMul: for (int64_t i = 0; i < n; ++i) d[i] = a[i] * b[i]; break;
    case kDivScalar: for (int64_t i = 0; i < n; ++i) d[i] = a[i] / s0; break;
    case kDiv: for (int64_t i = 0; i < n; ++i) d[i] = a[i] / b[i]; break;
    case kReciprocal: for (int64_t i = 0; i < n; ++i) d[i] = T(1) / a[i]; break;
    case kLerp:
      // torch.lerp's form: exact at both ends of the weight range.
      if (std::abs(in.s[0]) < 0.5) {
        for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * (b[i] - a[i]);
      } else {
        const T w = static_cast<T>(1.0 - in.s[0]);
        for (int64_t i = 0; i < n; ++i) d[i] = b[i] - (b[i] - a[i]) * w;
      }
      break;
    case kAddcmul: for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * b[i] * c[i]; break;
    case kAddcdiv: for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * (b[i] / c[i]); break;
    case kMaximum:
      for (int64_t i = 0; i < n; ++i) {
        const T x = a[i], y = b[i];
        d[i] = (x != x) ? x : ((y != y) ? y : (x > y ? x : y));
      }
      break;
    case kClamp:
      for (int64_t i = 0; i < n; ++i) {
        const T x = a[i] < s0 ? s0 : a[i];  // a NaN fails both comparisons and stays NaN
        d[i] = x > s1 ? s1 : x;
      }
      break;
    default: TORCH_CHECK(false, "fused engine: not a primitive: ", in.op);
  }
}

}  // namespace rectified_fused
