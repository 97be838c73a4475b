// The cnf command: bad input gets a clear error and a non-zero exit, flags beat config
// files, and train -> sample -> eval works end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cnf/core/runtime.h"
#include "cnf/io/files.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

namespace fs = std::filesystem;

namespace {
using cnf_test::contains;
using cnf_test::run_cnf;

std::string dir() {
  static const auto d = [] {
    auto p = fs::path(::testing::TempDir()) / ("cnf_cli_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A trained checkpoint shared by the tests below (tiny: 200 steps).
const std::string& trained() {
  static const std::string out = [] {
    auto o = dir() + "/run";
    auto r = run_cnf("train --steps 200 --width 32 --depth 2 --eval-n 200 --quiet --out " + o);
    EXPECT_EQ(r.code, 0) << r.output;
    return o;
  }();
  return out;
}

}  // namespace

TEST(CliTest, HelpForEveryVerb) {
  for (std::string verb : {"", "train", "sample", "eval", "demo", "reflow", "distill"}) {
    auto r = run_cnf(verb + " --help");
    EXPECT_EQ(r.code, 0) << verb;
    EXPECT_TRUE(contains(r.output, "--")) << r.output;
  }
  EXPECT_NE(run_cnf("").code, 0);     // a verb is required
  EXPECT_NE(run_cnf("fly").code, 0);  // unknown verb
}

TEST(CliTest, UnknownNamesListValidOnes) {
  auto r = run_cnf("train --data moon --out " + dir() + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "unknown data set 'moon'") && contains(r.output, "moons"))
      << r.output;
}

// Every flag that takes a name (or a value with a range) is checked while the flags are
// parsed: a bad one fails with the valid names before anything else happens. "Before": a
// train run has not created its output folder, and a verb that reads a checkpoint fails on
// the flag, not on the missing checkpoint named beside it.
TEST(CliTest, EveryBadNameFailsBeforeAnyWork) {
  const std::string missing = " --ckpt " + dir() + "/missing.pt";
  const std::string ab = " --a " + dir() + "/missing_a.npy --b " + dir() + "/missing_b.npy";
  struct Row {
    std::string args, flag, valid;
  };
  const std::vector<Row> rows = {
      {"train --eval-method dpri5", "--eval-method", "euler, midpoint, heun, rk4"},
      {"train --mle-method rk45", "--mle-method", "dopri5"},
      {"train --schedule ot", "--schedule", "condot, vp, subvp, ve, cosine"},
      {"train --objective ml", "--objective", "fm, score, mle"},
      {"train --param eps", "--param", "velocity, score, data, noise, v"},
      {"train --weighting snr", "--weighting", "sigma2, likelihood, uniform, min-snr"},
      {"train --weighting min-snr:gamma=0", "--weighting", "gamma must be > 0"},
      {"train --weighting edm:sigma_data=-1", "--weighting", "sigma_data must be > 0"},
      {"train --time-sampling beta", "--time-sampling", "uniform, logit-normal, cosine"},
      {"train --time-sampling logit-normal:s=0", "--time-sampling", "s must be > 0"},
      {"train --time-weighting cosine:m=1", "--time-weighting", "takes no parameters"},
      {"train --eval-rho 0", "--eval-rho", "must be a number > 0"},
      {"train --eval-churn -1", "--eval-churn", "must be a number >= 0"},
      {"train --coupling ot", "--coupling", "independent, exact, sinkhorn, sb"},
      {"train --coupling sinkhorn:epsilon=0.1", "--coupling", "valid keys: eps"},
      {"train --schedule cosine-abar:s=2", "--schedule", "0 <= s < 1"},
      {"train --coupling-scope world", "--coupling-scope", "rank, global"},
      {"train --optimizer sgd", "--optimizer", "adam, adamw"},
      {"train --lr-schedule exponential", "--lr-schedule", "constant, cosine, linear"},
      {"train --arch resnet", "--arch", "mlp, hollow, unet"},
      {"train --activation elu", "--activation", "tanh, relu, silu, selu, gelu, softplus"},
      {"train --time-embedding sin", "--time-embedding", "concat, fourier"},
      {"train --mle-divergence trace", "--mle-divergence", "exact, analytic, hutchinson"},
      {"train --eval-sampler dmp", "--eval-sampler", "ode, pf-ode, em, pc, ddim"},
      {"train --eval-spacing log", "--eval-spacing", "auto, time, lambda"},
      {"train --eval-predictor langevin", "--eval-predictor", "reverse-diffusion"},
      {"train --device tpu", "--device", "cuda:N"},
      {"train --channel-mult 1,x", "--channel-mult", "channel"},
      {"train --lr -1", "", "lr must be > 0"},
      {"train --ema-decay 1", "", "ema_decay must be in [0, 1)"},
      {"demo --eval-method dpri5", "--eval-method", "dopri5"},
      {"sample --out x.npy --method dpri5" + missing, "--method", "dopri5"},
      {"sample --out x.npy --sampler dmp" + missing, "--sampler", "dpm++2m, dpm++2m-sde, euler-a"},
      {"sample --out x.npy --threshold 2" + missing, "--threshold", "and <= 1 (0: off"},
      {"eval --eta 2" + missing, "--eta", ">= 0 and <= 1"},
      {"sample --out x.npy --with-logp --divergence trace" + missing, "--divergence", "hutchinson"},
      {"eval --method dpri5" + missing, "--method", "dopri5"},
      {"nll --method dpri5" + missing, "--method", "dopri5"},
      {"nll --divergence trace" + missing, "--divergence", "exact, analytic, hutchinson"},
      {"score --points p.npy --out s.npy --divergence trace" + missing, "--divergence", "exact"},
      {"reflow --pair-method dpri5" + missing, "--pair-method", "dopri5"},
      {"reflow --lr-schedule exp" + missing, "--lr-schedule", "constant, cosine, linear"},
      {"distill --pair-method dpri5" + missing, "--pair-method", "dopri5"},
      {"export --out m.pt --weights best" + missing, "", "ema, raw"},
      {"ot --method wasserstein" + ab, "--method", "emd, sinkhorn, icnn, critic"},
      {"ot --cost l1" + ab, "--cost", "sqeuclidean"},
      {"experiment nfe-error --schedules condot,ot", "--schedules", "condot, vp"},
      {"experiment samplers --schedule ot", "--schedule", "condot, vp"},
      {"experiment couplings --couplings independent,ot", "--couplings", "exact, sinkhorn"},
      {"experiment mle --methods mle,cnf", "--methods", "mle+steepest"},
      {"experiment images --stage sample", "--stage", "classifier, train, eval"},
      {"experiment time-weighting --variant uniform/beta", "--variant", "logit-normal, cosine"},
      {"experiment bridge --variant sb:0", "--variant", "sb:SIGMA needs a number SIGMA > 0"},
      {"experiment parameterizations --variant fm", "--variant", "OBJECTIVE/PARAM"},
      {"experiment schedules --variant vp/mle", "--variant", "trains fm or score"},
  };
  int k = 0;
  for (const auto& row : rows) {
    const std::string out = dir() + "/never_" + std::to_string(k++);
    auto r = run_cnf(row.args + " --out " + out);
    EXPECT_EQ(r.code, 1) << row.args << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, row.valid)) << row.args << "\n" << r.output;
    if (!row.flag.empty()) {
      EXPECT_TRUE(contains(r.output, row.flag)) << row.args << "\n" << r.output;
    }
    EXPECT_FALSE(contains(r.output, "missing")) << row.args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(out)) << row.args << ": the output was touched before the check";
  }
}

