// cuda_device.h - the two CUDA runtime calls rank placement needs (how many GPUs, use one), so the
// launcher can pick a rank's GPU without including CUDA headers. Without CUDA in the build the count
// is 0 with the reason, and choosing a device throws.
#pragma once

#include <string>

namespace skv {

int cuda_device_count(std::string* why = nullptr);
void cuda_use_device(int device);

}  // namespace skv
