#include <cblas.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "launcher/bench.h"
#include "runtime/cpu/onednn.h"
#include "runtime/hostdevice.h"

extern "C" char* openblas_get_config(void);

#ifndef SKV_BUILD_TYPE
#define SKV_BUILD_TYPE "unknown"
#endif

namespace skv {

std::string machine_description() {
  std::string cpu = "unknown CPU";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return fmt::format("{} ({} cores visible), host {}, BLAS: OpenBLAS {}, {}, build {}", cpu,
                     std::thread::hardware_concurrency(), host, openblas_get_config(), onednn::describe(), SKV_BUILD_TYPE);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double measure_gemm_gflops(Backend& be, DType w_dtype, int n, int repeats) {
  Tensor xh = Tensor::empty({n, n}), wh = Tensor::empty({n, n}, w_dtype, MemCategory::Workspace);
  xh.fill(0.5f);
  for (int64_t i = 0; i < wh.numel(); ++i) {
    if (w_dtype == DType::BF16)
      wh.data<uint16_t>()[i] = f32_to_bf16(0.25f);
    else
      wh.f32()[i] = 0.25f;
  }
  Tensor x = be.upload(xh, MemCategory::Workspace), w = be.upload(wh, MemCategory::Workspace);
  Tensor y = be.empty({n, n}, DType::F32, MemCategory::Workspace);
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {
    be.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    be.linear(x, w, nullptr, y);
    be.synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, 2.0 * n * n * static_cast<double>(n) / s / 1e9);  // first run warms up
  }
  return best;
}

double measure_openblas_sgemm_gflops(int n, int repeats) {
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  openblas_set_num_threads(threads);  // the backend keeps OpenBLAS at one thread; PyTorch lets it use all
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, 2.0 * n * n * static_cast<double>(n) / s / 1e9);
  }
  openblas_set_num_threads(1);
  return best;
}

}  // namespace skv
