// Which parameters of a run share memory with another tensor of the run, where one of the two
// is written: such parameters must not be stepped in one parallel pass (updates would be lost),
// so the engine runs them one at a time.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace rectified_fused {

struct Span {
  int64_t device;  // device type and index, packed
  uintptr_t begin, end;
  int64_t param;
  bool written;
};

// tensors: n_slots per parameter, parameter-major; read_only: slots that are only read (the
// gradients). A span runs from a tensor's first to its last element, so interleaved views count
// as overlapping (running them one at a time is right either way). Tensors with no elements or
// no memory of their own (wrapper subclasses) have no span.
inline std::vector<int64_t> overlapping(at::TensorList tensors, int64_t n_slots,
                                        at::IntArrayRef read_only) {
  TORCH_CHECK(n_slots > 0 && tensors.size() % n_slots == 0, "overlapping: ", tensors.size(),
              " tensors do not split into slots of ", n_slots);
  std::vector<Span> spans;
  spans.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& x = tensors[i];
    if (!x.defined() || x.numel() == 0 || !x.unsafeGetTensorImpl()->has_storage()) continue;
    const auto* base = static_cast<const char*>(x.unsafeGetTensorImpl()->data());
    if (base == nullptr) continue;
    int64_t last = 0;
    for (int64_t d = 0; d < x.dim(); ++d) last += (x.size(d) - 1) * std::abs(x.stride(d));
    const int64_t slot = static_cast<int64_t>(i) % n_slots;
    const bool written = std::find(read_only.begin(), read_only.end(), slot) == read_only.end();
    const auto begin = reinterpret_cast<uintptr_t>(base);
    spans.push_back({static_cast<int64_t>(x.device().type()) * 65536 + x.device().index(), begin,
                     begin + static_cast<uintptr_t>((last + 1) * x.element_size()),
                     static_cast<int64_t>(i) / n_slots, written});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return std::tie(a.device, a.begin) < std::tie(b.device, b.begin);
  });
  std::vector<bool> flagged;
  size_t first = 0;  // the first span of the current cluster of overlapping spans
  uintptr_t end = 0;
  for (size_t i = 0; i <= spans.size(); ++i) {
    if (i < spans.size() && i > first && spans[i].device == spans[first].device &&
        spans[i].begin < end) {
      end = std::max(end, spans[i].end);
      continue;
    }
    if (i - first > 1) {
      bool any_written = false;
      for (size_t k = first; k < i; ++k) any_written = any_written || spans[k].written;
      for (size_t k = first; k < i && any_written; ++k) {
        if (flagged.size() <= static_cast<size_t>(spans[k].param)) {
          flagged.resize(spans[k].param + 1, false);
        }
        flagged[spans[k].param] = true;
      }
    }
    first = i;
    if (i < spans.size()) end = spans[i].end;
  }
  std::vector<int64_t> params;
  for (size_t p = 0; p < flagged.size(); ++p) {
    if (flagged[p]) params.push_back(static_cast<int64_t>(p));
  }
  return params;
}

}  // namespace rectified_fused
