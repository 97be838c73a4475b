// Data sets against their definitions: the modes, radii, arcs, cells and spirals of every
// 2-D toy set (data/sources.h, after FFJORD's toy_data), and the train / held-out split that
// every W2 and NLL figure is measured on.
//
// Tolerances are Monte-Carlo standard errors at n = 200000 draws (4.5 SE: a correct source
// fails a check with probability < 1e-5) plus, where stated, the known bias of the statistic
// (e.g. E|c + noise| = R + s^2 / (2R) for a point on a circle of radius R). A wrong formula
// (a centre, radius, scale, sign or angle) moves these statistics by far more.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/io/files.h"

using namespace cnf;

namespace {

constexpr int64_t kN = 200000;

torch::Tensor draw(const std::string& name, uint64_t seed = 3) {
  auto gen = make_generator(seed);
  return data::make_source(name)->sample(kN, gen).to(torch::kFloat64);
}

double mean_of(const torch::Tensor& x) { return x.mean().item<double>(); }
double sd_of(const torch::Tensor& x) { return x.std().item<double>(); }
double rms_of(const torch::Tensor& x) { return x.pow(2).mean().sqrt().item<double>(); }

// Angles wrapped into (-pi, pi].
torch::Tensor wrap(const torch::Tensor& a) {
  return a - 2 * M_PI * torch::ceil((a - M_PI) / (2 * M_PI));
}

// Binomial standard error of a fraction p of n draws.
double frac_se(double p, double n) { return std::sqrt(p * (1 - p) / n); }

// Concentric rings of radii `radii`, each with probability 1 / K and isotropic noise `s`
// per coordinate, uniform in angle: each point belongs to the nearest radius (the rings are
// >= 4.6 s apart at half spacing), its radius has mean R + s^2 / (2R) and sd s, its
// direction is uniform.
void expect_rings(const torch::Tensor& x, const std::vector<double>& radii, double s) {
  auto r = x.norm(2, 1);
  auto centres = torch::tensor(radii, torch::kFloat64);
  auto ring = (r.unsqueeze(1) - centres.unsqueeze(0)).abs().argmin(1);
  const double k = static_cast<double>(radii.size());
  for (size_t i = 0; i < radii.size(); ++i) {
    auto in = ring == static_cast<int64_t>(i);
    const double m = in.sum().item<double>();
    EXPECT_NEAR(m / kN, 1 / k, 4.5 * frac_se(1 / k, kN)) << "ring " << radii[i];
    auto ri = r.masked_select(in);
    // Mean radius: curvature bias s^2 / (2R) plus 4.5 SE of the mean (s / sqrt(m)).
    EXPECT_NEAR(mean_of(ri), radii[i] + s * s / (2 * radii[i]), 4.5 * s / std::sqrt(m))
        << "ring " << radii[i];
    // Radial sd: SE of a sample sd is s / sqrt(2m); the tangential noise adds O(s^2 / R)
    // (< 0.5% of s here) to the radial spread. 3% covers both.
    EXPECT_NEAR(sd_of(ri), s, 0.03 * s) << "ring " << radii[i];
    // Uniform direction: E cos = E sin = 0 with variance 1/2 each.
    auto xi = x.index({in});
    auto phi = torch::atan2(xi.select(1, 1), xi.select(1, 0));
    EXPECT_NEAR(mean_of(torch::cos(phi)), 0.0, 4.5 * std::sqrt(0.5 / m)) << "ring " << radii[i];
    EXPECT_NEAR(mean_of(torch::sin(phi)), 0.0, 4.5 * std::sqrt(0.5 / m)) << "ring " << radii[i];
  }
}

}  // namespace

