// An Adam-family step (adam_step_ or bounded_step_) over moments stored in a state format
// (rectified/formats/): in one pass per block of 256 elements, the stored moments are decoded,
// the step runs in float32 as adam_chunk or bounded_chunk does, and the moments are encoded
// again, while the block is in cache. The codes, the random bits and the rounding are those of
// the Python definitions (formats/codes.py, formats/rounding.py), bit for bit; the tests hold
// the two together. The callers have checked that no two tensors of a call share memory.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "steps.h"
#include "tensor_io.h"

// The block loops are bound by vector instructions, not by memory: prefer 512-bit vectors
// where the machine has them (a tuning hint, without effect elsewhere).
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

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
// all-ones magnitude is NaN. Signed codes keep the sign in bit 7. Both directions are written
// without branches or calls (selects, and rounding by adding a number whose ulp is the step),
// so the block loops vectorize.
template <int E, int M, bool kSigned, bool kSmallestNonzero>
struct Code {
  static constexpr int kBias = (1 << (E - 1)) - 1;
  static constexpr int kShift = 23 - M;
  static constexpr uint32_t kTop = (1u << (E + M)) - 2;  // the largest finite magnitude
  static constexpr uint32_t kRebias = static_cast<uint32_t>(127 - kBias) << M;
  static constexpr float kMax =
      static_cast<float>((2.0 - 2.0 / (1 << M)) * static_cast<double>(1ull << ((1 << E) - 1 - kBias)));
  static constexpr float kMinNormal = 1.0f / static_cast<float>(1ull << (kBias - 1));
  static constexpr float kHalfMinNormal = kMinNormal / 2;
  // Adding kRound (kRound16) rounds to a whole number of subnormal steps (of 2^-16 of one).
  static constexpr float kRound = 8388608.0f / static_cast<float>(1ull << (kBias - 1 + M));
  static constexpr float kRound16 = kRound / 65536.0f;
  static constexpr float kRebiasFactor =  // 2^(127 - bias), in two factors a 64-bit int holds
      static_cast<float>(1ull << 63) * static_cast<float>(1ull << (127 - kBias - 63));

  static float decode(uint32_t c) {
    const uint32_t magnitude = kSigned ? c & 0x7Fu : c;
    // The code's bits as a float32's top bits read as a float32 (a subnormal one for a
    // subnormal code) that is the code's value times 2^(bias - 127), exactly; one product
    // (exact too) rebiases it. 6% faster for the 8-bit step than a select between the
    // normal and subnormal readings.
    float value = from_bits(magnitude << kShift) * kRebiasFactor;
    value = magnitude == kTop + 1 ? std::numeric_limits<float>::quiet_NaN() : value;
    return kSigned ? from_bits(bits(value) | ((c & 0x80u) << 24)) : value;
  }

  // y: the element times its block's 1 / scale; x: the element. r16: 16 random bits
  // (stochastic) or unused (kStochastic false: to nearest, ties to even).
  template <bool kStochastic>
  static uint32_t encode(float y, float x, uint32_t r16) {
    const uint32_t b = bits(y), a = b & 0x7FFFFFFFu;
    uint32_t normal, subnormal;
    if constexpr (kStochastic) {
      normal = ((a + (r16 << (kShift - 16))) >> kShift) - kRebias;
      subnormal = (bits(from_bits(a) + kRound16) - bits(kRound16) + r16) >> 16;
    } else {
      normal = ((a + ((1u << (kShift - 1)) - 1) + ((a >> kShift) & 1u)) >> kShift) - kRebias;
      subnormal = bits(from_bits(a) + kRound) - bits(kRound);
    }
    uint32_t magnitude = std::min(from_bits(a) < kMinNormal ? subnormal : normal, kTop);
    if constexpr (kSmallestNonzero) {  // x > 0 as an integer test: the loop then vectorizes
      magnitude = std::max(magnitude, static_cast<uint32_t>(bits(x) - 1u < 0x7F800000u));
    }
    magnitude = a >= 0x7F800000u ? kTop + 1 : magnitude;
    return kSigned ? magnitude | ((b >> 24) & 0x80u) : magnitude;
  }
};
using Signed = Code<4, 3, true, false>;      // e4m3 (torch's float8_e4m3fn): m
using Unsigned = Code<5, 3, false, true>;    // ue5m3: v and AMSGrad's max of v

