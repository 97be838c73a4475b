// Data-parallel training across processes (issue #11): two ranks on loopback train what one
// process accumulating two micro-batches trains; checkpoints move between 2 processes and 1;
// a rank that dies or hangs stops the other with an error inside the timeout.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "cnf/core/runtime.h"
#include "cnf/dist/dist.h"
#include "cnf/io/files.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

using cnf_test::contains;
using cnf_test::run_cnf;
using cnf_test::spawn_cnf;
using cnf_test::wait_for;
namespace fs = std::filesystem;

namespace {

std::string dir() {
  static const std::string d = [] {
    auto p = fs::path(::testing::TempDir()) / ("cnf_dist_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

// Every tensor under `ar`, by its path of keys.
void tensors_of(torch::serialize::InputArchive& ar, const std::string& prefix,
                std::map<std::string, torch::Tensor>& out) {
  for (const auto& key : ar.keys()) {
    c10::IValue v;
    if (!ar.try_read(key, v)) continue;
    if (v.isObject()) {
      torch::serialize::InputArchive sub;
      if (ar.try_read(key, sub)) tensors_of(sub, prefix + key + "/", out);
    } else if (v.isTensor()) {
      out[prefix + key] = v.toTensor();
    }
  }
}

// The trained weights of a checkpoint ("model" entry), by name.
std::map<std::string, torch::Tensor> weights(const std::string& path) {
  torch::serialize::InputArchive ar, model;
  ar.load_from(path);
  EXPECT_TRUE(ar.try_read("model", model)) << path;
  std::map<std::string, torch::Tensor> out;
  tensors_of(model, "", out);
  return out;
}

double max_weight_diff(const std::string& a, const std::string& b) {
  auto wa = weights(a), wb = weights(b);
  EXPECT_EQ(wa.size(), wb.size());
  EXPECT_FALSE(wa.empty());
  double diff = 0;
  for (const auto& [key, t] : wa) {
    EXPECT_TRUE(wb.count(key)) << key;
    if (wb.count(key)) diff = std::max(diff, (t - wb.at(key)).abs().max().item<double>());
  }
  return diff;
}

nlohmann::json metrics(const std::string& out) {
  return nlohmann::json::parse(cnf::io::read_text(out + "/metrics.json"));
}

// A small 2-D model and run; one thread per process, constant LR. The EMA is on so that the
// checkpoints carry more than the weights.
const std::string kRun =
    "train --data moons --width 16 --depth 2 --batch-size 64 --ema-decay 0.9 --threads 1 "
    "--seed 3 --eval-n 60 --eval-steps 4 --quiet --dist-timeout 20";

// After k steps, two ranks agree with each other exactly and with one process that
// accumulates the same two shards. Tolerance: the per-step gradient is (g_0 + g_1) / 2 in
// both runs; float32 addition of two terms commutes, so they agree bit for bit unless Gloo
// or the kernels sum in another grouping. 1e-5 allows a few float32 ulps of the weights
// (|w| ~ 1, eps 6e-8) amplified over 30 Adam steps of lr 1e-3.
constexpr double kWeightTol = 1e-5;

TEST(DistTest, TwoRanksTrainWhatOneProcessAccumulatingTwoShardsTrains) {
  const std::string two = dir() + "/two", one = dir() + "/one", plain = dir() + "/plain";
  auto r2 = run_cnf(kRun + " --steps 30 --nproc 2 --out " + two);
  ASSERT_EQ(r2.code, 0) << r2.output;
  auto r1 = run_cnf(kRun + " --steps 30 --accumulate 2 --out " + one);
  ASSERT_EQ(r1.code, 0) << r1.output;
  auto m2 = metrics(two);
  EXPECT_EQ(m2["world_size"], 2);
  EXPECT_EQ(m2["shards"], 2);
  EXPECT_EQ(m2["global_batch"], 128);
  EXPECT_EQ(m2["rank_param_max_diff"], 0.0);  // the ranks' weights agree bit for bit
  EXPECT_GT(m2["allreduce_seconds"].get<double>(), 0.0);
  EXPECT_EQ(m2["n_eval"], 60);  // the ranks' shares of the samples, gathered
  EXPECT_EQ(metrics(one)["shards"], 2);
  const double diff = max_weight_diff(two + "/model.pt", one + "/model.pt");
  std::printf("largest weight difference, 2 ranks vs 1 process --accumulate 2: %g\n", diff);
  EXPECT_LE(diff, kWeightTol);
  // Shard 0 alone (a plain run) is a different training: the second shard matters.
  auto r0 = run_cnf(kRun + " --steps 30 --out " + plain);
  ASSERT_EQ(r0.code, 0) << r0.output;
  EXPECT_GT(max_weight_diff(two + "/model.pt", plain + "/model.pt"), 1e-4);
}

TEST(DistTest, ResumesTwoRankCheckpointInOneProcessAndBack) {
  const std::string full = dir() + "/full";
  ASSERT_EQ(run_cnf(kRun + " --steps 30 --accumulate 2 --out " + full).code, 0);
  // 2 processes -> 1 process with --accumulate 2.
  const std::string a = dir() + "/a", a2 = dir() + "/a2";
  ASSERT_EQ(run_cnf(kRun + " --steps 15 --nproc 2 --out " + a).code, 0);
  auto r = run_cnf(kRun + " --steps 30 --accumulate 2 --resume " + a + "/model.pt --out " + a2);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "restart")) << r.output;
  EXPECT_LE(max_weight_diff(a2 + "/model.pt", full + "/model.pt"), kWeightTol);
  // 1 process with --accumulate 2 -> 2 processes.
  const std::string b = dir() + "/b", b2 = dir() + "/b2";
  ASSERT_EQ(run_cnf(kRun + " --steps 15 --accumulate 2 --out " + b).code, 0);
  r = run_cnf(kRun + " --steps 30 --nproc 2 --resume " + b + "/model.pt --out " + b2);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_LE(max_weight_diff(b2 + "/model.pt", full + "/model.pt"), kWeightTol);
  // Another number of shards per step continues the weights, with a note that the random
  // streams restart.
  const std::string c = dir() + "/c";
  r = run_cnf(kRun + " --steps 20 --resume " + a + "/model.pt --out " + c);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "2 shard(s) per step")) << r.output;
  EXPECT_TRUE(contains(r.output, "restart")) << r.output;
  EXPECT_EQ(cnf::train::load_checkpoint(c + "/model.pt").step, 20);
}

