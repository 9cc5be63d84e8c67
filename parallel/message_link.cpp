// message_link.cpp - see message_link.h.
#include "parallel/message_link.h"

#include <chrono>
#include <deque>
#include <utility>

#include "parallel/session.h"
#include "runtime/check.h"

#ifdef SKV_HAVE_MPI
#include <mpi.h>
#endif

namespace skv {

bool mpi_thread_multiple() {
#ifdef SKV_HAVE_MPI
  if (!mpi_running()) return false;
  int level = 0;
  MPI_Query_thread(&level);
  return level >= MPI_THREAD_MULTIPLE;
#else
  return false;
#endif
}

#ifdef SKV_HAVE_MPI
namespace {

class MpiLink final : public MessageLink {
 public:
  MpiLink() {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiLink() override {
    // Unmatched sends of a job that is ending anyway: cancelled, and given a second to complete; a buffer
    // MPI may still own after that is left allocated rather than freed under it.
    for (auto& s : out_) MPI_Cancel(&s.req);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!out_.empty() && std::chrono::steady_clock::now() < until) progress();
    if (!out_.empty()) new std::deque<Out>(std::move(out_));  // moves the blocks, not the elements: never freed

    MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void send(int dest, int tag, std::string bytes) override {
    SKV_CHECK(bytes.size() < (size_t(1) << 31), "internal: a link message of {} bytes", bytes.size());
    out_.push_back({std::move(bytes), MPI_REQUEST_NULL});
    auto& s = out_.back();
    MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, dest, tag, comm_, &s.req);
  }
  bool poll(int* source, int* tag, std::string* bytes) override {
    progress();
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, &st);
    if (!flag) return false;
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    bytes->resize(static_cast<size_t>(n));
    MPI_Recv(bytes->data(), n, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, comm_, MPI_STATUS_IGNORE);
    *source = st.MPI_SOURCE;
    *tag = st.MPI_TAG;
    return true;
  }
  size_t pending_sends() override {
    progress();
    return out_.size();
  }

 private:
  struct Out {
    std::string bytes;
    MPI_Request req;
  };
  void progress() {
    for (auto it = out_.begin(); it != out_.end();) {
      int done = 0;
      MPI_Test(&it->req, &done, MPI_STATUS_IGNORE);
      it = done ? out_.erase(it) : std::next(it);
    }
  }
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::deque<Out> out_;  // a deque keeps each buffer in place while its send is pending
};

}  // namespace

std::unique_ptr<MessageLink> MessageLink::make_world() {
  SKV_CHECK(mpi_running(), "internal: a message link needs MPI (start the job with mpirun or srun)");
  SKV_CHECK(mpi_thread_multiple(), "this MPI does not provide MPI_THREAD_MULTIPLE, which a server with several "
            "replicas needs (the front end talks to the replicas from a service thread); run one replica per job");
  return std::make_unique<MpiLink>();
}
#else
std::unique_ptr<MessageLink> MessageLink::make_world() {
  SKV_FAIL("this build has no MPI: a server with several replicas needs it (install libopenmpi-dev and rebuild)");
}
#endif

}  // namespace skv
