// An Adam step (adam_step_) over moments stored in a state format (rectified/formats/): in one
// pass per block of 256 elements, the stored moments are decoded, the step runs in float32 as in
// adam_chunk, and the moments are encoded again, while the block is in cache. The codes, the
// random bits and the rounding are those of the Python definitions (formats/codes.py,
// formats/rounding.py), bit for bit; the tests hold the two together.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "steps.h"
#include "tensor_io.h"

namespace rectified_fused::formats {

inline uint32_t bits(float x) { return std::bit_cast<uint32_t>(x); }
inline float from_bits(uint32_t x) { return std::bit_cast<float>(x); }

constexpr int64_t kBlock = 256;
constexpr float kTiny = 0x1p-100f;
constexpr uint32_t kParamSalt = 0x5BD1E995u;

inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}

inline uint32_t stream_key(uint64_t seed, uint64_t step, uint64_t tensor) {
  uint32_t k = fmix32(static_cast<uint32_t>(seed) ^ 0x9E3779B9u);
  for (uint64_t word : {seed >> 32, step, step >> 32, tensor}) {
    k = fmix32(k ^ static_cast<uint32_t>(word));
  }
  return k;
}

// A small float code: E exponent bits (bias 2^(E-1) - 1), M mantissa bits, subnormals; the
// all-ones magnitude is NaN. Signed codes keep the sign in bit 7.
template <int E, int M, bool kSigned, bool kSmallestNonzero>
struct Code {
  static constexpr int kBias = (1 << (E - 1)) - 1;
  static constexpr int kShift = 23 - M;
  static constexpr uint32_t kTop = (1u << (E + M)) - 2;  // the largest finite magnitude
  static constexpr float kMax =
      static_cast<float>((2.0 - 2.0 / (1 << M)) * static_cast<double>(1ull << ((1 << E) - 1 - kBias)));
  static constexpr float kMinNormal = 1.0f / static_cast<float>(1ull << (kBias - 1));
  static constexpr float kUnits = static_cast<float>(1ull << (kBias - 1 + M));  // per 1.0

  static float decode(uint32_t c) {
    const uint32_t magnitude = kSigned ? c & 0x7Fu : c;
    if (magnitude == kTop + 1) return std::numeric_limits<float>::quiet_NaN();
    const uint32_t exponent = magnitude >> M, fraction = magnitude & ((1u << M) - 1);
    const float value = exponent == 0
        ? static_cast<float>(fraction) / kUnits
        : from_bits(((exponent + 127 - kBias) << 23) | (fraction << kShift));
    return (kSigned && (c & 0x80u)) ? -value : value;
  }

  // y: the element times its block's 1 / scale. r16: 16 random bits, or -1 to round to nearest.
  static uint32_t encode(float y, float x, int64_t r16) {
    const uint32_t b = bits(y), a = b & 0x7FFFFFFFu;
    const uint32_t sign = kSigned ? (b >> 24) & 0x80u : 0u;
    if (a >= 0x7F800000u) return (kTop + 1) | sign;
    uint32_t magnitude;
    if (from_bits(a) < kMinNormal) {
      const float units = from_bits(a) * kUnits;  // exact: a power-of-two scaling
      if (r16 < 0) {
        magnitude = static_cast<uint32_t>(std::nearbyint(units));
      } else {
        magnitude = (static_cast<uint32_t>(std::nearbyint(units * 65536.0f)) +
                     static_cast<uint32_t>(r16)) >> 16;
      }
    } else if (r16 < 0) {
      magnitude = ((a + ((1u << (kShift - 1)) - 1) + ((a >> kShift) & 1u)) >> kShift) -
                  ((127u - kBias) << M);
    } else {
      magnitude = ((a + (static_cast<uint32_t>(r16) << (kShift - 16))) >> kShift) -
                  ((127u - kBias) << M);
    }
    magnitude = std::min(magnitude, kTop);
    if (kSmallestNonzero && magnitude == 0 && x > 0.0f) magnitude = 1;
    return magnitude | sign;
  }
};
using Signed = Code<4, 3, true, false>;      // e4m3 (torch's float8_e4m3fn): m
using Unsigned = Code<5, 3, false, true>;    // ue5m3: v and AMSGrad's max of v

inline uint16_t bfloat16_nearest(float x) {
  const uint32_t b = bits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
inline uint16_t bfloat16_stochastic(float x, uint32_t r16) {
  const uint32_t b = bits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + r16) >> 16);
}
inline float bfloat16_value(uint16_t h) { return from_bits(static_cast<uint32_t>(h) << 16); }

