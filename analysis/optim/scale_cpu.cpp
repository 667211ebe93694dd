// SCALE's fused step on the CPU (arXiv 2506.16659): each rule reads a matrix from memory as
// few times as its math allows. Built on first use by analysis/optim/cpu_kernels.py.
//
// Every row's reduction has one fixed order (LANES partial sums, then a fixed tree), and the
// column reduction sums fixed blocks of rows in block order, so a result does not depend on
// the thread count or on which thread took which rows; the build turns off fused
// multiply-add contraction for the same reason (the readable path rounds each product).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace {

constexpr int64_t LANES = 16;        // independent partial sums of a row's squares
constexpr int64_t COL_BLOCK = 32;    // rows per partial of the column reduction
constexpr int64_t CHUNK = 4;         // lanes_t of column sums held in registers
constexpr int64_t GROUP_BLOCKS = 32; // blocks summed into one partial of the column reduction
constexpr int64_t PIECE_ROWS = 64;   // rows per work item of the rows rule

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

// p <- p decay - u scale along a row (u: the gradient or the momentum)
inline void update_row(float* __restrict p, const float* __restrict u, int64_t n, float decay,
                       float scale) {
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES) store(p + j, load(p + j) * decay - load(u + j) * scale);
  for (; j < n; ++j) p[j] = p[j] * decay - u[j] * scale;
}

// a float vector's bit patterns, for telling +0.0 (all bits clear) from every other value
typedef uint32_t bits_t __attribute__((vector_size(LANES * sizeof(uint32_t))));

inline bits_t bits_of(lanes_t v) {
  bits_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.dim() == 2 && t.sizes() == like.sizes(),
              "scale_cpu: ", name, " must be a contiguous 2-d float32 CPU tensor of ",
              like.sizes(), ", got ", t.sizes(), " ", t.scalar_type());
}

}  // namespace

// Rows [begin, end) of one matrix: p <- p decay - lr g / max(rms_row(g), floor).
// Software-pipelined: the loop that updates row i with its scale also sums the squares of row
// i+1, so g streams from memory once and the row being updated is read back from cache.
void rows_range(float* P, const float* G, int64_t n, int64_t begin, int64_t end, float d,
                float step, float f) {
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
}

// The rows rule on every matrix of a group in one parallel loop (as torch's foreach SGD does):
// the matrices are cut into pieces of PIECE_ROWS rows, and a thread's consecutive pieces of one
// matrix run as one pipelined range.
void per_unit_step(at::TensorList ps, at::TensorList gs, double lr, double decay, double floor) {
  TORCH_CHECK(ps.size() == gs.size(), "scale_cpu: ", ps.size(), " weights but ", gs.size(),
              " gradients");
  std::vector<std::pair<int64_t, int64_t>> pieces;  // (matrix, first row)
  for (size_t m = 0; m < ps.size(); ++m) {
    check(ps[m], ps[m], "p");
    check(gs[m], ps[m], "g");
    for (int64_t r = 0; r < ps[m].size(0); r += PIECE_ROWS) pieces.emplace_back(m, r);
  }
  const float d = static_cast<float>(decay), f = static_cast<float>(floor);
  const float step = static_cast<float>(lr);
  at::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last;) {
      const int64_t m = pieces[k].first, begin = pieces[k].second;
      while (k < last && pieces[k].first == m) ++k;
      const int64_t rows = ps[m].size(0);
      const int64_t end = k < static_cast<int64_t>(pieces.size()) && pieces[k].first == m
                              ? pieces[k].second : rows;
      rows_range(ps[m].data_ptr<float>(), gs[m].data_ptr<float>(), ps[m].size(1), begin, end,
                 d, step, f);
    }
  });
}

