// io: NPY and CSV readers/writers, atomic writes, PNG plots and the progress report.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_util.h"
#include "cnf/core/error.h"
#include "cnf/data/images.h"
#include "cnf/io/files.h"
#include "cnf/io/plot.h"
#include "cnf/io/progress.h"
#include "cnf/io/train_log.h"

namespace fs = std::filesystem;
using namespace cnf;

namespace {

/// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / ("cnf-io-" + std::to_string(::getpid()) + "-" +
                                         info->test_suite_name() + "-" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// An .npy file assembled by hand: magic, version, little-endian header length, the
/// header dict padded with spaces and a newline, then `data` verbatim.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict;
  const size_t preamble = major == 1 ? 10 : 12;
  while ((preamble + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  const size_t n = header.size();
  out.push_back(static_cast<char>(n & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  if (major != 1) out.append(2, '\0');
  return out + header + data;
}

template <class T>
std::string raw(const std::vector<T>& values, bool big_endian = false) {
  std::string out(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  if (big_endian)  // the test machine is little-endian (x86-64/aarch64)
    for (size_t i = 0; i < values.size(); ++i)
      std::reverse(out.begin() + i * sizeof(T), out.begin() + (i + 1) * sizeof(T));
  return out;
}

io::Series points(const torch::Tensor& xy) {
  io::Series s;
  s.points = xy;
  return s;
}

/// Runs `fn`, expecting cnf::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const auto& part : parts)
      EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    return;
  }
  ADD_FAILURE() << "expected cnf::Error";
}

}  // namespace

// --- NPY -------------------------------------------------------------------------------

TEST(NpyTest, RoundTripKeepsDtypeShapeAndBits) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{}, {5}, {2, 3, 4}, {0, 3}};
  for (auto dtype : {torch::kFloat32, torch::kFloat64, torch::kInt64}) {
    for (const auto& shape : shapes) {
      torch::Tensor x = dtype == torch::kInt64 ? torch::randint(-1000, 1000, shape, torch::kInt64)
                                               : torch::randn(shape, torch::dtype(dtype));
      const std::string path = dir.file("x.npy");
      io::write_npy(path, x);
      torch::Tensor y = io::read_npy(path);
      EXPECT_EQ(y.scalar_type(), x.scalar_type());
      EXPECT_EQ(y.sizes(), x.sizes());
      // The payload is copied byte for byte, so equality is exact.
      EXPECT_TRUE(torch::equal(y, x)) << "dtype " << dtype << " shape " << x.sizes();
    }
  }
}

TEST(NpyTest, RoundTripBoolUint8AndNonContiguous) {
  TempDir dir;
  torch::Tensor b = torch::tensor({true, false, true});
  io::write_npy(dir.file("b.npy"), b);
  EXPECT_TRUE(torch::equal(io::read_npy(dir.file("b.npy")), b));
  torch::Tensor u = torch::arange(0, 256, torch::kUInt8);
  io::write_npy(dir.file("u.npy"), u);
  EXPECT_TRUE(torch::equal(io::read_npy(dir.file("u.npy")), u));
  // A transposed view must be written in logical (C) order, not storage order.
  torch::Tensor t = torch::arange(6, torch::kFloat64).reshape({2, 3}).t();
  io::write_npy(dir.file("t.npy"), t);
  EXPECT_TRUE(torch::equal(io::read_npy(dir.file("t.npy")), t));
}

TEST(NpyTest, WrittenHeaderFollowsTheNumpyFormat) {
  TempDir dir;
  io::write_npy(dir.file("v.npy"), torch::zeros({3}, torch::kFloat32));
  const std::string bytes = read_bytes(dir.file("v.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len =
      static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
  const std::string header = bytes.substr(10, header_len);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos) << header;
  EXPECT_NE(header.find("'shape': (3,)"), std::string::npos) << header;  // 1-tuple comma
  EXPECT_EQ(header.back(), '\n');
  // NumPy requires the data to start on a 64-byte boundary.
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes.size(), 10 + header_len + 3 * 4);
}

