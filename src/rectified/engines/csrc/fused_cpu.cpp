// The fused CPU engine's kernel: one parallel pass that runs a short program of elementwise
// instructions over every tensor of a bucket.
//
// The program is traced in Python from an update rule (rectified/engines/fused.py), so the
// kernel knows no optimizer: it only knows the elementwise operations of TensorListOps. Work is
// cut into chunks of kChunk elements of one tensor; one parallel region covers the chunks of all
// tensors, and each chunk runs the whole program while its data is in cache, so every state
// tensor is read and written once per step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace rectified_fused {

// Opcodes; the Python tracer uses the same numbers.
enum Op : int64_t {
  kNeg = 0,
  kCopy = 1,
  kSqrt = 2,
  kAdd = 3,         // d = a + s0 * b
  kAddScalar = 4,   // d = a + s0
  kMulScalar = 5,   // d = a * s0
  kMul = 6,         // d = a * b
  kDivScalar = 7,   // d = a / s0
  kDiv = 8,         // d = a / b
  kReciprocal = 9,  // d = 1 / a
  kLerp = 10,       // d = a + s0 * (b - a), in torch.lerp's two-sided form
  kAddcmul = 11,    // d = a + s0 * b * c
  kAddcdiv = 12,    // d = a + s0 * (b / c)
  kMaximum = 13,    // d = max(a, b), NaN-propagating
  kClamp = 14,      // d = min(max(a, s0), s1), NaN-propagating
};

constexpr int64_t kFieldsPerInstruction = 5;  // op, dst, a, b, c
#ifndef RECTIFIED_CHUNK
#define RECTIFIED_CHUNK 1024
#endif
constexpr int64_t kChunk = RECTIFIED_CHUNK;
constexpr int64_t kGrainChunks = 32;  // below ~32k elements one thread is faster

// kAdamStep is internal: a run of instructions that the Adam-family rules emit, found in the
// decoded program and executed as one loop (see fuse_adam_steps). It computes exactly what the
// run computes, keeping every value in registers instead of passing over the chunk once per
// instruction.
constexpr int64_t kAdamStep = 100;

struct Instruction {
  int64_t op, dst, a, b, c;
  double s0, s1;
  // kAdamStep only: registers p, g, m, v, running max of v (-1: none); weights of the run.
  int64_t p = 0, g = 0, m = 0, v = 0, vmax = -1;
  double lerp_weight = 0, beta2 = 0, sq_weight = 0, denom_scale = 0, eps = 0, step = 0;
  bool scaled = false;
};

template <typename T, bool kMax, bool kScaled>
void adam_step(const Instruction& in, T* const* reg, int64_t n) {
  T* p = reg[in.p];
  const T* g = reg[in.g];
  T* m = reg[in.m];
  T* v = reg[in.v];
  T* x = kMax ? reg[in.vmax] : nullptr;
  const T w = static_cast<T>(in.lerp_weight), w_rest = static_cast<T>(1.0 - in.lerp_weight);
  const bool low_weight = std::abs(in.lerp_weight) < 0.5;
  const T beta2 = static_cast<T>(in.beta2), sq = static_cast<T>(in.sq_weight);
  const T scale = static_cast<T>(in.denom_scale), eps = static_cast<T>(in.eps);
  const T step = static_cast<T>(in.step);
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = low_weight ? m[i] + w * (gi - m[i]) : gi - (gi - m[i]) * w_rest;
    T vi = v[i] * beta2;
    vi = vi + sq * gi * gi;
    T si = vi;
    if constexpr (kMax) {
      const T xi = x[i];
      si = (xi != xi) ? xi : ((vi != vi) ? vi : (xi > vi ? xi : vi));
      x[i] = si;
    }
    T ti = std::sqrt(si);
    if constexpr (kScaled) ti = ti / scale;
    ti = ti + eps;
    p[i] = p[i] + step * (mi / ti);
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename T>
void execute(const Instruction& in, T* const* reg, int64_t n) {
  T* d = reg[in.dst];
  const T* a = reg[in.a];
  const T* b = reg[in.b];
  const T* c = reg[in.c];
  const T s0 = static_cast<T>(in.s0);
  const T s1 = static_cast<T>(in.s1);
  switch (in.op) {
    case kNeg:
      for (int64_t i = 0; i < n; ++i) d[i] = -a[i];
      break;
    case kCopy:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i];
      break;
    case kSqrt:
      for (int64_t i = 0; i < n; ++i) d[i] = std::sqrt(a[i]);
      break;
    case kAdd:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * b[i];
      break;
    case kAddScalar:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0;
      break;
    case kMulScalar:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] * s0;
      break;
    case kMul:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] * b[i];
      break;
    case kDivScalar:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] / s0;
      break;
    case kDiv:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] / b[i];
      break;
    case kReciprocal:
      for (int64_t i = 0; i < n; ++i) d[i] = T(1) / a[i];
      break;
    case kLerp:
      // torch.lerp's form: exact at both ends of the weight range.
      if (std::abs(in.s0) < 0.5) {
        for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * (b[i] - a[i]);
      } else {
        const T w = static_cast<T>(1.0 - in.s0);
        for (int64_t i = 0; i < n; ++i) d[i] = b[i] - (b[i] - a[i]) * w;
      }
      break;
    case kAddcmul:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * b[i] * c[i];
      break;
    case kAddcdiv:
      for (int64_t i = 0; i < n; ++i) d[i] = a[i] + s0 * (b[i] / c[i]);
      break;
    case kMaximum:
      for (int64_t i = 0; i < n; ++i) {
        const T x = a[i], y = b[i];
        d[i] = (x != x) ? x : ((y != y) ? y : (x > y ? x : y));
      }
      break;
    case kClamp:
      for (int64_t i = 0; i < n; ++i) {
        const T x = a[i] < s0 ? s0 : a[i];  // a NaN fails both comparisons and stays NaN
        d[i] = x > s1 ? s1 : x;
      }
      break;
    case kAdamStep:
      if (in.vmax >= 0) {
        in.scaled ? adam_step<T, true, true>(in, reg, n) : adam_step<T, true, false>(in, reg, n);
      } else {
        in.scaled ? adam_step<T, false, true>(in, reg, n)
                  : adam_step<T, false, false>(in, reg, n);
      }
      break;
    default:
      TORCH_CHECK(false, "fused engine: unknown opcode ", in.op);
  }
}

