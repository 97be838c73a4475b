// The Butcher tableaux of the ODE methods, as data: one registry row each, with its order
// and one citation. The constructor (solve.cpp) checks every row's consistency, and the
// generic tests measure each method's convergence order (tests/test_ode.cpp).
#include "cnf/ode/solve.h"

namespace cnf::ode {

namespace {

// Polynomials in theta as coefficient lists (constant term first).
using Poly = std::vector<double>;
Poly operator*(const Poly& p, const Poly& q) {
  Poly r(p.size() + q.size() - 1, 0.0);
  for (size_t i = 0; i < p.size(); ++i)
    for (size_t j = 0; j < q.size(); ++j) r[i + j] += p[i] * q[j];
  return r;
}
// The tableau's form of a weight b_i(theta): the coefficients of theta^1, theta^2, ...
// (every continuous extension here has b_i(0) = 0).
std::vector<double> without_constant(const Poly& p) { return Poly(p.begin() + 1, p.end()); }

// Dormand–Prince 5(4) dense output of order 4: Shampine's coefficients d_i (Shampine, Math.
// Comp. 46, 1986) in the form of Hairer, Norsett & Wanner, Solving ODEs I, sec. II.6 (their
// DOPRI5 code): with D = y1 - y0, B = dt k1 - D, C = D - dt k7 - B, E = dt sum_i d_i k_i,
//   u(theta) = y0 + theta (D + (1 - theta) (B + theta (C + (1 - theta) E))).
// Expanded in powers of theta, stage i gets the weight
//   b_i(theta) = theta e1_i + theta^2 (3 b_i - 2 e1_i - e7_i + d_i)
//              + theta^3 (e1_i + e7_i - 2 b_i - 2 d_i) + theta^4 d_i,
// with e1, e7 the indicators of the first and last (FSAL) stage.
std::vector<std::vector<double>> dopri5_dense(const std::vector<double>& b) {
  const double d[7] = {-12715105075.0 / 11282082432.0,  0.0,
                       87487479700.0 / 32700410799.0,   -10690763975.0 / 1880347072.0,
                       701980252875.0 / 199316789632.0, -1453857185.0 / 822651844.0,
                       69997945.0 / 29380423.0};
  std::vector<std::vector<double>> w(7);
  for (int i = 0; i < 7; ++i) {
    const double e1 = i == 0 ? 1.0 : 0.0, e7 = i == 6 ? 1.0 : 0.0;
    w[i] = {e1, 3 * b[i] - 2 * e1 - e7 + d[i], e1 + e7 - 2 * b[i] - 2 * d[i], d[i]};
  }
  return w;
}

// Tsitouras 5(4) dense output of order 4: the interpolant b_i(theta) published with the pair
// (Tsitouras, Comput. Math. Appl. 62(2), 2011), in its factored form.
std::vector<std::vector<double>> tsit5_dense() {
  return {
      without_constant(Poly{0, -1.0530884977290216} * Poly{-1.3299890189751412, 1} *
                       Poly{0.7139816917074209, -1.4364028541716351, 1}),
      without_constant(Poly{0, 0, 0.1017} * Poly{1.2949852507374631, -2.1966568338249754, 1}),
      without_constant(Poly{0, 0, 2.490627285651252793} *
                       Poly{1.57803468208092486, -2.38535645472061657, 1}),
      without_constant(Poly{0, 0, -16.54810288924490272} * Poly{-1.21712927295533244, 1} *
                       Poly{-0.61620406037800089, 1}),
      without_constant(Poly{0, 0, 47.37952196281928122} * Poly{-1.203071208372362603, 1} *
                       Poly{-0.658047292653547382, 1}),
      without_constant(Poly{0, 0, -34.87065786149660974} * Poly{-1.2, 1} *
                       Poly{-0.666666666666666667, 1}),
      without_constant(Poly{0, 0, 2.5} * Poly{-1, 1} * Poly{-0.6, 1}),
  };
}

}  // namespace

const Registry<ButcherTableau>& tableaus() {
  static const std::vector<double> dopri5_b = {35.0 / 384,     0.0,       500.0 / 1113, 125.0 / 192,
                                               -2187.0 / 6784, 11.0 / 84, 0.0};
  static const Registry<ButcherTableau> registry(
      "ODE method",
      {
          // Order 1. Euler, Institutionum calculi integralis, vol. 1, 1768.
          {"euler", ButcherTableau("euler", {0.0}, {{}}, {1.0}, 1)},
          // Order 2, the explicit midpoint rule. Runge, Math. Ann. 46, 1895.
          {"midpoint", ButcherTableau("midpoint", {0.0, 0.5}, {{}, {0.5}}, {0.0, 1.0}, 2)},
          // Order 2, the trapezoidal predictor-corrector. Heun, Z. Math. Phys. 45, 1900.
          {"heun", ButcherTableau("heun", {0.0, 1.0}, {{}, {1.0}}, {0.5, 0.5}, 2)},
          // Order 4, the classical method. Kutta, Z. Math. Phys. 46, 1901.
          {"rk4",
           ButcherTableau("rk4", {0.0, 0.5, 0.5, 1.0}, {{}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}},
                          {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}, 4)},
          // Order 3 with an embedded order-2 error estimate (FSAL). Bogacki & Shampine,
          // Appl. Math. Lett. 2(4), 1989.
          {"bosh3",
           ButcherTableau("bosh3", {0.0, 0.5, 0.75, 1.0},
                          {{}, {0.5}, {0.0, 0.75}, {2.0 / 9, 1.0 / 3, 4.0 / 9}},
                          {2.0 / 9, 1.0 / 3, 4.0 / 9, 0.0}, 3,
                          {2.0 / 9 - 7.0 / 24, 1.0 / 3 - 1.0 / 4, 4.0 / 9 - 1.0 / 3, -1.0 / 8}, 2)},
          // Order 5 with an embedded order-4 estimate (FSAL) and Shampine's order-4 dense
          // output. Dormand & Prince, J. Comput. Appl. Math. 6(1), 1980.
          {"dopri5", ButcherTableau(
                         "dopri5", {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0},
                         {{},
                          {1.0 / 5},
                          {3.0 / 40, 9.0 / 40},
                          {44.0 / 45, -56.0 / 15, 32.0 / 9},
                          {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
                          {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
                          {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
                         dopri5_b, 5,
                         {35.0 / 384 - 5179.0 / 57600, 0.0, 500.0 / 1113 - 7571.0 / 16695,
                          125.0 / 192 - 393.0 / 640, -2187.0 / 6784 + 92097.0 / 339200,
                          11.0 / 84 - 187.0 / 2100, -1.0 / 40},
                         4, dopri5_dense(dopri5_b), 4)},
          // Order 5 with an embedded order-4 estimate (FSAL) and an order-4 dense output.
          // Tsitouras, Comput. Math. Appl. 62(2), 2011, Table 1 (b_err is his b - b_hat).
          {"tsit5",
           ButcherTableau(
               "tsit5", {0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0},
               {{},
                {0.161},
                {-0.008480655492356989, 0.335480655492357},
                {2.897153057105493, -6.359448489975075, 4.3622954328695815},
                {5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525},
                {5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
                 -0.028269050394068383},
                {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
                 -3.290069515436081, 2.324710524099774}},
               {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
                -3.290069515436081, 2.324710524099774, 0.0},
               5,
               {0.001780011052226, 0.000816434459657, -0.007880878010262, 0.144711007173263,
                -0.582357165452555, 0.458082105929187, -1.0 / 66},
               4, tsit5_dense(), 4)},
      });
  return registry;
}

}  // namespace cnf::ode