TEST(ToyDataTest, EightGaussiansSitAtTheirCentres) {
  // Centres (4 / sqrt 2) (cos k pi/4, sin k pi/4), each with probability 1/8 and sd
  // 0.5 / sqrt 2 per coordinate (FFJORD).
  auto x = draw("8gaussians");
  const double radius = 4 / std::sqrt(2.0), s = 0.5 / std::sqrt(2.0);
  auto angle = torch::arange(8, torch::kFloat64) * (M_PI / 4);
  auto centres = torch::stack({torch::cos(angle), torch::sin(angle)}, 1) * radius;
  auto k = torch::cdist(x, centres).argmin(1);
  for (int64_t i = 0; i < 8; ++i) {
    auto in = k == i;
    const double m = in.sum().item<double>();
    EXPECT_NEAR(m / kN, 1.0 / 8, 4.5 * frac_se(1.0 / 8, kN)) << "mode " << i;
    auto xi = x.index({in});
    // Each cell of the nearest-centre partition is symmetric about its centre's ray and its
    // inner edge is 8 sd away, so the mean of its points is the centre: 4.5 SE (s / sqrt m).
    for (int64_t c = 0; c < 2; ++c)
      EXPECT_NEAR(mean_of(xi.select(1, c)), centres[i][c].item<double>(), 4.5 * s / std::sqrt(m))
          << "mode " << i << " coordinate " << c;
    // Radial sd: 0.2% of points cross a cell boundary (3.1 sd from the centre) and carry
    // residuals O(s); with the SE of a sample sd (s / sqrt(2m) = 0.2%) 2% covers both.
    auto radial = (xi - centres[i]).mv(centres[i] / radius);
    EXPECT_NEAR(sd_of(radial), s, 0.02 * s) << "mode " << i;
  }
}

TEST(ToyDataTest, CirclesAndRingsHaveTheirRadii) {
  expect_rings(draw("circles"), {1.5, 3.0}, 0.08);
  expect_rings(draw("rings"), {0.75, 1.5, 2.25, 3.0}, 0.08);
}

TEST(ToyDataTest, MoonsLieOnTheirTwoArcs) {
  // Before the affine map p = 2 (q - (0.5, 0.25)): the upper arc (cos th, sin th) and the
  // lower arc (1 - cos th, 0.5 - sin th), th ~ U[0, pi], each with probability 1/2, plus
  // N(0, 0.1^2 I). Seen from the lower arc's centre (1, 0.5), the lower arc is the upper arc
  // turned by pi.
  auto q = draw("moons") / 2 + torch::tensor({0.5, 0.25}, torch::kFloat64);
  const double s = 0.1;
  auto upper = q, lower = torch::tensor({1.0, 0.5}, torch::kFloat64) - q;
  // Distance of a point, relative to a centre, to the unit half circle of angles [0, pi].
  auto arc_distance = [](const torch::Tensor& u) {
    auto r = u.norm(2, 1);
    auto on = u.select(1, 1) >= 0;
    auto to_end = torch::minimum((u - torch::tensor({1.0, 0.0}, torch::kFloat64)).norm(2, 1),
                                 (u + torch::tensor({1.0, 0.0}, torch::kFloat64)).norm(2, 1));
    return torch::where(on, (r - 1).abs(), to_end);
  };
  auto is_upper = arc_distance(upper) < arc_distance(lower);
  for (bool up : {true, false}) {
    auto in = is_upper == up;
    const double m = in.sum().item<double>();
    // Where the arcs come closest (0.5 apart) a point is misassigned with probability
    // P(N(0, 0.1^2) > 0.25) = 0.6%; the two arcs are symmetric, so the fractions stay 1/2.
    EXPECT_NEAR(m / kN, 0.5, 4.5 * frac_se(0.5, kN)) << (up ? "upper" : "lower");
    auto u = (up ? upper : lower).index({in});
    auto r = u.norm(2, 1);
    // Radius 1 plus the curvature bias s^2 / 2 = 0.005; misassigned points (< 0.1% of all,
    // residuals ~ 0.3) move it by < 0.001; SE 0.1 / sqrt(m) = 3e-4. 0.008 covers them.
    EXPECT_NEAR(mean_of(r), 1 + s * s / 2, 0.008) << (up ? "upper" : "lower");
    // sd 0.1: the SE (0.2%), the misassigned points (< 1%) and the tangential noise's O(s^2)
    // radial part stay within 3%.
    EXPECT_NEAR(sd_of(r), s, 0.03 * s) << (up ? "upper" : "lower");
    // The angle th ~ U[0, pi] blurred by ~ s tangentially: mean pi/2, variance pi^2/12 + s^2
    // (angles below -pi/2 are read as above pi, where the arc's end spills over).
    auto phi = torch::atan2(u.select(1, 1), u.select(1, 0));
    phi = torch::where(phi < -M_PI / 2, phi + 2 * M_PI, phi);
    const double var = M_PI * M_PI / 12 + s * s;
    EXPECT_NEAR(mean_of(phi), M_PI / 2, 4.5 * std::sqrt(var / m)) << (up ? "upper" : "lower");
    // SE of a variance: sqrt((mu_4 - var^2) / m), mu_4 of U[-pi/2, pi/2] = (pi/2)^4 / 5; 2%.
    EXPECT_NEAR(sd_of(phi) * sd_of(phi), var, 0.02 * var) << (up ? "upper" : "lower");
  }
}