// p <- p decay - lr g / max(rms_col(g), floor) (the embedding). Every row is read before any
// is updated: blocks of COL_BLOCK rows sum their squares per column, the blocks are summed in
// order, then one pass updates.
void per_unit_dim0_step(at::Tensor p, const at::Tensor& g, double lr, double decay, double floor) {
  check(p, p, "p");
  check(g, p, "g");
  const int64_t rows = p.size(0), n = p.size(1);
  const int64_t blocks = (rows + COL_BLOCK - 1) / COL_BLOCK;
  const int64_t groups = (blocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
  at::Tensor partial = at::zeros({std::max<int64_t>(groups, 1), n}, p.options());
  float* S = partial.data_ptr<float>();
  float* P = p.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  // An embedding's gradient is +0.0 in every row whose token the batch did not hold (most
  // rows, at a small batch over a large vocabulary). Without decay such a row's update is
  // p - (+0.0) scale = p: the reduction marks the rows it saw a nonzero bit in, and the update
  // skips the others, bit for bit the same, neither g nor p read again (-0.0 is not skipped:
  // it would turn p = -0.0 into +0.0)
  std::vector<uint8_t> touched(rows, 0);
  // a block's column sums of CHUNK columns stay in registers while its rows go by (the block
  // is cache-sized, so the next chunk's reads hit the cache), then join its group's partial
  // sums in block order: each sum has one order, whatever thread took the group
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    bits_t seen[COL_BLOCK];
    for (int64_t b = begin * GROUP_BLOCKS; b < std::min(blocks, end * GROUP_BLOCKS); ++b) {
      const int64_t first = b * COL_BLOCK, last = std::min(rows, first + COL_BLOCK);
      float* __restrict s = S + (b / GROUP_BLOCKS) * n;
      std::fill(seen, seen + COL_BLOCK, bits_t{});
      int64_t j = 0;
      for (; j + CHUNK * LANES <= n; j += CHUNK * LANES) {
        lanes_t acc[CHUNK] = {};
        for (int64_t i = first; i < last; ++i) {
          // the same columns of the next block's row: its lines are in cache when it comes
          // (measured: the reduction 10% faster on 32000 x 512 than with the hardware's alone)
          if (i + COL_BLOCK < rows)
            for (int64_t c = 0; c < CHUNK; ++c)
              __builtin_prefetch(G + (i + COL_BLOCK) * n + j + c * LANES, 0, 3);
          bits_t any = {};
          for (int64_t c = 0; c < CHUNK; ++c) {
            const lanes_t v = load(G + i * n + j + c * LANES);
            acc[c] += v * v;
            any |= bits_of(v);
          }
          seen[i - first] |= any;
        }
        for (int64_t c = 0; c < CHUNK; ++c) store(s + j + c * LANES, load(s + j + c * LANES) + acc[c]);
      }
      for (; j < n; ++j) {
        float acc = 0.f;
        for (int64_t i = first; i < last; ++i) {
          const float x = G[i * n + j];
          acc += x * x;
          uint32_t bits;
          std::memcpy(&bits, &x, sizeof bits);
          seen[i - first][0] |= bits;
        }
        s[j] += acc;
      }
      for (int64_t i = first; i < last; ++i)
        for (int64_t k = 0; k < LANES; ++k) touched[i] |= seen[i - first][k] != 0;
    }
  });
  float* __restrict scale = S;  // group 0's row becomes the per-column step size
  for (int64_t b = 1; b < groups; ++b)
    for (int64_t j = 0; j < n; ++j) scale[j] += S[b * n + j];
  const float d = static_cast<float>(decay), f = static_cast<float>(floor);
  for (int64_t j = 0; j < n; ++j)
    scale[j] = blocks ? row_scale(scale[j], rows, static_cast<float>(lr), f) : 0.f;
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (d == 1.f && !touched[i]) continue;
      float* __restrict pi = P + i * n;
      const float* __restrict gi = G + i * n;
      int64_t j = 0;
      for (; j + LANES <= n; j += LANES)
        store(pi + j, load(pi + j) * d - load(gi + j) * load(scale + j));
      for (; j < n; ++j) pi[j] = pi[j] * d - gi[j] * scale[j];
    }
  });
}

// m <- lerp(m, g, 1 - beta); p <- p decay - lr m / max(rms_row(m), floor) (the output layer).
// Pipelined as the rows rule is: the loop that updates row i of p with its momentum row (still
// in cache) also blends and sums row i+1 of the momentum. lerp rounds as torch.lerp_ does:
// m + w (g - m) for w < 0.5, else g - (g - m)(1 - w).
void momentum_per_unit_step(at::Tensor p, const at::Tensor& g, at::Tensor m, double beta, double lr,
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
  auto blend = [&](auto mv, auto gv) {   // one float or LANES of them
    return small ? mv + w * (gv - mv) : gv - (gv - mv) * (1.f - w);
  };
  // row i's new momentum, written in place; returns its sum of squares. With ``update``, the
  // same loop steps row ``update`` of p with ``scale``
  auto blend_row = [&](int64_t i, float* __restrict pu, const float* __restrict mu, float scale) {
    float* __restrict mi = M + i * n;
    const float* __restrict gi = G + i * n;
    lanes_t acc = {};
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
      const lanes_t x = blend(load(mi + j), load(gi + j));
      store(mi + j, x);
      acc += x * x;
      if (pu) store(pu + j, load(pu + j) * d - load(mu + j) * scale);
    }
    for (int64_t k = 0; j + k < n; ++k) {
      const float x = blend(mi[j + k], gi[j + k]);
      mi[j + k] = x;
      acc[k] += x * x;
      if (pu) pu[j + k] = pu[j + k] * d - mu[j + k] * scale;
    }
    return fold(acc);
  };
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    float next = blend_row(begin, nullptr, nullptr, 0.f);
    for (int64_t i = begin; i < end; ++i) {
      const float scale = row_scale(next, n, step, f);
      if (i + 1 == end) {
        update_row(P + i * n, M + i * n, n, d, scale);
        break;
      }
      next = blend_row(i + 1, P + i * n, M + i * n, scale);
    }
  });
}

