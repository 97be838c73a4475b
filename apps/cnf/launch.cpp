#include "apps/cnf/launch.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/dist/dist.h"

namespace cnf::app {

namespace {
volatile std::sig_atomic_t forwarded_signal = 0;
void record_signal(int sig) { forwarded_signal = sig; }

std::string how_it_ended(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "ended with status " + std::to_string(status);
}
}  // namespace

namespace {
char** command_line_argv = nullptr;
}

void set_command_line(char** argv) { command_line_argv = argv; }

int launch_workers(int nproc, double grace_seconds) {
  CNF_CHECK(command_line_argv != nullptr, "the command line was not kept (set_command_line)");
  return launch_local(nproc, command_line_argv, grace_seconds);
}

bool launched_worker() {
  const char* v = std::getenv("CNF_LAUNCHED");
  return v != nullptr && *v != '\0';
}

namespace {
// Forks rank 0..nproc-1, each exec'ing this program with RANK, WORLD_SIZE, MASTER_ADDR and
// MASTER_PORT set (and the launcher's own signal handlers restored).
std::vector<pid_t> start_ranks(int nproc, char** argv, int port, const struct sigaction& old_int,
                               const struct sigaction& old_term) {
  std::vector<pid_t> pids(nproc, -1);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    CNF_CHECK(pid >= 0, "cannot start rank ", r, ": fork failed: ", std::strerror(errno));
    if (pid == 0) {
      // The worker dies with the launcher, whatever kills it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("CNF_LAUNCHED", "1", 1);
      ::execv("/proc/self/exe", argv);
      std::fprintf(stderr, "cnf: cannot start rank %d: exec /proc/self/exe failed: %s\n", r,
                   std::strerror(errno));
      ::_exit(127);
    }
    pids[r] = pid;
  }
  return pids;
}
}  // namespace

int launch_local(int nproc, char** argv, double grace_seconds) {
  CNF_CHECK(nproc >= 1, "--nproc must be >= 1, got ", nproc);
  const int port = dist::free_loopback_port();
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = record_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  forwarded_signal = 0;

  const std::vector<pid_t> pids = start_ranks(nproc, argv, port, old_int, old_term);
  std::vector<int> status(nproc, 0);
  std::vector<bool> done(nproc, false);

  using clock = std::chrono::steady_clock;
  int first_failed = -1, left = nproc, forwarded = 0;
  clock::time_point kill_at{};
  bool stopping = false;
  auto signal_all = [&](int sig) {
    for (int r = 0; r < nproc; ++r)
      if (!done[r]) ::kill(pids[r], sig);
  };
  while (left > 0) {
    if (forwarded_signal != 0 && forwarded_signal != forwarded) {
      forwarded = forwarded_signal;
      signal_all(forwarded);  // each rank saves (rank 0 writes) and stops on the same step
    }
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < nproc; ++r) {
        if (pids[r] != pid || done[r]) continue;
        done[r] = true;
        status[r] = st;
        --left;
        const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!ok && first_failed < 0 && forwarded == 0) {
          first_failed = r;
          std::fprintf(stderr, "cnf: rank %d of %d %s; stopping the other ranks\n", r, nproc,
                       how_it_ended(st).c_str());
          signal_all(SIGTERM);
          stopping = true;
          kill_at =
              clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000));
        }
      }
      continue;
    }
    if (stopping && clock::now() >= kill_at) {
      for (int r = 0; r < nproc; ++r)
        if (!done[r])
          std::fprintf(stderr, "cnf: rank %d did not stop within %.0f s; killing it\n", r,
                       grace_seconds);
      signal_all(SIGKILL);
      stopping = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (first_failed >= 0) {
    std::fprintf(stderr, "cnf: training with %d processes failed: rank %d %s\n", nproc,
                 first_failed, how_it_ended(status[first_failed]).c_str());
    return 1;
  }
  if (WIFEXITED(status[0])) return WEXITSTATUS(status[0]);
  return 1;
}

}  // namespace cnf::app
