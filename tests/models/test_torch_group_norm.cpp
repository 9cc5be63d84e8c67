// torch_group_norm_channels_last against Debian's PyTorch 1.13 (/usr/bin/python3), run at test time:
// F.group_norm on a channels-last float32 input with torch.set_num_threads(1, 2, 3), both branches of
// the kernel (HxW < 1024: per-group vector lanes; HxW >= 1024: per-thread float buffers), N 1..3,
// 1..20 channels per group, 32 / 24 / 8 / 5 groups. Every output float must be identical: this is
// what lets verify-golden decode a CPU-made Infinity golden's image as the official run did.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/models/torch_group_norm.h"
#include "test_util.h"
#include "runtime/tensor.h"

namespace skv {

namespace {

struct Case {
  int N, C, G, H, W;
};

}  // namespace

TEST(TorchGroupNorm, BitIdenticalToPyTorchChannelsLast) {
  const std::vector<Case> cases = {
      // HxW < 1024 (impl-1)
      {1, 32, 32, 8, 8},
      {1, 64, 32, 20, 30},
      {2, 96, 24, 16, 40},
      {1, 256, 32, 31, 33},
      {1, 96, 8, 20, 20},   // D = 12: a full lane block and a tail
      {2, 160, 8, 9, 31},   // D = 20
      {1, 72, 24, 30, 30},  // D = 3
      {1, 32, 32, 1023, 1},
      // HxW >= 1024 (impl-2)
      {1, 32, 32, 1024, 1},
      {1, 32, 32, 64, 64},
      {1, 64, 32, 48, 37},
      {2, 128, 32, 40, 30},
      {1, 48, 24, 50, 41},
      {3, 40, 5, 37, 29},  // chunks cross sample boundaries
      {1, 96, 8, 40, 40},
      {1, 32, 32, 256, 111},  // long sums: the thread count shows
  };
  const std::vector<int> threads = {1, 2, 3};
  const std::string dir = ::testing::TempDir();
  const std::string script = dir + "skv_torch_group_norm.py";
  {
    std::ofstream s(script);
    s << R"(import sys, torch
d = sys.argv[1]
g = torch.Generator().manual_seed(0)
threads = [int(t) for t in sys.argv[2].split(',')]
for k, spec in enumerate(sys.argv[3:]):
    N, C, G, H, W = (int(v) for v in spec.split(','))
    # per-channel offsets and spreads, so that E[x^2] - mean^2 cancels as in a decoder
    x = torch.randn(N, C, H, W, generator=g) * (torch.rand(1, C, 1, 1, generator=g) * 2) \
        + torch.randn(1, C, 1, 1, generator=g) * 2
    w = torch.rand(C, generator=g) * 0.4 + 0.8
    b = torch.randn(C, generator=g) * 0.05
    x.numpy().tofile(f'{d}/gn{k}.x'); w.numpy().tofile(f'{d}/gn{k}.w'); b.numpy().tofile(f'{d}/gn{k}.b')
    xc = x.contiguous(memory_format=torch.channels_last)
    for t in threads:
        torch.set_num_threads(t)
        with torch.no_grad():
            y = torch.nn.functional.group_norm(xc, G, w, b, 1e-6)
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
        y.contiguous().numpy().tofile(f'{d}/gn{k}.y{t}')
)";
  }
  std::string cmd = "/usr/bin/python3 " + script + " " + dir + " ";
  for (size_t i = 0; i < threads.size(); ++i) cmd += (i ? "," : "") + std::to_string(threads[i]);
  for (const auto& c : cases)
    cmd += " " + std::to_string(c.N) + "," + std::to_string(c.C) + "," + std::to_string(c.G) + "," +
           std::to_string(c.H) + "," + std::to_string(c.W);
  int status = 0;
  const std::string out = test::run_captured(cmd, &status);
  ASSERT_EQ(status, 0) << "Debian's PyTorch (/usr/bin/python3, scripts/setup.sh --torch) is required: " << out;

  bool threads_matter = false;
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& c = cases[k];
    const std::string base = dir + "gn" + std::to_string(k);
    const std::vector<float> x = test::read_floats(base + ".x"), w = test::read_floats(base + ".w"), b = test::read_floats(base + ".b");
    const int64_t numel = static_cast<int64_t>(c.N) * c.C * c.H * c.W, HxW = static_cast<int64_t>(c.H) * c.W;
    ASSERT_EQ(static_cast<int64_t>(x.size()), numel);
    ASSERT_EQ(static_cast<int>(w.size()), c.C);
    std::vector<float> prev;
    for (int t : threads) {
      const std::vector<float> want = test::read_floats(base + ".y" + std::to_string(t));
      ASSERT_EQ(static_cast<int64_t>(want.size()), numel);
      std::vector<float> y(numel);
      torch_group_norm_channels_last(x.data(), c.N, c.C, HxW, c.G, w.data(), b.data(), 1e-6f, t, y.data());
      EXPECT_EQ(test::count_bit_differences(y.data(), want.data(), numel), 0)
          << "N " << c.N << " C " << c.C << " G " << c.G << " " << c.H << "x" << c.W << ", " << t
          << " torch thread(s): outputs differ from PyTorch";
      if (!prev.empty() && test::count_bit_differences(prev.data(), want.data(), numel) > 0) threads_matter = true;
      prev = want;
    }
  }
  // Otherwise the cases would not test the per-thread split at all.
  EXPECT_TRUE(threads_matter) << "PyTorch gave the same outputs for every thread count";

  // The tensor entry point (what GroupNorm32 calls) on the CPU backend: same bits.
  {
    const size_t k = cases.size() - 1;
    const auto& c = cases[k];
    const std::string base = dir + "gn" + std::to_string(k);
    const std::vector<float> x = test::read_floats(base + ".x"), w = test::read_floats(base + ".w"), b = test::read_floats(base + ".b");
    const std::vector<float> want = test::read_floats(base + ".y2");
    const Tensor xt = Tensor::from_vector(x, {c.N, c.C, c.H, c.W});
    const Tensor wt = Tensor::from_vector(w, {c.C}), bt = Tensor::from_vector(b, {c.C});
    const Tensor y = torch_group_norm(cpu_backend(), xt, c.G, &wt, &bt, 1e-6f, 2);
    ASSERT_EQ(y.numel(), static_cast<int64_t>(want.size()));
    EXPECT_EQ(test::count_bit_differences(y.f32(), want.data(), y.numel()), 0);
  }
}

// Without gamma / beta (defaults 1 / 0), against the same formula with explicit ones and zeros.
TEST(TorchGroupNorm, NullAffineIsOnesAndZeros) {
  const int N = 2, C = 48, G = 24;
  for (const int64_t HxW : {int64_t{300}, int64_t{2000}}) {
    std::vector<float> x(N * C * HxW), ones(C, 1.0f), zeros(C, 0.0f), y0(x.size()), y1(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f + 1.5f;
    torch_group_norm_channels_last(x.data(), N, C, HxW, G, nullptr, nullptr, 1e-6f, 2, y0.data());
    torch_group_norm_channels_last(x.data(), N, C, HxW, G, ones.data(), zeros.data(), 1e-6f, 2, y1.data());
    EXPECT_EQ(test::count_bit_differences(y0.data(), y1.data(), static_cast<int64_t>(x.size())), 0) << "HxW " << HxW;
  }
}

}  // namespace skv
