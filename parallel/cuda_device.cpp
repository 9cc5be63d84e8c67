#include "parallel/cuda_device.h"

#include "runtime/check.h"

#ifdef SKV_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace skv {

#ifdef SKV_HAVE_CUDA

int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError();  // clear it, so later CUDA calls do not report it again
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device is visible";
  return n;
}

void cuda_use_device(int device) {
  const cudaError_t e = cudaSetDevice(device);
  SKV_CHECK(e == cudaSuccess, "cudaSetDevice({}) failed: {}", device, cudaGetErrorString(e));
}

#else

int cuda_device_count(std::string* why) {
  if (why) *why = "this build has no CUDA (nvcc was not found at configure time)";
  return 0;
}

void cuda_use_device(int device) { SKV_FAIL("cannot use CUDA device {}: this build has no CUDA", device); }

#endif

}  // namespace skv
