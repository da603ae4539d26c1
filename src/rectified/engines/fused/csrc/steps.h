// The named operations: whole steps run as one loop each, every value kept in registers, so a
// chunk is read and written once. Each computes what its composition of primitives computes
// (rules/moments.py, rules/adabound.py, rules/lookahead.py), in the same order, except that
// Adam's denominator is rescaled to save a division per element (see adam_chunk): results agree
// with the composition up to rounding.
#pragma once
#include <cmath>
#include <cstdint>

#include "program.h"

namespace rectified_fused {

// What every Adam-family step starts with: θ <- decay θ, g' = ±g [+ λ θ], then the moments
// m = lerp(m, g', 1 - β1); v = β2 v + (1 - β2) g'²; [x = max(x, v)]. `update` returns the v the
// step normalises by (v, or x under AMSGrad). Multiplying by 1 where an option is off is exact.
template <typename T, bool kMax, bool kCoupled>
struct Moments {
  T decay, sign, coupled, w, w_rest, beta2, sq;
  bool low_weight;
  template <typename Names>
  Moments(const Instruction& in, Names)
      : decay(static_cast<T>(in.s[Names::decay])),
        sign(in.s[Names::maximize] != 0 ? T(-1) : T(1)),
        coupled(static_cast<T>(in.s[Names::weight_decay])),
        w(static_cast<T>(1.0 - in.s[Names::beta1])),
        w_rest(static_cast<T>(1.0 - (1.0 - in.s[Names::beta1]))),
        beta2(static_cast<T>(in.s[Names::beta2])), sq(static_cast<T>(1.0 - in.s[Names::beta2])),
        low_weight(std::abs(1.0 - in.s[Names::beta1]) < 0.5) {}

