#include "cnf/data/images.h"

#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"

// stb_image is compiled into this file only, static, PNG only.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb_image.h>

namespace cnf::data {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------ IDX

namespace {
uint32_t big_endian_u32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Whole file through zlib's gz reader, which also passes raw (uncompressed) files through.
std::vector<unsigned char> read_maybe_gzip(const std::string& path) {
  CNF_CHECK(fs::is_regular_file(path), "cannot open '", path,
            "': no such file; for Fashion-MNIST install dataset-fashion-mnist (scripts/setup.sh) "
            "or set CNF_FASHION_MNIST_DIR");
  gzFile f = gzopen(path.c_str(), "rb");
  CNF_CHECK(f != nullptr, "cannot open '", path, "' for reading (permission?)");
  std::vector<unsigned char> out;
  std::vector<unsigned char> buf(1 << 20);
  // IDX image sets are tens of MB; refuse absurd sizes instead of exhausting memory.
  const size_t limit = size_t{1} << 32;
  while (true) {
    const int got = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (got < 0) {
      int code = 0;
      std::string why = gzerror(f, &code);
      gzclose(f);
      fail("'", path, "' is a corrupt or truncated gzip file (", why,
           "); download or reinstall it");
    }
    if (got == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + got);
    if (out.size() > limit) {
      gzclose(f);
      fail("'", path, "' decompresses to more than 4 GiB; not an IDX image file");
    }
  }
  int code = 0;
  const char* why = gzerror(f, &code);
  std::string msg = why ? why : "";
  gzclose(f);
  // A gzip stream cut short reads as a clean end of file with Z_BUF_ERROR set.
  CNF_CHECK(code == Z_OK || code == Z_STREAM_END, "'", path, "' is a corrupt or truncated gzip ",
            "file (", msg, "); download or reinstall it");
  return out;
}
}  // namespace

at::Tensor parse_idx(const unsigned char* bytes, size_t size, const std::string& origin) {
  CNF_CHECK(size >= 4, "IDX file '", origin, "' is truncated: ", size,
            " bytes, shorter than the 4-byte magic number");
  CNF_CHECK(bytes[0] == 0 && bytes[1] == 0, "IDX file '", origin, "': bad magic number (bytes ",
            int{bytes[0]}, " ", int{bytes[1]}, ", expected 0 0); not an IDX file");
  CNF_CHECK(bytes[2] == 0x08, "IDX file '", origin, "': data type 0x", std::hex, int{bytes[2]},
            std::dec, " is not supported; only unsigned bytes (0x08) are read");
  const int ndim = bytes[3];
  CNF_CHECK(ndim >= 1 && ndim <= 4, "IDX file '", origin, "': ", ndim,
            " dimensions; expected 1 (labels) to 4");
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  CNF_CHECK(size >= header, "IDX file '", origin, "' is truncated: its header needs ", header,
            " bytes, the file has ", size);
  std::vector<int64_t> shape;
  uint64_t count = 1;
  for (int k = 0; k < ndim; ++k) {
    const uint32_t n = big_endian_u32(bytes + 4 + 4 * k);
    CNF_CHECK(n <= (1u << 30), "IDX file '", origin, "': dimension ", k, " has size ", n,
              ", too large to be an image set");
    count *= n;
    CNF_CHECK(count <= (uint64_t{1} << 34), "IDX file '", origin,
              "': the dimension sizes multiply to more than 16 G entries; corrupt header");
    shape.push_back(static_cast<int64_t>(n));
  }
  const uint64_t have = size - header;
  CNF_CHECK(have == count, "IDX file '", origin, "' is ", have < count ? "truncated" : "too long",
            ": its header announces ", count, " data bytes, the file holds ", have);
  auto out = torch::empty(shape, torch::kUInt8);
  if (count > 0) std::memcpy(out.data_ptr<uint8_t>(), bytes + header, count);
  return out;
}

at::Tensor read_idx(const std::string& path) {
  auto bytes = read_maybe_gzip(path);
  return parse_idx(bytes.data(), bytes.size(), path);
}

ImageSet read_idx_images(const std::string& images_path, const std::string& labels_path) {
  auto images = read_idx(images_path);
  CNF_CHECK(images.dim() == 3, "IDX file '", images_path, "' has ", images.dim(),
            " dimensions; an image file has 3 (count, rows, columns)");
  auto labels = read_idx(labels_path);
  CNF_CHECK(labels.dim() == 1, "IDX file '", labels_path, "' has ", labels.dim(),
            " dimensions; a label file has 1");
  CNF_CHECK(labels.size(0) == images.size(0), "'", images_path, "' holds ", images.size(0),
            " images but '", labels_path, "' holds ", labels.size(0),
            " labels; pass the matching pair of files");
  ImageSet s;
  s.levels = images.unsqueeze(1).contiguous();
  s.labels = labels.to(torch::kLong);
  s.classes = labels.numel() ? labels.max().item<int64_t>() + 1 : 0;
  s.origin = images_path;
  return s;
}

// ------------------------------------------------------------------------------ PNG

namespace {
at::Tensor read_png(const fs::path& file, int& channels_out) {
  std::vector<unsigned char> bytes;
  {
    std::FILE* f = std::fopen(file.c_str(), "rb");
    CNF_CHECK(f != nullptr, "cannot open image '", file.string(), "'");
    unsigned char buf[65536];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
    std::fclose(f);
  }
  CNF_CHECK(bytes.size() < (size_t{1} << 31), "image '", file.string(), "' is too large");
  int w = 0, h = 0, c = 0;
  CNF_CHECK(stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c) != 0,
            "image '", file.string(), "' is not a readable PNG (", stbi_failure_reason(), ")");
  const int want = c <= 2 ? 1 : 3;  // gray (+alpha) -> 1 channel, RGB(A) -> 3
  unsigned char* px =
      stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c, want);
  CNF_CHECK(px != nullptr, "image '", file.string(), "' is a corrupt PNG (", stbi_failure_reason(),
            ")");
  auto t = torch::from_blob(px, {h, w, want}, torch::kUInt8).permute({2, 0, 1}).clone();
  stbi_image_free(px);
  channels_out = want;
  return t;
}

