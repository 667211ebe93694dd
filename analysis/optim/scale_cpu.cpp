// SCALE's fused step on the CPU (arXiv 2506.16659): each rule reads a matrix from memory as
// few times as its math allows. Built on first use by analysis/optim/cpu_kernels.py.
//
// Every row's reduction has one fixed order (LANES partial sums, then a fixed tree), and the
// column reduction sums fixed blocks of rows in block order, so a result does not depend on
// the thread count or on which thread took which rows; the build turns off fused
// multiply-add contraction for the same reason (the readable path rounds each product).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t LANES = 16;        // independent partial sums of a row's squares
constexpr int64_t COL_BLOCK = 32;    // rows per partial of the column reduction
constexpr int64_t CHUNK = 4;         // lanes_t of column sums held in registers

// GCC's portable vectors: LANES floats that the compiler maps onto the CPU's registers (two
// AVX2 or one AVX-512), so a row's lanes are explicit rather than left to the vectorizer
typedef float lanes_t __attribute__((vector_size(LANES * sizeof(float))));

inline lanes_t load(const float* x) {
  lanes_t v;
  std::memcpy(&v, x, sizeof v);
  return v;
}

inline void store(float* x, lanes_t v) { std::memcpy(x, &v, sizeof v); }

inline float fold(lanes_t acc) {  // a fixed tree over the lanes
  float part[LANES];
  std::memcpy(part, &acc, sizeof acc);
  for (int64_t width = LANES / 2; width > 0; width /= 2)
    for (int64_t k = 0; k < width; ++k) part[k] += part[k + width];
  return part[0];
}

inline float row_sum_of_squares(const float* __restrict x, int64_t n) {
  lanes_t acc = {};
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES) {
    const lanes_t v = load(x + j);
    acc += v * v;
  }
  for (int64_t k = 0; j + k < n; ++k) acc[k] += x[j + k] * x[j + k];
  return fold(acc);
}

// lr / max(sqrt(sum / n), floor): the step size of a row whose squares sum to ``sum``
inline float row_scale(float sum, int64_t n, float lr, float floor) {
  return lr / std::max(std::sqrt(sum / static_cast<float>(n)), floor);
}

inline void update_row(float* __restrict p, const float* __restrict d, int64_t n, float decay,
                       float scale) {
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES) store(p + j, load(p + j) * decay - load(d + j) * scale);
  for (; j < n; ++j) p[j] = p[j] * decay - d[j] * scale;
}

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.dim() == 2 && t.sizes() == like.sizes(),
              "scale_cpu: ", name, " must be a contiguous 2-d float32 CPU tensor of ",
              like.sizes(), ", got ", t.sizes(), " ", t.scalar_type());
}

}  // namespace

// p <- p decay - lr g / max(rms_row(g), floor). Software-pipelined: the loop that updates row
// i with its scale also sums the squares of row i+1, so g streams from memory once and the
// row being updated is read back from cache.
void rows_step(at::Tensor p, const at::Tensor& g, double lr, double decay, double floor) {
  check(p, p, "p");
  check(g, p, "g");
  const int64_t rows = p.size(0), n = p.size(1);
  float* P = p.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  const float d = static_cast<float>(decay), f = static_cast<float>(floor);
  const float step = static_cast<float>(lr);
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    float next = row_sum_of_squares(G + begin * n, n);
    for (int64_t i = begin; i < end; ++i) {
      const float scale = row_scale(next, n, step, f);
      const float* __restrict gi = G + i * n;
      float* __restrict pi = P + i * n;
      if (i + 1 == end) {
        update_row(pi, gi, n, d, scale);
        break;
      }
      const float* __restrict gn = gi + n;
      lanes_t acc = {};
      int64_t j = 0;
      for (; j + LANES <= n; j += LANES) {
        const lanes_t v = load(gn + j);
        acc += v * v;
        store(pi + j, load(pi + j) * d - load(gi + j) * scale);
      }
      for (int64_t k = 0; j + k < n; ++k) {
        acc[k] += gn[j + k] * gn[j + k];
        pi[j + k] = pi[j + k] * d - gi[j + k] * scale;
      }
      next = fold(acc);
    }
  });
}

