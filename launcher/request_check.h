// request_check.h - every rank of a job must run the same request. Ranks started with different
// options (different --labels per rank in an MPMD launch, a stale script on one node) used to fail
// deep in a collective with MPI_ERR_TRUNCATE; check_same_request compares the options on every rank
// first (one all-gather of a hash per field) and names the first field that differs and each rank's
// value.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace skv {

struct RunContext;

// (option, value) pairs that must agree on every rank of ctx's job; a no-op in a one-process run.
void check_same_request(const RunContext& ctx, const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace skv
