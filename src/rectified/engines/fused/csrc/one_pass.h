// An Adam-family step (adam_step_ or bounded_step_) over moments stored in a state format
// (rectified/formats/): in one pass per block of 256 elements, the stored moments are decoded,
// the step runs in float32 as adam_chunk or bounded_chunk does, and the moments are encoded
// again, while the block is in cache. The codes, the random bits and the rounding are those of
// codes.h. The callers have checked that no two tensors of a call share memory.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "codes.h"
#include "steps.h"

// The block loops are bound by vector instructions, not by memory: prefer 512-bit vectors
// where the machine has them (a tuning hint, without effect elsewhere).
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

namespace rectified_fused::formats {

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
// One block: load the moments, step, store the parameter, keep the new moments and their
// largest magnitudes; then encode them. One loop for the step, so p, g and the stored moments
// are each read once.
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
    for (int64_t i = 0; i < n; ++i) m[i] = Signed::scaled(ms[i], dm);
    for (int64_t i = 0; i < n; ++i) v[i] = Unsigned::scaled(vs[i], dv);
    if constexpr (kMax) {
      for (int64_t i = 0; i < n; ++i) x[i] = Unsigned::scaled(xs[i], dx);
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
}  // namespace rectified_fused::formats
#pragma GCC pop_options
