// rng.h - counter-based random numbers (Philox4x32-10), identical on host and device.
// A draw is a pure function of (seed, image, scale, token, lane): the same seed gives the same tokens
// for any batch composition, tensor-parallel size or backend, because no generator state is shared.
#pragma once

#include <cstdint>

#include "runtime/hostdevice.h"

namespace skv {

SKV_HD void philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr_in[0], ctr_in[1], ctr_in[2], ctr_in[3]};
  uint32_t k[2] = {key_in[0], key_in[1]};
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c[0] = hi1 ^ c[1] ^ k[0];
    c[1] = lo1;
    c[2] = hi0 ^ c[3] ^ k[1];
    c[3] = lo0;
    k[0] += 0x9E3779B9u;
    k[1] += 0xBB67AE85u;
  }
  out[0] = c[0];
  out[1] = c[1];
  out[2] = c[2];
  out[3] = c[3];
}

// Uniform float in [0, 1) with 24 random bits, keyed by seed and a 4-part counter.
SKV_HD float uniform01(uint64_t seed, uint32_t image, uint32_t scale, uint32_t token, uint32_t lane) {
  const uint32_t ctr[4] = {image, scale, token, lane};
  const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  uint32_t out[4];
  philox4x32_10(ctr, key, out);
  return static_cast<float>(out[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace skv