bool reads(const Instruction& in, int64_t r) {
  return in.a == r || in.b == r || in.c == r;
}

// Replaces each run
//   m = lerp(m, g, w); v = v * b2; v = v + c * g * g; [x = max(x, v)];
//   t = sqrt(v or x); [t = t / s]; t = t + eps; p = p + step * (m / t)
// whose temporary t is not used afterwards by one kAdamStep.
std::vector<Instruction> fuse_adam_steps(const std::vector<Instruction>& program,
                                         int64_t n_slots) {
  std::vector<Instruction> out;
  const size_t n = program.size();
  size_t i = 0;
  while (i < n) {
    const auto at = [&](size_t j, int64_t op) { return j < n && program[j].op == op; };
    size_t j = i;
    bool matched = at(j, kLerp) && at(j + 1, kMulScalar) && at(j + 2, kAddcmul);
    Instruction fused{kAdamStep, 0, 0, 0, 0, 0.0, 0.0};
    if (matched) {
      const Instruction &lerp = program[j], &mul = program[j + 1], &addcmul = program[j + 2];
      fused.m = lerp.dst;
      fused.g = lerp.b;
      fused.v = mul.dst;
      fused.lerp_weight = lerp.s0;
      fused.beta2 = mul.s0;
      fused.sq_weight = addcmul.s0;
      matched = lerp.a == fused.m && mul.a == fused.v && addcmul.dst == fused.v &&
                addcmul.a == fused.v && addcmul.b == fused.g && addcmul.c == fused.g;
      j += 3;
    }
    int64_t second = fused.v;
    if (matched && at(j, kMaximum) && program[j].dst == program[j].a &&
        program[j].b == fused.v) {
      fused.vmax = second = program[j].dst;
      ++j;
    }
    int64_t t = -1;
    if (matched && at(j, kSqrt) && program[j].a == second && program[j].dst >= n_slots) {
      t = program[j].dst;
      ++j;
    } else {
      matched = false;
    }
    if (matched && at(j, kDivScalar) && program[j].dst == t && program[j].a == t) {
      fused.scaled = true;
      fused.denom_scale = program[j].s0;
      ++j;
    }
    matched = matched && at(j, kAddScalar) && program[j].dst == t && program[j].a == t;
    if (matched) fused.eps = program[j++].s0;
    matched = matched && at(j, kAddcdiv) && program[j].dst == program[j].a &&
              program[j].b == fused.m && program[j].c == t;
    if (matched) {
      fused.p = program[j].dst;
      fused.step = program[j++].s0;
      const std::vector<int64_t> regs = {fused.p, fused.g, fused.m, fused.v, t};
      for (size_t a = 0; a < regs.size(); ++a) {
        for (size_t b = a + 1; b < regs.size(); ++b) matched = matched && regs[a] != regs[b];
        matched = matched && regs[a] != fused.vmax;
      }
      for (size_t k = j; k < n; ++k) matched = matched && !reads(program[k], t);
    }
    if (matched) {
      out.push_back(fused);
      i = j;
    } else {
      out.push_back(program[i++]);
    }
  }
  return out;
}

