/// \file
/// cnf/dist/dist.h — a process group for data-parallel training across processes and hosts.
///
/// A thin layer over LibTorch's c10d with the Gloo backend (CPU, TCP): rank 0 serves a TCP
/// store at master_addr:master_port, every rank connects to it, and Gloo builds a full mesh
/// of TCP pairs between the ranks. LibTorch has no C++ DistributedDataParallel, so cnf owns
/// the few collectives training needs: a broadcast of the parameters, a bucketed all-reduce
/// of the gradients (the tensors are packed into a few flat buffers of up to `bucket_bytes`,
/// one collective each, instead of one message per tensor), an all-gather and a barrier.
///
/// Every collective is bounded by `timeout_seconds`: a rank that dies (its sockets close)
/// or hangs makes the others throw cnf::Error instead of waiting forever.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

/// Data-parallel training across processes and hosts: a process group over c10d and Gloo.
namespace cnf::dist {

/// Where a process sits in its group and how it reaches rank 0.
struct GroupOptions {
  /// This process, in [0, world_size).
  int rank = 0;
  /// Number of processes (>= 1).
  int world_size = 1;
  /// Address of rank 0 (the store server); every rank must reach it.
  std::string master_addr = "127.0.0.1";
  /// TCP port of rank 0's store, in [1, 65535].
  int master_port = 29500;
  /// Bound on connecting to the store and on every collective.
  double timeout_seconds = 60.0;
  /// Largest flat buffer of one all-reduce message.
  int64_t bucket_bytes = 25 << 20;

  /// Throws cnf::Error naming the first invalid field.
  void validate() const;
};

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read what the kernel chose):
/// for the local launcher's store. Throws cnf::Error when no socket can be bound.
int free_loopback_port();

/// Reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment into `o`
/// (those that are set); returns true when WORLD_SIZE or RANK was set.
bool options_from_env(GroupOptions& o);

/// A process group: the collectives of data-parallel training, each bounded by
/// GroupOptions::timeout_seconds.
class Group {
 public:
  /// Connects to (rank 0: serves) the store and builds the Gloo group; throws cnf::Error
  /// naming the address when the peers do not all arrive within the timeout.
  explicit Group(GroupOptions options);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  /// This process, in [0, world_size()).
  int rank() const;
  /// Number of processes in the group.
  int world_size() const;
  /// The options it was built with.
  const GroupOptions& options() const;

  /// Overwrites `tensors` on every rank with rank `root`'s values (packed into flat buffers).
  void broadcast(std::vector<at::Tensor>& tensors, int root = 0);
  /// Replaces every tensor with its sum over the ranks, in place. Tensors are packed by
  /// dtype into buffers of up to bucket_bytes; one all-reduce per buffer.
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  /// Every rank's `x` stacked along a new leading dimension: [world_size, ...x.shape].
  /// All ranks must pass tensors of equal shape and dtype.
  at::Tensor all_gather(const at::Tensor& x);
  /// Returns when every rank has called it (or throws after the timeout).
  void barrier();

  /// Seconds spent inside collectives so far, and the number of messages sent
  /// (buckets), for the all-reduce share of step time.
  double collective_seconds() const;
  /// Collective messages sent so far (all_reduce_sum sends one per bucket).
  int64_t messages() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cnf::dist
