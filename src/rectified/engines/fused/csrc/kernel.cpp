// The fused CPU engine's kernel: one parallel pass that runs a short program of elementwise
// instructions over every tensor of a bucket.
//
// The program is traced in Python from an update rule (rectified/engines/fused.py), so the
// kernel knows no optimizer: it only knows the elementwise operations of TensorListOps. Work is
// cut into chunks of one tensor (kChunk elements, or kLongChunk where the program is only fused
// loops); one parallel region covers the chunks of all tensors, and each chunk runs the whole
// program while its data is in cache, so every state tensor is read and written once per step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <atomic>
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
constexpr int64_t kChunk = RECTIFIED_CHUNK;  // keeps a chunk's temporaries in L1
// A program made only of fused runs over tensors of the computing dtype needs no temporaries:
// it runs over longer chunks, with less per-chunk work (10 x 1M: 1.1x the probe against 1.3x
// with 1,024-element chunks; 4,096 was in between).
constexpr int64_t kLongChunk = 16384;
constexpr int64_t kGrainElements = 32768;  // below this one thread is faster
constexpr int64_t kPrefetchBytes = 2048;  // of each stream of the next tensor, see run_typed

// kAdamStep and kBoundStep are internal: runs of instructions that the Adam-family rules emit,
// found in the decoded program and executed as one loop each (see MomentRuns). Each keeps every
// value in registers instead of passing over the chunk once per instruction, and computes what
// its run computes in the same order, except that Adam's denominator is rescaled to save a
// division per element (see adam_step): results agree with the instructions up to rounding.
constexpr int64_t kAdamStep = 100;   // Adam, AdamW, AMSGrad, RAdam's rectified step
constexpr int64_t kBoundStep = 101;  // AdaBound, AMSBound: the clipped per-element step size

struct Instruction {
  int64_t op, dst, a, b, c;
  double s0, s1;
  // Fused runs only: registers p, g, m, v, running max of v (-1: none); weights of the run.
  int64_t p = 0, g = 0, m = 0, v = 0, vmax = -1;
  double decay = 1, sign = 1, coupled = 0;  // p <- decay p; g' = sign g [+ coupled p]
  bool has_coupled = false;
  double lerp_weight = 0, beta2 = 0, sq_weight = 0, denom_scale = 1, eps = 0, step = 0;
  double low = 0, high = 0;  // kBoundStep's clipping bounds
};

// What every fused run starts with: the rule's prologue (decoupled decay p <- c p, maximize
// g' = -g, coupled decay g' = g' + λ p: multiplying by 1 where absent is exact) and the moments
// m = lerp(m, g', w); v = v b2 + c g'²; [x = max(x, v)]. `update` returns the second moment the
// step normalises by (v, or x under AMSGrad).
template <typename T, bool kMax, bool kCoupled>
struct Moments {
  T decay, sign, coupled, w, w_rest, beta2, sq;
  bool low_weight;
  explicit Moments(const Instruction& in)
      : decay(static_cast<T>(in.decay)), sign(static_cast<T>(in.sign)),
        coupled(static_cast<T>(in.coupled)), w(static_cast<T>(in.lerp_weight)),
        w_rest(static_cast<T>(1.0 - in.lerp_weight)), beta2(static_cast<T>(in.beta2)),
        sq(static_cast<T>(in.sq_weight)), low_weight(std::abs(in.lerp_weight) < 0.5) {}

  T update(T& p, T g, T& m, T& v, T* x) const {
    p = p * decay;
    g = g * sign;
    if constexpr (kCoupled) g = g + coupled * p;
    m = low_weight ? m + w * (g - m) : g - (g - m) * w_rest;
    v = v * beta2;
    v = v + sq * g * g;
    if constexpr (kMax) {
      const T xi = *x;
      *x = (xi != xi) ? xi : ((v != v) ? v : (xi > v ? xi : v));
      return *x;
    }
    return v;
  }
};

// p <- p + k m / (√v / s + e), computed as p + (k s) m / (√v + e s): one division instead of
// two (the step was compute-bound at two threads, 1.17x the time of torch's fused Adam on data
// in cache), rounding differently in the last place.
// The tensors of a fused run: parameter, gradient, moments, [running max of v].
template <typename T, bool kMax>
struct RunTensors {
  T* p;
  const T* g;
  T *m, *v, *x;
  RunTensors(const Instruction& in, T* const* reg)
      : p(reg[in.p]), g(reg[in.g]), m(reg[in.m]), v(reg[in.v]),
        x(kMax ? reg[in.vmax] : nullptr) {}
};