TEST(CliTest, BadTablesNameFileRowAndColumn) {
  const auto ragged = dir() + "/ragged.csv";
  write(ragged, "x,y\n1,2\n3\n");
  auto r = run_cnf("train --data " + ragged + " --out " + dir() + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, ragged) && contains(r.output, "line 3")) << r.output;

  const auto word = dir() + "/word.csv";
  write(word, "1,2\n3,abc\n");
  r = run_cnf("train --data " + word + " --out " + dir() + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, word) && contains(r.output, "line 2")) << r.output;

  const auto nan = dir() + "/nan.npy";
  cnf::io::write_npy(nan, torch::tensor({{1.0, 2.0}, {3.0, std::nan("")}}, torch::kFloat64));
  r = run_cnf("train --data " + nan + " --out " + dir() + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, nan) && contains(r.output, "row 2, column 2")) << r.output;

  const auto garbage = dir() + "/garbage.npy";
  write(garbage, "this is not numpy");
  r = run_cnf("train --data " + garbage + " --out " + dir() + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, garbage)) << r.output;
}

TEST(CliTest, MissingAndTruncatedCheckpoints) {
  const auto out = dir() + "/never.npy";
  auto r = run_cnf("sample --ckpt " + dir() + "/missing.pt --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "missing.pt")) << r.output;
  EXPECT_FALSE(fs::exists(out));  // no output on failure

  const auto cut = dir() + "/cut.pt";
  {
    std::ifstream in(trained() + "/model.pt", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  }
  r = run_cnf("sample --ckpt " + cut + " --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "cut.pt") && contains(r.output, "truncated")) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST(CliTest, SampleScheduleReadsTheFlowOnAnotherPath) {
  // condot and cosine share their log-SNR range, so the flow matching model of condot read on
  // cosine (--sample-schedule) has the same probability flow: dopri5 at 1e-7 moves the same
  // noise to the same samples. Measured 7e-5 apart at most (the two solves take different
  // steps); 1e-3 allows that and fails for a wrong time match or scale (which move samples
  // by O(0.1)).
  const auto& run = trained();
  const auto noise = dir() + "/noise.npy";
  at::Generator gen = cnf::make_generator(4);
  cnf::io::write_npy(noise, torch::randn({300, 2}, gen));
  std::vector<torch::Tensor> x;
  for (std::string extra : {"", " --sample-schedule cosine"}) {
    const auto out = dir() + "/on_path" + std::to_string(x.size()) + ".npy";
    auto r = run_cnf("sample --ckpt " + run + "/model.pt --noise " + noise +
                     " --method dopri5 --rtol 1e-7 --atol 1e-7 --out " + out + extra);
    ASSERT_EQ(r.code, 0) << r.output;
    x.push_back(cnf::io::read_npy(out));
  }
  EXPECT_LT((x[0] - x[1]).abs().max().item<double>(), 1e-3);
  auto r = run_cnf("sample --ckpt " + run + "/model.pt --sample-schedule cosin --out " + dir() +
                   "/never.npy");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "--sample-schedule") && contains(r.output, "cosine")) << r.output;
}

TEST(CliTest, TrainSampleEvalRoundTrip) {
  const auto& run = trained();
  for (auto f : {"model.pt", "config.toml", "samples.npy", "metrics.json", "samples.png",
                 "trajectories.png", "density.png", "density_grid.npy", "sample_density.png",
                 "train_log.csv", "train_log.jsonl", "loss.png", "report.html"})
    EXPECT_TRUE(fs::exists(run + "/" + f)) << f;
  // Two routes to the model's mass in the plot box [-5, 5]^2: the exact log-density on the
  // 100 x 100 grid of cells 0.1 wide, integrated by the midpoint rule, and the fraction of
  // 20,000 of the model's own samples (dopri5) that land in the box. The short-trained model
  // leaves ~1% outside, so both are below 1. Allowance: the midpoint rule's error
  // (h^2 / 24) |laplacian p| integrated, ~1e-3 here, plus 4 binomial standard errors of the
  // fraction (sqrt(0.01 / 20000) = 7e-4 each).
  auto logp = cnf::io::read_npy(run + "/density_grid.npy").to(torch::kFloat64);
  ASSERT_EQ(logp.sizes(), (std::vector<int64_t>{100, 100}));
  const double mass = logp.exp().sum().item<double>() * 0.01;
  const auto many = dir() + "/many.npy";
  auto rs = run_cnf("sample --ckpt " + run + "/model.pt -n 20000 --method dopri5 --out " + many);
  ASSERT_EQ(rs.code, 0) << rs.output;
  auto xs = cnf::io::read_npy(many).to(torch::kFloat64);
  const double inside = (xs.abs() <= 5.0).all(1).to(torch::kFloat64).mean().item<double>();
  std::printf("[ measured ] mass in the box: density grid %.5f, samples %.5f\n", mass, inside);
  EXPECT_NEAR(mass, inside, 1e-3 + 4 * 7e-4);
  EXPECT_LE(mass, 1.0 + 1e-3);
  const auto samples = dir() + "/s.npy", js = dir() + "/s.json";
  auto r = run_cnf("sample --ckpt " + run + "/model.pt -n 123 --method rk4 --steps 10 --out " +
                   samples + " --json " + js);
  ASSERT_EQ(r.code, 0) << r.output;
  auto x = cnf::io::read_npy(samples);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{123, 2}));
  EXPECT_TRUE(contains(cnf::io::read_text(js), "\"nfe\": 40"));  // rk4: 4 stages x 10 steps

  r = run_cnf("eval --ckpt " + run + "/model.pt -n 200 --json " + dir() + "/e.json");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "W2 = "));
  // A model of 2-D data cannot be evaluated against 5-D data.
  r = run_cnf("eval --ckpt " + run + "/model.pt --data gmm:3 --dim 5");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "dimension")) << r.output;
  // Sample output must be a .npy path.
  r = run_cnf("sample --ckpt " + run + "/model.pt --out " + dir() + "/s.txt");
  EXPECT_EQ(r.code, 1);
}

