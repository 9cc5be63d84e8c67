// golden.h - parity checks against reference outputs of the official PyTorch code.
// A golden is NAME.config.json + weights + NAME.expected.safetensors in one folder (format:
// ../shared/golden/README.md). The check is data-driven: model shape, schedule, labels, cfg and
// sampling all come from the golden's own files, so goldens never seen before work too.
#pragma once

#include <string>
#include <vector>

namespace skv {

class Communicator;

struct GoldenOptions {
  std::string device = "cpu";
  Communicator* comm = nullptr;  // tensor-parallel group (null: one rank)
  double tol = 1e-4;             // absolute tolerance of logits, activations and images
  double margin = 1e-4;          // tokens must agree wherever the recorded top-2 margin exceeds this
  bool verbose = false;
};

enum class GoldenStatus { Pass, Fail, Skip };

struct GoldenOutcome {
  GoldenStatus status = GoldenStatus::Skip;
  std::string reason;  // for Skip / Fail
};

// Prints one line per compared tensor (on rank 0 of the communicator) and the verdict.
GoldenOutcome verify_var_golden(const std::string& dir, const std::string& name, const GoldenOptions& opt);
// Infinity goldens (../shared/golden/README-infinity.md), including the ScaleKV half when
// NAME.scalekv.json is present.
GoldenOutcome verify_infinity_golden(const std::string& dir, const std::string& name, const GoldenOptions& opt);

// Accumulates comparisons and prints them aligned.
class GoldenReport {
 public:
  explicit GoldenReport(bool print) : print_(print) {}
  // max |a - b| over all elements; passes when <= tol. Shapes must match (element counts).
  double compare(const std::string& what, const float* got, const float* want, int64_t n, double tol);
  // A fraction that must reach `need` (e.g. 1.0) to pass.
  void fraction(const std::string& what, int64_t good, int64_t total, double need, const std::string& note = "");
  void info(const std::string& what, const std::string& text);
  void fail(const std::string& what, const std::string& why);
  // An optional tensor the golden does not have: reported "not checked", never a silent pass.
  void not_checked(const std::string& what, const std::string& why);
  bool ok() const { return ok_; }
  int not_checked_count() const { return not_checked_; }
  // "PASS" / "FAIL" plus, when some optional tensors were absent, how many were not checked.
  std::string verdict() const;

 private:
  bool print_;
  bool ok_ = true;
  int not_checked_ = 0;
};

class SafeTensors;

// The tensors of a golden format. A missing required tensor fails the check (a golden that can pass
// without checking is worse than none); absent optional ones are listed as "not checked".
struct GoldenTensorSpec {
  std::vector<std::string> required, optional;
};
// Reports every missing tensor of `spec` in `exp`; returns false when a required one is missing.
bool check_golden_tensors(GoldenReport& rep, const SafeTensors& exp, const GoldenTensorSpec& spec,
                          const std::string& prefix = "");

// Recorded token indices, checked before they reach the model: an integer tensor of `count` values in
// [lo, hi), else "<file>: tensor '<name>' ..." naming the golden file and tensor.
std::vector<int64_t> golden_indices(const SafeTensors& exp, const std::string& name, int64_t count, int64_t lo,
                                    int64_t hi, const std::string& what);

}  // namespace skv