TEST(NpyTest, ReadsHandMadeLittleEndian) {
  TempDir dir;
  const std::string path = dir.file("le.npy");
  write_bytes(path, npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                              raw<double>({1, 2, 3, 4, 5, 6.5})));
  torch::Tensor x = io::read_npy(path);
  EXPECT_EQ(x.scalar_type(), torch::kFloat64);
  // Small integers and halves are exact in binary floating point.
  EXPECT_TRUE(torch::equal(x, torch::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.5}}, torch::kFloat64)));
}

TEST(NpyTest, ReadsBigEndianAndSwapsBytes) {
  TempDir dir;
  write_bytes(dir.file("f.npy"), npy_bytes("{'descr': '>f8', 'fortran_order': False, 'shape': "
                                           "(3,), }",
                                           raw<double>({1.5, -2.0, 1e300}, true)));
  // Byte swapping is lossless: the values come back exactly.
  EXPECT_TRUE(torch::equal(io::read_npy(dir.file("f.npy")),
                           torch::tensor({1.5, -2.0, 1e300}, torch::kFloat64)));
  write_bytes(dir.file("i.npy"),
              npy_bytes("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }",
                        raw<int32_t>({258, -7}, true)));
  torch::Tensor i = io::read_npy(dir.file("i.npy"));
  EXPECT_EQ(i.scalar_type(), torch::kInt32);
  EXPECT_TRUE(torch::equal(i, torch::tensor({258, -7}, torch::kInt32)));
}

TEST(NpyTest, ReadsFortranOrder) {
  TempDir dir;
  // Column-major storage of [[1, 2, 3], [4, 5, 6]].
  write_bytes(dir.file("f2.npy"), npy_bytes("{'descr': '<i8', 'fortran_order': True, 'shape': "
                                            "(2, 3), }",
                                            raw<int64_t>({1, 4, 2, 5, 3, 6})));
  torch::Tensor x = io::read_npy(dir.file("f2.npy"));
  EXPECT_TRUE(torch::equal(x, torch::tensor({{1, 2, 3}, {4, 5, 6}}, torch::kInt64)));
  EXPECT_TRUE(x.is_contiguous());

  // 3-d: in Fortran order element (i, j, k) sits at offset i + 2 j + 6 k.
  std::vector<float> data(24);
  for (int k = 0; k < 24; ++k) data[k] = static_cast<float>(k);
  write_bytes(dir.file("f3.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': "
                                            "(2, 3, 4), }",
                                            raw<float>(data)));
  torch::Tensor y = io::read_npy(dir.file("f3.npy"));
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({2, 3, 4}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(y[i][j][k].item<float>(), i + 2 * j + 6 * k);
}

TEST(NpyTest, ReadsVersion2ZeroDimAndBool) {
  TempDir dir;
  write_bytes(dir.file("v2.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                            "(), }",
                                            raw<float>({0.25f}), 2));
  torch::Tensor s = io::read_npy(dir.file("v2.npy"));
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<float>(), 0.25f);  // exact: a power of two
  // NumPy bools are bytes; a non-zero byte other than 1 is still true.
  write_bytes(dir.file("b.npy"), npy_bytes("{'descr': '|b1', 'fortran_order': False, 'shape': "
                                           "(3,), }",
                                           std::string("\x01\x00\x02", 3)));
  EXPECT_TRUE(torch::equal(io::read_npy(dir.file("b.npy")), torch::tensor({true, false, true})));
}