TEST(CliTest, FlagsOverrideConfigFile) {
  const auto cfg = dir() + "/c.toml";
  write(cfg, "# a config\nsteps = 1000\nwidth = 16\n[training]\nbatch_size = 32\nquiet = true\n");
  const auto out = dir() + "/cfg";
  auto r = run_cnf("train --config " + cfg + " --steps 7 --eval-n 50 --out " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto saved = cnf::io::read_text(out + "/config.toml");
  EXPECT_TRUE(contains(saved, "steps=7")) << saved;        // the flag won
  EXPECT_TRUE(contains(saved, "width=16")) << saved;       // the file applied
  EXPECT_TRUE(contains(saved, "batch-size=32")) << saved;  // sections flatten, _ == -
  // The saved configuration reproduces the run.
  r = run_cnf("train --config " + out + "/config.toml --out " + dir() + "/again");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(cnf::io::read_text(dir() + "/again/metrics.json").find("\"train_steps\": 7") !=
                std::string::npos,
            true);

  write(cfg, "steps = 10\nwidht = 16\n");
  r = run_cnf("train --config " + cfg);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "line 2") && contains(r.output, "widht")) << r.output;
  write(cfg, "steps = = 10\n");
  r = run_cnf("train --config " + cfg);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "line 1")) << r.output;
}