// Adam on a group's vectors (norm gains, biases): the readable chain's scale_by_adam in its
// order of operations, all vectors in one call (torch's foreach path spends more on nine calls
// than on the arithmetic). eps_raw: m_hat / (sqrt(v) + eps) * sqrt(1 - b2^t) / (1 - b1^t) (the
// SCALE code release); else (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) (torch AdamW).
void adam_step(at::TensorList ps, at::TensorList gs, at::TensorList ms, at::TensorList vs,
               double beta1, double beta2, double eps, bool eps_raw, int64_t t, double lr,
               double decay) {
  TORCH_CHECK(ps.size() == gs.size() && ps.size() == ms.size() && ps.size() == vs.size(),
              "scale_cpu: adam_step needs as many gradients and moments as weights");
  const float w1 = static_cast<float>(1.0 - beta1), b2 = static_cast<float>(beta2);
  const float w2 = static_cast<float>(1.0 - beta2), e = static_cast<float>(eps);
  const float c1 = static_cast<float>(1.0 - std::pow(beta1, t));
  const float c2 = static_cast<float>(1.0 - std::pow(beta2, t));
  const float raw = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)) / (1.0 - std::pow(beta1, t)));
  const float step = static_cast<float>(-lr), d = static_cast<float>(decay);
  const bool small = std::abs(w1) < 0.5f;
  int64_t total = 0;
  for (size_t k = 0; k < ps.size(); ++k) {
    for (const at::Tensor* t_ : {&gs[k], &ms[k], &vs[k]})
      TORCH_CHECK(t_->device().is_cpu() && t_->scalar_type() == at::kFloat && t_->is_contiguous() &&
                      t_->numel() == ps[k].numel(),
                  "scale_cpu: adam_step's tensors must be contiguous float32 like their weight");
    TORCH_CHECK(ps[k].is_contiguous() && ps[k].scalar_type() == at::kFloat,
                "scale_cpu: adam_step's weights must be contiguous float32");
    total += ps[k].numel();
  }
  // small groups (the usual: a few thousand gains) in this thread; large ones tensor by tensor
  const int64_t grain = total < (1 << 16) ? static_cast<int64_t>(ps.size()) : 1;
  at::parallel_for(0, static_cast<int64_t>(ps.size()), grain, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      float* P = ps[k].data_ptr<float>();
      float* M = ms[k].data_ptr<float>();
      float* V = vs[k].data_ptr<float>();
      const float* G = gs[k].data_ptr<float>();
      for (int64_t j = 0, n = ps[k].numel(); j < n; ++j) {
        const float g = G[j];
        M[j] = small ? M[j] + w1 * (g - M[j]) : g - (g - M[j]) * (1.f - w1);
        V[j] = V[j] * b2 + w2 * g * g;
        const float update = eps_raw ? M[j] / (std::sqrt(V[j]) + e) * raw
                                     : (M[j] / c1) / (std::sqrt(V[j] / c2) + e);
        P[j] = P[j] * d + step * update;
      }
    }
  });
}

TORCH_LIBRARY(scale_lab_cpu, ops) {
  ops.def("per_unit_step(Tensor(a!)[] p, Tensor[] g, float lr, float decay, float floor) -> ()");
  ops.def("per_unit_dim0_step(Tensor(a!) p, Tensor g, float lr, float decay, float floor) -> ()");
  ops.def("momentum_per_unit_step(Tensor(a!) p, Tensor g, Tensor(b!) m, float beta, float lr, "
          "float decay, float floor) -> ()");
  ops.def("adam_step(Tensor(a!)[] p, Tensor[] g, Tensor(b!)[] m, Tensor(c!)[] v, float beta1, "
          "float beta2, float eps, bool eps_raw, int t, float lr, float decay) -> ()");
}

TORCH_LIBRARY_IMPL(scale_lab_cpu, CPU, ops) {
  ops.impl("per_unit_step", &per_unit_step);
  ops.impl("per_unit_dim0_step", &per_unit_dim0_step);
  ops.impl("momentum_per_unit_step", &momentum_per_unit_step);
  ops.impl("adam_step", &adam_step);
}
