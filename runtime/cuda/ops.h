// ops.h - the CUDA backend's larger ops, one source file each (gemm.cu, attention.cu, image.cu), called
// by the CudaBackend class in backend_cuda.cu. Arguments are CUDA tensors, already shape-checked
// where the CPU backend checks them; semantics are those of runtime/backend.h.
#pragma once

#include <vector>

#include "runtime/backend.h"

namespace skv::cuda {

// y[M,N] = x[M,K] . w[N,K]^T (+ bias). w F32: FP32 SGEMM (no TF32). w F16/BF16: x is rounded to w's
// dtype (round-to-nearest-even) and the product accumulates in FP32 (cublasGemmEx, CUBLAS_COMPUTE_32F).
void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
// Row-major C[M,N] (ldc) = A[M,K] (lda) . B[K,N] (ldb), all F32 device pointers (conv2d's GEMM).
void sgemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
              int64_t ldc);

// tensor_cores: the bf16 WMMA kernel (attention.cu); otherwise the FP32 one.
void attention(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out, bool tensor_cores);
// Every job in one launch (Backend::attention_varlen); a job's output equals its own attention() launch.
void attention_varlen(const std::vector<AttentionJob>& jobs, float scale, bool tensor_cores);

void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad, Tensor& y);
void group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps, Tensor& y);
void interpolate(const Tensor& x, Interp mode, Tensor& y);

}  // namespace skv::cuda
