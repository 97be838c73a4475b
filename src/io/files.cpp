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

bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

void swap_bytes(char* data, int64_t count, int itemsize) {
  for (int64_t i = 0; i < count; ++i) std::reverse(data + i * itemsize, data + (i + 1) * itemsize);
}

// ---------------------------------------------------------------------------------------
// NPY (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html)

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

[[noreturn]] void npy_fail(const std::string& path, const std::string& what) {
  fail("'", path, "' is not a readable .npy file: ", what,
       ". Re-save it with numpy.save(path, array) from NumPy");
}

// The header is a Python dict literal written by NumPy's repr(), e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Only that subset of Python is accepted: string keys; string, bool and int-tuple values.
class NpyHeaderParser {
 public:
  NpyHeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  NpyHeader parse() {
    NpyHeader header;
    bool has_descr = false, has_order = false, has_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') {
        ++i_;
        break;
      }
      std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (peek() == '[') bad("structured (record) dtypes are not supported; save a plain array");
        header.descr = parse_string();
        has_descr = true;
      } else if (key == "fortran_order") {
        header.fortran_order = parse_bool();
        has_order = true;
      } else if (key == "shape") {
        header.shape = parse_tuple();
        has_shape = true;
      } else {
        bad("unexpected key '" + key + "' in the header");
      }
      skip_space();
      if (peek() == ',') {
        ++i_;
      } else if (peek() != '}') {
        bad("expected ',' or '}' in the header at byte " + std::to_string(i_));
      }
    }
    skip_space();
    if (i_ != s_.size()) bad("unexpected text after the header dict");
    if (!has_descr || !has_order || !has_shape)
      bad("the header lacks one of 'descr', 'fortran_order', 'shape'");
    return header;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const { npy_fail(path_, what); }

  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }

  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }

  void expect(char c) {
    if (peek() != c)
      bad(std::string("garbled header: expected '") + c + "' at byte " + std::to_string(i_));
    ++i_;
  }

  std::string parse_string() {
    char quote = peek();
    if (quote != '\'' && quote != '"')
      bad("garbled header: expected a quoted string at byte " + std::to_string(i_));
    ++i_;
    size_t end = s_.find(quote, i_);
    if (end == std::string::npos) bad("garbled header: unterminated string");
    std::string out = s_.substr(i_, end - i_);
    i_ = end + 1;
    return out;
  }

  bool parse_bool() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    bad("garbled header: 'fortran_order' must be True or False");
  }

  std::vector<int64_t> parse_tuple() {
    std::vector<int64_t> out;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') {
        ++i_;
        return out;
      }
      int64_t value = 0;
      auto [end, ec] = std::from_chars(s_.data() + i_, s_.data() + s_.size(), value);
      if (ec != std::errc() || value < 0)
        bad("garbled header: 'shape' must be a tuple of non-negative integers");
      i_ = static_cast<size_t>(end - s_.data());
      if (peek() == 'L') ++i_;  // Python 2 long literal, as old NumPy wrote it
      out.push_back(value);
      skip_space();
      if (peek() == ',') {
        ++i_;
      } else if (peek() != ')') {
        bad("garbled header: 'shape' must be a tuple of non-negative integers");
      }
    }
  }

  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
};

struct NpyType {
  at::ScalarType dtype;
  int itemsize;
  bool big_endian;
  bool is_bool;
};

[[noreturn]] void unsupported_dtype(const std::string& path, const std::string& descr,
                                    const std::string& why) {
  fail("'", path, "': dtype '", descr, "' is not supported (", why,
       "). Supported: float32, float64, int8..int64, uint8, bool; convert first, e.g. "
       "numpy.save(path, array.astype('float32'))");
}

NpyType parse_descr(const std::string& descr, const std::string& path) {
  if (descr.size() < 2) npy_fail(path, "unknown dtype '" + descr + "'");
  size_t at = 0;
  bool big = !host_is_little_endian();
  if (descr[0] == '<' || descr[0] == '>' || descr[0] == '|' || descr[0] == '=') {
    if (descr[0] == '<') big = false;
    if (descr[0] == '>') big = true;
    at = 1;
  }
  char kind = descr[at];
  int size = 0;
  auto [end, ec] = std::from_chars(descr.data() + at + 1, descr.data() + descr.size(), size);
  if (ec != std::errc() || end != descr.data() + descr.size())
    npy_fail(path, "unknown dtype '" + descr + "'");
  auto unsupported = [&](const std::string& why) { unsupported_dtype(path, descr, why); };
  if (kind == 'f') {
    if (size == 4) return {at::kFloat, 4, big, false};
    if (size == 8) return {at::kDouble, 8, big, false};
    unsupported(size == 2 ? "float16" : "float" + std::to_string(8 * static_cast<int64_t>(size)));
  }
  if (kind == 'i') {
    if (size == 1) return {at::kChar, 1, big, false};
    if (size == 2) return {at::kShort, 2, big, false};
    if (size == 4) return {at::kInt, 4, big, false};
    if (size == 8) return {at::kLong, 8, big, false};
  }
  if (kind == 'u' && size == 1) return {at::kByte, 1, big, false};
  if (kind == 'u') unsupported("LibTorch has no unsigned integers wider than 8 bits");
  if (kind == 'b' && size == 1) return {at::kByte, 1, big, true};
  if (kind == 'c') unsupported("complex");
  unsupported_dtype(path, descr, "not a numeric dtype");
}