TEST(CliTest, NfeErrorExperimentWritesItsTable) {
  const auto out = dir() + "/nfe";
  auto r = run_cnf("experiment nfe-error --steps 30 -n 64 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto csv = cnf::io::read_text(out + "/nfe_error.csv");
  // 2 paths x (3 fixed-step methods x 8 step counts + 6 dopri5 tolerances) rows + header.
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 2 * (3 * 8 + 6) + 1);
  EXPECT_TRUE(contains(csv, "condot,rk4,steps=8,32,")) << csv;  // rk4: 4 NFE per step
  EXPECT_TRUE(fs::exists(out + "/nfe_error.png"));
  EXPECT_TRUE(contains(cnf::io::read_text(out + "/results.json"), "\"nfe_below_1e-02\""));
  r = run_cnf("experiment nfe-error --schedules condot,ddpm --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "condot, vp, subvp, ve, cosine")) << r.output;
  EXPECT_NE(run_cnf("experiment").code, 0);  // an experiment name is required
}

// The reflow, MLE and couplings studies at toy sizes: each writes its table, one row per
// configuration, and refuses unknown names.
TEST(CliTest, StudiesWriteTheirTables) {
  auto r = run_cnf(
      "experiment reflow --rounds 2 --steps 60 --distill-steps 20 --pairs 400 "
      "-n 100 --quiet --out " +
      dir() + "/reflow");
  ASSERT_EQ(r.code, 0) << r.output;
  auto md = cnf::io::read_text(dir() + "/reflow/reflow.md");
  EXPECT_TRUE(contains(md, "| 1 |") && contains(md, "| 2 |")) << md;
  EXPECT_TRUE(fs::exists(dir() + "/reflow/round2/trajectories.png"));

  r = run_cnf(
      "experiment mle --data 8gaussians --methods mle,mle+reg,fm --mle-steps 3 "
      "--fm-steps 30 -n 100 --quiet --out " +
      dir() + "/mle");
  ASSERT_EQ(r.code, 0) << r.output;
  md = cnf::io::read_text(dir() + "/mle/mle.md");
  EXPECT_TRUE(contains(md, "| 8gaussians | mle+reg |")) << md;
  EXPECT_TRUE(fs::exists(dir() + "/mle/density_8gaussians_fm.png"));
  r = run_cnf("experiment mle --methods gan --quiet --out " + dir() + "/mle");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "unknown method 'gan'")) << r.output;

  r = run_cnf(
      "experiment couplings --tasks normal:moons --couplings independent,exact "
      "--seeds 0,1 --steps 20 -n 100 --quiet --out " +
      dir() + "/cpl");
  ASSERT_EQ(r.code, 0) << r.output;
  md = cnf::io::read_text(dir() + "/cpl/couplings.md");
  EXPECT_TRUE(contains(md, "| normal -> moons | exact |")) << md;
  EXPECT_TRUE(fs::exists(dir() + "/cpl/traj_normal_moons_exact.png"));
  r = run_cnf("experiment couplings --tasks moons --quiet --out " + dir() + "/cpl");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "prior:data")) << r.output;
}

