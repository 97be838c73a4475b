#include "cnf/io/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

namespace cnf::io {
namespace {

using Clock = std::chrono::steady_clock;

// A terminal redraw faster than the eye can read only costs time; a log line more often
// than every few seconds floods CI logs.
constexpr double kRedrawSeconds = 0.1;
constexpr double kLogSeconds = 5.0;
constexpr int kBarWidth = 30;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string format_duration(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds + 0.5);
  if (seconds < 9.95) {
    std::snprintf(buf, sizeof(buf), "%.1fs", seconds);  // short runs: whole seconds say "0s"
  } else if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

}  // namespace

Progress::Progress(int64_t total, std::string label, bool enabled)
    : total_(std::max<int64_t>(total, 0)),
      label_(std::move(label)),
      enabled_(enabled),
      tty_(enabled && ::isatty(STDERR_FILENO) == 1),
      start_(Clock::now()),
      last_print_(start_) {}

Progress::~Progress() {
  // Leave the shell prompt on a fresh line if the owner never called finish() (e.g. an
  // exception unwound past it).
  if (enabled_ && tty_ && !finished_ && last_reported_ >= 0) std::fputs("\n", stderr);
}

void Progress::update(int64_t done, const std::string& status) {
  if (!enabled_ || finished_) return;
  done = std::max<int64_t>(0, total_ > 0 ? std::min(done, total_) : done);
  const Clock::time_point now = Clock::now();
  const double since_print = seconds_between(last_print_, now);
  const double elapsed = seconds_between(start_, now);
  const bool complete = total_ > 0 && done == total_;

  if (tty_) {
    if (!complete && last_reported_ >= 0 && since_print < kRedrawSeconds) return;
    std::string line = "\r" + label_ + " ";
    if (total_ > 0) {
      const int filled = static_cast<int>(kBarWidth * done / total_);
      line += "[" + std::string(filled, '#') + std::string(kBarWidth - filled, '.') + "]";
      char buf[96];
      std::snprintf(buf, sizeof(buf), " %3d%% %lld/%lld %s", static_cast<int>(100 * done / total_),
                    static_cast<long long>(done), static_cast<long long>(total_),
                    format_duration(elapsed).c_str());
      line += buf;
      if (done > 0 && !complete)
        line += " eta " + format_duration(elapsed * (total_ - done) / static_cast<double>(done));
    } else {
      line += std::to_string(done) + " " + format_duration(elapsed);
    }
    if (!status.empty()) line += "  " + status;
    line += "\x1b[K";  // clear what a longer previous line left behind
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  } else {
    // One line per 10% of the work, or every few seconds when a tenth takes long.
    const bool new_tenth =
        total_ > 0 && (last_reported_ < 0 ? done > 0 && 10 * done / total_ >= 1
                                          : 10 * done / total_ > 10 * last_reported_ / total_);
    const bool stale = since_print >= kLogSeconds && done != last_reported_;
    if (!new_tenth && !stale) return;
    if (total_ > 0) {
      std::fprintf(stderr, "%s: %lld/%lld (%d%%) %s%s%s\n", label_.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_),
                   static_cast<int>(100 * done / total_), format_duration(elapsed).c_str(),
                   status.empty() ? "" : "  ", status.c_str());
    } else {
      std::fprintf(stderr, "%s: %lld %s%s%s\n", label_.c_str(), static_cast<long long>(done),
                   format_duration(elapsed).c_str(), status.empty() ? "" : "  ", status.c_str());
    }
    std::fflush(stderr);
  }
  last_reported_ = done;
  last_print_ = now;
}

void Progress::finish(const std::string& status) {
  if (!enabled_ || finished_) return;
  const double elapsed = seconds_between(start_, Clock::now());
  if (tty_) {
    const int64_t done = total_ > 0 ? total_ : std::max<int64_t>(last_reported_, 0);
    last_reported_ = -1;  // forces the redraw that update() would otherwise throttle
    update(done, status);
    std::fputs("\n", stderr);
  } else {
    std::fprintf(stderr, "%s: done in %s%s%s\n", label_.c_str(), format_duration(elapsed).c_str(),
                 status.empty() ? "" : "  ", status.c_str());
  }
  std::fflush(stderr);
  finished_ = true;
}

}  // namespace cnf::io