template <typename T, bool kMax, bool kCoupled>
void adam_step(const Instruction& in, T* const* reg, int64_t n) {
  const auto [p, g, m, v, x] = RunTensors<T, kMax>(in, reg);
  const Moments<T, kMax, kCoupled> moments(in);
  const T eps = static_cast<T>(in.eps * in.denom_scale);
  const T step = static_cast<T>(in.step * in.denom_scale);
  for (int64_t i = 0; i < n; ++i) {
    T pi = p[i], mi = m[i], vi = v[i];
    const T ti = std::sqrt(moments.update(pi, g[i], mi, vi, kMax ? x + i : nullptr)) + eps;
    p[i] = pi + step * (mi / ti);
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename T, bool kMax, bool kCoupled>
void bound_step(const Instruction& in, T* const* reg, int64_t n) {
  const auto [p, g, m, v, x] = RunTensors<T, kMax>(in, reg);
  const Moments<T, kMax, kCoupled> moments(in);
  const T eps = static_cast<T>(in.eps), scale = static_cast<T>(in.denom_scale);
  const T low = static_cast<T>(in.low), high = static_cast<T>(in.high);
  const T step = static_cast<T>(in.step);
  for (int64_t i = 0; i < n; ++i) {
    T pi = p[i], mi = m[i], vi = v[i];
    T ti = std::sqrt(moments.update(pi, g[i], mi, vi, kMax ? x + i : nullptr));
    ti = T(1) / (ti + eps);
    ti = ti * scale;
    ti = ti < low ? low : ti;  // a NaN fails both comparisons and stays NaN
    ti = ti > high ? high : ti;
    p[i] = pi + step * (ti * mi);
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename T, template <typename, bool, bool> class Kind>
void run_step(const Instruction& in, T* const* reg, int64_t n) {
  if (in.vmax >= 0) {
    in.has_coupled ? Kind<T, true, true>::run(in, reg, n) : Kind<T, true, false>::run(in, reg, n);
  } else {
    in.has_coupled ? Kind<T, false, true>::run(in, reg, n)
                   : Kind<T, false, false>::run(in, reg, n);
  }
}

template <typename T, bool kMax, bool kCoupled>
struct AdamKind {
  static void run(const Instruction& in, T* const* reg, int64_t n) {
    adam_step<T, kMax, kCoupled>(in, reg, n);
  }
};

template <typename T, bool kMax, bool kCoupled>
struct BoundKind {
  static void run(const Instruction& in, T* const* reg, int64_t n) {
    bound_step<T, kMax, kCoupled>(in, reg, n);
  }
};

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
      run_step<T, AdamKind>(in, reg, n);
      break;
    case kBoundStep:
      run_step<T, BoundKind>(in, reg, n);
      break;
    default:
      TORCH_CHECK(false, "fused engine: unknown opcode ", in.op);
  }
}

bool reads(const Instruction& in, int64_t r) {
  return in.a == r || in.b == r || in.c == r;
}

// Replaces each run of an optional prologue
//   [p = p * c]; [u = -g]; [u = (u or g) + λ p]
// and the moments of g' (u, or g where there is no prologue on it)
//   m = lerp(m, g', w); v = v * b2; v = v + c * g' * g'; [x = max(x, v)]; t = sqrt(v or x)
// followed by Adam's step
//   [t = t / s]; t = t + eps; p = p + step * (m / t)
// or AdaBound's
//   t = t + eps; t = 1 / t; t = t * s; t = clamp(t, low, high); t = t * m; p = p + step * t
// whose temporaries are not used afterwards, by one kAdamStep or kBoundStep.
class MomentRuns {
 public:
  MomentRuns(const std::vector<Instruction>& program, int64_t n_slots)
      : program_(program), n_slots_(n_slots) {}

  std::vector<Instruction> fuse() {
    std::vector<Instruction> out;
    size_t i = 0;
    while (i < program_.size()) {
      Instruction run{kAdamStep, 0, 0, 0, 0, 0.0, 0.0};
      size_t j = i;
      temps_.clear();
      decayed_ = coupled_p_ = -1;
      if (prologue(j, run) && moments(j, run) && (adam_tail(j, run) || bound_tail(j, run)) &&
          independent(j, run)) {
        out.push_back(run);
        i = j;
      } else {
        out.push_back(program_[i++]);
      }
    }
    return out;
  }

 private:
  const std::vector<Instruction>& program_;
  int64_t n_slots_;
  int64_t t_ = -1;                // the denominator's temporary
  std::vector<int64_t> temps_;    // every temporary the run writes
  int64_t decayed_ = -1, coupled_p_ = -1;  // the slots the prologue decays and reads
  int64_t gradient_ = -1;                  // the register the moments read

  bool at(size_t j, int64_t op) const { return j < program_.size() && program_[j].op == op; }
  bool slot(int64_t r) const { return r < n_slots_; }
  // An in-place instruction on the temporary: t = op(t, ...).
  bool on_t(size_t j, int64_t op) const {
    return at(j, op) && program_[j].dst == t_ && program_[j].a == t_;
  }

  // Sets run.g to the raw gradient slot, and gradient_ to the register the moments must read
  // (the prologue's last temporary); without a prologue on the gradient, gradient_ stays -1.
  bool prologue(size_t& j, Instruction& run) {
    if (at(j, kMulScalar) && program_[j].dst == program_[j].a && slot(program_[j].dst)) {
      decayed_ = program_[j].dst;
      run.decay = program_[j++].s0;
    }
    gradient_ = -1;
    if (at(j, kNeg) && !slot(program_[j].dst) && slot(program_[j].a)) {
      run.sign = -1.0;
      run.g = program_[j].a;
      gradient_ = program_[j].dst;
      temps_.push_back(gradient_);
      ++j;
    }
    if (at(j, kAdd) && !slot(program_[j].dst) && slot(program_[j].b) &&
        (gradient_ >= 0 ? program_[j].a == gradient_ : slot(program_[j].a))) {
      if (gradient_ < 0) run.g = program_[j].a;
      run.has_coupled = true;
      run.coupled = program_[j].s0;
      coupled_p_ = program_[j].b;
      gradient_ = program_[j].dst;
      temps_.push_back(gradient_);
      ++j;
    }
    return true;
  }

  bool moments(size_t& j, Instruction& run) {
    if (!(at(j, kLerp) && at(j + 1, kMulScalar) && at(j + 2, kAddcmul))) return false;
    const Instruction &lerp = program_[j], &mul = program_[j + 1], &addcmul = program_[j + 2];
    if (gradient_ < 0) run.g = gradient_ = lerp.b;  // no prologue: any register
    run.m = lerp.dst;
    run.v = mul.dst;
    run.lerp_weight = lerp.s0;
    run.beta2 = mul.s0;
    run.sq_weight = addcmul.s0;
    if (!(lerp.a == run.m && lerp.b == gradient_ && mul.a == run.v && addcmul.dst == run.v &&
          addcmul.a == run.v && addcmul.b == gradient_ && addcmul.c == gradient_)) {
      return false;
    }
    j += 3;
    int64_t second = run.v;
    if (at(j, kMaximum) && program_[j].dst == program_[j].a && program_[j].b == run.v) {
      run.vmax = second = program_[j].dst;
      ++j;
    }
    if (!(at(j, kSqrt) && program_[j].a == second && !slot(program_[j].dst))) return false;
    t_ = program_[j++].dst;
    temps_.push_back(t_);
    return true;
  }

  bool adam_tail(size_t& j, Instruction& run) {
    size_t k = j;
    if (on_t(k, kDivScalar)) run.denom_scale = program_[k++].s0;
    if (!on_t(k, kAddScalar)) return false;
    run.eps = program_[k++].s0;
    if (!(at(k, kAddcdiv) && program_[k].dst == program_[k].a && program_[k].b == run.m &&
          program_[k].c == t_)) {
      return false;
    }
    run.op = kAdamStep;
    run.p = program_[k].dst;
    run.step = program_[k].s0;
    j = k + 1;
    return true;
  }

  bool bound_tail(size_t& j, Instruction& run) {
    if (!(on_t(j, kAddScalar) && on_t(j + 1, kReciprocal) && on_t(j + 2, kMulScalar) &&
          on_t(j + 3, kClamp) && on_t(j + 4, kMul) && program_[j + 4].b == run.m &&
          at(j + 5, kAdd) && program_[j + 5].dst == program_[j + 5].a &&
          program_[j + 5].b == t_)) {
      return false;
    }
    run.op = kBoundStep;
    run.eps = program_[j].s0;
    run.denom_scale = program_[j + 2].s0;
    run.low = program_[j + 3].s0;
    run.high = program_[j + 3].s1;
    run.p = program_[j + 5].dst;
    run.step = program_[j + 5].s0;
    j += 6;
    return true;
  }

  // The fused loop keeps every value in registers, so its slots must be distinct, the prologue
  // must decay and read the parameter the run steps, and no temporary may be read after the
  // run.
  bool independent(size_t j, const Instruction& run) const {
    if ((decayed_ >= 0 && decayed_ != run.p) || (coupled_p_ >= 0 && coupled_p_ != run.p)) {
      return false;
    }
    const std::vector<int64_t> regs = {run.p, run.g, run.m, run.v};
    for (size_t a = 0; a < regs.size(); ++a) {
      if ((a != 1 && !slot(regs[a])) || regs[a] == run.vmax) return false;
      for (size_t b = a + 1; b < regs.size(); ++b) {
        if (regs[a] == regs[b]) return false;
      }
    }
    if (run.vmax >= 0 && !slot(run.vmax)) return false;
    for (size_t k = j; k < program_.size(); ++k) {
      for (int64_t temp : temps_) {
        if (reads(program_[k], temp)) return false;
      }
    }
    return true;
  }
};

std::vector<Instruction> fuse_moment_steps(const std::vector<Instruction>& program,
                                           int64_t n_slots) {
  return MomentRuns(program, n_slots).fuse();
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
               const std::vector<Chunk>& chunks, int64_t chunk_size,
               const std::vector<Instruction>& program, const std::vector<bool>& written,
               int64_t n_slots, int64_t n_registers) {
  const at::ScalarType native = c10::CppTypeToScalarType<T>::value;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / chunk_size);
  // Long chunks run fused loops on the tensors themselves: no temporaries, no conversions.
  const bool buffered = chunk_size <= kChunk;
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), grain,
                   [&](int64_t first, int64_t last) {
    std::vector<T> buffer(buffered ? static_cast<size_t>(n_registers * kChunk) : 0);
    std::vector<T*> reg(static_cast<size_t>(n_registers));
    for (int64_t r = n_slots; buffered && r < n_registers; ++r) {
      reg[r] = buffer.data() + r * kChunk;
    }
    for (int64_t k = first; k < last; ++k) {
      const Chunk& chunk = chunks[k];
      if (k + 1 < last && chunks[k + 1].tensor != chunk.tensor) {
        // The hardware prefetchers lose the streams where a tensor ends and take a few misses
        // to find the next tensor's; start its first lines loading while this chunk computes.
        // Worth about 4% of a step over 1,000 tensors of 10k (2 KiB a stream was best; 1-8 KiB
        // measured).
        const Chunk& next = chunks[k + 1];
        for (int64_t s = 0; s < n_slots; ++s) {
          const int64_t index = next.tensor * n_slots + s;
          const char* base = static_cast<const char*>(data[index]);
          const int64_t bytes = std::min<int64_t>(kPrefetchBytes,
                                                  next.size * c10::elementSize(types[index]));
          if (written[s]) {
            for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(base + off, 1);
          } else {
            for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(base + off, 0);
          }
        }
      }
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

// A decoded program: the instructions (Adam runs fused) and which input slots it writes.
struct Decoded {
  std::vector<Instruction> program;
  std::vector<bool> written;
};

// Checks and decodes a program before any tensor is touched, so a bad call changes nothing.
Decoded decode(int64_t n_slots, int64_t n_registers, at::IntArrayRef code,
               at::ArrayRef<double> scalars) {
  TORCH_CHECK(n_slots > 0 && n_registers >= n_slots, "fused engine: bad register counts");
  const int64_t n_instructions = static_cast<int64_t>(code.size()) / kFieldsPerInstruction;
  TORCH_CHECK(static_cast<int64_t>(code.size()) == n_instructions * kFieldsPerInstruction &&
                  static_cast<int64_t>(scalars.size()) == 2 * n_instructions,
              "fused engine: malformed program");
  Decoded decoded;
  decoded.written.assign(static_cast<size_t>(n_slots), false);
  for (int64_t i = 0; i < n_instructions; ++i) {
    const int64_t* f = code.data() + i * kFieldsPerInstruction;
    for (int64_t j = 1; j < kFieldsPerInstruction; ++j) {
      TORCH_CHECK(f[j] >= 0 && f[j] < n_registers, "fused engine: register out of range");
    }
    TORCH_CHECK(f[0] >= kNeg && f[0] <= kClamp, "fused engine: unknown opcode ", f[0]);
    decoded.program.push_back(
        {f[0], f[1], f[2], f[3], f[4], scalars[2 * i], scalars[2 * i + 1]});
    if (f[1] < n_slots) decoded.written[f[1]] = true;
  }
  decoded.program = fuse_moment_steps(decoded.program, n_slots);
  return decoded;
}

// Chunks of every taken parameter's elements, of at most `size` elements each.
std::vector<Chunk> make_chunks(const std::vector<int64_t>& numels, const std::vector<bool>& take,
                               int64_t size) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < numels.size(); ++t) {
    if (!take[t]) continue;
    for (int64_t begin = 0; begin < numels[t]; begin += size) {
      chunks.push_back({static_cast<int64_t>(t), begin, std::min(size, numels[t] - begin)});
    }
  }
  return chunks;
}

// The chunk length for a program over tensors of `types` (those of taken parameters) computed
// in `computing`: long where the program is only fused runs over input slots and no tensor needs
// converting.
int64_t chunk_size_for(const Decoded& decoded, const std::vector<at::ScalarType>& types,
                       at::ScalarType computing, int64_t n_slots) {
  for (const Instruction& in : decoded.program) {
    // A run reading its gradient from a temporary needs the temporaries' buffer.
    if ((in.op != kAdamStep && in.op != kBoundStep) || in.g >= n_slots) return kChunk;
  }
  for (at::ScalarType type : types) {
    if (type != computing) return kChunk;
  }
  return kLongChunk;
}

// The opcodes a program decodes to (fused runs included): what the tests check fusion with.
std::vector<int64_t> decoded_ops(int64_t n_slots, int64_t n_registers, at::IntArrayRef code,
                                 at::ArrayRef<double> scalars) {
  std::vector<int64_t> ops;
  for (const Instruction& in : decode(n_slots, n_registers, code, scalars).program) {
    ops.push_back(in.op);
  }
  return ops;
}

// Runs a decoded program over `chunks` of the tensors at `data`, in float64 if any of them is
// float64, else in float32.
void run_chunks(const Decoded& decoded, const std::vector<void*>& data,
                const std::vector<at::ScalarType>& types, const std::vector<Chunk>& chunks,
                int64_t size, bool any_double, int64_t n_slots, int64_t n_registers) {
  if (chunks.empty()) return;
  if (any_double) {
    run_typed<double>(data, types, chunks, size, decoded.program, decoded.written, n_slots,
                      n_registers);
  } else {
    run_typed<float>(data, types, chunks, size, decoded.program, decoded.written, n_slots,
                     n_registers);
  }
}

// Runs a decoded program over `n_params` parameters of n_slots tensors each (parameter-major),
// skipping those for which `take` is false.
void run_decoded(const Decoded& decoded, const at::Tensor* tensors, int64_t n_params,
                 int64_t n_slots, int64_t n_registers, const std::vector<bool>& take) {
  std::vector<void*> data(static_cast<size_t>(n_params * n_slots));
  std::vector<at::ScalarType> types(data.size(), at::kFloat);
  std::vector<int64_t> numels(static_cast<size_t>(n_params), 0);
  bool any_double = false;
  for (int64_t t = 0; t < n_params; ++t) {
    if (!take[t]) continue;
    const at::Tensor* xs = tensors + t * n_slots;
    for (int64_t s = 0; s < n_slots; ++s) {
      data[t * n_slots + s] = xs[s].data_ptr();
      types[t * n_slots + s] = xs[s].scalar_type();
      any_double = any_double || xs[s].scalar_type() == at::kDouble;
    }
    numels[t] = xs[0].numel();
  }
  const at::ScalarType computing = any_double ? at::kDouble : at::kFloat;
  std::vector<at::ScalarType> taken_types;
  for (int64_t t = 0; t < n_params; ++t) {
    if (take[t]) taken_types.insert(taken_types.end(), types.begin() + t * n_slots,
                                    types.begin() + (t + 1) * n_slots);
  }
  const int64_t size = chunk_size_for(decoded, taken_types, computing, n_slots);
  run_chunks(decoded, data, types, make_chunks(numels, take, size), size, any_double, n_slots,
             n_registers);
}

// tensors: n_slots tensors per parameter, parameter-major. Runs the program on every parameter
// the kernel can take and returns the indices of the others, untouched, for another engine.
std::vector<int64_t> run_program_(at::TensorList tensors, int64_t n_slots, int64_t n_registers,
                                  at::IntArrayRef code, at::ArrayRef<double> scalars) {
  const Decoded decoded = decode(n_slots, n_registers, code, scalars);
  TORCH_CHECK(tensors.size() % n_slots == 0, "fused engine: ", tensors.size(),
              " tensors do not split into slots of ", n_slots);
  const int64_t n_params = static_cast<int64_t>(tensors.size()) / n_slots;
  std::vector<bool> take(static_cast<size_t>(n_params));
  std::vector<int64_t> skipped;
  for (int64_t t = 0; t < n_params; ++t) {
    take[t] = fusable(tensors.data() + t * n_slots, n_slots);
    if (!take[t]) skipped.push_back(t);
  }
  run_decoded(decoded, tensors.data(), n_params, n_slots, n_registers, take);
  return skipped;
}

// Adds 1 to one-element float CPU counters (checked by the caller) and returns the new counts.
// Adds 1 to a float or double step counter at `value`; returns the new count.
double increment(void* value, at::ScalarType type) {
  if (type == at::kFloat) return *static_cast<float*>(value) += 1.0f;
  return *static_cast<double*>(value) += 1.0;
}

std::vector<double> advance(const std::vector<at::Tensor>& steps) {
  std::vector<double> counts;
  counts.reserve(steps.size());
  for (const at::Tensor& t : steps) counts.push_back(increment(t.data_ptr(), t.scalar_type()));
  return counts;
}

bool is_counter(const at::Tensor& t) {
  return t.device().is_cpu() && t.numel() == 1 &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

double counter_value(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ? static_cast<double>(*t.data_ptr<float>())
                                       : *t.data_ptr<double>();
}

// The tensors of a param group's fused step, kept between steps so that a step passes no
// tensor list from Python: converting thousands of tensors into a list on every call costs more
// than the arithmetic of small parameters. Slot 1 of each parameter stands for its gradient,
// read from the parameter at every check (backward may have made a new one), of which only the
// data pointer is kept. The Python side checks
// that the group's parameters and state tensors are the ones the plan holds; `check` verifies
// what only the tensors can tell.
struct Plan : torch::CustomClassHolder {
  std::vector<at::Tensor> tensors;  // n_slots per parameter, parameter-major
  std::vector<at::Tensor> steps;    // each parameter's step counter
  std::vector<at::Tensor> frozen;   // the group's parameters that had no gradient
  int64_t n_slots;
  // Read by `check` and used by `run`, so that a step touches each tensor's metadata once:
  // with 1,000 parameters, walking it again costs as much as a tenth of the step.
  std::vector<void*> data;
  std::vector<at::ScalarType> types;
  std::vector<void*> counters;
  std::vector<int64_t> numels;
  std::vector<Chunk> chunks, long_chunks;
  bool any_double = false;

  Plan(std::vector<at::Tensor> tensors_, std::vector<at::Tensor> steps_,
       std::vector<at::Tensor> frozen_, int64_t n_slots_)
      : tensors(std::move(tensors_)), steps(std::move(steps_)), frozen(std::move(frozen_)),
        n_slots(n_slots_) {
    TORCH_CHECK(n_slots >= 2 && tensors.size() == steps.size() * n_slots,
                "fused plan: ", tensors.size(), " tensors for ", steps.size(),
                " parameters of ", n_slots, " slots");
    data.resize(tensors.size());
    types.resize(tensors.size());
    counters.resize(steps.size());
    for (size_t t = 0; t < steps.size(); ++t) {
      numels.push_back(tensors[t * n_slots].numel());
      for (int64_t s = 0; s < n_slots; ++s) {
        types[t * n_slots + s] = tensors[t * n_slots + s].scalar_type();
        any_double = any_double || types[t * n_slots + s] == at::kDouble;
      }
    }
    const std::vector<bool> all(steps.size(), true);
    chunks = make_chunks(numels, all, kChunk);
    long_chunks = make_chunks(numels, all, kLongChunk);
  }

  // Whether the plan can run this step: every parameter has a dense gradient of its shape,
  // every frozen parameter still has none, every counter is a float CPU scalar reading
  // `count`, and every tensor still has the size and dtype the plan was made with and fits the
  // kernel. Changes nothing but the plan's cached pointers.
  // Parameters are checked in parallel: the walk is bound by cache misses on tensor metadata.
  bool check(double count) {
    for (const at::Tensor& p : frozen) {
      if (p.grad().defined()) return false;
    }
    std::atomic<bool> ok{true};
    at::parallel_for(0, static_cast<int64_t>(steps.size()), 64, [&](int64_t first, int64_t last) {
      for (int64_t t = first; t < last && ok.load(std::memory_order_relaxed); ++t) {
        if (!check_one(t, count)) ok.store(false, std::memory_order_relaxed);
      }
    });
    return ok.load();
  }

  // Advances every counter and runs the program over every parameter; call right after a
  // `check` that returned true.
  void run(int64_t n_registers, std::vector<int64_t> code, std::vector<double> scalars) {
    const Decoded decoded = decode(n_slots, n_registers, code, scalars);
    for (size_t t = 0; t < steps.size(); ++t) increment(counters[t], steps[t].scalar_type());
    const int64_t size =
        chunk_size_for(decoded, types, any_double ? at::kDouble : at::kFloat, n_slots);
    run_chunks(decoded, data, types, size == kLongChunk ? long_chunks : chunks, size,
               any_double, n_slots, n_registers);
  }

 private:
  bool check_one(int64_t t, double count) {
    const at::Tensor* xs = tensors.data() + t * n_slots;
    const at::Tensor& grad = xs[0].grad();
    if (!grad.defined() || grad.layout() != at::kStrided || grad.sizes() != xs[0].sizes() ||
        !fits(grad, t, 1)) {
      return false;
    }
    for (int64_t s = 0; s < n_slots; ++s) {
      if (s != 1 && !fits(xs[s], t, s)) return false;
    }
    if (!is_counter(steps[t]) || counter_value(steps[t]) != count) return false;
    // Pointers, not references: the plan must not keep gradients alive after the step (or
    // after a step that is skipped, e.g. for non-finite gradients).
    for (int64_t s = 0; s < n_slots; ++s) {
      data[t * n_slots + s] = s == 1 ? grad.data_ptr() : xs[s].data_ptr();
    }
    counters[t] = steps[t].data_ptr();
    return true;
  }

  // A tensor of parameter t's slot s as the plan was made: on the CPU, contiguous, of the
  // parameter's size and of the slot's dtype.
  bool fits(const at::Tensor& x, int64_t t, int64_t s) const {
    return x.device().is_cpu() && x.layout() == at::kStrided && x.is_contiguous() &&
           x.numel() == numels[t] && x.scalar_type() == types[t * n_slots + s];
  }
};

// Adds 1 to every step counter (one-element float tensors on the CPU) and returns the new
// counts: one call instead of a dispatch per parameter. All are checked before any is changed.
std::vector<double> advance_steps_(at::TensorList steps) {
  for (const at::Tensor& t : steps) {
    TORCH_CHECK(is_counter(t), "advance_steps_: step counters must be one-element float CPU "
                "tensors");
  }
  return advance(steps.vec());
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
  at::parallel_for(0, p.numel(), kGrainElements, [&](int64_t first, int64_t last) {
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
  m.def("decoded_ops(int n_slots, int n_registers, int[] code, float[] scalars) -> int[]",
        &rectified_fused::decoded_ops);
  m.class_<rectified_fused::Plan>("Plan")
      .def(torch::init<std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>, int64_t>())
      .def("check", &rectified_fused::Plan::check)
      .def("run", &rectified_fused::Plan::run);
  m.def("probe_bandwidth_(Tensor(a!) p, Tensor g, Tensor(b!) m, Tensor(c!) v) -> ()",
        &rectified_fused::probe_bandwidth_);
}