TEST(CliTest, TimeWeightingStudyWritesItsTableAndResumes) {
  // --quick on a 2-D set and a mixture with a density (so the KL column is filled), two
  // variants; the second invocation finds every run in runs.jsonl and trains nothing.
  const auto out = dir() + "/tw";
  const std::string args =
      "experiment time-weighting --quick --quiet --tasks moons,gmm:2@3 "
      "--variant uniform --variant uniform/logit-normal:s=0.5 --out " +
      out;
  auto r = run_cnf(args);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "0 of 4 runs reused")) << r.output;
  const auto md = cnf::io::read_text(out + "/time-weighting.md");
  EXPECT_TRUE(contains(md, "| data | time sampling / weighting | W2 dopri5 (floor) | W2 Euler 4 |"))
      << md;
  EXPECT_TRUE(contains(md, "| moons | uniform/logit-normal:s=0.5 |")) << md;
  EXPECT_TRUE(contains(md, "| gmm:2@3 | uniform |")) << md;
  const auto csv = cnf::io::read_text(out + "/results.csv");
  EXPECT_TRUE(contains(csv, "task,variant,seed,w2,w2_floor,")) << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5) << csv;  // header + 4 runs
  EXPECT_TRUE(fs::exists(out + "/w2_vs_nfe_gmm_2_3.png"));
  auto j = nlohmann::json::parse(cnf::io::read_text(out + "/results.json"));
  ASSERT_EQ(j["results"].size(), 4u);
  for (const auto& row : j["results"]) {
    // The mixture has an exact density, so its rows carry a KL; the toy set's do not.
    EXPECT_EQ(row.contains("kl"), row["task"] == "gmm:2@3") << row.dump();
    EXPECT_TRUE(std::isfinite(row["nll"].get<double>())) << row.dump();
  }
  r = run_cnf(args);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "4 of 4 runs reused")) << r.output;
  EXPECT_EQ(cnf::io::read_text(out + "/time-weighting.md"), md);
  r = run_cnf("experiment time-weighting --quick --tasks moons@0 --out " + out);
  EXPECT_TRUE(r.code == 1 && contains(r.output, "SPEC@DIM")) << r.output;

  // The other studies of training choices share the runner: a row per variant.
  struct Row {
    std::string study, variants, rows[2];
  };
  const Row others[] = {
      {"schedules",
       "--variant vp/score --variant ve:sigma_max=50",
       {"| vp/score |", "| ve:sigma_max=50 |"}},
      {"parameterizations",
       "--variant fm/noise --variant score/v",
       {"| fm/noise |", "| score/v |"}},
      {"bridge", "--variant sb:0.5 --variant exact", {"| sb:0.5 |", "| exact |"}}};
  for (const auto& o : others) {
    const auto folder = dir() + "/" + o.study;
    r = run_cnf("experiment " + o.study + " --quick --quiet --tasks moons " + o.variants +
                " --out " + folder);
    ASSERT_EQ(r.code, 0) << r.output;
    const auto table = cnf::io::read_text(folder + "/" + o.study + ".md");
    for (const auto& row : o.rows) EXPECT_TRUE(contains(table, "| moons " + row)) << table;
  }
}