TEST(ToyDataTest, CheckerboardFillsItsEightCells) {
  // Before the factor 2: x_1 ~ U[-2, 2]; x_2 in [0, 1) or [-2, -1) shifted up by 1 in odd
  // columns, so the points fill the 8 unit cells (i, j) with i + j even, i, j in [-2, 1],
  // uniformly: each cell holds 1/8, and the offset inside a cell is U[0, 1)^2.
  auto x = draw("checkerboard") / 2;
  auto cell = torch::floor(x);
  auto i = cell.select(1, 0).to(torch::kLong), j = cell.select(1, 1).to(torch::kLong);
  EXPECT_TRUE(((i + j) % 2 == 0).all().item<bool>());
  EXPECT_GE(cell.min().item<double>(), -2);
  EXPECT_LE(cell.max().item<double>(), 1);
  for (int64_t a = -2; a <= 1; ++a) {
    for (int64_t b = -2; b <= 1; ++b) {
      if ((a + b) % 2 != 0) continue;
      const double m = ((i == a) & (j == b)).sum().item<double>();
      EXPECT_NEAR(m / kN, 1.0 / 8, 4.5 * frac_se(1.0 / 8, kN)) << "cell " << a << ", " << b;
    }
  }
  auto offset = x - cell;
  for (int64_t c = 0; c < 2; ++c) {
    // U[0, 1): mean 1/2 (SE sqrt(1/12 / n)), variance 1/12 (SE sqrt((1/80 - 1/144) / n)).
    auto o = offset.select(1, c);
    EXPECT_NEAR(mean_of(o), 0.5, 4.5 * std::sqrt(1.0 / 12 / kN));
    EXPECT_NEAR(sd_of(o) * sd_of(o), 1.0 / 12, 4.5 * std::sqrt((1.0 / 80 - 1.0 / 144) / kN));
  }
}

TEST(ToyDataTest, PinwheelArmsAreTwistedByTheRadius) {
  // Before the factor 2: f = (1 + 0.3 z_1, 0.05 z_2) rotated by k 2 pi / 5 + 0.25 exp(f_1),
  // k uniform in 0..4. So the radius is |f| ~ f_1, and the polar angle minus 0.25 exp(radius)
  // is k 2 pi / 5 + atan(f_2 / f_1) (FFJORD's pinwheel).
  auto x = draw("pinwheel") / 2;
  auto r = x.norm(2, 1);
  // E|f| = 1 + E f_2^2 / (2 f_1) ~ 1.0014; sd 0.3. SE 0.3 / sqrt(n) = 7e-4; 0.005 covers the
  // bias and 4.5 SE; the sd within 2% (SE 0.16%, the f_2 part 0.1%).
  EXPECT_NEAR(mean_of(r), 1.0, 0.005);
  EXPECT_NEAR(sd_of(r), 0.3, 0.02 * 0.3);
  const double arm = 2 * M_PI / 5;
  auto delta = wrap(torch::atan2(x.select(1, 1), x.select(1, 0)) - 0.25 * torch::exp(r));
  auto k = torch::remainder(torch::round(delta / arm), 5);
  auto e = wrap(delta - torch::round(delta / arm) * arm);
  for (int64_t a = 0; a < 5; ++a) {
    EXPECT_NEAR((k == a).sum().item<double>() / kN, 0.2, 4.5 * frac_se(0.2, kN)) << "arm " << a;
  }
  // Off its arm by atan(f_2 / f_1): rms 0.05 E[1/f_1^2]^(1/2) < 0.06 where f_1 > 0.5 (95% of
  // the points); a wrong twist or arm count spreads e over (-pi/5, pi/5] (rms 0.36).
  // Its mean: reading f_1 as |f| > f_1 shifts e by -0.25 e^f_1 f_2^2 / (2 f_1) ~ -0.001;
  // 4.5 SE = 6e-4.
  auto e_main = e.masked_select(r > 0.5);
  EXPECT_LT(rms_of(e_main), 0.07);
  EXPECT_NEAR(mean_of(e_main), -0.001, 0.002);
}

