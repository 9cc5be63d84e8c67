// calibrate.h - what `scalekv calibrate` reads besides the model: the prompts file of a VAR run. The
// calibration itself (ASI, drafters, Eq. 4 budgets) is kvcache/calibration.h's.
#pragma once

#include <string>
#include <vector>

#include "kvcache/calibration.h"

namespace skv {

// Lines of a prompts file that are not empty or comments (#).
std::vector<std::string> read_prompt_lines(const std::string& path);

}  // namespace skv