TEST(CliTest, NllScoreAndSamplingWithLogp) {
  const auto& run = trained();
  const auto js = dir() + "/nll.json";
  auto r = run_cnf("nll --ckpt " + run + "/model.pt -n 100 --json " + js);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "NLL = ")) << r.output;
  EXPECT_TRUE(contains(cnf::io::read_text(js), "\"nll_stderr\""));
  r = run_cnf("nll --ckpt " + run + "/model.pt -n 50 --divergence hutchinson --probes 3");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "3 probes")) << r.output;
  r = run_cnf("nll --ckpt " + run + "/model.pt --divergence trace");
  EXPECT_TRUE(r.code == 1 && contains(r.output, "exact, analytic, hutchinson")) << r.output;

  const auto samples = dir() + "/lp.npy";
  r = run_cnf("sample --ckpt " + run + "/model.pt -n 20 --method dopri5 --with-logp --out " +
              samples);
  ASSERT_EQ(r.code, 0) << r.output;
  auto logp = cnf::io::read_npy(dir() + "/lp_logp.npy");
  EXPECT_EQ(logp.sizes(), (std::vector<int64_t>{20}));
  EXPECT_TRUE(torch::isfinite(logp).all().item<bool>());

  const auto scores = dir() + "/score.npy";
  r = run_cnf("score --ckpt " + run + "/model.pt --points " + samples + " --t 0.5 --out " + scores);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(cnf::io::read_npy(scores).sizes(), (std::vector<int64_t>{20, 2}));
  r = run_cnf("score --ckpt " + run + "/model.pt --points " + samples + " --t 1.5 --out " + scores);
  EXPECT_TRUE(r.code == 1 && contains(r.output, "[0, 1)")) << r.output;
}

