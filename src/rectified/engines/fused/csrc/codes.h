// The state formats' codes and random bits (rectified/formats/codes.py and rounding.py), bit
// for bit, written so that loops over a block of 256 elements vectorize: 8-bit float codes
// with a scale per block, bfloat16 rounding to nearest or stochastically, and the
// counter-based hash the stochastic rounding draws its bits from. The tests hold the two
// definitions together.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

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
// all-ones magnitude is NaN (+inf once scaled, unsigned). Signed codes keep the sign in bit 7. Both directions are written
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

  static float decode(uint32_t c) {
    const uint32_t magnitude = kSigned ? c & 0x7Fu : c;
    const float normal = from_bits((magnitude << kShift) + ((127u - kBias) << 23));
    // A subnormal code j reads as 2^(-bias) (1 + j / 2^M) above: twice it, less the smallest
    // normal, is j 2^(1-bias-M), exactly. Every float here is a normal float32: reading the
    // code's bits as a float32 subnormal and rebiasing it with one product is 6% faster, but
    // flush-denormal mode (torch.set_flush_denormal) reads such inputs as 0.
    float value = magnitude < (1u << M) ? normal * 2.0f - kMinNormal : normal;
    value = magnitude == kTop + 1 ? std::numeric_limits<float>::quiet_NaN() : value;
    return kSigned ? from_bits(bits(value) | ((c & 0x80u) << 24)) : value;
  }

  // A code times its block's scale: the top code of an unsigned map is +inf whatever the scale
  // (formats/codes.py says why); NaN otherwise.
  static float scaled(uint32_t c, float scale) {
    const float value = decode(c) * scale;
    if constexpr (kSigned) return value;
    return c == kTop + 1 ? std::numeric_limits<float>::infinity() : value;
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
// A tensor the loops can read through its data pointer: plain memory of `type` and `numel`
// elements.
inline bool plain(const at::Tensor& x, at::ScalarType type, int64_t numel) {
  return plain_memory(x) && x.scalar_type() == type && x.numel() == numel;
}

}  // namespace rectified_fused::formats
#pragma GCC pop_options
