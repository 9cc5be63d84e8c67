// cuda_device.h - what host code outside runtime/cuda may ask the CUDA backend directly: device
// facts, per-op GPU timing, and the reference measurements benchmarks compare against (HBM bandwidth
// by device-to-device copy, cuBLAS GEMM peak). Plain C++ (no CUDA headers): the launcher includes it.
// Only linked when the build has CUDA (SKV_HAVE_CUDA); every function throws when no device is visible.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "runtime/tensor.h"

namespace skv::cuda {

struct DeviceInfo {
  std::string name, driver, runtime;
  int index = 0, cc_major = 0, cc_minor = 0, sms = 0;
  int64_t total_bytes = 0;
  double hbm_peak_gbs = 0;  // theoretical: 2 x memory clock x bus width
};
DeviceInfo device_info();

// The backend's one stream (a cudaStream_t) and device index, for code that must order its own device
// work with the backend's (the NCCL communicator: collectives on this stream need no extra sync).
void* stream_handle();
int device_index();

// Per-op GPU time between profile_begin() and profile_end(), by op family: "linear", "attention",
// "conv2d", "norm", "elementwise", "layout", "kv_move", "kv_select". flops and bytes are what the op
// must do / move at minimum (for achieved TFLOP/s and GB/s).
struct OpTotal {
  int64_t calls = 0;
  double seconds = 0, flops = 0, bytes = 0;
};
void profile_begin();
std::map<std::string, OpTotal> profile_end();

// Device-to-device copy bandwidth (GB/s, read + write bytes counted), best of `repeats`.
double measure_copy_gbs(int64_t bytes, int repeats);
// cuBLAS GEMM throughput (TFLOP/s) for an n x n x n product with inputs of `dt` (F32: SGEMM without
// TF32; F16/BF16: GemmEx with FP32 accumulation, the path linear() takes), best of `repeats`.
double measure_gemm_tflops(DType dt, int n, int repeats);
// The attention kernel alone on zero data: Lq queries of R rows x H heads over `kv_len` keys of
// head_dim D in one segment; returns {seconds (median of repeats), bytes of K + V + Q + out}.
// tensor_cores: the bf16 WMMA kernel (what runs with --weight-dtype bf16/f16), else the FP32 one.
struct AttnTiming {
  double seconds = 0, bytes = 0, flops = 0;
};
AttnTiming measure_attention(int64_t R, int64_t H, int64_t Lq, int64_t kv_len, int64_t D, int repeats,
                             bool tensor_cores = false);
// Whether attention on this backend takes the tensor-core kernel for this head_dim and weight dtype.
bool attention_uses_tensor_cores(int64_t head_dim, DType weight_dtype);

// x (F32, on the CUDA backend) rounded to F16/BF16 (round-to-nearest-even), a workspace tensor.
Tensor convert_to_half(const Tensor& x, DType dt);

}  // namespace skv::cuda