inline uint16_t bfloat16_nearest(float x) {
  const uint32_t b = bits(x);
  const uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((b & 0x7FFFFFFFu) > 0x7F800000u ? (b >> 16) | 0x40u : rounded);
}
inline uint16_t bfloat16_stochastic(float x, uint32_t r16) {
  const uint32_t b = bits(x);
  const uint32_t rounded = (b + r16) >> 16;
  return static_cast<uint16_t>((b & 0x7FFFFFFFu) > 0x7F800000u ? (b >> 16) | 0x40u : rounded);
}
inline float bfloat16_value(uint16_t h) { return from_bits(static_cast<uint32_t>(h) << 16); }

// Encode one block of 8-bit codes: the scale from the finite values' largest magnitude; a
// block holding inf or NaN is marked by the scale's sign bit.
// A block's scale from the largest magnitude of its finite values (as bits), and the factor
// that maps values to code units.
template <typename C>
void block_scale(uint32_t largest, float* scale, float* factor) {
  const float absmax = from_bits(largest);
  const bool nonzero = absmax >= kTiny;
  *scale = nonzero ? absmax / C::kMax : 0.0f;
  // As torch evaluates the reference's max_value / absmax: a reciprocal, then a product.
  *factor = nonzero ? (1.0f / absmax) * C::kMax : 0.0f;
}

template <typename C, bool kStochastic>
void encode_codes(const float* __restrict x, int64_t n, float factor,
                  const uint32_t* __restrict random, int shift, uint8_t* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t r16 = kStochastic ? (random[i] >> shift) & 0xFFFFu : 0u;
    out[i] = static_cast<uint8_t>(C::template encode<kStochastic>(x[i] * factor, x[i], r16));
  }
}

// A block with inf or NaN: its scale from the finite values, marked by the sign bit.
template <typename C, bool kStochastic>
void encode_marked(const float* __restrict x, int64_t n, const uint32_t* __restrict random,
                   int shift, uint8_t* __restrict out, float* scale) {
  uint32_t largest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = bits(x[i]) & 0x7FFFFFFFu;
    largest = std::max(largest, a < 0x7F800000u ? a : 0u);
  }
  float factor;
  block_scale<C>(largest, scale, &factor);
  encode_codes<C, kStochastic>(x, n, factor, random, shift, out);
  *scale = -*scale;
}

