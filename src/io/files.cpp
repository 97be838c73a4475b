#include "cnf/io/files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <ostream>
#include <sstream>
#include <streambuf>

#include "cnf/core/error.h"

namespace cnf::io {
namespace {

namespace fs = std::filesystem;

std::string errno_text(int err) { return std::strerror(err); }

// An ostream buffer straight onto a file descriptor, so that write errors (ENOSPC, EIO)
// keep their errno for the message and the same descriptor can be fsync'ed.
class FdStreambuf : public std::streambuf {
 public:
  explicit FdStreambuf(int fd) : fd_(fd) { setp(buffer_, buffer_ + sizeof(buffer_)); }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }

  std::streamsize xsputn(const char* s, std::streamsize n) override {
    // Large blocks (tensor payloads) skip the buffer instead of being copied through it.
    if (n < static_cast<std::streamsize>(sizeof(buffer_))) return std::streambuf::xsputn(s, n);
    if (!drain() || !write_all(s, static_cast<size_t>(n))) return 0;
    return n;
  }

  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    bool ok = write_all(pbase(), static_cast<size_t>(pptr() - pbase()));
    setp(buffer_, buffer_ + sizeof(buffer_));
    return ok;
  }

  bool write_all(const char* data, size_t n) {
    if (error_ != 0) return false;
    while (n > 0) {
      ssize_t written = ::write(fd_, data, n);
      if (written < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return false;
      }
      data += written;
      n -= static_cast<size_t>(written);
    }
    return true;
  }

  int fd_;
  int error_ = 0;
  char buffer_[1 << 16];
};

// Removes the temporary file unless the write was committed, whatever throws on the way.
struct TempFileGuard {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~TempFileGuard() {
    if (fd >= 0) ::close(fd);
    if (!committed) ::unlink(path.c_str());
  }
};

// ENOSPC, EDQUOT and EFBIG (a file size limit, ulimit -f) all mean "no room for this file".
std::string space_hint(int err) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    return " (no room for the file: free space, raise the quota or limit, or choose another "
           "folder)";
  return "";
}

std::string folder_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

// -----------------------------------------------------------------------------------------

void write_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  CNF_CHECK(!path.empty(), "cannot write a file with an empty name; pass a path");
  const std::string folder = folder_of(path);
  std::error_code ec;
  if (!fs::exists(folder, ec))
    fail("cannot write '", path, "': the folder '", folder,
         "' does not exist; create it first (mkdir -p ", folder, ")");
  if (!fs::is_directory(folder, ec))
    fail("cannot write '", path, "': '", folder, "' is not a folder");
  if (fs::is_directory(path, ec))
    fail("cannot write '", path, "': a folder of that name exists; choose a file name");

  TempFileGuard tmp;
  tmp.path = path + ".tmp-" + std::to_string(::getpid());
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (tmp.fd < 0) {
    int err = errno;
    fail("cannot write '", path, "': creating '", tmp.path, "' failed: ", errno_text(err),
         err == EACCES ? " (check the folder's permissions)" : "");
  }

  FdStreambuf buffer(tmp.fd);
  {
    std::ostream out(&buffer);
    try {
      writer(out);
      out.flush();
    } catch (const std::exception&) {
      // A writer that checks its stream (LibTorch's archive writer does) throws on the first
      // failed write; the errno behind it makes the better message.
      if (buffer.error() == 0) throw;
    }
    if (buffer.error() != 0)
      fail("cannot write '", path, "': ", errno_text(buffer.error()), space_hint(buffer.error()));
    if (!out) fail("cannot write '", path, "': the output stream failed while writing");
  }
  // fsync before rename: otherwise a crash may leave the new name on empty contents.
  // Some file systems (NFS) report a full disk only at fsync or close.
  if (::fsync(tmp.fd) != 0) {
    const int err = errno;
    fail("cannot write '", path, "': fsync failed: ", errno_text(err), space_hint(err));
  }
  int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    fail("cannot write '", path, "': close failed: ", errno_text(err), space_hint(err));
  }
  if (::rename(tmp.path.c_str(), path.c_str()) != 0)
    fail("cannot write '", path, "': renaming '", tmp.path, "' failed: ", errno_text(errno));
  tmp.committed = true;
  // Persist the rename itself; best effort, as some file systems refuse fsync on folders.
  int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

int remove_stale_temp_files(const std::string& folder) {
  static const std::string marker = ".tmp-";
  std::error_code ec;
  int removed = 0;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t at = name.rfind(marker);
    if (at == std::string::npos || at == 0) continue;
    const std::string digits = name.substr(at + marker.size());
    long pid = 0;
    auto [stop, err] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (err != std::errc() || stop != digits.data() + digits.size() || pid <= 0) continue;
    // kill(pid, 0) probes without signalling; ESRCH: no such process, the file is orphaned.
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code rm;
    if (fs::remove(it->path(), rm)) ++removed;
  }
  return removed;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_atomic(path, [&](std::ostream& out) { out.write(text.data(), text.size()); });
}

std::string read_text(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("cannot read '", path, "': no such file; check the path");
  if (fs::is_directory(path, ec)) fail("cannot read '", path, "': it is a folder, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '", path, "': ", errno_text(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("cannot read '", path, "': reading failed: ", errno_text(errno));
  return buffer.str();
}

at::Tensor read_table(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  at::Tensor table;
  if (ext == ".npy") {
    table = read_npy(path).to(torch::kDouble);
  } else if (ext == ".csv" || ext == ".tsv" || ext == ".txt") {
    table = read_csv(path);
  } else {
    fail("cannot read a table from '", path, "': unknown extension '", ext,
         "'; use .npy or .csv (also .tsv, .txt)");
  }
  if (table.dim() == 1) table = table.unsqueeze(1);
  CNF_CHECK(table.dim() == 2, "'", path, "' holds an array of shape ", table.sizes(),
            "; a table of samples must be [N, D] (or [N]); reshape it before saving");
  CNF_CHECK(table.size(0) > 0, "'", path, "' holds no rows (shape ", table.sizes(), ")");
  const at::Tensor bad = torch::nonzero(~torch::isfinite(table));
  if (bad.size(0) > 0) {
    const int64_t row = bad[0][0].item<int64_t>(), col = bad[0][1].item<int64_t>();
    fail("'", path, "': row ", row + 1, ", column ", col + 1,
         " (counting from 1, header excluded) is ", table[row][col].item<double>(), "; ",
         bad.size(0), " entr", bad.size(0) == 1 ? "y is" : "ies are",
         " not finite. Remove or impute NaN/Inf values first");
  }
  return table;
}

}  // namespace cnf::io