TEST(ToyDataTest, TwoSpiralsFollowTheirFormula) {
  // Times 3: q = +-r (-cos r, sin r) + N(0, 0.3^2 I), r = 3 pi sqrt(u). The polar angle of
  // the + spiral is pi - r and of the - spiral -r, so wrap(angle + |q|) is pi or 0 up to the
  // noise: e = n_radial + n_tangential / r, rms 0.3 sqrt(1 + E[1/r^2]).
  auto q = draw("2spirals") * 3;
  auto rho = q.norm(2, 1);
  // E r = 2 pi; noise adds E[0.3^2 / (2r)] ~ 0.01; SE 2.2 / sqrt(n) = 0.005.
  EXPECT_NEAR(mean_of(rho), 2 * M_PI, 0.01 + 4.5 * 0.005);
  auto far = rho > 3;  // away from the centre, where the arms are distinct
  auto delta = wrap(torch::atan2(q.select(1, 1), q.select(1, 0)) + rho).masked_select(far);
  const double m = far.sum().item<double>();
  auto plus = delta.abs() > M_PI / 2;
  // Each point is 5 sd from the other arm: the two arms hold 1/2 each.
  EXPECT_NEAR(plus.to(torch::kFloat64).mean().item<double>(), 0.5, 4.5 * frac_se(0.5, m));
  auto e = wrap(torch::where(plus, delta - M_PI, delta));
  // r^2 ~ U[9, 9 pi^2] beyond r = 3: E[1/r^2] = log(pi^2) / (9 pi^2 - 9) = 0.029. The mean of
  // e carries the radial bias 0.3^2 / (2r) ~ 0.008; rms within 5% (second-order terms
  // O(0.3^2 / r) and the SE 0.2%).
  const double expected_rms = 0.3 * std::sqrt(1 + std::log(M_PI * M_PI) / (9 * M_PI * M_PI - 9));
  EXPECT_NEAR(mean_of(e), 0.0, 0.02);
  EXPECT_NEAR(rms_of(e), expected_rms, 0.05 * expected_rms);
}

TEST(ToyDataTest, SwissRollFollowsItsFormula) {
  // Times 5: q = t (cos t, sin t) + N(0, 0.5^2 I), t ~ U[1.5 pi, 4.5 pi]. The polar angle is t
  // mod 2 pi, so e = wrap(angle - |q|) = n_tangential / t - n_radial up to second order:
  // rms 0.5 sqrt(1 + E[1/t^2]), E[1/t^2] = 2 / (13.5 pi^2); the turns are 2 pi (12 sd) apart.
  auto q = draw("swissroll") * 5;
  auto rho = q.norm(2, 1);
  // E t = 3 pi; the radial bias 0.5^2 E[1/(2t)] = 0.015; SE (3 pi / sqrt 3) / sqrt(n) = 0.012.
  EXPECT_NEAR(mean_of(rho), 3 * M_PI, 0.015 + 4.5 * 0.012);
  auto e = wrap(torch::atan2(q.select(1, 1), q.select(1, 0)) - rho);
  const double expected_rms = 0.5 * std::sqrt(1 + 2 / (13.5 * M_PI * M_PI));
  // The mean of e is minus the radial bias (0.015); 4.5 SE = 0.005.
  EXPECT_NEAR(mean_of(e), -0.015, 0.01);
  EXPECT_NEAR(rms_of(e), expected_rms, 0.05 * expected_rms);
}

