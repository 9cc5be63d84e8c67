// calibration.cpp - ScaleKV budget tables from a few full-cache requests (see calibration.h).
#include "kvcache/calibration.h"

#include "runtime/check.h"

namespace skv {

BudgetTable calibrate_budgets(const CalibrationRun& run, int requests, int depth, const Schedule& schedule,
                              const ScaleKVOptions& o, Communicator* comm) {
  AsiCollector col(o, depth, schedule);
  col.set_communicator(comm);
  for (int i = 0; i < requests; ++i) run(i, col);
  SKV_CHECK(col.requests() == requests, "internal: {} of {} calibration requests reached the last stored scale",
            col.requests(), requests);
  return make_budget_table(col.asi(), depth, schedule, o);
}

}  // namespace skv