TEST(NpyTest, RejectsCorruptFilesNamingTheFile) {
  TempDir dir;
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";

  const std::string magic = dir.file("magic.npy");
  write_bytes(magic, "PK\x03\x04 this is a zip, not an npy file");
  expect_error([&] { io::read_npy(magic); }, {magic, "magic"});

  const std::string truncated = dir.file("truncated.npy");
  write_bytes(truncated, npy_bytes(ok_dict, raw<float>({1, 2, 3})));  // 3 of 4 floats
  expect_error([&] { io::read_npy(truncated); }, {truncated, "truncated", "16", "12"});

  const std::string half = dir.file("half.npy");
  write_bytes(half, npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
                              std::string(4, '\0')));
  expect_error([&] { io::read_npy(half); }, {half, "'<f2'", "float16", "astype"});

  const std::string garbage = dir.file("garbage.npy");
  write_bytes(garbage, npy_bytes("{'descr' '<f4' what is this", raw<float>({1, 2, 3, 4})));
  expect_error([&] { io::read_npy(garbage); }, {garbage, "header"});

  const std::string short_header = dir.file("short_header.npy");
  write_bytes(short_header, npy_bytes(ok_dict, "").substr(0, 30));
  expect_error([&] { io::read_npy(short_header); }, {short_header, "truncated"});

  const std::string missing = dir.file("missing.npy");
  expect_error([&] { io::read_npy(missing); }, {missing, "no such file"});
}

// --- CSV -------------------------------------------------------------------------------

TEST(CsvTest, ReadsHeaderAndRows) {
  TempDir dir;
  const std::string path = dir.file("t.csv");
  write_bytes(path, "x,y\n1,2\n3.5,-4e-1\n");
  torch::Tensor t = io::read_csv(path);
  EXPECT_EQ(t.scalar_type(), torch::kFloat64);
  ASSERT_EQ(t.sizes(), torch::IntArrayRef({2, 2}));
  // The parser rounds correctly, so the doubles equal the C++ literals exactly.
  EXPECT_EQ(t[1][0].item<double>(), 3.5);
  EXPECT_EQ(t[1][1].item<double>(), -0.4);
}

TEST(CsvTest, AcceptsOtherSeparatorsBlankLinesAndCrlf) {
  TempDir dir;
  const torch::Tensor expected = torch::tensor({{1.0, 2.0}, {3.0, 4.0}}, torch::kFloat64);
  const std::vector<std::string> texts = {"1;2\n\n3;4\n", "a\tb\r\n1\t2\r\n3\t4\r\n",
                                          "  1   2\n3 4\n\n\n", "\xEF\xBB\xBFx,y\n1,+2\n3,4"};
  for (const auto& text : texts) {
    write_bytes(dir.file("s.csv"), text);
    EXPECT_TRUE(torch::equal(io::read_csv(dir.file("s.csv")), expected)) << text;
  }
}

TEST(CsvTest, RaggedRowNamesTheLine) {
  TempDir dir;
  const std::string path = dir.file("ragged.csv");
  write_bytes(path, "x,y\n1,2\n\n3\n");  // line 3 is blank, line 4 is short
  expect_error([&] { io::read_csv(path); }, {path, "line 4", "1 fields", "has 2"});
}

TEST(CsvTest, NonNumberNamesLineAndColumn) {
  TempDir dir;
  const std::string path = dir.file("word.csv");
  write_bytes(path, "x,y\n1,2\n3,abc\n");
  expect_error([&] { io::read_csv(path); }, {path, "line 3, column 2", "'abc'"});
  write_bytes(path, "1,,2\n");
  expect_error([&] { io::read_csv(path); }, {path, "line 1, column 2", "empty"});
}

TEST(CsvTest, EmptyFileOrHeaderOnlyIsAnError) {
  TempDir dir;
  const std::string path = dir.file("empty.csv");
  write_bytes(path, "");
  expect_error([&] { io::read_csv(path); }, {path, "no data rows"});
  write_bytes(path, "x,y\n\n");
  expect_error([&] { io::read_csv(path); }, {path, "no data rows", "only a header"});
}

// --- tables ----------------------------------------------------------------------------

TEST(IoTest, ReadTableRejectsNonFiniteNamingRowAndColumn) {
  TempDir dir;
  const std::string csv = dir.file("nan.csv");
  write_bytes(csv, "a,b\n1,2\n3,nan\n");
  expect_error([&] { io::read_table(csv); }, {csv, "row 2, column 2", "nan"});
  const std::string npy = dir.file("inf.npy");
  io::write_npy(npy, torch::tensor({{0.0f, 1.0f}, {INFINITY, 2.0f}}));
  expect_error([&] { io::read_table(npy); }, {npy, "row 2, column 1"});
}