// Two ranks started by hand (as on two hosts); `stop` ends or freezes rank 1 once training
// runs. Rank 0 must stop with a clear error inside the timeout, its last checkpoint intact.
void expect_peer_failure_detected(const std::string& name, int stop) {
  const std::string out = dir() + "/" + name, log0 = out + "_rank0.log", log1 = out + "_rank1.log";
  const double timeout = 4;
  const std::string args = kRun +
                           " --steps 1000000 --checkpoint-every 20 --world-size 2 "
                           "--master-addr 127.0.0.1 --master-port " +
                           std::to_string(cnf::dist::free_loopback_port()) +
                           " --dist-timeout 4 --out " + out;
  const pid_t rank0 = spawn_cnf(args + " --rank 0", log0);
  const pid_t rank1 = spawn_cnf(args + " --rank 1", log1);
  // Training has started once a periodic checkpoint exists (step 20 or later).
  const auto t_start = std::chrono::steady_clock::now();
  int64_t step = 0;
  while (std::chrono::steady_clock::now() - t_start < std::chrono::seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    try {
      step = cnf::train::load_checkpoint(out + "/model.pt").step;
    } catch (const std::exception&) {
      step = 0;  // not written yet, or being replaced (the rename is atomic, the probe not)
    }
    if (step >= 20) break;
  }
  ASSERT_GE(step, 20) << cnf::io::read_text(log0);
  ::kill(rank1, stop);
  const auto t_stop = std::chrono::steady_clock::now();
  const int code0 = wait_for(rank0);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_stop).count();
  ::kill(rank1, SIGKILL);  // ends a stopped process too
  wait_for(rank1);
  const std::string said = cnf::io::read_text(log0);
  EXPECT_EQ(code0, 1) << said;
  // Detected within the collective timeout (plus start-up slack of a loaded machine).
  EXPECT_LT(waited, timeout + 6) << said;
  EXPECT_TRUE(contains(said, "another rank died, was stopped or hung")) << said;
  EXPECT_TRUE(contains(said, "last good state")) << said;
  // The checkpoint rank 0 wrote last is whole and loads.
  EXPECT_GE(cnf::train::load_checkpoint(out + "/model.pt").step, 20);
}

