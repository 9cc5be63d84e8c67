// calibration.h - offline ScaleKV calibration: run a model with the full cache on a few requests,
// measure the Attention Selectivity Index of every (layer, compressed scale), z-score it per scale,
// make the N_d lowest (layer, scale) pairs drafters and write the Eq. 4 budgets as a table
// (kvcache/budget_table.h). Works for any generation loop that runs its layers through
// MultiScaleKVCache: `run` executes one request with the given policy (VAR and Infinity alike).
#pragma once

#include <functional>

#include "kvcache/scalekv.h"

namespace skv {

// Runs one calibration request (index i of n) with `policy`.
using CalibrationRun = std::function<void(int i, KVPolicy& policy)>;

// With `comm` (the TP group), every rank sums its heads' statistics so all ranks get the same table.
BudgetTable calibrate_budgets(const CalibrationRun& run, int requests, int depth, const Schedule& schedule,
                              const ScaleKVOptions& o, Communicator* comm);

}  // namespace skv
