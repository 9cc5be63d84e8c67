// Rank arithmetic: the launcher variables each launcher sets, the TP x replica split, the share of
// requests per replica, one GPU per local rank - and the errors a user sees when they do not fit.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "parallel/topology.h"
#include "runtime/check.h"
#include "test_util.h"

namespace skv {

namespace {

Topology from(const std::map<std::string, std::string>& vars) {
  return topology_from_env([&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

using test::error_of;

}  // namespace

TEST(Topology, AloneIsNotALaunch) {
  const Topology t = from({});
  EXPECT_FALSE(t.launched());
  EXPECT_EQ(t.world_size, 1);
  // A Slurm batch script outside srun has SLURM_PROCID but is one process.
  EXPECT_FALSE(from({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_ID", "12"}}).launched());
}

TEST(Topology, OpenMpiVariables) {
  const Topology t = from({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                           {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                           {"SLURM_PROCID", "0"}});  // mpirun inside an allocation: Open MPI's numbers win
  EXPECT_EQ(t.source, "OMPI");
  EXPECT_EQ(t.world_rank, 5);
  EXPECT_EQ(t.world_size, 8);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.local_size, 4);
}

TEST(Topology, SrunWithPmix) {
  const Topology t = from({{"PMIX_RANK", "9"}, {"SLURM_PROCID", "9"}, {"SLURM_LOCALID", "1"}, {"SLURM_STEP_ID", "0"},
                           {"SLURM_STEP_NUM_TASKS", "16"}, {"SLURM_NTASKS", "16"}});
  EXPECT_EQ(t.source, "PMIX");
  EXPECT_EQ(t.world_rank, 9);
  EXPECT_EQ(t.world_size, 16);
  EXPECT_EQ(t.local_rank, 1);
}

TEST(Topology, HydraPmi) {
  const Topology t = from({{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "1"}, {"MPI_LOCALNRANKS", "2"}});
  EXPECT_EQ(t.source, "PMI");
  EXPECT_EQ(t.world_rank, 3);
  EXPECT_EQ(t.world_size, 4);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.local_size, 2);
}

TEST(Topology, SrunStepWithoutMpiPlugin) {
  const Topology t = from({{"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "1"}, {"SLURM_STEP_ID", "0"},
                           {"SLURM_STEP_NUM_TASKS", "2"}});
  EXPECT_EQ(t.source, "SLURM");
  EXPECT_EQ(t.world_rank, 1);
  EXPECT_EQ(t.world_size, 2);
}

TEST(Topology, MalformedVariablesAreNamed) {
  EXPECT_NE(error_of([] { from({{"OMPI_COMM_WORLD_RANK", "x1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}); })
                .find("OMPI_COMM_WORLD_RANK='x1'"),
            std::string::npos);
  EXPECT_NE(error_of([] { from({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}}); }).find("not below"),
            std::string::npos);
}

TEST(ParallelPlan, TensorParallelGroupsAreConsecutiveRanks) {
  const ParallelPlan p = plan_parallel(8, 5, 2);
  EXPECT_EQ(p.tp, 2);
  EXPECT_EQ(p.replicas, 4);
  EXPECT_EQ(p.replica, 2);
  EXPECT_EQ(p.tp_rank, 1);
  EXPECT_EQ(p.group_first_rank(), 4);
  const ParallelPlan q = plan_parallel(16, 11, 8);
  EXPECT_EQ(q.replica, 1);
  EXPECT_EQ(q.tp_rank, 3);
}

TEST(ParallelPlan, TpMustDivideTheWorld) {
  const std::string m = error_of([] { plan_parallel(6, 0, 4); });
  EXPECT_NE(m.find("--tp 4 does not divide the 6 ranks"), std::string::npos) << m;
  EXPECT_NE(m.find("1 | 2 | 3 | 6"), std::string::npos) << m;
  EXPECT_NE(error_of([] { plan_parallel(4, 0, 0); }).find("--tp 0"), std::string::npos);
}

TEST(ReplicaShare, ContiguousAndComplete) {
  EXPECT_EQ(replica_share(10, 0, 3), (std::pair<int64_t, int64_t>{0, 4}));
  EXPECT_EQ(replica_share(10, 1, 3), (std::pair<int64_t, int64_t>{4, 7}));
  EXPECT_EQ(replica_share(10, 2, 3), (std::pair<int64_t, int64_t>{7, 10}));
  EXPECT_EQ(replica_share(1, 1, 2), (std::pair<int64_t, int64_t>{1, 1}));
  EXPECT_EQ(replica_share(5, 0, 1), (std::pair<int64_t, int64_t>{0, 5}));
  for (int64_t n : {0, 1, 7, 100})
    for (int R : {1, 2, 3, 8}) {
      int64_t next = 0;
      for (int r = 0; r < R; ++r) {
        auto [b, e] = replica_share(n, r, R);
        EXPECT_EQ(b, next);
        EXPECT_LE(e - b, n / R + 1);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
}

Topology node(int local_rank, int local_size) {
  Topology t;
  t.source = "OMPI";
  t.world_rank = local_rank, t.world_size = local_size, t.local_rank = local_rank, t.local_size = local_size;
  return t;
}

TEST(DeviceForRank, OneGpuPerLocalRank) {
  const EnvLookup none = [](const char*) -> const char* { return nullptr; };
  EXPECT_EQ(device_for_rank(node(3, 8), 8, none), 3);
  const std::string m = error_of([&] { device_for_rank(node(1, 4), 2, none); });
  EXPECT_NE(m.find("this node runs 4 ranks but only 2 GPU(s) are visible"), std::string::npos) << m;
  EXPECT_NE(m.find("--ntasks-per-node=2"), std::string::npos) << m;
  EXPECT_NE(error_of([&] { device_for_rank(node(2, 0), 2, none); }).find("local rank 2 needs GPU 2"), std::string::npos);
  EXPECT_NE(error_of([&] { device_for_rank(node(0, 1), 0, none); }).find("no GPU is visible"), std::string::npos);
}

// Each rank sees exactly one GPU (srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES per rank): every rank
// uses device 0 - it used to throw on every rank but 0.
TEST(DeviceForRank, EachRankSeeingOneGpuUsesIt) {
  const EnvLookup none = [](const char*) -> const char* { return nullptr; };
  for (int r = 0; r < 4; ++r) EXPECT_EQ(device_for_rank(node(r, 4), 1, none), 0) << r;
}

// SKV_CUDA_DEVICE wins, and is validated; the launcher variables decide the local rank, so an Open MPI
// mpiexec inside an sbatch allocation (every rank inherits SLURM_LOCALID=0) still spreads the ranks.
TEST(DeviceForRank, EnvironmentsAgreeWithTheTopology) {
  auto env = [](std::map<std::string, std::string> vars) {
    return [vars](const char* n) -> const char* {
      auto it = vars.find(n);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  const auto explicit_dev = env({{"SKV_CUDA_DEVICE", "2"}});
  EXPECT_EQ(device_for_rank(node(0, 2), 4, explicit_dev), 2);
  EXPECT_NE(error_of([&] { device_for_rank(node(0, 1), 2, explicit_dev); }).find("SKV_CUDA_DEVICE=2"), std::string::npos);
  for (int r = 0; r < 4; ++r) {
    const auto inside_sbatch = env({{"OMPI_COMM_WORLD_RANK", std::to_string(r)}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                    {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(r)}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                    {"SLURM_LOCALID", "0"}, {"SLURM_PROCID", "0"}});
    const Topology t = topology_from_env(inside_sbatch);
    EXPECT_EQ(device_for_rank(t, 4, inside_sbatch), r);
    const auto hydra = env({{"PMI_RANK", std::to_string(r)}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", std::to_string(r)},
                            {"MPI_LOCALNRANKS", "4"}, {"SLURM_LOCALID", "0"}});
    EXPECT_EQ(device_for_rank(topology_from_env(hydra), 4, hydra), r);
  }
}

}  // namespace skv