TEST(IoTest, ReadTableShapesAndExtensions) {
  TempDir dir;
  io::write_npy(dir.file("v.npy"), torch::arange(4, torch::kInt64));
  torch::Tensor v = io::read_table(dir.file("v.npy"));
  EXPECT_EQ(v.scalar_type(), torch::kFloat64);
  EXPECT_EQ(v.sizes(), torch::IntArrayRef({4, 1}));  // 1-D becomes one column
  io::write_npy(dir.file("c.npy"), torch::zeros({2, 3, 4}));
  expect_error([&] { io::read_table(dir.file("c.npy")); }, {"c.npy", "[N, D]"});
  expect_error([&] { io::read_table(dir.file("x.parquet")); }, {"x.parquet", ".npy or .csv"});
}

// --- atomic writes ---------------------------------------------------------------------

TEST(IoTest, WriteAtomicLeavesNothingWhenTheWriterThrows) {
  TempDir dir;
  const std::string path = dir.file("out.txt");
  EXPECT_THROW(io::write_atomic(path,
                                [](std::ostream& out) {
                                  out << std::string(100000, 'x');  // past the buffer
                                  throw std::runtime_error("writer failed");
                                }),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a temporary file was left behind";

  // An existing file survives a failed rewrite untouched.
  io::write_text_atomic(path, "old");
  EXPECT_THROW(io::write_atomic(path,
                                [](std::ostream& out) {
                                  out << "new";
                                  throw std::runtime_error("writer failed");
                                }),
               std::runtime_error);
  EXPECT_EQ(io::read_text(path), "old");
}

TEST(IoTest, WriteAtomicNamesAMissingFolder) {
  TempDir dir;
  const std::string folder = dir.file("no/such/folder");
  const std::string path = folder + "/out.npy";
  expect_error([&] { io::write_text_atomic(path, "x"); }, {path, folder, "does not exist"});
}

TEST(IoTest, TextRoundTripIncludingBinaryBytes) {
  TempDir dir;
  const std::string text("line 1\nline 2\0\xff", 15);
  io::write_text_atomic(dir.file("t.bin"), text);
  EXPECT_EQ(io::read_text(dir.file("t.bin")), text);
}

// --- plots -----------------------------------------------------------------------------

namespace {
/// Width and height from a PNG's IHDR chunk, after checking the 8-byte signature.
std::pair<uint32_t, uint32_t> png_size(const std::string& path) {
  const std::string b = read_bytes(path);
  EXPECT_GE(b.size(), 24u);
  if (b.size() < 24) return {0, 0};
  EXPECT_EQ(b.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(b.substr(12, 4), "IHDR");  // the first chunk must be IHDR
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) v = v << 8 | static_cast<unsigned char>(b[at + k]);
    return v;
  };
  return {be32(16), be32(20)};
}
}  // namespace

TEST(PlotTest, ScatterWritesPngOfRequestedSize) {
  TempDir dir;
  io::PlotOptions o;
  o.width = 320;
  o.height = 200;
  o.title = "two moons";
  io::Series a{torch::randn({500, 2}), {31, 119, 180}, "data"};
  io::Series b{torch::randn({100, 2}, torch::kFloat64) + 2, {255, 127, 14}, "model"};
  io::scatter_png(dir.file("s.png"), {a, b}, o);
  EXPECT_EQ(png_size(dir.file("s.png")), std::make_pair(320u, 200u));
}

TEST(PlotTest, PanelsHeatmapAndTrajectoriesWritePngs) {
  TempDir dir;
  io::PlotOptions o;
  o.width = 200;
  o.height = 180;
  io::panels_png(dir.file("p.png"),
                 {{points(torch::randn({50, 2}))}, {points(torch::randn({50, 2}))}},
                 {"before", "after"}, o);
  EXPECT_EQ(png_size(dir.file("p.png")), std::make_pair(400u, 180u));  // width is per panel

  torch::Tensor grid = torch::rand({30, 40});
  io::heatmap_png(dir.file("h.png"), grid, {-1, 1, -1, 1}, o);
  EXPECT_EQ(png_size(dir.file("h.png")), std::make_pair(200u, 180u));

  torch::Tensor paths = torch::cumsum(torch::randn({10, 20, 2}), 0);
  io::trajectories_png(dir.file("t.png"), paths, o);
  EXPECT_EQ(png_size(dir.file("t.png")), std::make_pair(200u, 180u));
}