// Encode one block of 8-bit codes: the scale from the finite values' largest magnitude; a
// block holding inf or NaN is marked by the scale's sign bit.
template <typename C>
void encode_block(const float* x, int64_t n, const uint32_t* random, int shift, uint8_t* out,
                  float* scale) {
  uint32_t largest = 0;
  bool nonfinite = false;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = bits(x[i]) & 0x7FFFFFFFu;
    nonfinite |= a >= 0x7F800000u;
    largest = a < 0x7F800000u ? std::max(largest, a) : largest;
  }
  const float absmax = from_bits(largest);
  const bool nonzero = absmax >= kTiny;
  const float s = nonzero ? absmax / C::kMax : 0.0f;
  // As torch evaluates the reference's max_value / absmax: a reciprocal, then a product.
  const float r = nonzero ? (1.0f / absmax) * C::kMax : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r16 = random ? static_cast<int64_t>((random[i] >> shift) & 0xFFFFu) : -1;
    out[i] = static_cast<uint8_t>(C::encode(x[i] * r, x[i], r16));
  }
  *scale = nonfinite ? -s : s;
}

// One parameter's tensors. Moments: m, v, and AMSGrad's max (null without).
struct Job {
  void* p;
  const void* g;
  void* moment[3];
  float* scales[3];
  int64_t n;
  uint32_t key;
};

enum class Storage { kEightBit, kBFloat16 };

template <typename T>
float read(const void* x, int64_t i) {
  if constexpr (std::is_same_v<T, float>) return static_cast<const float*>(x)[i];
  else return bfloat16_value(static_cast<const uint16_t*>(x)[i]);
}

template <typename T, Storage kStorage, bool kMax, bool kCoupled>
void run_block(const Instruction& in, const Job& job, int64_t begin, bool stochastic_param) {
  using namespace adam_step;
  const int64_t n = std::min(kBlock, job.n - begin);
  const Moments<float, kMax, kCoupled> moments(in, AdamNames{});
  const float eps = static_cast<float>(in.s[Scalar::eps] * in.s[Scalar::denom_scale]);
  const float step = static_cast<float>(-in.s[Scalar::step_size] * in.s[Scalar::denom_scale]);
  const float momentum_step = static_cast<float>(-in.s[Scalar::step_size]);
  const int mode = static_cast<int>(in.s[Scalar::mode]);
  alignas(64) float m[kBlock], v[kBlock], x[kBlock];
  alignas(64) uint32_t random[kBlock];
  for (int64_t i = 0; i < n; ++i) random[i] = fmix32(static_cast<uint32_t>(begin + i) * 0x9E3779B1u + job.key);
  const int64_t block = begin / kBlock;
  const int n_moments = kMax ? 3 : 2;
  for (int k = 0; k < n_moments; ++k) {
    float* out = k == 0 ? m : (k == 1 ? v : x);
    if constexpr (kStorage == Storage::kEightBit) {
      const uint8_t* codes = static_cast<const uint8_t*>(job.moment[k]) + begin;
      const float scale = std::fabs(job.scales[k][block]);
      for (int64_t i = 0; i < n; ++i) {
        out[i] = (k == 0 ? Signed::decode(codes[i]) : Unsigned::decode(codes[i])) * scale;
      }
    } else {
      const uint16_t* stored = static_cast<const uint16_t*>(job.moment[k]) + begin;
      for (int64_t i = 0; i < n; ++i) out[i] = bfloat16_value(stored[i]);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    float pi = read<T>(job.p, begin + i);
    const float second = moments.update(pi, read<T>(job.g, begin + i), m[i], v[i],
                                        kMax ? x + i : nullptr);
    if (mode == kAdaptive) pi = pi + step * (m[i] / (std::sqrt(second) + eps));
    else if (mode == kMomentum) pi = pi + momentum_step * m[i];
    if constexpr (std::is_same_v<T, float>) {
      static_cast<float*>(job.p)[begin + i] = pi;
    } else {
      static_cast<uint16_t*>(job.p)[begin + i] = stochastic_param
          ? bfloat16_stochastic(pi, fmix32(random[i] ^ kParamSalt) >> 16)
          : bfloat16_nearest(pi);
    }
  }
  // m and v round stochastically (bits 0-15 and 16-31), the running max to nearest.
  if constexpr (kStorage == Storage::kEightBit) {
    uint8_t* const* codes = reinterpret_cast<uint8_t* const*>(job.moment);
    encode_block<Signed>(m, n, random, 0, codes[0] + begin, job.scales[0] + block);
    encode_block<Unsigned>(v, n, random, 16, codes[1] + begin, job.scales[1] + block);
    if constexpr (kMax) encode_block<Unsigned>(x, n, nullptr, 0, codes[2] + begin, job.scales[2] + block);
  } else {
    uint16_t* const* stored = reinterpret_cast<uint16_t* const*>(job.moment);
    for (int64_t i = 0; i < n; ++i) {
      stored[0][begin + i] = bfloat16_stochastic(m[i], random[i] & 0xFFFFu);
      stored[1][begin + i] = bfloat16_stochastic(v[i], random[i] >> 16);
      if constexpr (kMax) stored[2][begin + i] = bfloat16_nearest(x[i]);
    }
  }
}

template <typename T, Storage kStorage, bool kMax, bool kCoupled>
void run_jobs(const Instruction& in, const std::vector<Job>& jobs, bool stochastic_param) {
  std::vector<std::pair<int64_t, int64_t>> blocks;  // (job, first element)
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (int64_t b = 0; b < jobs[j].n; b += kBlock) blocks.emplace_back(static_cast<int64_t>(j), b);
  }
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      run_block<T, kStorage, kMax, kCoupled>(in, jobs[blocks[i].first], blocks[i].second,
                                             stochastic_param);
    }
  });
}