TEST(DistTest, KilledRankStopsTheOtherWithinTheTimeout) {
  expect_peer_failure_detected("killed", SIGKILL);
}

TEST(DistTest, HungRankStopsTheOtherWithinTheTimeout) {
  expect_peer_failure_detected("hung", SIGSTOP);
}

// The --nproc launcher: a worker killed by a signal stops the run, named; SIGINT to the
// launcher reaches every worker, which stop after the same step and save.
std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t c; in >> c;) out.push_back(c);
  return out;
}

int64_t wait_for_step(const std::string& ckpt, int64_t at_least) {
  int64_t step = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (step < at_least && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    try {
      step = cnf::train::load_checkpoint(ckpt).step;
    } catch (const std::exception&) {
      step = 0;
    }
  }
  return step;
}

TEST(DistTest, LauncherNamesAKilledWorkerAndForwardsSigint) {
  const std::string args =
      kRun + " --steps 1000000 --checkpoint-every 20 --nproc 2 --dist-timeout 4";
  {
    const std::string out = dir() + "/launch_kill", log = out + ".log";
    const pid_t launcher = spawn_cnf(args + " --out " + out, log);
    ASSERT_GE(wait_for_step(out + "/model.pt", 20), 20) << cnf::io::read_text(log);
    auto workers = children_of(launcher);
    ASSERT_EQ(workers.size(), 2u);
    ::kill(workers[1], SIGKILL);
    EXPECT_EQ(wait_for(launcher), 1);
    const std::string said = cnf::io::read_text(log);
    EXPECT_TRUE(contains(said, "training with 2 processes failed: rank 1 was killed by signal 9"))
        << said;
    for (pid_t w : workers)
      EXPECT_NE(::kill(w, 0), 0) << "worker " << w << " outlived the launcher";
  }
  {
    const std::string out = dir() + "/launch_int", log = out + ".log";
    const pid_t launcher = spawn_cnf(args + " --out " + out, log);
    ASSERT_GE(wait_for_step(out + "/model.pt", 20), 20) << cnf::io::read_text(log);
    ::kill(launcher, SIGINT);
    EXPECT_EQ(wait_for(launcher), 128 + SIGINT);
    const std::string said = cnf::io::read_text(log);
    EXPECT_TRUE(contains(said, "all 2 ranks stopped after step")) << said;
    EXPECT_GE(cnf::train::load_checkpoint(out + "/model.pt").step, 20);
  }
}

// The non-finite check runs after the all-reduce: every rank stops on the same step with the
// same message (none is left waiting in a collective), and the launcher reports the failure.
TEST(DistTest, DivergenceStopsEveryRankOnTheSameStep) {
  auto r = run_cnf(kRun + " --steps 50 --lr 1e30 --nproc 2 --out " + dir() + "/diverged");
  EXPECT_EQ(r.code, 1);
  const std::string what = "training diverged at step 2: the loss (mean over the ranks)";
  const size_t first = r.output.find(what);
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_NE(r.output.find(what, first + 1), std::string::npos) << r.output;  // both ranks
  EXPECT_TRUE(contains(r.output, "training with 2 processes failed")) << r.output;
  EXPECT_EQ(cnf::train::load_checkpoint(dir() + "/diverged/model.pt").step, 0);
}

