// apps/cnf/interrupt.h — SIGINT / SIGTERM during training: finish the step, save, exit.
//
// The handler only records the signal; the training loop polls stop_signal() between
// steps, writes its checkpoint (atomically) and returns 128 + signal. SA_RESETHAND makes a
// second Ctrl-C kill at once, which is safe: no file is ever half-written.
#pragma once

#include <signal.h>

#include <csignal>

namespace cnf::app {

namespace detail {
inline volatile std::sig_atomic_t stop_signal_received = 0;
inline void record_stop_signal(int sig) { stop_signal_received = sig; }
}  // namespace detail

/// While alive, SIGINT and SIGTERM are recorded instead of killing the process.
class StopSignals {
 public:
  StopSignals() {
    detail::stop_signal_received = 0;
    struct sigaction sa {};
    sa.sa_handler = detail::record_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  /// The signal received so far (SIGINT, SIGTERM), or 0.
  static int stop_signal() { return detail::stop_signal_received; }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

inline const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

}  // namespace cnf::app
