// communicator_mpi.cpp - the MPI communicator: host buffers, any MPI (Open MPI, MPICH).
// All-reduce is a reduce-scatter + all-gather written with MPI_Ialltoallv / MPI_Iallgatherv rather
// than MPI_Allreduce, because MPI does not promise an order of summation: here rank j sums chunk j as
// x_0 + x_1 + ... + x_{n-1} (F16/BF16 accumulated in F32, rounded once) and broadcasts it, so the
// result is reproducible and bit-identical on every rank, at the same 2(n-1)/n bytes per element as a
// ring. Every wait is a polling loop with a deadline (the watchdog) that yields the CPU while it waits,
// which matters when ranks share cores (--oversubscribe).
// Who is missing when the watchdog fires: every communicator numbers its collectives (seq). Each time
// a wait passes timeout_s, the waiting rank sends a question (its seq) to every other rank of the
// communicator, on a point-to-point tag of the same MPI communicator (point-to-point never matches a
// collective, and nothing else here sends point-to-point), and waits up to 0.75 x timeout_s for answers.
// A rank answers from the wait loop of any collective of any communicator (every ~10 ms) and, while
// it works outside the collectives, from collective_keepalive() (weights, blocks, convolutions,
// progress lines), with that communicator's seq and a count of what it completed. The wait goes on
// while every rank that has not arrived answers and makes progress between questions; otherwise it
// throws naming them: no answer (stopped, hung), alive in an earlier collective of this communicator
// (different work), or alive with nothing completed since the last question (waiting elsewhere).
// Nothing is added to the fast path: questions are looked for only while waiting or at keepalives.
#include "parallel/communicator.h"
#include "runtime/check.h"

#ifdef SKV_HAVE_MPI
#include <mpi.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/hostdevice.h"
#endif

namespace skv {

#ifdef SKV_HAVE_MPI

bool mpi_built() { return true; }

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string mpi_error(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, static_cast<size_t>(len));
}

