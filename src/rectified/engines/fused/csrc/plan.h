// A param group's fused step kept between steps, so that a step passes no tensor list from
// Python: converting thousands of tensors into a list on every call costs more than the
// arithmetic of small parameters. The Python side (plans.py) checks that the group's parameters
// and state tensors are the objects the plan holds; `check` verifies what only the tensors can
// tell, and `run` advances the step counters and runs the program.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

#include "scheduler.h"
#include "tensor_io.h"

namespace rectified_fused {

inline bool is_counter(const at::Tensor& t) {
  return t.device().is_cpu() && t.numel() == 1 && t.layout() == at::kStrided &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

inline double counter_value(const void* value, at::ScalarType type) {
  return type == at::kFloat ? static_cast<double>(*static_cast<const float*>(value))
                            : *static_cast<const double*>(value);
}

// Adds 1 to a float or double step counter; returns the new count.
inline double increment(void* value, at::ScalarType type) {
  if (type == at::kFloat) return *static_cast<float*>(value) += 1.0f;
  return *static_cast<double*>(value) += 1.0;
}

// Slot 1 of each parameter stands for its gradient, read from the parameter at every check
// (backward may have made a new one), of which only the data pointer is kept.
struct Plan : torch::CustomClassHolder {
  std::vector<at::Tensor> tensors;  // n_slots per parameter, parameter-major
  std::vector<at::Tensor> steps;    // each parameter's step counter
  std::vector<at::Tensor> frozen;   // the group's parameters that had no gradient
  int64_t n_slots;
  // Read by `check` and used by `run`, so that a step touches each tensor's metadata once:
  // with 1,000 parameters, walking it again costs as much as a tenth of the step.
  Streams streams;
  std::vector<void*> planned;  // each tensor's data pointer when planned (gradients: none)
  std::vector<void*> planned_counters;  // each parameter's step counter's data pointer
  // Tensors the step writes besides `tensors` (a formatted group's codes and scales), each to
  // be found as planned: same memory, sizes and dtype, still plain.
  std::vector<at::Tensor> extras;
  std::vector<void*> planned_extras;
  std::vector<std::vector<int64_t>> extra_sizes;
  std::vector<at::ScalarType> extra_types;
  bool distinct_counters = true;  // a counter shared by two parameters must count twice
  std::vector<int64_t> numels;
  // Each parameter's shape when planned: a formatted group's codes are `extras` of that shape,
  // so a parameter reshaped in place (`p.data = p.data.view(...)`) must not be stepped by them.
  std::vector<std::vector<int64_t>> shapes;
  std::vector<Chunk> chunks, long_chunks;
  // The memory the step writes, [begin, end) per tensor, sorted: the plan's tensors but the
  // gradients, and `also_written` (a formatted group's codes and scales). Disjoint, since a
  // plan is made only when no two of them overlap, and fixed while the plan holds (their data
  // pointers are checked), so a new gradient sharing any of it is found by one binary search.
  std::vector<std::pair<uintptr_t, uintptr_t>> written;

  Plan(std::vector<at::Tensor> tensors_, std::vector<at::Tensor> steps_,
       std::vector<at::Tensor> frozen_, int64_t n_slots_, std::vector<at::Tensor> also_written)
      : tensors(std::move(tensors_)), steps(std::move(steps_)), frozen(std::move(frozen_)),
        n_slots(n_slots_), extras(std::move(also_written)) {
    TORCH_CHECK(n_slots >= 2 && tensors.size() == steps.size() * n_slots,
                "fused plan: ", tensors.size(), " tensors for ", steps.size(),
                " parameters of ", n_slots, " slots");
    streams.data.resize(tensors.size());
    streams.types.resize(tensors.size());
    planned.resize(tensors.size());
    for (size_t t = 0; t < steps.size(); ++t) {
      numels.push_back(tensors[t * n_slots].numel());
      shapes.push_back(tensors[t * n_slots].sizes().vec());
      for (int64_t s = 0; s < n_slots; ++s) {
        const at::Tensor& x = tensors[t * n_slots + s];
        streams.types[t * n_slots + s] = x.scalar_type();
        streams.any_double = streams.any_double || x.scalar_type() == at::kDouble;
        planned[t * n_slots + s] = s == 1 ? nullptr : x.data_ptr();
        if (s != 1) add_written(x);
      }
    }
    for (const at::Tensor& x : extras) {
      add_written(x);
      planned_extras.push_back(x.data_ptr());
      extra_sizes.push_back(x.sizes().vec());
      extra_types.push_back(x.scalar_type());
    }
    std::sort(written.begin(), written.end());
    for (const at::Tensor& c : steps) planned_counters.push_back(c.data_ptr());
    std::vector<void*> sorted = planned_counters;
    std::sort(sorted.begin(), sorted.end());
    distinct_counters = std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
    const std::vector<bool> all(steps.size(), true);
    chunks = make_chunks(numels, all, kChunk);
    long_chunks = make_chunks(numels, all, kLongChunk);
  }

  // Whether the plan can run this step: every parameter has a dense gradient of its shape,
  // every frozen parameter still has none, every counter is a float CPU scalar reading
  // `count`, and every tensor still has the data, shape and dtype the plan was made with and
  // can be read by the kernel. Changes nothing but the plan's cached pointers.
  // Parameters are checked in parallel: the walk is bound by cache misses on tensor metadata.
  bool check(double count) {
    if (!distinct_counters) return false;
    for (const at::Tensor& p : frozen) {
      if (p.grad().defined()) return false;
    }
    std::atomic<bool> ok{true};
    at::parallel_for(0, static_cast<int64_t>(steps.size()), 64, [&](int64_t first, int64_t last) {
      for (int64_t t = first; t < last && ok.load(std::memory_order_relaxed); ++t) {
        if (!check_one(t, count)) ok.store(false, std::memory_order_relaxed);
      }
    });
    if (!ok.load()) return false;
    at::parallel_for(0, static_cast<int64_t>(extras.size()), 256, [&](int64_t first, int64_t last) {
      for (int64_t e = first; e < last && ok.load(std::memory_order_relaxed); ++e) {
        const at::Tensor& x = extras[e];
        if (!plain_memory(x) || x.data_ptr() != planned_extras[e] ||
            x.scalar_type() != extra_types[e] ||
            x.sizes() != at::IntArrayRef(extra_sizes[e])) {
          ok.store(false, std::memory_order_relaxed);
        }
      }
    });
    return ok.load();
  }

  // Whether every counter still reads `count`: checked by `check`, but an earlier group of the
  // same step may have advanced a counter since (a parameter listed in two groups).
  bool counts_hold(double count) const {
    for (size_t t = 0; t < steps.size(); ++t) {
      if (counter_value(planned_counters[t], steps[t].scalar_type()) != count) return false;
    }
    return true;
  }

  // Advances every counter and runs the program over every parameter; call right after a
  // `check` that returned true. False (nothing done) where a counter no longer reads `count`.
  bool run(double count, int64_t n_registers, std::vector<int64_t> code,
           std::vector<double> scalars) {
    const Decoded decoded = decode(n_slots, n_registers, code, scalars);
    if (!counts_hold(count)) return false;
    for (size_t t = 0; t < steps.size(); ++t) {
      increment(planned_counters[t], steps[t].scalar_type());
    }
    const int64_t size = streams.chunk_size(decoded, n_slots);
    run_chunks(decoded, streams, size == kLongChunk ? long_chunks : chunks, size, n_slots,
               n_registers);
    return true;
  }

 private:
  bool check_one(int64_t t, double count) {
    const at::Tensor* xs = tensors.data() + t * n_slots;
    if (xs[0].sizes() != at::IntArrayRef(shapes[t])) return false;
    const at::Tensor& grad = xs[0].grad();
    if (!grad.defined() || !fits(grad, t, 1) || grad.sizes() != xs[0].sizes()) return false;
    // Last step's gradient memory was checked already (numel and the written spans are fixed).
    if (grad.data_ptr() != streams.data[t * n_slots + 1] && shares_written(grad)) return false;
    for (int64_t s = 0; s < n_slots; ++s) {
      if (s != 1 && (!fits(xs[s], t, s) || xs[s].data_ptr() != planned[t * n_slots + s] ||
                     xs[s].sizes() != xs[0].sizes())) {
        return false;
      }
    }
    if (!is_counter(steps[t]) || steps[t].data_ptr() != planned_counters[t] ||
        counter_value(steps[t].data_ptr(), steps[t].scalar_type()) != count) {
      return false;
    }
    // Pointers, not references: the plan must not keep gradients alive after the step (or
    // after a step that is skipped, e.g. for non-finite gradients).
    for (int64_t s = 0; s < n_slots; ++s) {
      streams.data[t * n_slots + s] = s == 1 ? grad.data_ptr() : xs[s].data_ptr();
    }
    return true;
  }

  static std::pair<uintptr_t, uintptr_t> span(const at::Tensor& x) {  // x is contiguous
    const auto begin = reinterpret_cast<uintptr_t>(x.data_ptr());
    return {begin, begin + static_cast<uintptr_t>(x.numel() * x.element_size())};
  }

  void add_written(const at::Tensor& x) {
    if (x.numel() > 0) written.push_back(span(x));
  }

  // Whether a gradient shares memory with a tensor the step writes (it must then be read as
  // it was before the step, which only the general path's one-at-a-time run guarantees).
  bool shares_written(const at::Tensor& grad) const {
    if (grad.numel() == 0) return false;
    const auto [begin, end] = span(grad);
    const auto after = std::partition_point(
        written.begin(), written.end(), [end](const auto& w) { return w.first < end; });
    return after != written.begin() && std::prev(after)->second > begin;
  }

  // A tensor of parameter t's slot s as the plan was made: readable by the kernel, of the
  // parameter's size and of the slot's dtype.
  bool fits(const at::Tensor& x, int64_t t, int64_t s) const {
    return readable(x) && x.numel() == numels[t] &&
           x.scalar_type() == streams.types[t * n_slots + s];
  }
};

}  // namespace rectified_fused
