#include "cnf/dist/dist.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "cnf/core/error.h"

namespace cnf::dist {

void GroupOptions::validate() const {
  CNF_CHECK(world_size >= 1, "world size must be >= 1, got ", world_size);
  CNF_CHECK(rank >= 0 && rank < world_size, "rank must be in [0, world size = ", world_size,
            "), got ", rank, "; ranks are numbered 0 .. world size - 1");
  CNF_CHECK(!master_addr.empty(), "master address is empty; pass --master-addr (rank 0's host)");
  CNF_CHECK(master_port > 0 && master_port < 65536, "master port must be in [1, 65535], got ",
            master_port);
  CNF_CHECK(timeout_seconds > 0, "distributed timeout must be > 0 seconds, got ", timeout_seconds);
  CNF_CHECK(bucket_bytes >= 1024, "bucket_bytes must be >= 1024, got ", bucket_bytes);
}

bool options_from_env(GroupOptions& o) {
  auto read_int = [](const char* name, int& into) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return false;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    CNF_CHECK(end != v && *end == '\0', "environment variable ", name, "='", v,
              "' is not an integer");
    into = static_cast<int>(x);
    return true;
  };
  const bool rank = read_int("RANK", o.rank);
  const bool world = read_int("WORLD_SIZE", o.world_size);
  read_int("MASTER_PORT", o.master_port);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0')
    o.master_addr = addr;
  return rank || world;
}

namespace {
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
}  // namespace

struct Group::Impl {
  GroupOptions o;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  double seconds = 0;
  int64_t messages = 0;

  // Runs one collective to completion; a failure (peer closed, timeout) becomes a cnf::Error
  // that says which collective and what the likely cause is.
  template <class F>
  void run(const char* what, F&& start) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      auto work = start();
      work->wait();
    } catch (const std::exception& e) {
      fail("rank ", o.rank, " of ", o.world_size, ": ", what,
           " failed: another rank died, was stopped or hung longer than the distributed "
           "timeout (",
           o.timeout_seconds, " s) (", first_line(e.what()), ")");
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++messages;
  }
};

Group::Group(GroupOptions options) : impl_(std::make_unique<Impl>()) {
  options.validate();
  auto& m = *impl_;
  m.o = options;
  const auto timeout =
      std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000.0));
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(options.master_port);
    so.isServer = options.rank == 0;
    so.numWorkers = static_cast<std::size_t>(options.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    m.store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, so);
  } catch (const std::exception& e) {
    if (options.rank == 0)
      fail("rank 0 of ", options.world_size, ": the store at ", options.master_addr, ":",
           options.master_port, " did not see all ", options.world_size, " ranks within ",
           options.timeout_seconds, " s, or could not listen there (", first_line(e.what()),
           "); start every rank with the same --world-size, --master-addr and --master-port, "
           "and pick a free port");
    fail("rank ", options.rank, " of ", options.world_size, ": cannot reach the store at ",
         options.master_addr, ":", options.master_port, " within ", options.timeout_seconds, " s (",
         first_line(e.what()),
         "); check that rank 0 runs there, --master-addr/"
         "--master-port, and the firewall");
  }
  try {
    auto pgo = c10d::ProcessGroupGloo::Options::create(timeout);
    // The Gloo pairs bind an address of this host: loopback for a local run, else the
    // interface named by GLOO_SOCKET_IFNAME, else the address the host name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0')
      pgo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (options.master_addr == "127.0.0.1" || options.master_addr == "localhost")
      pgo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      pgo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    pgo->threads = 1;
    m.pg =
        c10::make_intrusive<c10d::ProcessGroupGloo>(m.store, options.rank, options.world_size, pgo);
  } catch (const std::exception& e) {
    fail("rank ", options.rank, " of ", options.world_size,
         ": cannot connect the Gloo group through ", options.master_addr, ":", options.master_port,
         " within ", options.timeout_seconds, " s (", first_line(e.what()),
         "); every rank must start, and reach every other (set GLOO_SOCKET_IFNAME to pick "
         "the network interface)");
  }
}

Group::~Group() = default;

int Group::rank() const { return impl_->o.rank; }
int Group::world_size() const { return impl_->o.world_size; }
const GroupOptions& Group::options() const { return impl_->o; }
double Group::collective_seconds() const { return impl_->seconds; }
int64_t Group::messages() const { return impl_->messages; }

namespace {
// Consecutive runs of tensors of one dtype, each run at most `bucket_bytes` (a larger
// tensor is a bucket of its own).
std::vector<std::vector<size_t>> buckets(const std::vector<at::Tensor>& tensors,
                                         int64_t bucket_bytes) {
  std::vector<std::vector<size_t>> out;
  int64_t bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t b = tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
    const bool fits = !out.empty() && bytes + b <= bucket_bytes &&
                      tensors[out.back().front()].scalar_type() == tensors[i].scalar_type();
    if (!fits) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(i);
    bytes += b;
  }
  return out;
}

at::Tensor pack(const std::vector<at::Tensor>& tensors, const std::vector<size_t>& idx) {
  std::vector<at::Tensor> flat;
  flat.reserve(idx.size());
  for (auto i : idx) flat.push_back(tensors[i].reshape({-1}));
  return torch::cat(flat);
}

void unpack(const at::Tensor& buffer, std::vector<at::Tensor>& tensors,
            const std::vector<size_t>& idx) {
  int64_t at = 0;
  for (auto i : idx) {
    const int64_t n = tensors[i].numel();
    tensors[i].copy_(buffer.narrow(0, at, n).view(tensors[i].sizes()));
    at += n;
  }
}
}  // namespace

void Group::broadcast(std::vector<at::Tensor>& tensors, int root) {
  torch::NoGradGuard no_grad;
  if (world_size() == 1) return;
  for (const auto& idx : buckets(tensors, impl_->o.bucket_bytes)) {
    std::vector<at::Tensor> buf{pack(tensors, idx)};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    impl_->run("broadcast", [&] { return impl_->pg->broadcast(buf, bo); });
    unpack(buf[0], tensors, idx);
  }
}

void Group::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  if (world_size() == 1) return;
  for (const auto& idx : buckets(tensors, impl_->o.bucket_bytes)) {
    std::vector<at::Tensor> buf{pack(tensors, idx)};
    impl_->run("gradient all-reduce", [&] { return impl_->pg->allreduce(buf); });
    unpack(buf[0], tensors, idx);
  }
}

at::Tensor Group::all_gather(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  auto in = x.contiguous();
  if (world_size() == 1) return in.unsqueeze(0);
  std::vector<at::Tensor> input{in};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < world_size(); ++r) output[0].push_back(torch::empty_like(in));
  impl_->run("all-gather", [&] { return impl_->pg->allgather(output, input); });
  return torch::stack(output[0]);
}

void Group::barrier() {
  if (world_size() == 1) return;
  // A one-element all-reduce: it is bounded by the group's timeout like every collective.
  std::vector<at::Tensor> one{torch::zeros({1})};
  impl_->run("barrier", [&] { return impl_->pg->allreduce(one); });
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  CNF_CHECK(fd >= 0, "cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  CNF_CHECK(ok, "cannot find a free port on 127.0.0.1: ", std::strerror(errno),
            "; start the ranks by hand with --master-port");
  return ntohs(addr.sin_port);
}

}  // namespace cnf::dist
