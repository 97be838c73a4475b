// The dense assignment problem (exact OT between two equal-size uniform sets): shortest
// augmenting paths with Dijkstra scans, scalar and AVX2. Split from emd.cpp, which keeps
// the network simplex for general marginals.
#include <immintrin.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/ot/emd.h"

namespace cnf::ot {

namespace {

// One row of the Dijkstra search below: with i the row reached at distance d_min (base =
// d_min - u_i), relax every column, dist_j = min(dist_j, base + c_ij - v_j) with pred_j = i
// when it improves, and return the smallest dist. Columns already settled are masked
// through their entries, not a flag: the search sets v_j = -inf (so base + c_ij - v_j =
// +inf never improves) and dist_j = +inf (so it never is the minimum), and restores both.
double relax_row_scalar(const double* ci, double base, int64_t i, int64_t n, const double* v,
                        double* dist, int64_t* pred) {
  double best = std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    const double r = base + ci[j] - v[j];
    if (r < dist[j]) {
      dist[j] = r;
      pred[j] = i;
    }
    best = std::min(best, dist[j]);
  }
  return best;
}

// The same in AVX2, four columns at a time (compiled for AVX2 whatever the target flags;
// called only after a run-time CPU check). Same operations in the same order per column,
// so it returns exactly what the scalar version does.
__attribute__((target("avx2"))) double relax_row_avx2(const double* ci, double base, int64_t i,
                                                      int64_t n, const double* v, double* dist,
                                                      int64_t* pred) {
  const __m256d vbase = _mm256_set1_pd(base);
  const __m256i vi = _mm256_set1_epi64x(i);
  __m256d vbest = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d r =
        _mm256_sub_pd(_mm256_add_pd(vbase, _mm256_loadu_pd(ci + j)), _mm256_loadu_pd(v + j));
    const __m256d d = _mm256_loadu_pd(dist + j);
    const __m256d better = _mm256_cmp_pd(r, d, _CMP_LT_OQ);
    const __m256d nd = _mm256_blendv_pd(d, r, better);
    _mm256_storeu_pd(dist + j, nd);
    __m256i* pj = reinterpret_cast<__m256i*>(pred + j);
    _mm256_storeu_si256(
        pj, _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(_mm256_loadu_si256(pj)),
                                                 _mm256_castsi256_pd(vi), better)));
    vbest = _mm256_min_pd(vbest, nd);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, vbest);
  double best = std::min(std::min(lanes[0], lanes[1]), std::min(lanes[2], lanes[3]));
  if (j < n)
    best = std::min(best, relax_row_scalar(ci + j, base, i, n - j, v + j, dist + j, pred + j));
  return best;
}

// The unsettled column at distance `best` (finite; settled columns sit at +inf) to settle
// next: the first free one if any (the path then ends one step sooner), else the first.
__attribute__((target("avx2"))) int64_t next_column(double best, int64_t n, const double* dist,
                                                    const int64_t* row4col, bool avx2) {
  int64_t found = -1;
  auto visit = [&](int64_t k) {  // true when the search can stop at k
    if (dist[k] != best) return false;
    if (found < 0) found = k;
    if (row4col[k] < 0) {
      found = k;
      return true;
    }
    return false;
  };
  int64_t k = 0;
  if (avx2) {
    const __m256d vbest = _mm256_set1_pd(best);
    for (; k + 4 <= n; k += 4) {
      if (int bits =
              _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(dist + k), vbest, _CMP_EQ_OQ)))
        for (int lane = 0; lane < 4; ++lane)
          if ((bits >> lane & 1) && visit(k + lane)) return found;
    }
  }
  for (; k < n; ++k)
    if (visit(k)) return found;
  return found;
}

std::atomic<bool> simd_allowed{true};
bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