template <typename T, typename S>
void convert(const S* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

template <typename T>
void load(const void* base, at::ScalarType type, int64_t begin, T* dst, int64_t n) {
  switch (type) {
    case at::kFloat: convert(static_cast<const float*>(base) + begin, dst, n); break;
    case at::kDouble: convert(static_cast<const double*>(base) + begin, dst, n); break;
    case at::kBFloat16: convert(static_cast<const c10::BFloat16*>(base) + begin, dst, n); break;
    case at::kHalf: convert(static_cast<const c10::Half*>(base) + begin, dst, n); break;
    default: break;
  }
}

template <typename T>
void store(const T* src, void* base, at::ScalarType type, int64_t begin, int64_t n) {
  switch (type) {
    case at::kFloat: convert(src, static_cast<float*>(base) + begin, n); break;
    case at::kDouble: convert(src, static_cast<double*>(base) + begin, n); break;
    case at::kBFloat16: convert(src, static_cast<c10::BFloat16*>(base) + begin, n); break;
    case at::kHalf: convert(src, static_cast<c10::Half*>(base) + begin, n); break;
    default: break;
  }
}

struct Chunk {
  int64_t tensor, begin, size;
};

template <typename T>
void run_typed(const std::vector<void*>& data, const std::vector<at::ScalarType>& types,
               const std::vector<Chunk>& chunks, const std::vector<Instruction>& program,
               const std::vector<bool>& written, int64_t n_slots, int64_t n_registers) {
  const at::ScalarType native = c10::CppTypeToScalarType<T>::value;
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), kGrainChunks,
                   [&](int64_t first, int64_t last) {
    std::vector<T> buffer(static_cast<size_t>(n_registers * kChunk));
    std::vector<T*> reg(static_cast<size_t>(n_registers));
    for (int64_t r = n_slots; r < n_registers; ++r) reg[r] = buffer.data() + r * kChunk;
    for (int64_t k = first; k < last; ++k) {
      const Chunk& chunk = chunks[k];
#ifdef RECTIFIED_PREFETCH
      if (k + 1 < last && chunks[k + 1].tensor != chunk.tensor) {
        // The hardware prefetchers lose the streams where a tensor ends; start the next
        // tensor's lines loading while this chunk computes.
        const Chunk& next = chunks[k + 1];
        for (int64_t s = 0; s < n_slots; ++s) {
          const int64_t index = next.tensor * n_slots + s;
          const char* base = static_cast<const char*>(data[index]);
          const int64_t bytes = std::min<int64_t>(RECTIFIED_PREFETCH,
                                                  next.size * c10::elementSize(types[index]));
          for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(base + off);
        }
      }
#endif
      for (int64_t s = 0; s < n_slots; ++s) {
        const int64_t index = chunk.tensor * n_slots + s;
        if (types[index] == native) {
          reg[s] = static_cast<T*>(data[index]) + chunk.begin;  // worked on in place
        } else {
          reg[s] = buffer.data() + s * kChunk;
          load(data[index], types[index], chunk.begin, reg[s], chunk.size);
        }
      }
      for (const Instruction& in : program) execute(in, reg.data(), chunk.size);
      for (int64_t s = 0; s < n_slots; ++s) {
        const int64_t index = chunk.tensor * n_slots + s;
        if (written[s] && types[index] != native) {
          store(reg[s], data[index], types[index], chunk.begin, chunk.size);
        }
      }
    }
  });
}

bool supported(at::ScalarType type) {
  return type == at::kFloat || type == at::kDouble || type == at::kBFloat16 ||
         type == at::kHalf;
}

// A parameter the kernel can take: all its tensors on the CPU, contiguous, of a supported dtype
// and of one size.
bool fusable(const at::Tensor* xs, int64_t n_slots) {
  const int64_t numel = xs[0].numel();
  for (int64_t s = 0; s < n_slots; ++s) {
    const at::Tensor& x = xs[s];
    if (!x.device().is_cpu() || !x.is_contiguous() || !supported(x.scalar_type()) ||
        x.numel() != numel) {
      return false;
    }
  }
  return true;
}