TEST(PlotTest, RejectsBadInputsNamingTheFile) {
  TempDir dir;
  const std::string path = dir.file("bad.png");
  expect_error([&] { io::scatter_png(path, {points(torch::randn({5, 3}))}); }, {path, "[N, 2]"});
  expect_error(
      [&] {
        io::heatmap_png(path, torch::rand({4, 4}), {1, 0, 0, 1});
      },
      {path, "xmin < xmax"});
  io::PlotOptions tiny;
  tiny.width = 10;
  expect_error([&] { io::scatter_png(path, {}, tiny); }, {path, "width"});
  EXPECT_FALSE(fs::exists(path));
}

namespace {
/// The RGB pixels [H, W, 3] of one PNG (read back through the image-folder reader).
torch::Tensor png_pixels(const std::string& path) {
  const fs::path one = path + ".folder";  // the reader takes a folder of PNGs
  fs::create_directories(one);
  fs::copy_file(path, one / "a.png", fs::copy_options::overwrite_existing);
  auto px = cnf::data::read_png_folder(one.string()).levels[0].permute({1, 2, 0}).to(torch::kLong);
  fs::remove_all(one);
  return px;
}
/// How many pixels have exactly this color.
int64_t count_color(const torch::Tensor& px, io::RGB c) {
  return (px.select(2, 0).eq(c[0]) & px.select(2, 1).eq(c[1]) & px.select(2, 2).eq(c[2]))
      .sum()
      .item<int64_t>();
}
std::vector<std::string> labels_of(const std::vector<io::Tick>& ticks) {
  std::vector<std::string> out;
  for (const auto& t : ticks)
    if (t.major) out.push_back(t.label);
  return out;
}
}  // namespace

TEST(PlotTest, AxisTicksAreNaturalOnEveryScale) {
  using V = std::vector<std::string>;
  EXPECT_EQ(labels_of(io::axis_ticks(0, 1, io::Scale::linear)),
            (V{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}));
  // NFE on a log2 axis: the powers of two, not log numbers.
  EXPECT_EQ(labels_of(io::axis_ticks(3.5, 70, io::Scale::log2)), (V{"4", "8", "16", "32", "64"}));
  // Five decades: each power of ten, with unlabelled minor ticks at 2..9 times them.
  const auto decades = io::axis_ticks(2e-5, 0.5, io::Scale::log10);
  EXPECT_EQ(labels_of(decades), (V{"1e-4", "0.001", "0.01", "0.1"}));
  EXPECT_GT(decades.size(), 30u);
  // Less than a decade: 2 and 5 (and 3) times the powers of ten are labelled too.
  EXPECT_EQ(labels_of(io::axis_ticks(0.15, 0.9, io::Scale::log10)), (V{"0.2", "0.3", "0.5"}));
  // Within one short stretch (no such tick inside): plain decimal steps on the log axis.
  EXPECT_GE(labels_of(io::axis_ticks(0.26, 0.29, io::Scale::log10)).size(), 2u);
  expect_error([] { io::axis_ticks(0, 1, io::Scale::log10); }, {"lo > 0"});
  expect_error([] { io::axis_ticks(1, 1, io::Scale::linear); }, {"lo < hi"});
}

