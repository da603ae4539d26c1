// The state formats' kernel (one_pass.h and codecs.h, over codes.h), a library of its own:
// built on the first fused step over 8-bit or bfloat16 moments, so that programs that never
// store state in a format never wait for it (it doubles the kernel's compile time).
#include <torch/library.h>

#include "codecs.h"
#include "one_pass.h"

TORCH_LIBRARY(rectified_formats, m) {
  m.def(
      "formatted_step_(int op, Tensor(a!)[] params, Tensor[] grads, Tensor(a!)[] moments, "
      "Tensor(a!)[] scales, int n_moments, bool eight_bit, bool stochastic_params, "
      "int seed_low, int seed_high, int step, int[] positions, int[] offsets, "
      "float[] scalars) -> ()",
      &rectified_fused::formats::formatted_step_);
  m.def("decode_codes_(Tensor codes, Tensor scales, Tensor(a!) out, bool is_signed) -> ()",
        &rectified_fused::formats::decode_codes_);
  m.def("encode_codes_(Tensor values, Tensor(a!) codes, Tensor(b!) scales, bool is_signed, "
        "int key, int shift) -> ()", &rectified_fused::formats::encode_codes_);
  m.def("round_bfloat16_(Tensor values, Tensor(a!) out, int key, int mode) -> ()",
        &rectified_fused::formats::round_bfloat16_);
}
