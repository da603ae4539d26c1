// Running a decoded program over many tensors: chunks of every parameter's elements, one
// parallel region over all chunks, each chunk running the whole program while it is in cache.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "primitives.h"
#include "program.h"
#include "steps.h"
#include "tensor_io.h"

namespace rectified_fused {

#ifndef RECTIFIED_CHUNK
#define RECTIFIED_CHUNK 1024
#endif
constexpr int64_t kChunk = RECTIFIED_CHUNK;  // keeps a chunk's temporaries in L1
// A program of named operations needs no temporaries: it runs over longer chunks, with less
// per-chunk work (10 x 1M: 1.1x the probe against 1.3x with 1,024-element chunks; 4,096 was
// in between).
constexpr int64_t kLongChunk = 16384;
constexpr int64_t kGrainElements = 32768;  // below this one thread is faster
constexpr int64_t kPrefetchBytes = 2048;   // of each stream of the next tensor, see run_typed

struct Chunk {
  int64_t tensor, begin, size;
};

// Chunks of every taken parameter's elements, of at most `size` elements each.
inline std::vector<Chunk> make_chunks(const std::vector<int64_t>& numels,
                                      const std::vector<bool>& take, int64_t size) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < numels.size(); ++t) {
    if (!take[t]) continue;
    for (int64_t begin = 0; begin < numels[t]; begin += size) {
      chunks.push_back({static_cast<int64_t>(t), begin, std::min(size, numels[t] - begin)});
    }
  }
  return chunks;
}

// The tensors of a run, parameter-major (n_slots per parameter): where their data is, of which
// dtype, and whether any is float64 (the program then computes in float64, else float32).
struct Streams {
  std::vector<void*> data;
  std::vector<at::ScalarType> types;
  bool any_double = false;

  // Long chunks only where the program is only named operations over input slots and every
  // tensor is of the computing dtype (nothing to convert through a buffer).
  int64_t chunk_size(const Decoded& decoded, int64_t n_slots) const {
    if (!only_named(decoded, n_slots)) return kChunk;
    const at::ScalarType computing = any_double ? at::kDouble : at::kFloat;
    for (at::ScalarType type : types) {
      if (type != computing) return kChunk;
    }
    return kLongChunk;
  }
};

template <typename T>
void execute(const Instruction& in, T* const* reg, int64_t n) {
  if (is_named(in.op)) {
    run_named<T>(in, reg, n);
  } else {
    run_primitive<T>(in, reg, n);
  }
}

template <typename T>
void run_typed(const Streams& streams, const std::vector<Chunk>& chunks, int64_t chunk_size,
               const Decoded& decoded, int64_t n_slots, int64_t n_registers) {
  const auto& data = streams.data;
  const auto& types = streams.types;
  const at::ScalarType native = c10::CppTypeToScalarType<T>::value;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / chunk_size);
  // Long chunks run named loops on the tensors themselves: no temporaries, no conversions.
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
          if (decoded.written[s]) {
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
      for (const Instruction& in : decoded.program) execute(in, reg.data(), chunk.size);
      for (int64_t s = 0; s < n_slots; ++s) {
        const int64_t index = chunk.tensor * n_slots + s;
        if (decoded.written[s] && types[index] != native) {
          store(reg[s], data[index], types[index], chunk.begin, chunk.size);
        }
      }
    }
  });
}

inline void run_chunks(const Decoded& decoded, const Streams& streams,
                       const std::vector<Chunk>& chunks, int64_t chunk_size, int64_t n_slots,
                       int64_t n_registers) {
  if (chunks.empty()) return;
  if (streams.any_double) {
    run_typed<double>(streams, chunks, chunk_size, decoded, n_slots, n_registers);
  } else {
    run_typed<float>(streams, chunks, chunk_size, decoded, n_slots, n_registers);
  }
}

}  // namespace rectified_fused