#define SKV_MPI(call)                                                                         \
  do {                                                                                        \
    const int rc_ = (call);                                                                   \
    SKV_CHECK(rc_ == MPI_SUCCESS, "{} failed: {}", #call, mpi_error(rc_));                    \
  } while (0)

// Scratch memory of the reduction, counted as workspace.
class Scratch {
 public:
  ~Scratch() { release(); }
  uint8_t* get(size_t bytes) {
    if (bytes > cap_) {
      release();
      p_ = static_cast<uint8_t*>(Allocator::host().allocate(bytes, MemCategory::Workspace));
      cap_ = bytes;
    }
    return p_;
  }
  void release() {
    if (p_) Allocator::host().deallocate(p_, cap_, MemCategory::Workspace);
    p_ = nullptr;
    cap_ = 0;
  }

 private:
  uint8_t* p_ = nullptr;
  size_t cap_ = 0;
};

// out[k] = in[0][k] + in[1][k] + ... in rank order; in[i] = src + i * stride elements.
template <typename T, typename Acc, typename Load, typename Store>
void sum_in_rank_order(const uint8_t* src, size_t stride, int n, size_t m, uint8_t* dst, Load load, Store store) {
  const T* s = reinterpret_cast<const T*>(src);
  T* d = reinterpret_cast<T*>(dst);
  for (size_t k = 0; k < m; ++k) {
    Acc acc = load(s[k]);
    for (int i = 1; i < n; ++i) acc = acc + load(s[i * stride + k]);
    d[k] = store(acc);
  }
}

// The side channel's messages (see the top of the file).
constexpr int kAskTag = 0x5ca1, kAnswerTag = 0x5ca2;
struct Ask {
  int64_t id;   // unique per question, so a late answer to an earlier question is not taken for this one
  int64_t seq;  // the collective the asking rank waits in
};
struct Answer {
  int64_t id;
  int64_t seq;     // collectives this rank has entered on the asked communicator
  int32_t inside;    // 1: waiting in collective `seq` of it; 2: in a collective of another one; 0: working
  int32_t pad = 0;
  int64_t progress;  // collectives completed and keepalive points passed by this rank, all communicators
};

class MpiCommunicator;
std::vector<MpiCommunicator*> g_live;      // every communicator of this process (one thread uses MPI)
MpiCommunicator* g_waiting_in = nullptr;  // the one whose collective this rank is inside, if any
int64_t g_next_ask = 0;
int64_t g_progress = 0;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, CollectiveOptions o, bool owned = true) : comm_(comm), opt_(o), owned_(owned) {
    SKV_MPI(MPI_Comm_rank(comm_, &rank_));
    SKV_MPI(MPI_Comm_size(comm_, &size_));
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    // Ranks of this communicator as numbered in the job (what every error line names).
    world_rank_.resize(static_cast<size_t>(size_));
    std::vector<int> mine(static_cast<size_t>(size_));
    for (int i = 0; i < size_; ++i) mine[static_cast<size_t>(i)] = i;
    MPI_Group g, w;
    MPI_Comm_group(comm_, &g);
    MPI_Comm_group(MPI_COMM_WORLD, &w);
    MPI_Group_translate_ranks(g, size_, mine.data(), w, world_rank_.data());
    MPI_Group_free(&g);
    MPI_Group_free(&w);
    g_live.push_back(this);
  }
  ~MpiCommunicator() override {
    std::erase(g_live, this);
    if (g_waiting_in == this) g_waiting_in = nullptr;
    int fin = 0;
    MPI_Finalized(&fin);
    for (auto& p : answers_) {
      if (fin) break;
      int done = 0;
      MPI_Test(&p.first, &done, MPI_STATUS_IGNORE);
      if (!done) {  // the asker is gone or never looks: let MPI finish it; its buffer must outlive it
        MPI_Request_free(&p.first);
        (void)p.second.release();
      }
    }
    if (owned_ && !fin) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void all_reduce_sum(void* buf, size_t count, DType dt) override {
    const size_t es = dtype_size(dt);
    SKV_CHECK(dt == DType::F32 || dt == DType::F16 || dt == DType::BF16 || dt == DType::I32 || dt == DType::I64,
              "all_reduce_sum: {} cannot be summed (use F32, F16, BF16, I32 or I64)", dtype_name(dt));
    bytes_all_reduced_ += static_cast<int64_t>(count * es);
    Track track(*this, "all_reduce");
    if (size_ == 1 || count == 0) return;
    const double t0 = now_s();
    const size_t seg_bytes = std::clamp<size_t>(opt_.segment_bytes, es * static_cast<size_t>(size_), size_t(1) << 30);
    const size_t seg = std::max<size_t>(seg_bytes / es, static_cast<size_t>(size_));
    uint8_t* p = static_cast<uint8_t*>(buf);
    for (size_t off = 0; off < count; off += seg) reduce_segment(p + off * es, std::min(seg, count - off), dt, es);
    seconds_in_collectives_ += now_s() - t0;
  }

  void all_gather(const void* send, void* recv, size_t count, DType dt) override {
    const size_t bytes = count * dtype_size(dt);
    SKV_CHECK(bytes <= static_cast<size_t>(INT_MAX), "all_gather: {} bytes per rank is more than MPI counts hold", bytes);
    Track track(*this, "all_gather");
    if (bytes == 0) return;
    const double t0 = now_s();
    uint8_t* r = static_cast<uint8_t*>(recv);
    MPI_Request req;
    if (send == r + rank_ * bytes)
      SKV_MPI(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, r, static_cast<int>(bytes), MPI_BYTE, comm_, &req));
    else
      SKV_MPI(MPI_Iallgather(send, static_cast<int>(bytes), MPI_BYTE, r, static_cast<int>(bytes), MPI_BYTE, comm_, &req));
    wait(&req, "all_gather", bytes);
    seconds_in_collectives_ += now_s() - t0;
  }

  void broadcast(void* buf, size_t bytes, int root) override {
    SKV_CHECK(root >= 0 && root < size_, "broadcast root {} outside a communicator of {} ranks", root, size_);
    Track track(*this, "broadcast");
    const double t0 = now_s();
    uint8_t* p = static_cast<uint8_t*>(buf);
    const size_t piece = size_t(1) << 30;
    for (size_t off = 0; off < bytes; off += piece) {
      const int n = static_cast<int>(std::min(piece, bytes - off));
      MPI_Request req;
      SKV_MPI(MPI_Ibcast(p + off, n, MPI_BYTE, root, comm_, &req));
      wait(&req, "broadcast", bytes);
    }
    seconds_in_collectives_ += now_s() - t0;
  }

  void barrier() override {
    Track track(*this, "barrier");
    const double t0 = now_s();
    MPI_Request req;
    SKV_MPI(MPI_Ibarrier(comm_, &req));
    wait(&req, "barrier", 0);
    seconds_in_collectives_ += now_s() - t0;
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    barrier();  // MPI_Comm_split has no deadline: meet under the watchdog first
    MPI_Comm c;
    SKV_MPI(MPI_Comm_split(comm_, color, key, &c));
    return std::make_unique<MpiCommunicator>(c, opt_);
  }

 private:
  // Reduce-scatter (alltoallv + ordered sum) then all-gather of one segment of m elements.
  void reduce_segment(uint8_t* p, size_t m, DType dt, size_t es) {
    const int n = size_;
    std::vector<int> scount(n), sdispl(n), rcount(n), rdispl(n), gcount(n), gdispl(n);
    auto bound = [&](int j) { return m * static_cast<size_t>(j) / static_cast<size_t>(n); };
    const size_t mine = bound(rank_ + 1) - bound(rank_);
    for (int j = 0; j < n; ++j) {
      scount[j] = static_cast<int>((bound(j + 1) - bound(j)) * es);
      sdispl[j] = static_cast<int>(bound(j) * es);
      rcount[j] = static_cast<int>(mine * es);
      rdispl[j] = static_cast<int>(static_cast<size_t>(j) * mine * es);
    }
    uint8_t* s = scratch_.get(std::max<size_t>(1, n * mine * es));
    MPI_Request req;
    SKV_MPI(MPI_Ialltoallv(p, scount.data(), sdispl.data(), MPI_BYTE, s, rcount.data(), rdispl.data(), MPI_BYTE, comm_,
                           &req));
    wait(&req, "all_reduce (reduce-scatter)", m * es);
    uint8_t* out = p + bound(rank_) * es;
    switch (dt) {
      case DType::F32:
        sum_in_rank_order<float, float>(s, mine, n, mine, out, [](float v) { return v; }, [](float v) { return v; });
        break;
      case DType::F16:
        sum_in_rank_order<uint16_t, float>(s, mine, n, mine, out, [](uint16_t v) { return f16_to_f32(v); },
                                           [](float v) { return f32_to_f16(v); });
        break;
      case DType::BF16:
        sum_in_rank_order<uint16_t, float>(s, mine, n, mine, out, [](uint16_t v) { return bf16_to_f32(v); },
                                           [](float v) { return f32_to_bf16(v); });
        break;
      case DType::I32:  // wrap-around like two's complement hardware, without signed-overflow UB
        sum_in_rank_order<int32_t, uint32_t>(s, mine, n, mine, out, [](int32_t v) { return static_cast<uint32_t>(v); },
                                             [](uint32_t v) { return static_cast<int32_t>(v); });
        break;
      case DType::I64:
        sum_in_rank_order<int64_t, uint64_t>(s, mine, n, mine, out, [](int64_t v) { return static_cast<uint64_t>(v); },
                                             [](uint64_t v) { return static_cast<int64_t>(v); });
        break;
      default:
        SKV_FAIL("all_reduce_sum: unsupported dtype {}", dtype_name(dt));
    }
    for (int j = 0; j < n; ++j) {
      gcount[j] = scount[j];
      gdispl[j] = sdispl[j];
    }
    SKV_MPI(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p, gcount.data(), gdispl.data(), MPI_BYTE, comm_, &req));
    wait(&req, "all_reduce (all-gather)", m * es);
  }

  // One collective of this communicator: numbered, and recorded for the statistics.
  struct Track {
    Track(MpiCommunicator& c, const char* what) : c(c), outer(g_waiting_in) {
      ++c.seq_;
      note_collective_begin(what, c.seq_);
      g_waiting_in = &c;
    }
    ~Track() {
      ++g_progress;
      g_waiting_in = outer;
      note_collective_end();
    }
    MpiCommunicator& c;
    MpiCommunicator* outer;
  };

  // Polls the request; yields the CPU after a short spin; answers other ranks' questions while it
  // waits. Each time the wait passes timeout_s it asks the others where they are (ask_round): it waits
  // on while every rank that has not arrived answers and has made progress since the last round, and
  // throws naming the missing ranks otherwise, so the launcher's failure handler ends the job.
  void wait(MPI_Request* req, const char* what, size_t bytes) {
    const double t0 = now_s();
    double round_start = t0, last_answer = t0;
    std::vector<int64_t> last_progress;  // per rank, from the previous round (empty: none yet)
    int done = 0;
    for (long spin = 0;; ++spin) {
      const int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
      SKV_CHECK(rc == MPI_SUCCESS, "{} over {} ranks failed: {}", what, size_, mpi_error(rc));
      if (done) break;
      if (spin < 200) continue;
      if (spin < 2000) {
        sched_yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      if ((spin & 63) != 0) continue;
      const double t = now_s();
      if (t - last_answer > 0.01) {  // by the clock: on a loaded machine a 20 us sleep may last a millisecond
        answer_questions_everywhere();
        last_answer = t;
      }
      if (opt_.timeout_s > 0 && t - round_start > opt_.timeout_s) {
        ask_round(what, bytes, t0, req, last_progress);
        round_start = now_s();
      }
    }
    note_collective_wait(now_s() - t0, what, seq_);
  }

 public:
  static void answer_questions_everywhere() {
    for (MpiCommunicator* c : g_live) c->answer_questions();
  }

 private:
  // Answers every question waiting for this communicator, and lets go of answers that were delivered.
  void answer_questions() {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kAskTag, comm_, &flag, &st) != MPI_SUCCESS || !flag) break;
      Ask q{};
      if (MPI_Recv(&q, sizeof q, MPI_BYTE, st.MPI_SOURCE, kAskTag, comm_, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
      auto a = std::make_unique<Answer>();
      a->id = q.id;
      a->seq = seq_;
      a->inside = g_waiting_in == this ? 1 : g_waiting_in ? 2 : 0;
      a->progress = g_progress;
      MPI_Request r;
      if (MPI_Isend(a.get(), sizeof(Answer), MPI_BYTE, st.MPI_SOURCE, kAnswerTag, comm_, &r) == MPI_SUCCESS)
        answers_.emplace_back(r, std::move(a));
    }
    std::erase_if(answers_, [](auto& p) {
      int done = 0;
      MPI_Test(&p.first, &done, MPI_STATUS_IGNORE);
      return done != 0;
    });
  }

  // The wait in collective seq_ passed the deadline: ask every other rank where it is and wait up to
  // 0.75 x the deadline for the answers (answering questions meanwhile: the others may be asking too;
  // a rank busy outside the collectives answers at its next keepalive point). Returns when every rank
  // that has not arrived is alive and progressing (or the collective completed meanwhile); otherwise
  // throws one line naming the ranks that never arrived.
  void ask_round(const char* what, size_t bytes, double t0, MPI_Request* req, std::vector<int64_t>& last_progress) {
    const int n = size_;
    const double window = std::max(1.0, 0.75 * opt_.timeout_s);
    // The question outlives this call if a rank never receives it (MPI owns the send until then).
    auto* q = new Ask{(static_cast<int64_t>(world_rank_[static_cast<size_t>(rank_)]) << 40) + ++g_next_ask, seq_};
    std::vector<Answer> ans(static_cast<size_t>(n));
    std::vector<MPI_Request> rr(static_cast<size_t>(n), MPI_REQUEST_NULL);
    std::vector<bool> got(static_cast<size_t>(n), false);
    for (int p = 0; p < n; ++p) {
      if (p == rank_) continue;
      MPI_Request sr;
      if (MPI_Isend(q, sizeof(Ask), MPI_BYTE, p, kAskTag, comm_, &sr) == MPI_SUCCESS) MPI_Request_free(&sr);
      MPI_Irecv(&ans[static_cast<size_t>(p)], sizeof(Answer), MPI_BYTE, p, kAnswerTag, comm_, &rr[static_cast<size_t>(p)]);
    }
    const double t_ask = now_s();
    int finished = 0;
    for (int pending = n - 1; pending > 0 && !finished && now_s() - t_ask < window;) {
      pending = 0;
      for (int p = 0; p < n; ++p) {
        MPI_Request& r = rr[static_cast<size_t>(p)];
        if (r == MPI_REQUEST_NULL) continue;
        int done = 0;
        MPI_Test(&r, &done, MPI_STATUS_IGNORE);
        if (done && ans[static_cast<size_t>(p)].id != q->id)  // a late answer to an earlier question
          MPI_Irecv(&ans[static_cast<size_t>(p)], sizeof(Answer), MPI_BYTE, p, kAnswerTag, comm_, &r);
        else if (done)
          got[static_cast<size_t>(p)] = true;
        pending += r != MPI_REQUEST_NULL;
      }
      MPI_Test(req, &finished, MPI_STATUS_IGNORE);  // the last rank may arrive meanwhile
      answer_questions_everywhere();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    for (MPI_Request& r : rr) {
      if (r == MPI_REQUEST_NULL) continue;
      MPI_Cancel(&r);
      MPI_Wait(&r, MPI_STATUS_IGNORE);
    }
    if (finished) {  // MPI_Test freed the request: the caller's next MPI_Test must see it complete
      *req = MPI_REQUEST_NULL;
      return;
    }
    std::vector<int> silent, behind, stuck;
    bool working = false;
    for (int p = 0; p < n; ++p) {
      if (p == rank_) continue;
      const Answer& a = ans[static_cast<size_t>(p)];
      const int wr = world_rank_[static_cast<size_t>(p)];
      if (!got[static_cast<size_t>(p)]) {
        silent.push_back(wr);
      } else if (a.seq < seq_ && a.inside == 1) {
        behind.push_back(wr);  // waits in an earlier collective of this communicator: it will never get here
      } else if (a.seq < seq_) {
        if (!last_progress.empty() && last_progress[static_cast<size_t>(p)] == a.progress)
          stuck.push_back(wr);  // alive but nothing completed since the last round (e.g. a cross-group deadlock)
        else
          working = true;
      }
    }
    if (silent.empty() && behind.empty() && stuck.empty() && (working || last_progress.empty())) {
      last_progress.assign(static_cast<size_t>(n), -1);
      for (int p = 0; p < n; ++p)
        if (got[static_cast<size_t>(p)]) last_progress[static_cast<size_t>(p)] = ans[static_cast<size_t>(p)].progress;
      if (working) return;  // a rank that has not arrived is alive and working: wait on
    }
    auto list = [](const std::vector<int>& v) {
      return fmt::format("{} {}", v.size() == 1 ? "rank" : "ranks", fmt::join(v, ", "));
    };
    std::string who;
    auto add = [&](const std::string& part) { who += (who.empty() ? "" : "; ") + part; };
    if (!silent.empty())
      add(fmt::format("{} never arrived and {} not answer (stopped, hung, or busy outside the collectives)",
                      list(silent), silent.size() == 1 ? "does" : "do"));
    if (!behind.empty())
      add(fmt::format("{} never arrived: {} alive but still in an earlier collective (the ranks run different work)",
                      list(behind), behind.size() == 1 ? "it is" : "they are"));
    if (!stuck.empty())
      add(fmt::format("{} never arrived: {} alive but completed nothing in the last {:.0f} s (waiting in another "
                      "collective that cannot complete?)", list(stuck), stuck.size() == 1 ? "it is" : "they are",
                      opt_.timeout_s + window));
    if (who.empty()) who = "every rank arrived, yet the collective did not complete (an MPI transport problem)";
    SKV_FAIL("{} #{} of {} bytes over {} ranks: {}; rank {} waited {:.0f} s (SKV_COLLECTIVE_TIMEOUT={} s)", what,
             seq_, bytes, n, who, world_rank_[static_cast<size_t>(rank_)], now_s() - t0, opt_.timeout_s);
  }

  MPI_Comm comm_;
  CollectiveOptions opt_;
  bool owned_ = true;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_rank_;  // rank i of this communicator is rank world_rank_[i] of the job
  int64_t seq_ = 0;              // collectives entered on this communicator
  std::vector<std::pair<MPI_Request, std::unique_ptr<Answer>>> answers_;  // sends in flight
  Scratch scratch_;
};

}  // namespace