template <typename T, Storage kStorage>
void dispatch(const Instruction& in, const std::vector<Job>& jobs, bool has_max, bool stochastic) {
  const bool coupled = in.s[adam_step::weight_decay] != 0;
  if (has_max) {
    coupled ? run_jobs<T, kStorage, true, true>(in, jobs, stochastic)
            : run_jobs<T, kStorage, true, false>(in, jobs, stochastic);
  } else {
    coupled ? run_jobs<T, kStorage, false, true>(in, jobs, stochastic)
            : run_jobs<T, kStorage, false, false>(in, jobs, stochastic);
  }
}

inline bool plain(const at::Tensor& x, at::ScalarType type, int64_t numel) {
  return x.defined() && typeid(*x.unsafeGetTensorImpl()) == typeid(c10::TensorImpl) &&
         x.device().is_cpu() && x.layout() == at::kStrided && x.is_contiguous() &&
         x.scalar_type() == type && x.numel() == numel && !x.is_neg() && !x.is_conj() &&
         !x.key_set().has(c10::DispatchKey::Python);
}

// params, grads: one per parameter (all float32, or all bfloat16). moments: n_moments per
// parameter (m, v[, max of v]), uint8 codes (eight_bit) or bfloat16. scales: n_moments per
// parameter for 8-bit codes (float32, one per block), none for bfloat16. scalars: adam_step_'s.
// Every tensor is checked before any is written.
inline void formatted_adam_step_(at::TensorList params, at::TensorList grads,
                                 at::TensorList moment_list, at::TensorList scale_list,
                                 int64_t n_moments, bool eight_bit, bool stochastic_params,
                                 int64_t seed_low, int64_t seed_high, int64_t step,
                                 at::IntArrayRef positions, at::ArrayRef<double> scalars) {
  TORCH_CHECK(n_moments == 2 || n_moments == 3, "formatted_adam_step_: 2 or 3 moments");
  TORCH_CHECK(static_cast<int64_t>(scalars.size()) == kScalarCount[kAdamStep],
              "formatted_adam_step_: adam_step_ takes ", kScalarCount[kAdamStep], " scalars");
  const size_t count = params.size();
  TORCH_CHECK(grads.size() == count && positions.size() == count &&
              moment_list.size() == count * n_moments &&
              scale_list.size() == (eight_bit ? count * n_moments : 0),
              "formatted_adam_step_: tensor lists of mismatched lengths");
  const at::ScalarType type = count ? params[0].scalar_type() : at::kFloat;
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16,
              "formatted_adam_step_: float32 or bfloat16 parameters");
  const uint64_t seed = (static_cast<uint64_t>(seed_high) << 32) | static_cast<uint64_t>(seed_low);
  std::vector<Job> jobs(count);
  for (size_t t = 0; t < count; ++t) {
    const int64_t n = params[t].numel();
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    TORCH_CHECK(plain(params[t], type, n) && plain(grads[t], type, n),
                "formatted_adam_step_: parameter ", t, " or its gradient is not plain");
    Job& job = jobs[t];
    job.p = params[t].data_ptr();
    job.g = grads[t].data_ptr();
    job.n = n;
    job.key = stream_key(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(positions[t]));
    for (int k = 0; k < 3; ++k) {
      job.moment[k] = nullptr;
      job.scales[k] = nullptr;
      if (k >= n_moments) continue;
      const at::Tensor& moment = moment_list[t * n_moments + k];
      TORCH_CHECK(plain(moment, eight_bit ? at::kByte : at::kBFloat16, n),
                  "formatted_adam_step_: moment ", k, " of parameter ", t, " is not plain");
      job.moment[k] = moment.data_ptr();
      if (eight_bit) {
        const at::Tensor& scales = scale_list[t * n_moments + k];
        TORCH_CHECK(plain(scales, at::kFloat, blocks),
                    "formatted_adam_step_: scales ", k, " of parameter ", t, " are not plain");
        job.scales[k] = scales.data_ptr<float>();
      }
    }
  }
  Instruction in;
  in.op = kAdamStep;
  for (size_t j = 0; j < scalars.size(); ++j) in.s[j] = scalars[j];
  const bool has_max = n_moments == 3;
  if (type == at::kFloat) {
    eight_bit ? dispatch<float, Storage::kEightBit>(in, jobs, has_max, stochastic_params)
              : dispatch<float, Storage::kBFloat16>(in, jobs, has_max, stochastic_params);
  } else {
    eight_bit ? dispatch<c10::BFloat16, Storage::kEightBit>(in, jobs, has_max, stochastic_params)
              : dispatch<c10::BFloat16, Storage::kBFloat16>(in, jobs, has_max, stochastic_params);
  }
}

}  // namespace rectified_fused::formats
