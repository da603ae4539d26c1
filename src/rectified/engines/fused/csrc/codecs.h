// The codecs alone, for steps that run as a traced program between a load and a store (NAdam,
// float32 state made in the first step): the definitions of formats/codes.py and
// formats/rounding.py, bit for bit, over float32 values, parallel over blocks.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "codes.h"

// The block loops are bound by vector instructions, not by memory: prefer 512-bit vectors
// where the machine has them (a tuning hint, without effect elsewhere).
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

namespace rectified_fused::formats {

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
        for (int64_t i = begin; i < end; ++i) x[i] = Signed::scaled(c[i], scale);
      } else {
        for (int64_t i = begin; i < end; ++i) x[i] = Unsigned::scaled(c[i], scale);
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