std::vector<fs::path> sorted_entries(const fs::path& dir, bool folders) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (folders && e.is_directory()) out.push_back(e.path());
    if (!folders && e.is_regular_file() && e.path().extension() == ".png") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

ImageSet read_png_folder(const std::string& folder) {
  CNF_CHECK(fs::is_directory(folder), "image folder '", folder, "' does not exist");
  auto classes = sorted_entries(folder, true);
  std::vector<std::pair<fs::path, int64_t>> files;
  if (classes.empty()) {
    for (auto& p : sorted_entries(folder, false)) files.push_back({p, -1});
  } else {
    for (size_t k = 0; k < classes.size(); ++k)
      for (auto& p : sorted_entries(classes[k], false))
        files.push_back({p, static_cast<int64_t>(k)});
  }
  CNF_CHECK(!files.empty(), "image folder '", folder,
            "' has no .png files (nor class subfolders holding them)");
  std::vector<at::Tensor> images;
  std::vector<int64_t> labels;
  int channels = 0;
  for (const auto& [file, label] : files) {
    int c = 0;
    auto img = read_png(file, c);
    if (!images.empty()) {
      CNF_CHECK(img.size(1) == images.front().size(1) && img.size(2) == images.front().size(2),
                "image '", file.string(), "' is ", img.size(2), "x", img.size(1), " but '",
                files.front().first.string(), "' is ", images.front().size(2), "x",
                images.front().size(1), "; all images of a folder must share one size");
    }
    // Mixed gray and color folders are read as color.
    channels = std::max(channels, c);
    images.push_back(img);
    labels.push_back(label);
  }
  for (auto& img : images)
    if (img.size(0) != channels) img = img.expand({channels, img.size(1), img.size(2)});
  ImageSet s;
  s.levels = torch::stack(images).contiguous();
  s.labels = torch::tensor(labels, torch::kLong);
  s.classes = static_cast<int64_t>(classes.size());
  s.origin = folder;
  return s;
}

// ------------------------------------------------------------------ subsets, resizing

ImageSet downsample(const ImageSet& set, int64_t size) {
  const int64_t h = set.levels.size(2), w = set.levels.size(3);
  CNF_CHECK(size >= 1 && h % size == 0 && w % size == 0 && h / size == w / size,
            "cannot down-sample ", h, "x", w, " images of '", set.origin, "' to ", size, "x", size,
            ": the size must divide both sides by the same factor (e.g. 14 or 7 for 28x28)");
  if (size == h) return set;
  ImageSet out = set;
  auto f = set.levels.to(torch::kFloat32);
  out.levels = torch::avg_pool2d(f, h / size).round().clamp(0, 255).to(torch::kUInt8).contiguous();
  return out;
}

ImageSet select_classes(const ImageSet& set, const std::vector<int64_t>& classes) {
  CNF_CHECK(set.classes > 0, "'", set.origin, "' has no labels; a class subset needs them");
  for (auto c : classes)
    CNF_CHECK(c >= 0 && c < set.classes, "class ", c, " is not a class of '", set.origin, "' (0..",
              set.classes - 1, ")");
  auto keep = torch::zeros({set.labels.size(0)}, torch::kBool);
  for (auto c : classes) keep |= set.labels == c;
  auto idx = keep.nonzero().squeeze(1);
  ImageSet out = set;
  out.levels = set.levels.index_select(0, idx).contiguous();
  out.labels = set.labels.index_select(0, idx);
  return out;
}

