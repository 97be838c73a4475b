// apps/cnf/train_report.h — what `cnf train` and `cnf demo` share between training and the
// report after it: their arguments, what the loop measured, and the final evaluation that
// writes samples, plots and metrics.json (apps/cnf/train_report.cpp).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "apps/cnf/common.h"
#include "apps/cnf/dist_args.h"
#include "apps/cnf/evaluation.h"
#include "cnf/data/sources.h"
#include "cnf/dist/dist.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

/// The flags of `cnf train` / `cnf demo`.
struct TrainArgs {
  Common common;
  train::FlowSpec spec;
  train::TrainOptions opt;
  EvalArgs eval;
  int64_t dim = 2;
  std::string out = "out/train";
  std::string resume;
  std::string init, init_time = "data-at-0";  // --init torchscript:FILE (fine-tuning)
  int64_t checkpoint_every = 0;
  int64_t log_every = 0;     // 0: about 200 rows per run
  int64_t eval_every = 0;    // 0: no evaluation during training
  int64_t eval_nll_n = 256;  // held-out points of eval_nll at each --eval-every (0: none)
  std::string mle_divergence = "hutchinson";
  bool quiet = false;
  DistArgs dist;  // train only
};

/// What the training loop measured, for the report.
struct TrainRun {
  double seconds = 0, collective_seconds = 0, last_loss = 0;
  int64_t first_step = 0;
  std::vector<double> nfe_steps, nfe_values;  // mle: the NFE of each step's solve
};

/// log rho_0 of `x` under the trainer's current flow (EMA weights when kept): dopri5 at
/// rtol = atol = 1e-5 from the spec's likelihood start; the divergence analytic where the
/// network has it, exact up to 16 entries per point, else Hutchinson's estimate with one
/// Rademacher probe per solve from evaluation stream `stream` of `seed` (the same probes on
/// every call).
torch::Tensor model_log_prob(const train::Trainer& trainer, const data::Source& prior,
                             const torch::Tensor& x, uint64_t seed, uint64_t stream);

/// Samples the trained flow (EMA weights when kept) from t = 1 to 0, scores it against the
/// held-out data and writes samples, plots and metrics (rank 0). Returns the exit code.
int evaluate_and_report(const TrainArgs& a, train::Trainer& trainer, const TrainRun& run,
                        const data::DataSplit& split, const data::Source& prior, dist::Group* group,
                        torch::Device device, double param_diff, bool demo);

}  // namespace cnf::app
