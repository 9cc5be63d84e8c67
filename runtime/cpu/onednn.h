// onednn.h - the CPU backend's matrix products and convolutions, on oneDNN (Debian's libdnnl, the
// library PyTorch itself calls for CPU convolutions). Why not OpenBLAS alone: Debian's OpenBLAS 0.3.21
// runs its AVX2 Zen kernels on AVX-512 CPUs and has no bf16 GEMM (cblas_sbgemm is not exported);
// oneDNN's brgemm kernels use AVX-512 and avx512_bf16 where the CPU has them (README "CPU speed").
//
// Contract (both dtypes): inputs are rounded to `in` (F32: unchanged; BF16: round to nearest even),
// products accumulate in F32, the output is F32. Layouts are the backend's (row-major, NCHW, OIHW); the
// convolution reorders to oneDNN's blocked layouts and back inside the call. Primitives come from
// oneDNN's own primitive cache (keyed by shape), so a repeated shape costs no JIT compile.
// Threads: oneDNN runs on the same OpenMP pool as the rest of the backend (Debian builds it with
// DNNL_CPU_RUNTIME=OMP); called inside a parallel region it runs on the calling thread.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/dtype.h"

namespace skv::onednn {

// y[M,N] = x[M,K] . w[N,K]^T (+ bias[N]); x and w both of dtype `in` (F32 or BF16), bias and y F32.
void matmul(DType in, int64_t M, int64_t N, int64_t K, const void* x, const void* w, const float* bias, float* y);

// y = conv2d(x, w) + bias, NCHW / OIHW, square stride and zero padding. x, y F32; w in `w_dtype` (F32 or
// BF16); the products run in `in` (F32 or BF16: x and w rounded to bf16).
void conv2d(DType in, int64_t N, int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t kh, int64_t kw, int stride,
            int pad, const float* x, const void* w, DType w_dtype, const float* bias, float* y, int64_t Ho, int64_t Wo);

// Whether oneDNN runs `in` products with native instructions on this CPU (BF16: avx512_bf16 or AMX);
// `why` gets the missing instruction set when it does not.
bool native(DType in, std::string* why = nullptr);
// The instruction set oneDNN dispatches to here ("avx512_core_bf16", ...), and "oneDNN 2.6.3 (that ISA)",
// for benchmark tables.
std::string isa();
std::string describe();

// F32 -> BF16 (hostdevice.h's f32_to_bf16: round to nearest even, as PyTorch), n elements, OpenMP-parallel.
void to_bf16(const float* src, uint16_t* dst, int64_t n);

}  // namespace skv::onednn