void collective_keepalive() {
  if (g_live.empty() || omp_in_parallel()) return;
  static double last = 0;
  const double t = now_s();
  if (t - last < 0.01) return;
  last = t;
  note_keepalive();
  ++g_progress;
  MpiCommunicator::answer_questions_everywhere();
}

std::unique_ptr<Communicator> make_mpi_world_communicator(const CollectiveOptions& o) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  SKV_CHECK(init && !fin, "MPI is not running in this process (start the program with mpirun or srun --mpi=pmix)");
  MPI_Comm c;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  {
    // MPI_Comm_dup has no deadline: every rank first meets in a barrier the watchdog covers, so a rank
    // that never gets here (stuck reading a file, wrong command line) is reported, not waited for.
    MpiCommunicator world(MPI_COMM_WORLD, o, /*owned=*/false);
    world.barrier();
  }
  SKV_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &c));
  return std::make_unique<MpiCommunicator>(c, o);
}

#else  // no MPI in this build

bool mpi_built() { return false; }
void collective_keepalive() {}

std::unique_ptr<Communicator> make_mpi_world_communicator(const CollectiveOptions&) {
  SKV_FAIL("this build has no MPI (configure found no MPI; install libopenmpi-dev and rebuild)");
}

#endif

}  // namespace skv