TEST(PlotTest, LineChartDrawsEachLineInItsColorAndKeepsTheLegendOffTheData) {
  TempDir dir;
  // Two lines across the whole x range in palette colors 3 (red) and 2 (green), no markers.
  io::Line red{{1, 1000}, {1, 1}, "red line"}, green{{1, 1000}, {10, 10}, "green line"};
  red.color = 3;
  green.color = 2;
  red.marker = green.marker = -2;
  red.width = green.width = 4;
  io::ChartOptions o;
  o.width = 600;
  o.height = 400;
  o.xscale = o.yscale = io::Scale::log10;
  o.xlabel = "NFE";
  o.ylabel = "error";
  o.references = {{3, "floor"}};
  io::line_chart_png(dir.file("c.png"), {red, green}, o);
  EXPECT_EQ(png_size(dir.file("c.png")), std::make_pair(600u, 400u));
  const auto px = png_pixels(dir.file("c.png"));
  const io::RGB kRed{214, 39, 40}, kGreen{44, 160, 44};
  // A 4-pixel line over most of the width has well over 1,000 fully covered pixels.
  EXPECT_GT(count_color(px, kRed), 1000);
  EXPECT_GT(count_color(px, kGreen), 1000);
  // The legend lies right of the axes box, never over the data: in the rows of the red line
  // (more than 100 red pixels each) the line ends left of where the legend's red swatch (in
  // rows of under 100 red pixels: it is ~30 pixels long) begins.
  const auto is_red = px.select(2, 0).eq(214) & px.select(2, 1).eq(39) & px.select(2, 2).eq(40);
  const auto per_row = is_red.sum(1);
  const auto line_rows = per_row.gt(100), swatch_rows = per_row.gt(0) & per_row.le(100);
  ASSERT_TRUE(line_rows.any().item<bool>());
  ASSERT_TRUE(swatch_rows.any().item<bool>());
  const auto line_cols = is_red.index({line_rows}).any(0).nonzero();
  const auto swatch_cols = is_red.index({swatch_rows}).any(0).nonzero();
  EXPECT_LT(line_cols.min().item<int64_t>(), 150);  // the line starts near the box's left
  EXPECT_LT(line_cols.max().item<int64_t>(), swatch_cols.min().item<int64_t>());
}

TEST(PlotTest, LineChartRejectsBadInputAndShowsEmptyData) {
  TempDir dir;
  const std::string path = dir.file("bad.png");
  expect_error(
      [&] {
        io::line_chart_png(path, {io::Line{{1, 2}, {1}, "short"}});
      },
      {path, "short", "2 x values but 1 y values"});
  io::ChartOptions log_axis;
  log_axis.yscale = io::Scale::log10;
  log_axis.range[2] = -1;
  expect_error(
      [&] {
        io::line_chart_png(path, {io::Line{{1, 2}, {1, 2}, "a"}}, log_axis);
      },
      {path, "log axis"});
  EXPECT_FALSE(fs::exists(path));
  // No drawable point (all non-positive on a log axis) still gives a chart that says so.
  log_axis.range[2] = std::numeric_limits<double>::quiet_NaN();
  io::line_chart_png(path, {io::Line{{1, 2}, {0, -1}, "none"}}, log_axis);
  EXPECT_TRUE(fs::exists(path));
}

// --- progress --------------------------------------------------------------------------