// Encode one block whose largest magnitude (as bits, inf and NaN largest) is `largest`.
template <typename C, bool kStochastic>
void encode_block(const float* __restrict x, int64_t n, uint32_t largest,
                  const uint32_t* __restrict random, int shift, uint8_t* __restrict out,
                  float* scale) {
  if (largest >= 0x7F800000u) {
    encode_marked<C, kStochastic>(x, n, random, shift, out, scale);
    return;
  }
  float factor;
  block_scale<C>(largest, scale, &factor);
  encode_codes<C, kStochastic>(x, n, factor, random, shift, out);
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

// One block: load the moments, step, store the parameter, keep the new moments and their
// largest magnitudes; then encode them. One loop for the step, so p, g and the stored moments
// are each read once.
// A step's scalars, read once per call (not once per block).
template <bool kBounded, bool kMax, bool kCoupled>
struct BlockStep {
  using Names = std::conditional_t<kBounded, BoundedNames, AdamNames>;
  Moments<float, kMax, kCoupled> moments;
  // adam_step_ (as adam_chunk) or bounded_step_ (as bounded_chunk), scalars by name.
  float eps = 0, step = 0, momentum_step = 0, scale = 0, low = 0, high = 0;
  int mode = 0;
  explicit BlockStep(const Instruction& in) : moments(in, Names{}) {
    if constexpr (kBounded) {
      eps = static_cast<float>(in.s[bounded_step::Scalar::eps]);
      scale = static_cast<float>(in.s[bounded_step::Scalar::scale]);
      low = static_cast<float>(in.s[bounded_step::Scalar::lower]);
      high = static_cast<float>(in.s[bounded_step::Scalar::upper]);
    } else {
      using namespace adam_step;
      eps = static_cast<float>(in.s[Scalar::eps] * in.s[Scalar::denom_scale]);
      step = static_cast<float>(-in.s[Scalar::step_size] * in.s[Scalar::denom_scale]);
      momentum_step = static_cast<float>(-in.s[Scalar::step_size]);
      mode = static_cast<int>(in.s[Scalar::mode]);
    }
  }
};

template <typename T, Storage kStorage, bool kBounded, bool kMax, bool kCoupled>
void run_block(const BlockStep<kBounded, kMax, kCoupled>& rule, const Job& job, int64_t begin,
               bool stochastic_param) {
  using P = std::conditional_t<std::is_same_v<T, float>, float, uint16_t>;
  using S = std::conditional_t<kStorage == Storage::kEightBit, uint8_t, uint16_t>;
  const int64_t n = std::min(kBlock, job.n - begin);
  const int64_t block = begin / kBlock;
  const auto& moments = rule.moments;
  const float eps = rule.eps, step = rule.step, momentum_step = rule.momentum_step;
  const float scale = rule.scale, low = rule.low, high = rule.high;
  const int mode = rule.mode;
  P* __restrict p = static_cast<P*>(job.p) + begin;
  const P* __restrict g = static_cast<const P*>(job.g) + begin;
  S* __restrict ms = static_cast<S*>(job.moment[0]) + begin;
  S* __restrict vs = static_cast<S*>(job.moment[1]) + begin;
  S* __restrict xs = kMax ? static_cast<S*>(job.moment[2]) + begin : nullptr;
  float dm = 1, dv = 1, dx = 1;
  if constexpr (kStorage == Storage::kEightBit) {
    dm = std::fabs(job.scales[0][block]);
    dv = std::fabs(job.scales[1][block]);
    if constexpr (kMax) dx = std::fabs(job.scales[2][block]);
  }
  alignas(64) float m[kBlock], v[kBlock], x[kBlock];
  alignas(64) uint32_t random[kBlock];
  for (int64_t i = 0; i < n; ++i) {
    random[i] = fmix32(static_cast<uint32_t>(begin + i) * 0x9E3779B1u + job.key);
  }
  // Every narrow value is widened in a loop of its own, and narrowed in one after the step: a
  // loop that mixes widths vectorizes poorly (2.5x slower measured).
  if constexpr (kStorage == Storage::kEightBit) {
    for (int64_t i = 0; i < n; ++i) m[i] = Signed::decode(ms[i]) * dm;
    for (int64_t i = 0; i < n; ++i) v[i] = Unsigned::decode(vs[i]) * dv;
    if constexpr (kMax) {
      for (int64_t i = 0; i < n; ++i) x[i] = Unsigned::decode(xs[i]) * dx;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) m[i] = bfloat16_value(ms[i]);
    for (int64_t i = 0; i < n; ++i) v[i] = bfloat16_value(vs[i]);
    if constexpr (kMax) {
      for (int64_t i = 0; i < n; ++i) x[i] = bfloat16_value(xs[i]);
    }
  }
  alignas(64) float pf[std::is_same_v<T, float> ? 1 : kBlock];
  alignas(64) float gf[std::is_same_v<T, float> ? 1 : kBlock];
  if constexpr (!std::is_same_v<T, float>) {
    for (int64_t i = 0; i < n; ++i) pf[i] = bfloat16_value(p[i]);
    for (int64_t i = 0; i < n; ++i) gf[i] = bfloat16_value(g[i]);
  }
  uint32_t am = 0, av = 0, ax = 0;  // largest magnitudes as bits (inf and NaN above all)
  for (int64_t i = 0; i < n; ++i) {
    float mi = m[i], vi = v[i], xi = kMax ? x[i] : 0.0f;
    float pi, gi;
    if constexpr (std::is_same_v<T, float>) {
      pi = p[i];
      gi = g[i];
    } else {
      pi = pf[i];
      gi = gf[i];
    }
    const float second = moments.update(pi, gi, mi, vi, kMax ? &xi : nullptr);
    if constexpr (kBounded) {
      float ti = 1.0f / (std::sqrt(second) + eps);
      ti = ti * scale;
      ti = ti < low ? low : ti;  // a NaN fails both comparisons and stays NaN
      ti = ti > high ? high : ti;
      pi = pi + -1.0f * (ti * mi);
    } else {
      const float adaptive = pi + step * (mi / (std::sqrt(second) + eps));
      const float momentum = pi + momentum_step * mi;
      pi = mode == kAdaptive ? adaptive : (mode == kMomentum ? momentum : pi);
    }
    if constexpr (std::is_same_v<T, float>) {
      p[i] = pi;
    } else {
      pf[i] = pi;
    }
    m[i] = mi;
    v[i] = vi;
    am = std::max(am, bits(mi) & 0x7FFFFFFFu);
    av = std::max(av, bits(vi) & 0x7FFFFFFFu);
    if constexpr (kMax) {
      x[i] = xi;
      ax = std::max(ax, bits(xi) & 0x7FFFFFFFu);
    }
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (stochastic_param) {  // outside the loop: each loop stays branch-free
      for (int64_t i = 0; i < n; ++i) {
        p[i] = bfloat16_stochastic(pf[i], fmix32(random[i] ^ kParamSalt) >> 16);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) p[i] = bfloat16_nearest(pf[i]);
    }
  }
  // m and v round stochastically (bits 0-15 and 16-31), the running max to nearest.
  if constexpr (kStorage == Storage::kEightBit) {
    encode_block<Signed, true>(m, n, am, random, 0, ms, job.scales[0] + block);
    encode_block<Unsigned, true>(v, n, av, random, 16, vs, job.scales[1] + block);
    if constexpr (kMax) encode_block<Unsigned, false>(x, n, ax, random, 0, xs, job.scales[2] + block);
  } else {
    for (int64_t i = 0; i < n; ++i) ms[i] = bfloat16_stochastic(m[i], random[i] & 0xFFFFu);
    for (int64_t i = 0; i < n; ++i) vs[i] = bfloat16_stochastic(v[i], random[i] >> 16);
    if constexpr (kMax) {
      for (int64_t i = 0; i < n; ++i) xs[i] = bfloat16_nearest(x[i]);
    }
  }
}

template <typename T, Storage kStorage, bool kBounded, bool kMax, bool kCoupled>
void run_jobs(const Instruction& in, const std::vector<Job>& jobs, bool stochastic_param) {
  std::vector<std::pair<int64_t, int64_t>> blocks;  // (job, first element)
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (int64_t b = 0; b < jobs[j].n; b += kBlock) blocks.emplace_back(static_cast<int64_t>(j), b);
  }
  const BlockStep<kBounded, kMax, kCoupled> rule(in);
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      run_block<T, kStorage, kBounded, kMax, kCoupled>(rule, jobs[blocks[i].first],
                                                       blocks[i].second, stochastic_param);
    }
  });
}

