// The fused CPU engine's kernel: one parallel pass that runs a short program of elementwise
// instructions over every tensor of a bucket.
//
// The program is traced in Python from an update rule (rectified/engines/fused/program.py), so
// the kernel knows no optimizer, only the instruction set of instructions.py (read here through
// the generated instructions.h). The jobs are split by file: program.h decodes and checks a
// program, primitives.h and steps.h run its instructions, tensor_io.h reads and writes tensors,
// scheduler.h cuts the work into chunks and runs them in parallel, plan.h keeps a group's step
// between steps; this file registers the operations with torch. The state formats are a
// library of their own, formats.cpp: codes.h (codes and random bits), one_pass.h (Adam-family
// steps over stored moments), codecs.h (the codes alone).
#include <torch/library.h>

#include "aliasing.h"
#include "plan.h"

namespace rectified_fused {

// A parameter the kernel can take: all its tensors readable and of one shape.
bool takes(const at::Tensor* xs, int64_t n_slots) {
  for (int64_t s = 0; s < n_slots; ++s) {
    if (!readable(xs[s]) || xs[s].sizes() != xs[0].sizes()) return false;
  }
  return true;
}

// tensors: n_slots tensors per parameter, parameter-major; read_only: the slots the program
// only reads. Runs the program on every parameter the kernel can take and returns the indices
// of the others, untouched: those it cannot read (for another engine), and those whose tensors
// share memory with another tensor of the call where one of the two is written (to be run one
// at a time: a parallel pass would lose updates).
std::tuple<std::vector<int64_t>, std::vector<int64_t>> run_program_(
    at::TensorList tensors, int64_t n_slots, at::IntArrayRef read_only, int64_t n_registers,
    at::IntArrayRef code, at::ArrayRef<double> scalars) {
  const Decoded decoded = decode(n_slots, n_registers, code, scalars);
  TORCH_CHECK(tensors.size() % n_slots == 0, "fused engine: ", tensors.size(),
              " tensors do not split into slots of ", n_slots);
  const int64_t n_params = static_cast<int64_t>(tensors.size()) / n_slots;
  const std::vector<int64_t> aliased = overlapping(tensors, n_slots, read_only);
  std::vector<bool> take(static_cast<size_t>(n_params));
  std::vector<int64_t> skipped, numels(static_cast<size_t>(n_params), 0);
  Streams streams;
  streams.data.assign(tensors.size(), nullptr);
  streams.types.assign(tensors.size(), at::kFloat);
  size_t next_aliased = 0;
  for (int64_t t = 0; t < n_params; ++t) {
    if (next_aliased < aliased.size() && aliased[next_aliased] == t) {
      ++next_aliased;
      continue;
    }
    take[t] = takes(tensors.data() + t * n_slots, n_slots);
    if (!take[t]) {
      skipped.push_back(t);
      continue;
    }
    numels[t] = tensors[t * n_slots].numel();
    for (int64_t s = 0; s < n_slots; ++s) {
      const at::Tensor& x = tensors[t * n_slots + s];
      streams.data[t * n_slots + s] = x.data_ptr();
      streams.types[t * n_slots + s] = x.scalar_type();
      streams.any_double = streams.any_double || x.scalar_type() == at::kDouble;
    }
  }
  // Skipped parameters count as computing-dtype tensors, so they never force short chunks.
  for (int64_t t = 0; t < n_params; ++t) {
    for (int64_t s = 0; !take[t] && s < n_slots; ++s) {
      streams.types[t * n_slots + s] = streams.any_double ? at::kDouble : at::kFloat;
    }
  }
  const int64_t size = streams.chunk_size(decoded, n_slots);
  run_chunks(decoded, streams, make_chunks(numels, take, size), size, n_slots, n_registers);
  return {skipped, aliased};
}

// Adds 1 to every step counter (one-element float CPU tensors) and returns the new counts: one
// call instead of a dispatch per parameter. All are checked before any is changed.
std::vector<double> advance_steps_(at::TensorList steps) {
  for (const at::Tensor& t : steps) {
    TORCH_CHECK(is_counter(t), "advance_steps_: step counters must be one-element float CPU "
                "tensors");
  }
  std::vector<double> counts;
  counts.reserve(steps.size());
  for (const at::Tensor& t : steps) counts.push_back(increment(t.data_ptr(), t.scalar_type()));
  return counts;
}

// The first parameter whose step cannot be right, or -1: a sparse gradient or one of another
// shape than its parameter, a lazily conjugated or negated parameter, or a state tensor of
// another shape or with a lazy bit (engines/state.py, check_gradients, says which and why).
// states: n_keys per parameter, None where a parameter has no such state yet.
int64_t first_unfit(at::TensorList params, at::TensorList grads,
                    const c10::List<std::optional<at::Tensor>>& states, int64_t n_keys) {
  TORCH_CHECK(grads.size() == params.size() &&
              states.size() == params.size() * static_cast<size_t>(n_keys),
              "first_unfit: lists of mismatched lengths");
  for (size_t t = 0; t < params.size(); ++t) {
    const at::Tensor& p = params[t];
    const at::Tensor& g = grads[t];
    if (g.is_sparse() || g.sizes() != p.sizes() || p.is_conj() || p.is_neg()) {
      return static_cast<int64_t>(t);
    }
    for (int64_t k = 0; k < n_keys; ++k) {
      const std::optional<at::Tensor> value = states.get(t * n_keys + k);
      if (value.has_value() && value->defined() &&
          (value->sizes() != p.sizes() || value->is_conj() || value->is_neg())) {
        return static_cast<int64_t>(t);
      }
    }
  }
  return -1;
}

}  // namespace rectified_fused

TORCH_LIBRARY(rectified_fused, m) {
  m.def(
      "run_program_(Tensor(a!)[] tensors, int n_slots, int[] read_only, int n_registers, "
      "int[] code, float[] scalars) -> (int[], int[])",
      &rectified_fused::run_program_);
  m.def("overlapping(Tensor[] tensors, int n_slots, int[] read_only) -> int[]",
        &rectified_fused::overlapping);
  m.def("advance_steps_(Tensor(a!)[] steps) -> float[]", &rectified_fused::advance_steps_);
  m.def("first_unfit(Tensor[] params, Tensor[] grads, Tensor?[] states, int n_keys) -> int",
        &rectified_fused::first_unfit);
  m.class_<rectified_fused::Plan>("Plan")
      .def(torch::init<std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>, int64_t, std::vector<at::Tensor>>())
      .def("check", &rectified_fused::Plan::check)
      .def("counts_hold", &rectified_fused::Plan::counts_hold)
      .def("run", &rectified_fused::Plan::run);
}