// ------------------------------------------------------------------------ transforms

std::pair<at::Tensor, at::Tensor> ImageTransform::forward(const at::Tensor& x) const {
  const int64_t n = x.size(0);
  const double d = static_cast<double>(x.numel() / std::max<int64_t>(n, 1));
  if (kind == Kind::scale) return {2 * x - 1, torch::full({n}, d * std::log(2.0), x.options())};
  auto s = lambda + (1 - 2 * lambda) * x;
  auto y = torch::log(s) - torch::log1p(-s);
  auto log_det =
      (std::log(1 - 2 * lambda) - torch::log(s) - torch::log1p(-s)).reshape({n, -1}).sum(1);
  return {y, log_det};
}

at::Tensor ImageTransform::inverse(const at::Tensor& y) const {
  if (kind == Kind::scale) return ((y + 1) / 2).clamp(0, 1);
  return ((torch::sigmoid(y) - lambda) / (1 - 2 * lambda)).clamp(0, 1);
}

std::string ImageTransform::name() const {
  if (kind == Kind::scale) return "scale";
  return lambda == 1e-6 ? "logit" : detail::concat("logit:", lambda);
}

ImageTransform parse_image_transform(const std::string& name) {
  ImageTransform t;
  if (name == "scale") return t;
  if (name.rfind("logit", 0) == 0) {
    t.kind = ImageTransform::Kind::logit;
    if (name.size() > 5) {
      CNF_CHECK(name[5] == ':', "unknown image transform '", name,
                "'; valid: scale, logit, logit:LAMBDA");
      try {
        t.lambda = std::stod(name.substr(6));
      } catch (const std::exception&) {
        fail("image transform '", name, "': LAMBDA must be a number in (0, 0.5)");
      }
    }
    CNF_CHECK(t.lambda > 0 && t.lambda < 0.5, "logit lambda must be in (0, 0.5), got ", t.lambda);
    return t;
  }
  fail("unknown image transform '", name, "'; valid: scale, logit, logit:LAMBDA");
}

at::Tensor bits_per_dim(const at::Tensor& log_p_y, const at::Tensor& log_det, int64_t dim,
                        int64_t bins) {
  CNF_CHECK(dim >= 1 && bins >= 2, "bits_per_dim needs dim >= 1 and bins >= 2");
  const double d = static_cast<double>(dim);
  auto log_p_x = log_p_y.to(torch::kFloat64) + log_det.to(torch::kFloat64);
  return -(log_p_x - d * std::log(static_cast<double>(bins))) / (d * std::log(2.0));
}

// -------------------------------------------------------------------------- source

ImageSource::ImageSource(ImageSet set, ImageTransform transform, std::string spec)
    : set_(std::move(set)), transform_(transform), spec_(std::move(spec)) {
  CNF_CHECK(set_.levels.defined() && set_.levels.dim() == 4 && set_.levels.size(0) >= 1,
            "image source '", spec_, "' has no images");
  set_.levels = set_.levels.contiguous();
}

int64_t ImageSource::dim() const {
  return set_.levels.size(1) * set_.levels.size(2) * set_.levels.size(3);
}

std::vector<int64_t> ImageSource::image_shape() const {
  return {set_.levels.size(1), set_.levels.size(2), set_.levels.size(3)};
}

std::pair<at::Tensor, at::Tensor> ImageSource::to_model(const at::Tensor& levels,
                                                        at::Generator& gen) const {
  auto k = levels.to(torch::kFloat32);
  auto x = (k + torch::rand(k.sizes(), gen, k.options())) / 256.0;
  auto [y, log_det] = transform_.forward(x);
  return {y.reshape({levels.size(0), -1}), log_det};
}

at::Tensor ImageSource::to_pixels(const at::Tensor& rows) const {
  auto shape = image_shape();
  return transform_.inverse(rows.reshape({rows.size(0), shape[0], shape[1], shape[2]}));
}

std::pair<at::Tensor, at::Tensor> ImageSource::sample_labeled(int64_t n, at::Generator& gen) const {
  CNF_CHECK(n >= 0, "sample count must be >= 0, got ", n);
  auto idx = torch::randint(set_.levels.size(0), {n}, gen, torch::kLong);
  auto rows = to_model(set_.levels.index_select(0, idx), gen).first;
  return {rows, set_.labels.index_select(0, idx)};
}

at::Tensor ImageSource::sample(int64_t n, at::Generator& gen) const {
  return sample_labeled(n, gen).first;
}

// ----------------------------------------------------------------------------- specs

bool is_image_spec(const std::string& spec) {
  return spec == "fashion-mnist" || spec.rfind("fashion-mnist:", 0) == 0 ||
         spec.rfind("png:", 0) == 0;
}