template <typename T, Storage kStorage>
void dispatch(const Instruction& in, const std::vector<Job>& jobs, bool has_max,
              bool stochastic) {
  const bool bounded = in.op == kBoundedStep;
  const bool coupled = in.s[bounded ? static_cast<int>(bounded_step::weight_decay)
                                    : static_cast<int>(adam_step::weight_decay)] != 0;
  // (bounded, max, coupled) -> one of the eight loops.
  switch ((bounded ? 4 : 0) | (has_max ? 2 : 0) | (coupled ? 1 : 0)) {
    case 0: run_jobs<T, kStorage, false, false, false>(in, jobs, stochastic); break;
    case 1: run_jobs<T, kStorage, false, false, true>(in, jobs, stochastic); break;
    case 2: run_jobs<T, kStorage, false, true, false>(in, jobs, stochastic); break;
    case 3: run_jobs<T, kStorage, false, true, true>(in, jobs, stochastic); break;
    case 4: run_jobs<T, kStorage, true, false, false>(in, jobs, stochastic); break;
    case 5: run_jobs<T, kStorage, true, false, true>(in, jobs, stochastic); break;
    case 6: run_jobs<T, kStorage, true, true, false>(in, jobs, stochastic); break;
    default: run_jobs<T, kStorage, true, true, true>(in, jobs, stochastic); break;
  }
}