TEST(CliTest, ResumedTrainingEqualsUninterrupted) {
  // Constant LR (the default), one thread: 20 steps + resume to 40 == 40 steps, bit for bit.
  const auto common = std::string(" --width 16 --depth 2 --eval-n 20 --quiet --threads 1");
  auto r = run_cnf("train --steps 40 --out " + dir() + "/full" + common);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cnf("train --steps 20 --out " + dir() + "/half" + common);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cnf("train --steps 40 --resume " + dir() + "/half/model.pt --out " + dir() + "/resumed" +
              common);
  ASSERT_EQ(r.code, 0) << r.output;
  auto a = cnf::train::load_checkpoint(dir() + "/full/model.pt");
  auto b = cnf::train::load_checkpoint(dir() + "/resumed/model.pt");
  EXPECT_EQ(b.step, 40);
  auto pa = a.model->parameters(), pb = b.model->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;
  // The training log: every step once, the resumed run's rows continuing the cut run's log
  // in the same folder, equal to the uninterrupted run's (the same losses, bit for bit).
  const auto log_common = common + " --log-every 1";
  r = run_cnf("train --steps 40 --out " + dir() + "/log_full" + log_common);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cnf("train --steps 20 --checkpoint-every 10 --out " + dir() + "/log_cut" + log_common);
  ASSERT_EQ(r.code, 0) << r.output;
  {  // What a killed run leaves after its checkpoint at step 20: a row more and a torn line.
    std::ofstream more(dir() + "/log_cut/train_log.jsonl", std::ios::app);
    more << "{\"step\":21,\"loss\":99}\n{\"step\":22,\"lo";
  }
  r = run_cnf("train --steps 40 --resume " + dir() + "/log_cut/model.pt --out " + dir() +
              "/log_cut" + log_common);
  ASSERT_EQ(r.code, 0) << r.output;
  auto rows = [](const std::string& folder) {
    std::vector<nlohmann::json> out;
    std::ifstream in(folder + "/train_log.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  };
  const auto full_log = rows(dir() + "/log_full"), cut_log = rows(dir() + "/log_cut");
  ASSERT_EQ(full_log.size(), 40u);
  ASSERT_EQ(cut_log.size(), 40u);
  for (size_t i = 0; i < 40; ++i) {
    EXPECT_EQ(full_log[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(cut_log[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(full_log[i]["loss"].get<double>(), cut_log[i]["loss"].get<double>()) << i;
  }
  // A row of one step holds that step's loss: the last equals the trainer's final loss.
  const auto metrics = nlohmann::json::parse(cnf::io::read_text(dir() + "/log_full/metrics.json"));
  EXPECT_EQ(full_log.back()["loss"].get<double>(), metrics["final_loss"].get<double>());
  EXPECT_TRUE(std::filesystem::exists(dir() + "/log_full/loss.png"));
  EXPECT_TRUE(std::filesystem::exists(dir() + "/log_full/report.html"));
  // Resuming a run of another network is refused with a message.
  r = run_cnf("train --steps 40 --width 32 --resume " + dir() + "/half/model.pt --out " + dir() +
              "/bad --quiet");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "different model")) << r.output;
}

// --per-row: every row its own adaptive steps; reported as evaluations per row beside the
// calls, and the samples agree with the shared-step solve within the tolerances' reach.
TEST(CliTest, PerRowSamplingReportsEvaluationsPerRowAndRefusesWhatItCannotDo) {
  const std::string ckpt = trained() + "/model.pt";
  const std::string shared = dir() + "/shared.npy", rows = dir() + "/rows.npy";
  auto r = run_cnf("sample --ckpt " + ckpt + " -n 200 --method dopri5 --rtol 1e-7 --atol 1e-7 " +
                   "--out " + shared);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cnf("sample --ckpt " + ckpt + " -n 200 --method dopri5 --rtol 1e-7 --atol 1e-7 " +
              "--per-row --json " + dir() + "/rows.json --out " + rows);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "evaluations per row")) << r.output;
  const auto j = nlohmann::json::parse(cnf::io::read_text(dir() + "/rows.json"));
  EXPECT_GE(j["nfe"].get<double>(), j["nfe_per_row"].get<double>());  // calls >= per-row mean
  // Both solve the same ODE from the same noise to ~1e-7 per step: float32 states agree to
  // well within 1e-4 (the error budget of a few hundred steps at this tolerance).
  const auto a = cnf::io::read_npy(shared), b = cnf::io::read_npy(rows);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4);
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--method euler --per-row", "adaptive method"},
           {"--sampler ddim --per-row", "applies to the ode sampler"},
           {"--sampler pf-ode --method dopri5 --per-row", "applies to the ode sampler"},
           {"--method dopri5 --per-row --with-logp", "drop --per-row"}}) {
    r = run_cnf("sample --ckpt " + ckpt + " -n 10 " + flags + " --out " + dir() + "/bad.npy");
    EXPECT_EQ(r.code, 1) << flags;
    EXPECT_TRUE(contains(r.output, message)) << r.output;
  }
}
