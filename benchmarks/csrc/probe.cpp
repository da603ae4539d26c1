// The memory-bandwidth probe of the benchmarks: one pass that reads p, g, m, v and writes p, m, v
// (28 bytes per fp32 element), with as little arithmetic as a step can have.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace {

constexpr int64_t kGrainElements = 32768;  // the fused kernel's grain

void probe_bandwidth_(at::Tensor p, at::Tensor g, at::Tensor m, at::Tensor v) {
  for (const at::Tensor& x : {p, g, m, v}) {
    TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.scalar_type() == at::kFloat &&
                    x.numel() == p.numel(),
                "probe: four contiguous float32 CPU tensors of one size");
  }
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, p.numel(), kGrainElements, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const float x = gp[i];
      mp[i] += x;
      vp[i] += x;
      pp[i] += x;
    }
  });
}

}  // namespace

TORCH_LIBRARY(rectified_bench, m) {
  m.def("probe_bandwidth_(Tensor(a!) p, Tensor g, Tensor(b!) m, Tensor(c!) v) -> ()",
        &probe_bandwidth_);
}
