#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

// NPY files: read_npy and write_npy (the format: numpy.lib.format, version 1.0-3.0).
namespace cnf::io {
namespace {
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

}  // namespace

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

}  // namespace cnf::io
