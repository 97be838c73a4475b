// Checkpoints written by an earlier release still load and give the samples they gave then.
// The fixtures (tests/fixtures/checkpoints-0.2.0/) were written by cnf 0.2.0 with
// scripts/make_compat_fixtures.sh: an MLP flow-matching model, a VP score model, an MLE model
// of two stacked blocks and a class-conditional U-Net, each with 16 samples it gave then
// (seed 3, RK4 x 10 steps, one thread).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "cnf/io/files.h"
#include "cnf/train/flow.h"
#include "cnf/train/trainer.h"
#include "tests/cli_util.h"

namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(CNF_SOURCE_DIR) + "/tests/fixtures/checkpoints-0.2.0";

struct Fixture {
  std::string name, arch, objective;
  int64_t blocks, classes;
};

}  // namespace

TEST(CheckpointCompat, ReleaseCheckpointsLoadAsTheSameFlows) {
  for (const Fixture& f :
       {Fixture{"mlp", "mlp", "fm", 1, 0}, Fixture{"score_vp", "mlp", "score", 1, 0},
        Fixture{"mle_blocks", "mlp", "mle", 2, 0}, Fixture{"unet", "unet", "fm", 1, 10}}) {
    auto c = cnf::train::load_checkpoint(kFixtures + "/" + f.name + ".pt", torch::kCPU);
    EXPECT_EQ(c.spec.model.arch, f.arch) << f.name;
    EXPECT_EQ(c.spec.objective, f.objective) << f.name;
    EXPECT_EQ(c.spec.model.blocks, f.blocks) << f.name;
    EXPECT_EQ(c.spec.model.classes, f.classes) << f.name;
  }
}

TEST(CheckpointCompat, ReleaseCheckpointsGiveTheSameSamples) {
  const auto dir = fs::path(::testing::TempDir()) / ("cnf_compat_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const std::string name : {"mlp", "score_vp", "mle_blocks", "unet"}) {
    const std::string out = (dir / (name + ".npy")).string();
    auto r = cnf_test::run_cnf("sample --ckpt " + kFixtures + "/" + name +
                               ".pt -n 16 --method "
                               "rk4 --steps 10 --seed 3 --threads 1 --out " +
                               out);
    ASSERT_EQ(r.code, 0) << name << "\n" << r.output;
    auto now = cnf::io::read_npy(out);
    auto then = cnf::io::read_npy(kFixtures + "/" + name + "_samples.npy");
    ASSERT_EQ(now.sizes(), then.sizes()) << name;
    // Same weights, noise and float32 arithmetic give the same samples; 1e-4 leaves room only
    // for a CPU whose vector units sum a matmul in another order (about 1e-6 per step, a few
    // dozen evaluations). A changed default, parameterization, time convention or noise
    // stream moves them by far more (the samples spread over several units).
    EXPECT_LT((now - then).abs().max().item<double>(), 1e-4) << name;
  }
  fs::remove_all(dir);
}
