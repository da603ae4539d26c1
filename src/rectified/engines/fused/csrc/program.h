// A decoded program: instructions with their registers and scalars, checked before any tensor
// is touched, so a malformed call changes nothing.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "instructions.h"

namespace rectified_fused {

struct Instruction {
  int64_t op = 0;
  int64_t r[kMaxRegisters] = {};  // -1: an absent optional register
  double s[kMaxScalars] = {};
};

struct Decoded {
  std::vector<Instruction> program;
  std::vector<bool> written;  // which input slots the program writes
};

inline bool is_named(int64_t op) { return op >= kAdamStep; }

inline Decoded decode(int64_t n_slots, int64_t n_registers, at::IntArrayRef code,
                      at::ArrayRef<double> scalars) {
  TORCH_CHECK(n_slots > 0 && n_registers >= n_slots, "fused engine: bad register counts");
  Decoded decoded;
  decoded.written.assign(static_cast<size_t>(n_slots), false);
  size_t at = 0, scalar_at = 0;
  while (at < code.size()) {
    Instruction in;
    in.op = code[at++];
    TORCH_CHECK(in.op >= 0 && in.op < kOpCount, "fused engine: unknown opcode ", in.op);
    const int n = kRegisterCount[in.op], k = kScalarCount[in.op];
    TORCH_CHECK(at + n <= code.size() && scalar_at + k <= scalars.size(),
                "fused engine: malformed program");
    for (int j = 0; j < n; ++j) {
      in.r[j] = code[at++];
      // Only a named operation's optional last register (AMSGrad's running max) may be absent.
      const bool absent_ok = is_named(in.op) && j == n - 1 && in.r[j] == -1;
      TORCH_CHECK(absent_ok || (in.r[j] >= 0 && in.r[j] < n_registers),
                  "fused engine: register out of range");
      if (is_named(in.op) && in.r[j] >= 0) {
        // Named loops keep every value in registers: their tensors must be distinct.
        for (int i = 0; i < j; ++i) {
          TORCH_CHECK(in.r[i] != in.r[j], "fused engine: a named operation repeats a register");
        }
      }
      if ((kWriteMask[in.op] >> j & 1) && in.r[j] >= 0 && in.r[j] < n_slots) {
        decoded.written[in.r[j]] = true;
      }
    }
    for (int j = 0; j < k; ++j) in.s[j] = scalars[scalar_at++];
    decoded.program.push_back(in);
  }
  TORCH_CHECK(scalar_at == scalars.size(), "fused engine: malformed program");
  return decoded;
}

// Whether the program is only named operations over input slots: it needs no temporaries, so
// it may run over long chunks.
inline bool only_named(const Decoded& decoded, int64_t n_slots) {
  for (const Instruction& in : decoded.program) {
    if (!is_named(in.op)) return false;
    for (int j = 0; j < kRegisterCount[in.op]; ++j) {
      if (in.r[j] >= n_slots) return false;
    }
  }
  return true;
}

}  // namespace rectified_fused