TEST(DistTest, BadOptionsGiveClearErrors) {
  auto r = run_cnf(kRun + " --steps 2 --rank 2 --world-size 2 --out " + dir() + "/bad");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "rank must be in [0, world size = 2), got 2")) << r.output;
  r = run_cnf(kRun + " --steps 2 --nproc 0 --out " + dir() + "/bad");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "--nproc must be >= 1, got 0")) << r.output;
  r = run_cnf(kRun + " --steps 2 --nproc 2 --rank 0 --out " + dir() + "/bad");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "drop --rank/--world-size")) << r.output;
  // Rank 1 of a group whose rank 0 never starts: gives up after the timeout.
  const auto t0 = std::chrono::steady_clock::now();
  r = run_cnf(kRun + " --steps 2 --rank 1 --world-size 2 --master-port " +
              std::to_string(cnf::dist::free_loopback_port()) + " --dist-timeout 1 --out " + dir() +
              "/bad");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "cannot reach the store at 127.0.0.1:")) << r.output;
  EXPECT_LT(secs, 15) << r.output;
  // Ranks started with different options are refused (here: another batch size).
  {
    const std::string out = dir() + "/mismatch";
    const std::string args = kRun + " --steps 5 --world-size 2 --master-port " +
                             std::to_string(cnf::dist::free_loopback_port()) +
                             " --dist-timeout 10 --out " + out;
    const pid_t rank1 = spawn_cnf(args + " --rank 1 --batch-size 32", out + "_rank1.log");
    r = run_cnf(args + " --rank 0");
    wait_for(rank1);
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(contains(r.output, "rank 1 was started with other training options")) << r.output;
  }
  r = run_cnf(kRun + " --steps 2 --coupling-scope world --out " + dir() + "/bad");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "valid names: rank, global")) << r.output;
}

// The global coupling plan: two ranks gather the global batch and solve one plan; one
// process accumulating the two shards solves the same plan.
TEST(DistTest, GlobalCouplingPlanIsTheSameOnTwoRanksAndOneProcess) {
  const std::string two = dir() + "/g2", one = dir() + "/g1";
  const std::string args = kRun + " --steps 10 --coupling exact --coupling-scope global";
  auto r = run_cnf(args + " --nproc 2 --out " + two);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cnf(args + " --accumulate 2 --out " + one);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_LE(max_weight_diff(two + "/model.pt", one + "/model.pt"), kWeightTol);
}

// cnf nll --nproc 2: each rank integrates half of the held-out points with its own adaptive
// solver; rank 0 gathers. Same points and exact divergence as one process, so the mean NLL
// agrees up to the solver tolerance: dopri5 at rtol = atol = 1e-5 on each half picks other
// steps than on the whole batch; 1e-3 nats is ~100x that error for these O(1) log-densities.
TEST(DistTest, NllShardedOverTwoRanksMatchesOneProcess) {
  const std::string out = dir() + "/nll";
  ASSERT_EQ(run_cnf(kRun + " --steps 30 --out " + out).code, 0);
  const std::string nll = "nll --ckpt " + out + "/model.pt -n 40 --method dopri5 --threads 1 ";
  auto r1 = run_cnf(nll + "--json " + out + "/nll1.json");
  ASSERT_EQ(r1.code, 0) << r1.output;
  auto r2 = run_cnf(nll + "--nproc 2 --json " + out + "/nll2.json");
  ASSERT_EQ(r2.code, 0) << r2.output;
  auto j1 = nlohmann::json::parse(cnf::io::read_text(out + "/nll1.json"));
  auto j2 = nlohmann::json::parse(cnf::io::read_text(out + "/nll2.json"));
  EXPECT_EQ(j2["n"], 40);
  EXPECT_EQ(j2["nfe_per_rank"].size(), 2u);
  EXPECT_NEAR(j1["nll"].get<double>(), j2["nll"].get<double>(), 1e-3);
}