// p <- p decay - lr g / max(rms_col(g), floor) (the embedding). Every row is read before any
// is updated: blocks of COL_BLOCK rows sum their squares per column, the blocks are summed in
// order, then one pass updates.
void cols_step(at::Tensor p, const at::Tensor& g, double lr, double decay, double floor) {
  check(p, p, "p");
  check(g, p, "g");
  const int64_t rows = p.size(0), n = p.size(1);
  const int64_t blocks = (rows + COL_BLOCK - 1) / COL_BLOCK;
  at::Tensor partial = at::empty({std::max<int64_t>(blocks, 1), n}, p.options());
  float* S = partial.data_ptr<float>();
  float* P = p.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  // a block's column sums of CHUNK columns stay in registers while its rows go by (the rows
  // are a cache-sized block apart, so the next chunk's reads hit the cache); each sum keeps
  // row order, whatever thread took the block
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = b * COL_BLOCK, last = std::min(rows, first + COL_BLOCK);
      float* __restrict s = S + b * n;
      int64_t j = 0;
      for (; j + CHUNK * LANES <= n; j += CHUNK * LANES) {
        lanes_t acc[CHUNK] = {};
        for (int64_t i = first; i < last; ++i)
          for (int64_t c = 0; c < CHUNK; ++c) {
            const lanes_t v = load(G + i * n + j + c * LANES);
            acc[c] += v * v;
          }
        for (int64_t c = 0; c < CHUNK; ++c) store(s + j + c * LANES, acc[c]);
      }
      for (; j < n; ++j) {
        float acc = 0.f;
        for (int64_t i = first; i < last; ++i) acc += G[i * n + j] * G[i * n + j];
        s[j] = acc;
      }
    }
  });
  float* __restrict scale = S;  // block 0's row becomes the per-column step size
  for (int64_t b = 1; b < blocks; ++b)
    for (int64_t j = 0; j < n; ++j) scale[j] += S[b * n + j];
  const float d = static_cast<float>(decay), f = static_cast<float>(floor);
  for (int64_t j = 0; j < n; ++j)
    scale[j] = blocks ? row_scale(scale[j], rows, static_cast<float>(lr), f) : 0.f;
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* __restrict pi = P + i * n;
      const float* __restrict gi = G + i * n;
      for (int64_t j = 0; j < n; ++j) pi[j] = pi[j] * d - gi[j] * scale[j];
    }
  });
}

// m <- lerp(m, g, 1 - beta); p <- p decay - lr m / max(rms_row(m), floor) (the output layer).
// The new momentum row is summed while it is written and is still in cache for the update.
// lerp rounds as torch.lerp_ does: m + w (g - m) for w < 0.5, else g - (g - m)(1 - w).
void momentum_rows_step(at::Tensor p, const at::Tensor& g, at::Tensor m, double beta, double lr,
                        double decay, double floor) {
  check(p, p, "p");
  check(g, p, "g");
  check(m, p, "momentum");
  const int64_t rows = p.size(0), n = p.size(1);
  float* P = p.data_ptr<float>();
  float* M = m.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  const float w = static_cast<float>(1.0 - beta), d = static_cast<float>(decay);
  const float f = static_cast<float>(floor), step = static_cast<float>(lr);
  const bool small = std::abs(w) < 0.5f;
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* __restrict mi = M + i * n;
      const float* __restrict gi = G + i * n;
      lanes_t acc = {};
      int64_t j = 0;
      for (; j + LANES <= n; j += LANES) {
        const lanes_t gv = load(gi + j), mv = load(mi + j), diff = gv - mv;
        const lanes_t x = small ? mv + w * diff : gv - diff * (1.f - w);
        store(mi + j, x);
        acc += x * x;
      }
      for (int64_t k = 0; j + k < n; ++k) {
        const float diff = gi[j + k] - mi[j + k];
        const float x = small ? mi[j + k] + w * diff : gi[j + k] - diff * (1.f - w);
        mi[j + k] = x;
        acc[k] += x * x;
      }
      update_row(P + i * n, mi, n, d, row_scale(fold(acc), n, step, f));
    }
  });
}

TORCH_LIBRARY(scale_lab_cpu, ops) {
  ops.def("rows_step(Tensor(a!) p, Tensor g, float lr, float decay, float floor) -> ()");
  ops.def("cols_step(Tensor(a!) p, Tensor g, float lr, float decay, float floor) -> ()");
  ops.def("momentum_rows_step(Tensor(a!) p, Tensor g, Tensor(b!) m, float beta, float lr, "
          "float decay, float floor) -> ()");
}

TORCH_LIBRARY_IMPL(scale_lab_cpu, CPU, ops) {
  ops.impl("rows_step", &rows_step);
  ops.impl("cols_step", &cols_step);
  ops.impl("momentum_rows_step", &momentum_rows_step);
}