  T update(T& p, T g, T& m, T& v, T* x) const {
    p = p * decay;
    g = g * sign;
    if constexpr (kCoupled) g = g + coupled * p;
    m = low_weight ? m + w * (g - m) : g - (g - m) * w_rest;
    v = v * beta2;
    v = v + sq * g * g;
    if constexpr (kMax) {
      const T xi = *x;
      *x = (xi != xi) ? xi : ((v != v) ? v : (xi > v ? xi : v));
      return *x;
    }
    return v;
  }
};

// The scalar names of adam_step_ and bounded_step_ (instructions.h), as types for Moments.
struct AdamNames {
  enum { decay = adam_step::decay, maximize = adam_step::maximize,
         weight_decay = adam_step::weight_decay, beta1 = adam_step::beta1,
         beta2 = adam_step::beta2 };
};
struct BoundedNames {
  enum { decay = bounded_step::decay, maximize = bounded_step::maximize,
         weight_decay = bounded_step::weight_decay, beta1 = bounded_step::beta1,
         beta2 = bounded_step::beta2 };
};

// adam_step_. Mode kAdaptive: θ <- θ - k m / (√v / s + e), computed as θ - (k s) m / (√v + e s):
// one division instead of two (the step was compute-bound at two threads, 1.17x the time of
// torch's fused Adam on data in cache), rounding differently in the last place.
template <typename T, bool kMax, bool kCoupled, int kMode>
void adam_chunk(const Instruction& in, T* const* reg, int64_t n) {
  using namespace adam_step;
  T* p = reg[in.r[Register::p]];
  const T* g = reg[in.r[Register::g]];
  T* m = reg[in.r[Register::m]];
  T* v = reg[in.r[Register::v]];
  T* x = kMax ? reg[in.r[Register::vmax]] : nullptr;
  const Moments<T, kMax, kCoupled> moments(in, AdamNames{});
  const T eps = static_cast<T>(in.s[Scalar::eps] * in.s[Scalar::denom_scale]);
  const T step = static_cast<T>(-in.s[Scalar::step_size] * in.s[Scalar::denom_scale]);
  const T momentum_step = static_cast<T>(-in.s[Scalar::step_size]);
  for (int64_t i = 0; i < n; ++i) {
    T pi = p[i], mi = m[i], vi = v[i];
    const T second = moments.update(pi, g[i], mi, vi, kMax ? x + i : nullptr);
    if constexpr (kMode == kAdaptive) {
      pi = pi + step * (mi / (std::sqrt(second) + eps));
    } else if constexpr (kMode == kMomentum) {
      pi = pi + momentum_step * mi;
    }
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// bounded_step_: η = clip(scale / (√v + ε), lower, upper);  θ <- θ - η m.
template <typename T, bool kMax, bool kCoupled>
void bounded_chunk(const Instruction& in, T* const* reg, int64_t n) {
  using namespace bounded_step;
  T* p = reg[in.r[Register::p]];
  const T* g = reg[in.r[Register::g]];
  T* m = reg[in.r[Register::m]];
  T* v = reg[in.r[Register::v]];
  T* x = kMax ? reg[in.r[Register::vmax]] : nullptr;
  const Moments<T, kMax, kCoupled> moments(in, BoundedNames{});
  const T eps = static_cast<T>(in.s[Scalar::eps]), scale = static_cast<T>(in.s[Scalar::scale]);
  const T low = static_cast<T>(in.s[Scalar::lower]), high = static_cast<T>(in.s[Scalar::upper]);
  for (int64_t i = 0; i < n; ++i) {
    T pi = p[i], mi = m[i], vi = v[i];
    T ti = std::sqrt(moments.update(pi, g[i], mi, vi, kMax ? x + i : nullptr));
    ti = T(1) / (ti + eps);
    ti = ti * scale;
    ti = ti < low ? low : ti;  // a NaN fails both comparisons and stays NaN
    ti = ti > high ? high : ti;
    p[i] = pi + T(-1) * (ti * mi);
    m[i] = mi;
    v[i] = vi;
  }
}

// lookahead_sync_: φ <- lerp(φ, θ, α);  θ <- φ.
template <typename T>
void sync_chunk(const Instruction& in, T* const* reg, int64_t n) {
  T* slow = reg[in.r[lookahead_sync::Register::slow]];
  T* param = reg[in.r[lookahead_sync::Register::param]];
  const double alpha = in.s[lookahead_sync::Scalar::alpha];
  const T w = static_cast<T>(alpha), w_rest = static_cast<T>(1.0 - alpha);
  const bool low_weight = std::abs(alpha) < 0.5;
  for (int64_t i = 0; i < n; ++i) {
    const T s = slow[i], q = param[i];
    const T next = low_weight ? s + w * (q - s) : q - (q - s) * w_rest;
    slow[i] = next;
    param[i] = next;
  }
}

template <typename T, template <typename, bool, bool> class Step>
void with_options(const Instruction& in, bool coupled, T* const* reg, int64_t n) {
  const bool has_max = in.r[4] >= 0;  // AMSGrad's running max is the last register
  if (has_max) {
    coupled ? Step<T, true, true>::run(in, reg, n) : Step<T, true, false>::run(in, reg, n);
  } else {
    coupled ? Step<T, false, true>::run(in, reg, n) : Step<T, false, false>::run(in, reg, n);
  }
}

template <typename T, bool kMax, bool kCoupled>
struct AdamLoop {
  static void run(const Instruction& in, T* const* reg, int64_t n) {
    switch (static_cast<int>(in.s[adam_step::mode])) {
      case kAdaptive: adam_chunk<T, kMax, kCoupled, kAdaptive>(in, reg, n); break;
      case kMomentum: adam_chunk<T, kMax, kCoupled, kMomentum>(in, reg, n); break;
      default: adam_chunk<T, kMax, kCoupled, kNoStep>(in, reg, n); break;
    }
  }
};

template <typename T, bool kMax, bool kCoupled>
struct BoundedLoop {
  static void run(const Instruction& in, T* const* reg, int64_t n) {
    bounded_chunk<T, kMax, kCoupled>(in, reg, n);
  }
};

template <typename T>
void run_named(const Instruction& in, T* const* reg, int64_t n) {
  switch (in.op) {
    case kAdamStep:
      with_options<T, AdamLoop>(in, in.s[adam_step::weight_decay] != 0, reg, n);
      break;
    case kBoundedStep:
      with_options<T, BoundedLoop>(in, in.s[bounded_step::weight_decay] != 0, reg, n);
      break;
    case kLookaheadSync: sync_chunk<T>(in, reg, n); break;
    default: TORCH_CHECK(false, "fused engine: not a named operation: ", in.op);
  }
}

}  // namespace rectified_fused