// ---------------------------------------------------------------------------------------
// CSV

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> split_fields(const std::string& line, char sep) {
  std::vector<std::string> fields;
  if (sep == ' ') {
    std::istringstream in(line);
    std::string field;
    while (in >> field) fields.push_back(field);
    return fields;
  }
  size_t start = 0;
  while (true) {
    size_t end = line.find(sep, start);
    std::string field = trim(line.substr(start, end == std::string::npos ? end : end - start));
    // Spreadsheets quote some fields; a quoted number is still a number.
    if (field.size() >= 2 && field.front() == '"' && field.back() == '"')
      field = trim(field.substr(1, field.size() - 2));
    fields.push_back(field);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return fields;
}

// from_chars, unlike strtod, ignores the C locale (a German locale would read "1,5").
bool parse_number(const std::string& field, double& value) {
  const char* begin = field.data();
  const char* end = begin + field.size();
  if (begin != end && *begin == '+') ++begin;
  if (begin == end) return false;
  auto [stop, ec] = std::from_chars(begin, end, value);
  return ec == std::errc() && stop == end;
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

// -----------------------------------------------------------------------------------------

at::Tensor read_npy(const std::string& path) {
  const std::string bytes = read_text(path);
  static const char kMagic[] = "\x93NUMPY";
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0)
    npy_fail(path, "it does not start with the .npy magic bytes \\x93NUMPY");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  auto byte = [&](size_t i) { return static_cast<size_t>(static_cast<unsigned char>(bytes[i])); };
  if (major == 1) {
    header_len = byte(8) | byte(9) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) npy_fail(path, "the file ends inside its preamble");
    header_len = byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
    header_start = 12;
  } else {
    npy_fail(path, "format version " + std::to_string(major) + " is unknown (known: 1, 2, 3)");
  }
  if (bytes.size() < header_start + header_len)
    npy_fail(path, "the file is truncated inside its header (" + std::to_string(header_len) +
                       " header bytes announced, " + std::to_string(bytes.size() - header_start) +
                       " present)");
  const std::string header_text = bytes.substr(header_start, header_len);
  const NpyHeader header = NpyHeaderParser(header_text, path).parse();
  const NpyType type = parse_descr(header.descr, path);

  int64_t numel = 1;
  for (int64_t d : header.shape) {
    if (d != 0 && numel > std::numeric_limits<int64_t>::max() / type.itemsize / d)
      npy_fail(path, "the header's shape is impossibly large");
    numel *= d;
  }
  const size_t data_start = header_start + header_len;
  const size_t expected = static_cast<size_t>(numel) * type.itemsize;
  const size_t present = bytes.size() - data_start;
  if (present < expected)
    npy_fail(path, "the file is truncated: the header promises " + std::to_string(expected) +
                       " data bytes but only " + std::to_string(present) + " follow");
  if (present > expected)
    npy_fail(path, "the file has " + std::to_string(present - expected) +
                       " bytes after the data that the header does not account for");

  // Fortran order stores the transpose in C order: read with the shape reversed, then
  // reverse the axes back.
  std::vector<int64_t> stored_shape = header.shape;
  if (header.fortran_order) std::reverse(stored_shape.begin(), stored_shape.end());
  at::Tensor out = torch::empty(stored_shape, torch::dtype(type.dtype));
  if (expected > 0) {
    char* data = static_cast<char*>(out.data_ptr());
    std::memcpy(data, bytes.data() + data_start, expected);
    if (type.itemsize > 1 && type.big_endian == host_is_little_endian())
      swap_bytes(data, numel, type.itemsize);
  }
  if (header.fortran_order && out.dim() > 1) {
    std::vector<int64_t> axes(out.dim());
    for (int64_t i = 0; i < out.dim(); ++i) axes[i] = out.dim() - 1 - i;
    out = out.permute(axes).contiguous();
  }
  // NumPy bools are bytes; anything non-zero is true (a stray 2 must not reach kBool).
  if (type.is_bool) out = out.ne(0);
  return out;
}

