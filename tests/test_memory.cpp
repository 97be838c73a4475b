// Large buffers (core/memory.h): mapped memory must behave like LibTorch's own tensors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cnf/core/error.h"
#include "cnf/core/memory.h"

namespace {

using namespace cnf;

TEST(MemoryTest, LargeZerosAreZeroAndWritable) {
  // 2560 x 2048 float64 = 40 MB: above kLargeZerosBytes, so a mapped buffer; 1 MB: LibTorch's.
  for (int64_t rows : {2560, 2560, 64}) {  // fresh mappings each time, unmapped on release
    const double rep = rows == 64 ? 2 : 0;
    auto z = large_zeros({rows, 2048}, torch::kFloat64);
    ASSERT_EQ(z.sizes(), (std::vector<int64_t>{rows, 2048}));
    ASSERT_EQ(z.scalar_type(), torch::kFloat64);
    ASSERT_TRUE(z.is_contiguous());
    EXPECT_EQ(z.abs().max().item<double>(), 0.0);
    z.fill_(rep + 1.5);
    z.mul_(2);
    EXPECT_EQ(z.sum().item<double>(), rows * 2048.0 * (2 * rep + 3));
  }
}

TEST(MemoryTest, LargeEmptyHoldsWhatIsWrittenAndSmallBuffersStillWork) {
  for (int64_t rows : {1, 700, 3000}) {  // 4 KB (LibTorch's allocator), 2.8 MB, 12 MB
    auto e = large_empty({rows, 1024}, torch::kFloat32);
    ASSERT_EQ(e.numel(), rows * 1024);
    auto ref = torch::arange(rows * 1024, torch::kFloat32).view({rows, 1024});
    e.copy_(ref);
    EXPECT_TRUE(torch::equal(e, ref)) << rows;
    // Views and clones outlive nothing they should not: the clone owns its own memory.
    auto c = e.slice(0, 0, 1).clone();
    e.reset();
    EXPECT_EQ(c[0][5].item<float>(), 5.f);
  }
  auto none = large_zeros({0, 5}, torch::kFloat64);
  EXPECT_EQ(none.numel(), 0);
  EXPECT_THROW(large_empty({-1, 5}, torch::kFloat64), Error);
}

}  // namespace