TEST(IoProgressTest, PlainLinesEveryTenthWhenNotATerminal) {
  // CaptureStderr points fd 2 at a file, so the report takes its non-terminal form.
  ::testing::internal::CaptureStderr();
  {
    io::Progress progress(100, "train");
    for (int i = 1; i <= 100; ++i) progress.update(i, "loss 0.5");
    progress.finish("ok");
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  // One line per 10% (the loop is far faster than the time-based fallback) plus "done".
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 11) << log;
  EXPECT_NE(log.find("train: 50/100 (50%)"), std::string::npos) << log;
  EXPECT_NE(log.find("train: done in"), std::string::npos) << log;
  EXPECT_EQ(log.find('\r'), std::string::npos) << "no bar redraws in a log file";

  ::testing::internal::CaptureStderr();
  {
    io::Progress quiet(10, "quiet", /*enabled=*/false);
    quiet.update(5);
    quiet.finish();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

// The density plot's histogram: each point lands in the cell that contains it, row 0 is the
// top (largest y), points outside the range go to the border cells, and no point is lost.
TEST(IoTest, Histogram2dPlacesPointsInTheirCells) {
  auto xy = torch::tensor({{-4.9, -4.9}, {4.9, 4.9}, {0.1, -0.1}, {100.0, 0.1}, {-0.1, 0.1}},
                          torch::kFloat64);
  auto h = cnf::io::histogram_2d(xy, 10, -5.0, 5.0);
  ASSERT_EQ(h.sizes(), torch::IntArrayRef({10, 10}));
  EXPECT_EQ(h[9][0].item<double>(), 1.0);  // bottom left
  EXPECT_EQ(h[0][9].item<double>(), 1.0);  // top right
  EXPECT_EQ(h[5][5].item<double>(), 1.0);  // x in [0, 1), y in [-1, 0)
  EXPECT_EQ(h[4][9].item<double>(), 1.0);  // x = 100 clamped to the last column, y in [0, 1)
  EXPECT_EQ(h[4][4].item<double>(), 1.0);  // x in [-1, 0), y in [0, 1)
  EXPECT_EQ(h.sum().item<double>(), 5.0);
  EXPECT_THROW(cnf::io::histogram_2d(xy.slice(1, 0, 1), 10, -5.0, 5.0), cnf::Error);
}

namespace {
// The complete lines of a file.
std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
// The first CSV field of each data row (the steps), header skipped.
std::vector<int64_t> logged_steps(const std::string& csv) {
  std::vector<int64_t> steps;
  const auto lines = lines_of(csv);
  for (size_t i = 1; i < lines.size(); ++i) steps.push_back(std::stoll(lines[i]));
  return steps;
}
}  // namespace

TEST(TrainLogTest, RowsColumnsAndAResumeThatDropsWhatCameAfterTheCheckpoint) {
  const auto dir = fs::path(::testing::TempDir()) / ("cnf_log_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    io::TrainLog log(dir.string(), -1);
    log.append({{"step", 10}, {"loss", 0.5}, {"lr", 1e-3}});
    log.append({{"step", 20}, {"loss", 0.25}, {"lr", NAN}});  // not finite: empty / null
    log.append({{"step", 30}, {"loss", 0.125}});              // a missing value: empty
  }
  const auto csv = (dir / "train_log.csv").string(), jsonl = (dir / "train_log.jsonl").string();
  EXPECT_EQ(lines_of(csv),
            (std::vector<std::string>{"step,loss,lr", "10,0.5,0.001", "20,0.25,", "30,0.125,"}));
  EXPECT_EQ(lines_of(jsonl), (std::vector<std::string>{"{\"step\":10,\"loss\":0.5,\"lr\":0.001}",
                                                       "{\"step\":20,\"loss\":0.25,\"lr\":null}",
                                                       "{\"step\":30,\"loss\":0.125}"}));
  // A run killed while writing step 40 leaves a torn line; its checkpoint was at step 20.
  std::ofstream(csv, std::ios::app) << "40,0.06";
  std::ofstream(jsonl, std::ios::app) << "{\"step\":40,\"lo";
  {
    io::TrainLog log(dir.string(), 20);
    EXPECT_EQ(log.columns(), (std::vector<std::string>{"step", "loss", "lr"}));
    log.append({{"step", 30}, {"loss", 0.2}, {"lr", 1e-3}, {"extra", 1.0}});
  }
  // Steps 10, 20 kept, 30 written once (the new value), the torn 40 gone; the new name
  // extends the header, the kept rows get an empty cell for it.
  EXPECT_EQ(lines_of(csv), (std::vector<std::string>{"step,loss,lr,extra", "10,0.5,0.001,",
                                                     "20,0.25,,", "30,0.2,0.001,1"}));
  const auto json_lines = lines_of(jsonl);
  ASSERT_EQ(json_lines.size(), 3u);
  EXPECT_EQ(json_lines[2], "{\"step\":30,\"extra\":1,\"loss\":0.2,\"lr\":0.001}");
  // A new run (no resume) replaces the log.
  { io::TrainLog log(dir.string(), -1); }
  EXPECT_TRUE(lines_of(csv).empty());
  fs::remove_all(dir);
}

TEST(TrainLogTest, CliRunLogsEveryNStepsAndAResumedRunContinuesTheLog) {
  using cnf_test::contains;
  using cnf_test::run_cnf;
  const std::string dir = ::testing::TempDir() + "/cnf_train_log_" + std::to_string(::getpid());
  const std::string common = " --width 16 --depth 2 --eval-n 20 --quiet --threads 1 --out " + dir;
  auto r = run_cnf("train --steps 40 --log-every 10 --checkpoint-every 20" + common);
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string csv = dir + "/train_log.csv";
  EXPECT_EQ(logged_steps(csv), (std::vector<int64_t>{10, 20, 30, 40}));
  const auto header = lines_of(csv).at(0);
  for (const char* column : {"step", "loss", "lr", "grad_norm", "steps_per_second"})
    EXPECT_TRUE(contains(header, column)) << header;
  // As if killed after step 50 with the checkpoint of step 40: rows 50 and a torn 60 exist.
  std::ofstream(csv, std::ios::app) << "50,1,1,1,1\n60,0.";
  r = run_cnf("train --steps 70 --log-every 10 --resume " + dir + "/model.pt" + common);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(logged_steps(csv), (std::vector<int64_t>{10, 20, 30, 40, 50, 60, 70}));
  EXPECT_EQ(lines_of(dir + "/train_log.jsonl").size(), 7u);
  // The row of step 50 is the resumed run's, not the killed run's.
  EXPECT_NE(lines_of(csv).at(5), "50,1,1,1,1");
  std::filesystem::remove_all(dir);
}

// --eval-every: rows at the evaluation steps carry W2, MMD^2, NFE and NLL (the others leave them
// empty); the last row's W2 is the final evaluation's, which samples the same flow from the
// same noise: equal to the last digit of metrics.json (both printed with 17 digits).
TEST(TrainLogTest, CliRunLogsHeldOutMetricsEveryNSteps) {
  using cnf_test::run_cnf;
  const std::string dir = ::testing::TempDir() + "/cnf_train_eval_" + std::to_string(::getpid());
  auto r = run_cnf(
      "train --steps 40 --log-every 10 --eval-every 20 --eval-steps 10 --width 16 --depth 2 "
      "--eval-n 50 --quiet --threads 1 --out " +
      dir);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto rows = lines_of(dir + "/train_log.jsonl");
  ASSERT_EQ(rows.size(), 4u);
  const auto metrics = nlohmann::json::parse(io::read_text(dir + "/metrics.json"));
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto row = nlohmann::json::parse(rows[i]);
    const bool evaluated = row["step"].get<int64_t>() % 20 == 0;
    EXPECT_EQ(row["eval_w2"].is_number(), evaluated) << rows[i];
    EXPECT_EQ(row["eval_nfe"].is_number(), evaluated) << rows[i];
    if (evaluated) {
      EXPECT_GT(row["eval_w2"].get<double>(), 0.0) << rows[i];
      EXPECT_EQ(row["eval_nfe"].get<double>(), 10.0) << rows[i];  // Euler, --eval-steps 10
    }
  }
  EXPECT_EQ(nlohmann::json::parse(rows.back())["eval_w2"].get<double>(),
            metrics["w2"].get<double>());
  // eval_nll at the last step: the likelihood of the first held-out points, as `cnf nll`
  // measures it from the saved checkpoint on the same points (its held-out split), the same
  // solver and tolerance: two routes to one number.
  r = run_cnf("nll --ckpt " + dir + "/model.pt -n 50 --json " + dir + "/nll.json");
  ASSERT_EQ(r.code, 0) << r.output;
  const double nll = nlohmann::json::parse(io::read_text(dir + "/nll.json"))["nll"].get<double>();
  const auto last = nlohmann::json::parse(rows.back());
  ASSERT_TRUE(last["eval_nll"].is_number()) << rows.back();
  // The same solve on the same points gives the same float32 log-densities; the means are
  // taken in double by either route, so 1e-6 relative only leaves room for a different order
  // of summation (measured 4.6e-8 while one of them still averaged in float32).
  EXPECT_NEAR(last["eval_nll"].get<double>(), nll, 1e-6 * std::max(1.0, std::abs(nll)));
  EXPECT_FALSE(nlohmann::json::parse(rows[0])["eval_nll"].is_number()) << rows[0];
  std::filesystem::remove_all(dir);
}