void write_npy(const std::string& path, const at::Tensor& x) {
  CNF_CHECK(x.defined(), "cannot write '", path, "': the tensor is undefined");
  std::string descr;
  switch (x.scalar_type()) {
    case at::kFloat:
      descr = "<f4";
      break;
    case at::kDouble:
      descr = "<f8";
      break;
    case at::kChar:
      descr = "|i1";
      break;
    case at::kShort:
      descr = "<i2";
      break;
    case at::kInt:
      descr = "<i4";
      break;
    case at::kLong:
      descr = "<i8";
      break;
    case at::kByte:
      descr = "|u1";
      break;
    case at::kBool:
      descr = "|b1";
      break;
    default:
      fail("cannot write '", path, "' as .npy: dtype ", x.scalar_type(),
           " is not supported; convert with .to(torch::kFloat32) first");
  }
  const at::Tensor data = x.detach().to(torch::kCPU).contiguous();
  std::ostringstream dict;
  dict << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  for (int64_t i = 0; i < data.dim(); ++i) {
    dict << data.size(i);
    // A 1-tuple needs its trailing comma in Python: "(3,)".
    if (data.dim() == 1 || i + 1 < data.dim()) dict << (i + 1 < data.dim() ? ", " : ",");
  }
  dict << "), }";
  std::string header = dict.str();
  // NumPy pads so that the data starts on a 64-byte boundary (aligned memory maps).
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  CNF_CHECK(header.size() <= 65535, "cannot write '", path, "': the shape has too many axes");

  const size_t nbytes = static_cast<size_t>(data.numel()) * data.element_size();
  const int itemsize = static_cast<int>(data.element_size());
  write_atomic(path, [&](std::ostream& out) {
    out.write("\x93NUMPY\x01\x00", 8);
    const char len[2] = {static_cast<char>(header.size() & 0xff),
                         static_cast<char>((header.size() >> 8) & 0xff)};
    out.write(len, 2);
    out.write(header.data(), header.size());
    const char* payload = static_cast<const char*>(data.data_ptr());
    if (itemsize > 1 && !host_is_little_endian()) {
      std::string swapped(payload, nbytes);
      swap_bytes(swapped.data(), data.numel(), itemsize);
      out.write(swapped.data(), swapped.size());
    } else if (nbytes > 0) {
      out.write(payload, static_cast<std::streamsize>(nbytes));
    }
  });
}

// -----------------------------------------------------------------------------------------

at::Tensor read_csv(const std::string& path) {
  std::string text = read_text(path);
  // Spreadsheet exports often begin with a UTF-8 byte-order mark.
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);

  char sep = 0;
  size_t cols = 0;
  int64_t first_data_line = 0;
  std::vector<double> values;
  int64_t rows = 0;
  bool seen_first_row = false;

  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    if (sep == 0) {
      // The first non-empty line decides the separator for the whole file.
      if (line.find(',') != std::string::npos) {
        sep = ',';
      } else if (line.find(';') != std::string::npos) {
        sep = ';';
      } else if (line.find('\t') != std::string::npos) {
        sep = '\t';
      } else {
        sep = ' ';
      }
    }
    const std::vector<std::string> fields = split_fields(line, sep);
    std::vector<double> row(fields.size());
    size_t bad_column = 0;
    for (size_t c = 0; c < fields.size(); ++c) {
      if (!parse_number(fields[c], row[c])) {
        bad_column = c + 1;
        break;
      }
    }
    if (!seen_first_row) {
      seen_first_row = true;
      cols = fields.size();
      // A first row with a word in it is the header; one with only a gap ("1,,2") is a
      // broken data row, reported below.
      const bool has_word = std::any_of(fields.begin(), fields.end(), [](const std::string& f) {
        double unused;
        return !f.empty() && !parse_number(f, unused);
      });
      if (has_word) continue;
    }
    if (fields.size() != cols)
      fail("'", path, "' line ", line_no, ": ", fields.size(), " fields, but ",
           first_data_line ? "line " + std::to_string(first_data_line) : std::string("the header"),
           " has ", cols, "; every row needs the same number of columns");
    if (bad_column != 0) {
      const std::string& field = fields[bad_column - 1];
      fail("'", path, "' line ", line_no, ", column ", bad_column, ": ",
           field.empty() ? std::string("the field is empty") : "'" + field + "' is not a number",
           field.find(',') != std::string::npos ? " (decimal commas are not supported; use '.')"
                                                : "",
           "; fix or remove that entry");
    }
    if (first_data_line == 0) first_data_line = line_no;
    values.insert(values.end(), row.begin(), row.end());
    ++rows;
  }
  if (rows == 0)
    fail("'", path, "' has no data rows", seen_first_row ? " (only a header)" : " (it is empty)",
         "; a table needs at least one row of numbers");
  return torch::tensor(values, torch::kDouble).reshape({rows, static_cast<int64_t>(cols)});
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