// ------------------------------------------------------------------ train / held-out split

namespace {
// The first column of each row: the rows of the test table are (i, 2 i), so it names the row.
std::set<int64_t> row_ids(const torch::Tensor& rows) {
  auto ids = rows.select(1, 0).to(torch::kLong).contiguous();
  return std::set<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}
}  // namespace

TEST(DataSplitTest, TableSplitIsDisjointTenPercentCoveringAndStableUnderTheSeed) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("cnf-split-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "rows.npy").string();
  const int64_t n = 1000;
  auto i = torch::arange(n, torch::kFloat32);
  io::write_npy(path, torch::stack({i, 2 * i}, 1));

  auto split = [&](uint64_t seed) { return data::split_source(path, 2, 0, 0.1, seed); };
  auto train_rows = [](const data::DataSplit& s) {
    auto* table = dynamic_cast<const data::Table*>(s.train.get());
    EXPECT_NE(table, nullptr);
    return table ? table->rows() : torch::Tensor();
  };
  auto a = split(7);
  auto train = train_rows(a);
  // 10% held out, the rest trains; rows stay whole ((i, 2 i) pairs).
  ASSERT_EQ(a.holdout.size(0), n / 10);
  ASSERT_EQ(train.size(0), n - n / 10);
  EXPECT_TRUE(torch::equal(a.holdout.select(1, 1), 2 * a.holdout.select(1, 0)));
  EXPECT_TRUE(torch::equal(train.select(1, 1), 2 * train.select(1, 0)));
  // Disjoint, and together every row exactly once.
  auto held = row_ids(a.holdout), trained = row_ids(train);
  EXPECT_EQ(held.size(), static_cast<size_t>(n / 10));
  EXPECT_EQ(trained.size(), static_cast<size_t>(n - n / 10));
  std::set<int64_t> all = held;
  all.insert(trained.begin(), trained.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(n));
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), n - 1);
  // Shuffled, not the first rows: the first 100 ids held out has probability 1 / C(1000, 100).
  EXPECT_NE(*held.rbegin(), n / 10 - 1);
  // Same seed, same split (rows in the same order); another seed, another held-out set.
  auto b = split(7);
  EXPECT_TRUE(torch::equal(a.holdout, b.holdout));
  EXPECT_TRUE(torch::equal(train, train_rows(b)));
  auto c = split(8);
  EXPECT_NE(row_ids(c.holdout), held);
  EXPECT_EQ(row_ids(c.holdout).size(), static_cast<size_t>(n / 10));
  // 10% rounds down, and at least one row is held out.
  io::write_npy(path, torch::stack({i.slice(0, 0, 19), 2 * i.slice(0, 0, 19)}, 1));
  EXPECT_EQ(split(7).holdout.size(0), 1);
  fs::remove_all(dir);
}

TEST(DataSplitTest, SyntheticHeldOutDrawsAreStableUnderTheSeedAndApartFromTraining) {
  auto a = data::split_source("moons", 2, 500, 0.1, 7);
  auto b = data::split_source("moons", 2, 500, 0.1, 7);
  auto c = data::split_source("moons", 2, 500, 0.1, 8);
  ASSERT_EQ(a.holdout.size(0), 500);
  EXPECT_TRUE(torch::equal(a.holdout, b.holdout));
  EXPECT_FALSE(torch::equal(a.holdout, c.holdout));
  // A stream of its own: not the draws of the seed itself (reusing it would hand a run
  // seeded alike its evaluation points).
  auto gen = make_generator(7);
  EXPECT_FALSE(torch::equal(a.holdout, a.train->sample(500, gen)));
}
