// apps/cnf/dist_args.h — the data-parallel flags of train and nll: --nproc starts local
// workers; --rank/--world-size/--master-* (or RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
// join a group on several hosts.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "apps/cnf/launch.h"
#include "cnf/core/error.h"
#include "cnf/dist/dist.h"

namespace cnf::app {

// --nproc local workers, or one rank of a group on several hosts (flags, else the
// RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT environment).
struct DistArgs {
  int nproc = 1;
  int rank = -1, world_size = 0, master_port = 0;
  std::string master_addr;
  double dist_timeout = 60.0;
};

inline void add_dist(CLI::App* sub, DistArgs& d) {
  sub->add_option("--nproc", d.nproc,
                  "Data-parallel worker processes on this host (Gloo on 127.0.0.1)")
      ->capture_default_str();
  sub->add_option("--rank", d.rank,
                  "This process's rank in a group on several hosts "
                  "(default: $RANK)");
  sub->add_option("--world-size", d.world_size,
                  "Processes in the group (default: $WORLD_SIZE, else 1)");
  sub->add_option("--master-addr", d.master_addr,
                  "Host of rank 0, which serves the TCP store (default: $MASTER_ADDR, else "
                  "127.0.0.1)");
  sub->add_option("--master-port", d.master_port,
                  "Port of rank 0's TCP store (default: $MASTER_PORT, else 29500)");
  sub->add_option("--dist-timeout", d.dist_timeout,
                  "Seconds a rank waits for the others (store connection and every "
                  "collective) before it stops with an error")
      ->capture_default_str();
}

inline void check_dist(const DistArgs& d) {
  CNF_CHECK(d.nproc >= 1, "--nproc must be >= 1, got ", d.nproc);
  CNF_CHECK(launched_worker() || d.nproc == 1 || (d.rank < 0 && d.world_size == 0),
            "--nproc starts the ranks itself; drop --rank/--world-size (those join a group "
            "started on several hosts)");
}

// True when this invocation should start `nproc` local workers instead of working.
inline bool wants_launch(const DistArgs& d) {
  if (launched_worker() || d.nproc == 1) return false;
  check_dist(d);
  return true;
}

// The group this run joins, or none (one process).
inline std::shared_ptr<dist::Group> join_group(const DistArgs& d) {
  dist::GroupOptions go;
  const bool from_env = dist::options_from_env(go);
  if (d.rank >= 0) go.rank = d.rank;
  if (d.world_size > 0) go.world_size = d.world_size;
  if (!d.master_addr.empty()) go.master_addr = d.master_addr;
  if (d.master_port > 0) go.master_port = d.master_port;
  go.timeout_seconds = d.dist_timeout;
  check_dist(d);
  if (!from_env && d.rank < 0 && d.world_size == 0) return nullptr;
  go.validate();
  if (go.world_size == 1) return nullptr;
  return std::make_shared<dist::Group>(go);
}

}  // namespace cnf::app
