// model_files.h - resolving the model/weights/VAE paths of a command, with the shipped demo model
// as the default when none is given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace skv {

struct ModelFiles {
  std::string config, weights, vae;
};

// Fills empty fields from the demo model (models/demo/) and checks that every file exists.
ModelFiles resolve_model_files(ModelFiles f);
std::string default_model_dir();

// The most images one request (one --labels list) may ask for.
constexpr int64_t kMaxImagesPerRequest = int64_t{1} << 20;

// Parses "3,7", "0-9", "0-9x4" (each label 4 times) into a list of labels. Checked before the list is
// built: every label in [0, num_classes) (num_classes <= 0: not checked) and at most max_images labels.
std::vector<int64_t> parse_labels(const std::string& spec, int64_t num_classes = 0,
                                  int64_t max_images = kMaxImagesPerRequest);

}  // namespace skv
