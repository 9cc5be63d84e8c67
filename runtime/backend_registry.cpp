// backend_registry.cpp - maps a device name to a Backend. The CUDA backend is linked in only when
// the build found nvcc; asking for it otherwise gives a one-line reason.
#include "runtime/backend.h"
#include "runtime/check.h"

namespace skv {

#ifdef SKV_HAVE_CUDA
Backend* cuda_backend_instance(std::string* why);  // runtime/cuda/backend_cuda.cu
#endif

bool cuda_available(std::string* why) {
#ifdef SKV_HAVE_CUDA
  return cuda_backend_instance(why) != nullptr;
#else
  if (why) *why = "this build has no CUDA backend (nvcc was not found at configure time)";
  return false;
#endif
}

Backend& backend_for(const std::string& device) {
  if (device == "cpu") return cpu_backend();
  if (device == "cuda") {
    std::string why;
#ifdef SKV_HAVE_CUDA
    if (Backend* b = cuda_backend_instance(&why)) return *b;
#else
    cuda_available(&why);
#endif
    SKV_FAIL("--device cuda is not available: {}", why);
  }
  SKV_FAIL("unknown device '{}' (use cpu or cuda)", device);
}

}  // namespace skv