template <Storage kStorage>
void dispatch_type(const Instruction& in, const std::vector<Job>& jobs, bool has_max,
                   bool bfloat16, bool stochastic) {
  if (bfloat16) dispatch<c10::BFloat16, kStorage>(in, jobs, has_max, stochastic);
  else dispatch<float, kStorage>(in, jobs, has_max, false);
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
inline void formatted_step_(int64_t op, at::TensorList params, at::TensorList grads,
                            at::TensorList moment_list, at::TensorList scale_list,
                            int64_t n_moments, bool eight_bit, bool stochastic_params,
                            int64_t seed_low, int64_t seed_high, int64_t step,
                            at::IntArrayRef positions, at::IntArrayRef offsets,
                            at::ArrayRef<double> scalars) {
  TORCH_CHECK(op == kAdamStep || op == kBoundedStep,
              "formatted_step_: adam_step_ or bounded_step_, not opcode ", op);
  TORCH_CHECK(n_moments == 2 || n_moments == 3, "formatted_step_: 2 or 3 moments");
  TORCH_CHECK(static_cast<int64_t>(scalars.size()) == kScalarCount[op],
              "formatted_step_: the operation takes ", kScalarCount[op], " scalars");
  const size_t count = params.size();
  TORCH_CHECK(grads.size() == count && positions.size() == count && offsets.size() == count &&
              moment_list.size() == count * n_moments &&
              scale_list.size() == (eight_bit ? count * n_moments : 0),
              "formatted_step_: tensor lists of mismatched lengths");
  const at::ScalarType type = count ? params[0].scalar_type() : at::kFloat;
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16,
              "formatted_step_: float32 or bfloat16 parameters");
  const uint64_t seed = (static_cast<uint64_t>(seed_high) << 32) | static_cast<uint64_t>(seed_low);
  std::vector<Job> jobs(count);
  for (size_t t = 0; t < count; ++t) {
    const int64_t n = params[t].numel();
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    TORCH_CHECK(plain(params[t], type, n) && plain(grads[t], type, n),
                "formatted_step_: parameter ", t, " or its gradient is not plain");
    Job& job = jobs[t];
    job.p = params[t].data_ptr();
    job.g = grads[t].data_ptr();
    job.n = n;
    // Element i of a shard that begins at element `offset` of its tensor draws the bits of
    // element offset + i: h((offset + i) G + key) = h(i G + (key + offset G)).
    job.key = stream_key(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(positions[t])) +
              static_cast<uint32_t>(offsets[t]) * 0x9E3779B1u;
    for (int k = 0; k < 3; ++k) {
      job.moment[k] = nullptr;
      job.scales[k] = nullptr;
      if (k >= n_moments) continue;
      const at::Tensor& moment = moment_list[t * n_moments + k];
      TORCH_CHECK(plain(moment, eight_bit ? at::kByte : at::kBFloat16, n),
                  "formatted_step_: moment ", k, " of parameter ", t, " is not plain");
      job.moment[k] = moment.data_ptr();
      if (eight_bit) {
        const at::Tensor& scales = scale_list[t * n_moments + k];
        TORCH_CHECK(plain(scales, at::kFloat, blocks),
                    "formatted_step_: scales ", k, " of parameter ", t, " are not plain");
        job.scales[k] = scales.data_ptr<float>();
      }
    }
  }
  Instruction in;
  in.op = op;
  for (size_t j = 0; j < scalars.size(); ++j) in.s[j] = scalars[j];
  const bool has_max = n_moments == 3;
  const bool bfloat16 = type == at::kBFloat16;
  eight_bit ? dispatch_type<Storage::kEightBit>(in, jobs, has_max, bfloat16, stochastic_params)
            : dispatch_type<Storage::kBFloat16>(in, jobs, has_max, bfloat16, stochastic_params);
}