ImageSpec parse_image_spec(const std::string& spec) {
  CNF_CHECK(is_image_spec(spec), "'", spec,
            "' is not an image data spec (fashion-mnist or png:DIR)");
  // Split on ':'; for png the folder is the second field.
  std::vector<std::string> fields;
  {
    std::string cur;
    for (char c : spec) {
      if (c == ':') {
        fields.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    fields.push_back(cur);
  }
  size_t first_key = 1;
  ImageSpec out;
  if (fields[0] == "png") {
    CNF_CHECK(fields.size() >= 2 && !fields[1].empty(), "image spec '", spec,
              "' names no folder; write png:FOLDER");
    out.folder = fields[1];
    first_key = 2;
  }
  int64_t& size = out.size;
  int64_t& n = out.n;
  int64_t& n_test = out.n_test;
  std::vector<int64_t>& classes = out.classes;
  ImageTransform& transform = out.transform;
  for (size_t k = first_key; k < fields.size(); ++k) {
    const auto& f = fields[k];
    auto eq = f.find('=');
    CNF_CHECK(eq != std::string::npos, "image spec '", spec, "': field '", f,
              "' is not key=value; keys: size, classes, n, test, transform");
    auto key = f.substr(0, eq), value = f.substr(eq + 1);
    auto integer = [&](const std::string& v) {
      try {
        size_t used = 0;
        auto x = std::stoll(v, &used);
        if (used == v.size() && x >= 0) return static_cast<int64_t>(x);
      } catch (const std::exception&) {
      }
      fail("image spec '", spec, "': ", key, " needs a non-negative integer, got '", v, "'");
    };
    if (key == "size") {
      size = integer(value);
    } else if (key == "n") {
      n = integer(value);
    } else if (key == "test") {
      n_test = integer(value);
    } else if (key == "classes") {
      std::string cur;
      for (char c : value + "+") {
        if (c == '+' || c == ',') {
          if (!cur.empty()) classes.push_back(integer(cur));
          cur.clear();
        } else {
          cur += c;
        }
      }
    } else if (key == "transform") {
      transform = parse_image_transform(value);
      // logit:LAMBDA spans two ':' fields.
      if (value == "logit" && k + 1 < fields.size() && fields[k + 1].find('=') == std::string::npos)
        transform = parse_image_transform("logit:" + fields[++k]);
    } else {
      fail("image spec '", spec, "': unknown key '", key,
           "'; keys: size, classes, n, test, transform");
    }
  }
  return out;
}

std::vector<int64_t> ImageSpec::shape() const {
  if (!folder.empty()) return {};  // known only from the files
  const int64_t side = size > 0 ? size : 28;
  return {1, side, side};
}

ImageSplit load_image_spec(const std::string& spec) {
  const auto parsed = parse_image_spec(spec);
  const auto& [folder, size, n, n_test, classes, transform] = parsed;
  ImageSet train, test;
  if (!folder.empty()) {
    auto all = read_png_folder(folder);
    // 10% held out, chosen by a fixed permutation so every command sees the same split.
    const int64_t total = all.levels.size(0);
    CNF_CHECK(total >= 2, "image folder '", folder, "' needs at least 2 images to hold one out");
    auto gen = make_generator(0);
    auto perm = torch::randperm(total, gen, torch::kLong);
    const int64_t hold = std::max<int64_t>(1, total / 10);
    train = all;
    test = all;
    train.levels = all.levels.index_select(0, perm.slice(0, hold)).contiguous();
    train.labels = all.labels.index_select(0, perm.slice(0, hold));
    test.levels = all.levels.index_select(0, perm.slice(0, 0, hold)).contiguous();
    test.labels = all.labels.index_select(0, perm.slice(0, 0, hold));
  } else {
    const char* env = std::getenv("CNF_FASHION_MNIST_DIR");
    const std::string dir = env && *env ? env : "/usr/share/datasets/fashion-mnist";
    train =
        read_idx_images(dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz");
    test = read_idx_images(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");
    test.classes = train.classes = std::max(train.classes, test.classes);
  }
  if (!classes.empty()) {
    train = select_classes(train, classes);
    test = select_classes(test, classes);
  }
  if (n > 0 && n < train.levels.size(0)) {
    train.levels = train.levels.slice(0, 0, n).contiguous();
    train.labels = train.labels.slice(0, 0, n);
  }
  if (n_test > 0 && n_test < test.levels.size(0)) {
    test.levels = test.levels.slice(0, 0, n_test).contiguous();
    test.labels = test.labels.slice(0, 0, n_test);
  }
  if (size > 0) {
    train = downsample(train, size);
    test = downsample(test, size);
  }
  CNF_CHECK(train.levels.size(0) >= 1 && test.levels.size(0) >= 1, "image spec '", spec,
            "' leaves no training or test images");
  return {std::make_shared<ImageSource>(std::move(train), transform, spec), std::move(test)};
}

}  // namespace cnf::data
