// bench.h - shared pieces of `scalekv bench`: options, machine description, table output.
// Benchmarks print markdown tables with the machine, build type, command and the median of several
// runs; they never assert times.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "launcher/context.h"
#include "launcher/kv_options.h"

namespace skv {

struct BenchArgs {
  std::string model = "configs/var-d16.json";  // config; weights are random unless given
  std::string weights, vae;
  std::vector<int> batches{1, 8};
  int repeats = 3;
  int warmup = 1;
  int depth = 0;          // override the config's depth (0: keep), for time
  bool decode = true;     // include the VAE decoder
  std::string md_out;     // also write the table here
  int resolution = 0;     // Infinity: 256/512/768/1024 (0: the config's)
  double h_div_w = 0;     // Infinity: aspect ratio (0: the config's)
  int text_len = 32;      // Infinity: tokens per random prompt
  std::string command;    // the command line, for the report
  ContextArgs ctx;
  KVOptions kv;
  std::set<std::string> given;  // options given on the command line (checked before any work)
};

std::string machine_description();  // CPU model, cores, BLAS, build type
double median(std::vector<double> v);
// Best-of-N throughput (GFLOP/s) of an n x n x n product through the backend's own linear(), with the
// weights in `w_dtype` (on the CPU: oneDNN's F32 kernels, or its bf16 kernels for BF16 weights).
double measure_gemm_gflops(Backend& be, DType w_dtype, int n, int repeats);
// The same through OpenBLAS's cblas_sgemm on every core (what Debian's PyTorch calls for F.linear).
double measure_openblas_sgemm_gflops(int n, int repeats);

}  // namespace skv