// The codecs alone, for steps that run as a traced program between a load and a store (NAdam,
// float32 state made in the first step): the definitions of formats/codes.py and
// formats/rounding.py, bit for bit, over float32 values, parallel over blocks.
inline void check_codec(const at::Tensor& values, const at::Tensor& stored, at::ScalarType type) {
  TORCH_CHECK(plain(values, at::kFloat, values.numel()) &&
              plain(stored, type, values.numel()), "state formats' codec: tensors must be plain "
              "contiguous CPU tensors (float32 values, and stored values of their size)");
}

inline void decode_codes_(const at::Tensor& codes, const at::Tensor& scales, at::Tensor out,
                          bool is_signed) {
  const int64_t n = codes.numel(), blocks = (n + kBlock - 1) / kBlock;
  check_codec(out, codes, at::kByte);
  TORCH_CHECK(plain(scales, at::kFloat, blocks), "state formats' codec: scales of another size");
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float* s = scales.data_ptr<float>();
  float* x = out.data_ptr<float>();
  at::parallel_for(0, blocks, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      const float scale = std::fabs(s[b]);
      if (is_signed) {
        for (int64_t i = begin; i < end; ++i) x[i] = Signed::decode(c[i]) * scale;
      } else {
        for (int64_t i = begin; i < end; ++i) x[i] = Unsigned::decode(c[i]) * scale;
      }
    }
  });
}

// shift: 0 or 16 takes those 16 of each element's random bits (stochastic), -1 is to nearest.
inline void encode_codes_(const at::Tensor& values, at::Tensor codes, at::Tensor scales,
                          bool is_signed, int64_t key, int64_t shift) {
  const int64_t n = values.numel(), blocks = (n + kBlock - 1) / kBlock;
  check_codec(values, codes, at::kByte);
  TORCH_CHECK(plain(scales, at::kFloat, blocks), "state formats' codec: scales of another size");
  const float* x = values.data_ptr<float>();
  uint8_t* c = codes.data_ptr<uint8_t>();
  float* s = scales.data_ptr<float>();
  at::parallel_for(0, blocks, 64, [&](int64_t lo, int64_t hi) {
    alignas(64) uint32_t random[kBlock];
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t begin = b * kBlock, m = std::min(kBlock, n - begin);
      uint32_t largest = 0;
      for (int64_t i = 0; i < m; ++i) largest = std::max(largest, bits(x[begin + i]) & 0x7FFFFFFFu);
      for (int64_t i = 0; i < m; ++i) {
        random[i] = fmix32(static_cast<uint32_t>(begin + i) * 0x9E3779B1u + static_cast<uint32_t>(key));
      }
      const int at_bits = shift < 0 ? 0 : static_cast<int>(shift);
      if (is_signed) {
        shift < 0 ? encode_block<Signed, false>(x + begin, m, largest, random, 0, c + begin, s + b)
                  : encode_block<Signed, true>(x + begin, m, largest, random, at_bits, c + begin, s + b);
      } else {
        shift < 0 ? encode_block<Unsigned, false>(x + begin, m, largest, random, 0, c + begin, s + b)
                  : encode_block<Unsigned, true>(x + begin, m, largest, random, at_bits, c + begin, s + b);
      }
    }
  });
}

// mode: 0 and 1 round stochastically with the low or high 16 random bits (m, v), 2 with the
// parameter's bits, 3 to nearest.
inline void round_bfloat16_(const at::Tensor& values, at::Tensor out, int64_t key, int64_t mode) {
  const int64_t n = values.numel();
  check_codec(values, out, at::kBFloat16);
  const float* x = values.data_ptr<float>();
  uint16_t* y = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const uint32_t h = fmix32(static_cast<uint32_t>(i) * 0x9E3779B1u + static_cast<uint32_t>(key));
      const uint32_t r16 = mode == 0 ? h & 0xFFFFu : (mode == 1 ? h >> 16 : fmix32(h ^ kParamSalt) >> 16);
      y[i] = mode == 3 ? bfloat16_nearest(x[i]) : bfloat16_stochastic(x[i], r16);
    }
  });
}

}  // namespace rectified_fused::formats
#pragma GCC pop_options