// Shortest augmenting paths for the dense assignment problem (Jonker & Volgenant 1987;
// the dual bookkeeping follows Crouse 2016, "On implementing 2D rectangular assignment
// algorithms", Alg. 4). Rows are matched one at a time: Dijkstra from the new row over
// the reduced costs c_ij - u_i - v_j >= 0 finds the cheapest alternating path to a free
// column; the duals are then shifted so that every reduced cost stays >= 0 and the new
// matched pairs have reduced cost 0. Returns col4row.
//
// The Dijkstra scan runs over all columns, settled ones masked through their entries,
// rather than a compacted list of the columns left (contiguous loads: AVX2 relaxes four
// columns per instruction).
std::vector<int64_t> shortest_augmenting_paths(const double* c, int64_t n) {
  const double inf = std::numeric_limits<double>::infinity();
  const bool avx2 = simd_allowed.load(std::memory_order_relaxed) && cpu_has_avx2();
  const auto relax_row = avx2 ? relax_row_avx2 : relax_row_scalar;
  std::vector<double> u(static_cast<size_t>(n), 0.0), v(static_cast<size_t>(n), inf);
  // Column reduction: v_j = min_i c_ij is dual feasible with u = 0, and it lets rows whose
  // cheapest column is still free be matched by a one-step search.
  // Row by row (the matrix is row-major), remembering the first row attaining each minimum.
  std::vector<int64_t> argmin(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const double* ci = c + i * n;
    for (int64_t j = 0; j < n; ++j) {
      // check_finite's message, without its two [n, n] temporaries.
      if (!std::isfinite(ci[j]))
        fail("cost contains a non-finite value (", ci[j], ") at index [", i, ",", j,
             "]; remove or replace NaN/Inf values");
      if (ci[j] < v[j]) {
        v[j] = ci[j];
        argmin[j] = i;
      }
    }
  }
  std::vector<int64_t> col4row(static_cast<size_t>(n), -1), row4col(static_cast<size_t>(n), -1);
  // Greedy start (JV's column reduction): a column goes to the row attaining its minimum when
  // that row is still free. These pairs have reduced cost 0 under (u = 0, v), so the duals
  // stay feasible and complementary, and only the rows left free need a search.
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = argmin[j];
    if (col4row[i] < 0) {
      col4row[i] = j;
      row4col[j] = i;
    }
  }
  std::vector<int64_t> pred(static_cast<size_t>(n));
  std::vector<double> dist(static_cast<size_t>(n)), settled_dist, settled_v;
  std::vector<int64_t> rows_seen, cols_done;
  for (int64_t row = 0; row < n; ++row) {
    if (col4row[row] >= 0) continue;  // matched by the greedy start
    std::fill(dist.begin(), dist.end(), inf);
    rows_seen.clear();
    cols_done.clear();
    settled_dist.clear();
    settled_v.clear();
    double d_min = 0;
    int64_t i = row, sink = -1;
    while (sink < 0) {
      rows_seen.push_back(i);
      const double best =
          relax_row(c + i * n, d_min - u[i], i, n, v.data(), dist.data(), pred.data());
      CNF_CHECK(std::isfinite(best), "assignment: no augmenting path from row ", row,
                "; the cost matrix must be finite");
      const int64_t j = next_column(best, n, dist.data(), row4col.data(), avx2);
      d_min = best;
      // Settle j: keep its distance and dual aside, mask it out of later relaxations.
      cols_done.push_back(j);
      settled_dist.push_back(dist[j]);
      settled_v.push_back(v[j]);
      dist[j] = inf;
      v[j] = -inf;
      if (row4col[j] < 0)
        sink = j;
      else
        i = row4col[j];
    }
    for (size_t k = 0; k < cols_done.size(); ++k) {
      dist[cols_done[k]] = settled_dist[k];
      v[cols_done[k]] = settled_v[k];
    }
    u[row] += d_min;
    for (size_t k = 1; k < rows_seen.size(); ++k) {
      const int64_t r = rows_seen[k];
      u[r] += d_min - dist[col4row[r]];
    }
    for (int64_t j : cols_done) v[j] -= d_min - dist[j];
    for (int64_t j = sink;;) {
      const int64_t r = pred[j];
      row4col[j] = r;
      std::swap(col4row[r], j);
      if (r == row) break;
    }
  }
  return col4row;
}

}  // namespace

void set_assignment_simd(bool enabled) { simd_allowed.store(enabled); }

at::Tensor assignment(const at::Tensor& cost) {
  CNF_CHECK(cost.defined(), "cost is an undefined tensor; pass an [n, n] cost matrix");
  CNF_CHECK(cost.dim() == 2 && cost.size(0) == cost.size(1),
            "assignment needs a square [n, n] cost matrix, got shape ", cost.sizes(),
            "; use emd() or emd_weighted() for sets of different sizes");
  CNF_CHECK(cost.size(0) > 0, "cost matrix is empty (shape ", cost.sizes(),
            "); OT needs at least one point on each side");
  const at::Tensor c = cost.to(torch::kCPU, torch::kFloat64).contiguous();
  // (shortest_augmenting_paths rejects non-finite costs in its first pass.)
  const std::vector<int64_t> col4row = shortest_augmenting_paths(c.data_ptr<double>(), c.size(0));
  return torch::tensor(col4row, torch::kInt64);
}

}  // namespace cnf::ot