// The bucketed all-reduce against per-tensor sums: three ranks as threads of this process, the
// smallest bucket (1024 bytes), three dtypes interleaved (each dtype change starts a bucket),
// tensors larger than a bucket, a transposed (non-contiguous) one and a 0-dim one.
// Rank r's tensor k holds multiples of 1/4 in [-12.5, 12.5] drawn from seed 100 r + k: sums of
// three such numbers are exact in float32, float64 and int64, so the result must equal the
// sum computed here exactly, whatever order Gloo adds in.
std::vector<torch::Tensor> rank_tensors(int rank) {
  const std::vector<std::pair<std::vector<int64_t>, torch::ScalarType>> shapes{
      {{10}, torch::kFloat32},    {{3, 5}, torch::kFloat64}, {{300}, torch::kFloat32},
      {{7, 11}, torch::kFloat32}, {{200}, torch::kFloat64},  {{5}, torch::kInt64},
      {{}, torch::kFloat32},      {{100}, torch::kFloat32},  {{100}, torch::kFloat32},
      {{100}, torch::kFloat32},   {{2, 2}, torch::kFloat64}, {{1000}, torch::kInt64}};
  std::vector<torch::Tensor> out;
  for (size_t k = 0; k < shapes.size(); ++k) {
    auto gen = cnf::make_generator(100 * static_cast<uint64_t>(rank) + k);
    auto q = torch::randint(-50, 51, shapes[k].first, gen, torch::kInt64);
    out.push_back(shapes[k].second == torch::kInt64 ? q : (q.to(shapes[k].second) * 0.25));
  }
  out[3] = out[3].t();  // [11, 7], non-contiguous: the reduce must write through the view
  return out;
}

TEST(DistTest, BucketedAllReduceEqualsPerTensorSumsWithTinyBucketsAndMixedDtypes) {
  const int world = 3;
  const int port = cnf::dist::free_loopback_port();
  std::vector<std::vector<torch::Tensor>> results(world);
  std::vector<int64_t> messages(world, 0);
  std::vector<std::string> errors(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      try {
        cnf::dist::GroupOptions o;
        o.rank = r;
        o.world_size = world;
        o.master_port = port;
        o.timeout_seconds = 30;
        o.bucket_bytes = 1024;
        cnf::dist::Group g(o);
        auto t = rank_tensors(r);
        g.all_reduce_sum(t);
        results[r] = t;
        messages[r] = g.messages();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < world; ++r) ASSERT_EQ(errors[r], "") << "rank " << r;
  std::vector<torch::Tensor> expected = rank_tensors(0);
  for (auto& e : expected) e = e.clone();
  for (int r = 1; r < world; ++r) {
    auto t = rank_tensors(r);
    for (size_t k = 0; k < t.size(); ++k) expected[k] = expected[k] + t[k];
  }
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(results[r].size(), expected.size());
    for (size_t k = 0; k < expected.size(); ++k) {
      EXPECT_EQ(results[r][k].scalar_type(), expected[k].scalar_type()) << r << " " << k;
      EXPECT_EQ(results[r][k].sizes(), expected[k].sizes()) << r << " " << k;
      EXPECT_TRUE(torch::equal(results[r][k], expected[k])) << "rank " << r << " tensor " << k;
    }
    // Tiny buckets split the 12 tensors (3 dtypes, 12 kB) into more messages than dtypes,
    // never more than one per tensor.
    EXPECT_GT(messages[r], 3) << r;
    EXPECT_LE(messages[r], static_cast<int64_t>(expected.size())) << r;
  }
}

}  // namespace
