// WeightLoader's weight dtype: Linear weights (WeightUse::Matmul) follow the backend's weight_dtype(),
// everything else stays F32; a model with BF16 Linear weights gives nearly the F32 model's logits
// with half the bytes of those weights.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/hostdevice.h"
#include "runtime/models/var_generate.h"
#include "models/var_test_util.h"
#include "test_util.h"

namespace skv {

namespace {

// The CPU backend is a process-wide singleton: restore F32 whatever a test does.
struct WeightDtypeScope {
  explicit WeightDtypeScope(DType dt) { cpu_backend().set_weight_dtype(dt); }
  ~WeightDtypeScope() { cpu_backend().set_weight_dtype(DType::F32); }
};

}  // namespace

TEST(Weights, MatmulWeightsFollowTheBackendDtype) {
  WeightDtypeScope scope(DType::BF16);
  WeightLoader wl(5, cpu_backend());
  Tensor lin = wl.get("blocks.0.ffn.fc1.weight", {8, 4}, WeightUse::Matmul);
  Tensor emb = wl.get("class_emb.weight", {8, 4});
  Tensor bias = wl.get("blocks.0.ffn.fc1.bias", {8}, WeightUse::Matmul);  // 1-D: never converted
  Tensor cols = wl.cols("blocks.0.ffn.fc2.weight", {4, 8}, 2, 6, WeightUse::Matmul);
  EXPECT_EQ(lin.dtype(), DType::BF16);
  EXPECT_EQ(cols.dtype(), DType::BF16);
  EXPECT_EQ(emb.dtype(), DType::F32);
  EXPECT_EQ(bias.dtype(), DType::F32);
  EXPECT_EQ(lin.category(), MemCategory::Weights);
  // The same random values, rounded to nearest even.
  WeightDtypeScope f32(DType::F32);
  WeightLoader wl32(5, cpu_backend());
  Tensor ref = wl32.get("blocks.0.ffn.fc1.weight", {8, 4}, WeightUse::Matmul);
  ASSERT_EQ(ref.dtype(), DType::F32);
  for (int64_t i = 0; i < ref.numel(); ++i) EXPECT_EQ(lin.data<uint16_t>()[i], f32_to_bf16(ref.f32()[i]));
  EXPECT_THROW(cpu_backend().set_weight_dtype(DType::I32), Error);
}

TEST(Weights, Bf16LinearWeightsKeepTheModelClose) {
  const VarConfig c = test::tiny_var_config("tiny", 2, {1, 2, 3});
  struct Obs final : GenerationObserver {
    std::vector<Tensor> logits;
    void on_logits_raw(int, const Tensor& l) override { logits.push_back(l.clone()); }
  };
  auto run = [&](DType dt, int64_t* bytes, const std::vector<std::vector<int64_t>>* teacher, Obs* obs) {
    WeightDtypeScope scope(dt);
    auto comm = make_local_communicator();
    WeightLoader wl(3, cpu_backend()), vl(4, cpu_backend());
    VarModel model(c, wl, *comm);
    VQVAE vae(c, vl);
    *bytes = model.weight_bytes();
    VarRequest req;
    req.labels = {1, 3};
    req.sampling = {1, 0.0f};
    VarRunOptions opt;
    opt.decode = false;
    opt.teacher = teacher;
    opt.observer = obs;
    return var_generate(model, vae, req, opt);
  };
  int64_t b32 = 0, b16 = 0;
  Obs o32, o16;
  GenerateResult r32 = run(DType::F32, &b32, nullptr, &o32);
  run(DType::BF16, &b16, &r32.tokens, &o16);
  EXPECT_LT(b16, b32 * 3 / 4);  // the Linear weights dominate even this tiny model
  ASSERT_EQ(o32.logits.size(), o16.logits.size());
  for (size_t si = 0; si < o32.logits.size(); ++si) {
    double num = 0, den = 0;
    const auto a = o16.logits[si].to_vector(), b = o32.logits[si].to_vector();
    for (size_t i = 0; i < a.size(); ++i) {
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += b[i] * b[i];
    }
    EXPECT_LT(num / den, 1e-3) << "scale " << si;  // bf16 keeps ~3 significant digits
    EXPECT_GT(num, 0.0) << "the weights really are rounded";
  }
}

}  // namespace skv

namespace skv {

// Hostile input, class 2: NaN or Inf in a checkpoint stops the load naming the file and the tensor
// (before: every label produced the same image and the run exited 0); activations are checked with
// the same function, which names what it was given.
TEST(Weights, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const std::string p = (std::filesystem::temp_directory_path() / ("skv_nan_" + std::to_string(::getpid()) +
                                                                   ".safetensors")).string();
  Tensor good = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  Tensor bad = Tensor::from_vector({1, NAN, 3, INFINITY}, {2, 2});
  write_safetensors(p, {{"good", good}, {"bad", bad}});
  SafeTensors st(p);
  WeightLoader wl(st, cpu_backend());
  EXPECT_NO_THROW(wl.get("good", {2, 2}));
  for (auto load : std::vector<std::function<void()>>{[&] { wl.get("bad", {2, 2}); },
                                                      [&] { wl.rows("bad", {2, 2}, {{0, 2}}); },
                                                      [&] { wl.cols("bad", {2, 2}, 1, 2); },
                                                      [&] { wl.host("bad", {2, 2}); }}) {
    const std::string e = test::error_of(load);
    EXPECT_NE(e.find(p + ": tensor 'bad' holds"), std::string::npos) << e;
    EXPECT_NE(e.find("non-finite value"), std::string::npos) << e;
  }
  std::filesystem::remove(p);
  EXPECT_EQ(first_non_finite(bad.f32(), 4), 1);
  EXPECT_EQ(first_non_finite(good.f32(), 4), -1);
  std::vector<float> big(100000, 1.0f);
  big[77777] = -INFINITY;
  EXPECT_EQ(first_non_finite(big.data(), static_cast<int64_t>(big.size())), 77777);
  const std::string e = test::error_of([&] { check_finite(bad, "scale 3, block 2: the hidden state"); });
  EXPECT_NE(e.find("scale 3, block 2: the hidden state holds 2 non-finite values (first: nan at element 1 of [2, 2])"),
            std::string::npos) << e;
}

}  // namespace skv