// tensors: n_slots tensors per parameter, parameter-major. Runs the program on every parameter
// the kernel can take and returns the indices of the others, untouched, for another engine. The
// program is checked before any tensor is written, so a bad call changes nothing.
std::vector<int64_t> run_program_(at::TensorList tensors, int64_t n_slots, int64_t n_registers,
                                  at::IntArrayRef code, at::ArrayRef<double> scalars) {
  TORCH_CHECK(n_slots > 0 && n_registers >= n_slots, "fused engine: bad register counts");
  TORCH_CHECK(tensors.size() % n_slots == 0, "fused engine: ", tensors.size(),
              " tensors do not split into slots of ", n_slots);
  const int64_t n_instructions = static_cast<int64_t>(code.size()) / kFieldsPerInstruction;
  TORCH_CHECK(static_cast<int64_t>(code.size()) == n_instructions * kFieldsPerInstruction &&
                  static_cast<int64_t>(scalars.size()) == 2 * n_instructions,
              "fused engine: malformed program");
  std::vector<Instruction> program;
  std::vector<bool> written(static_cast<size_t>(n_slots), false);
  for (int64_t i = 0; i < n_instructions; ++i) {
    const int64_t* f = code.data() + i * kFieldsPerInstruction;
    for (int64_t j = 1; j < kFieldsPerInstruction; ++j) {
      TORCH_CHECK(f[j] >= 0 && f[j] < n_registers, "fused engine: register out of range");
    }
    TORCH_CHECK(f[0] >= kNeg && f[0] <= kClamp, "fused engine: unknown opcode ", f[0]);
    program.push_back({f[0], f[1], f[2], f[3], f[4], scalars[2 * i], scalars[2 * i + 1]});
    if (f[1] < n_slots) written[f[1]] = true;
  }
  program = fuse_adam_steps(program, n_slots);
  const int64_t n_params = static_cast<int64_t>(tensors.size()) / n_slots;
  std::vector<void*> data(tensors.size());
  std::vector<at::ScalarType> types(tensors.size());
  std::vector<Chunk> chunks;
  std::vector<int64_t> skipped;
  bool any_double = false;
  for (int64_t t = 0; t < n_params; ++t) {
    const at::Tensor* xs = tensors.data() + t * n_slots;
    if (!fusable(xs, n_slots)) {
      skipped.push_back(t);
      continue;
    }
    for (int64_t s = 0; s < n_slots; ++s) {
      data[t * n_slots + s] = xs[s].data_ptr();
      types[t * n_slots + s] = xs[s].scalar_type();
      any_double = any_double || xs[s].scalar_type() == at::kDouble;
    }
    const int64_t numel = xs[0].numel();
    for (int64_t begin = 0; begin < numel; begin += kChunk) {
      chunks.push_back({t, begin, std::min(kChunk, numel - begin)});
    }
  }
  if (chunks.empty()) return skipped;
  if (any_double) {
    run_typed<double>(data, types, chunks, program, written, n_slots, n_registers);
  } else {
    run_typed<float>(data, types, chunks, program, written, n_slots, n_registers);
  }
  return skipped;
}

// Adds 1 to every step counter (one-element float tensors on the CPU) and returns the new
// counts: one call instead of a dispatch per parameter. All are checked before any is changed.
std::vector<double> advance_steps_(at::TensorList steps) {
  for (const at::Tensor& t : steps) {
    TORCH_CHECK(t.device().is_cpu() && t.numel() == 1 &&
                    (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble),
                "advance_steps_: step counters must be one-element float CPU tensors");
  }
  std::vector<double> counts;
  counts.reserve(steps.size());
  for (const at::Tensor& t : steps) {
    if (t.scalar_type() == at::kFloat) {
      float* x = t.data_ptr<float>();
      *x += 1.0f;
      counts.push_back(*x);
    } else {
      double* x = t.data_ptr<double>();
      *x += 1.0;
      counts.push_back(*x);
    }
  }
  return counts;
}

// The memory-bandwidth probe of the benchmarks: one pass that reads p, g, m, v and writes p, m, v
// (28 bytes per fp32 element), with as little arithmetic as a step can have.
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
  at::parallel_for(0, p.numel(), kChunk * kGrainChunks, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const float x = gp[i];
      mp[i] += x;
      vp[i] += x;
      pp[i] += x;
    }
  });
}

}  // namespace rectified_fused

TORCH_LIBRARY(rectified_fused, m) {
  m.def(
      "run_program_(Tensor(a!)[] tensors, int n_slots, int n_registers, int[] code, "
      "float[] scalars) -> int[]",
      &rectified_fused::run_program_);
  m.def("advance_steps_(Tensor(a!)[] steps) -> float[]", &rectified_fused::advance_steps_);
  m.def("probe_bandwidth_(Tensor(a!) p, Tensor g, Tensor(b!) m, Tensor(c!) v) -> ()",
        &rectified_fused::probe_bandwidth_);
}
