/// \file
/// cnf/data/images.h — image data: IDX files (MNIST / Fashion-MNIST, gzip or raw), folders
/// of PNG images, down-sampling, class subsets, uniform dequantization and the transforms
/// from [0, 1] pixels to the space a flow models, with their log-determinants.
///
/// Pixels are stored as integer levels k in [0, 256) ([N, C, H, W] uint8). Training draws
/// dequantized pixels x = (k + u) / 256, u ~ U[0, 1) (Theis et al. 2016; Uria et al. 2013),
/// then maps them to model space y = T(x):
///   scale   y = 2 x - 1                       log|det dy/dx| = D log 2
///   logit   y = logit(lambda + (1 - 2 lambda) x)
///           log|det dy/dx| = sum_i log(1 - 2 lambda) - log s_i - log(1 - s_i),
///           s_i = lambda + (1 - 2 lambda) x_i   (Dinh et al., Real NVP, 2017, sec. 4.1)
/// so log p_x(x) = log p_y(T(x)) + log|det dT/dx|, and the discrete model's bits/dim is
///   bpd = (-log p_x(x) + D log 256) / (D log 2)        (density::bits_per_dim).
/// An image source samples flat rows [n, C*H*W] in model space, so every part of cnf that
/// takes a data::Source (trainer, samplers, likelihoods) takes images unchanged.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "cnf/data/sources.h"

namespace cnf::data {

/// A set of images: levels uint8 [N, C, H, W] in [0, 256), labels int64 [N] (-1: none).
struct ImageSet {
  /// Pixel levels k, uint8 [N, C, H, W] in [0, 256).
  at::Tensor levels;
  /// Class labels, int64 [N] (-1: none).
  at::Tensor labels;
  /// Number of classes (labels lie in [0, classes)); 0 when unlabeled.
  int64_t classes = 0;
  /// The file or folder the images came from, for messages.
  std::string origin;
};

/// Parses an IDX file (LeCun's MNIST format: magic 0x0000TTDD, big-endian dimension sizes,
/// then the data) from `bytes`, already decompressed. Only unsigned bytes (type 0x08) are
/// accepted. Returns a uint8 tensor shaped by the file's dimensions. Throws cnf::Error naming
/// `origin` and the bad field (magic, type, dimension count, a size, the data length) for a
/// corrupt or truncated file; never reads past `size`.
at::Tensor parse_idx(const unsigned char* bytes, size_t size, const std::string& origin);

/// Reads an IDX file, gzip-compressed (.gz, detected by its magic bytes) or raw.
at::Tensor read_idx(const std::string& path);

/// Reads an IDX image file ([N, H, W]) and its label file ([N]) into an ImageSet (C = 1).
/// The counts must agree; labels must be < 256.
ImageSet read_idx_images(const std::string& images_path, const std::string& labels_path);

/// Reads every .png file of `folder` (sorted by name). When the folder holds subfolders
/// instead, each subfolder (sorted by name) is one class. All images must share a size;
/// gray images give C = 1, others C = 3 (alpha dropped).
ImageSet read_png_folder(const std::string& folder);

/// Area-averages images to `size` x `size` (size must divide H and W), rounding the mean
/// level to the nearest integer.
ImageSet downsample(const ImageSet& set, int64_t size);

/// Keeps the images whose label is in `classes`; labels are kept as they were (so a class
/// subset of Fashion-MNIST still means "class 7 = sneaker").
ImageSet select_classes(const ImageSet& set, const std::vector<int64_t>& classes);

/// Map from dequantized pixels x in [0, 1] to model space (see the header comment).
struct ImageTransform {
  /// Which map: scale (y = 2 x - 1) or logit (see the file comment).
  enum class Kind { scale, logit };
  /// The map; scale by default.
  Kind kind = Kind::scale;
  /// The logit transform's lambda in (0, 0.5); keeps logit finite at x = 0 and 1.
  double lambda = 1e-6;

  /// y = T(x) and log|det dT/dx| per image [N] (x: [N, ...], any float dtype).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& x) const;
  /// x = T^{-1}(y), clamped into [0, 1].
  at::Tensor inverse(const at::Tensor& y) const;
  /// "scale" or "logit(lambda)" (its spec form: "scale" or "logit" with lambda default).
  std::string name() const;
};
/// "scale" or "logit" (lambda = 1e-6) or "logit:LAMBDA"; unknown names list the valid ones.
ImageTransform parse_image_transform(const std::string& name);

/// Per-image log-probability of the discrete levels, from the flow's log-density `log_p_y`
/// of the dequantized, transformed points and the transform's `log_det`, converted to bits
/// per dimension: bpd = -(log_p_y + log_det - D log 256) / (D log 2). [N].
at::Tensor bits_per_dim(const at::Tensor& log_p_y, const at::Tensor& log_det, int64_t dim,
                        int64_t bins = 256);

/// Images as a data source: draws an image uniformly, dequantizes it and maps it to model
/// space; rows are flat [n, C*H*W] float32.
class ImageSource final : public Source {
 public:
  /// Draws from `set` (at least one image) through `transform`; `spec` is what spec() returns.
  ImageSource(ImageSet set, ImageTransform transform, std::string spec);
  at::Tensor sample(int64_t n, at::Generator& gen) const override;
  /// The same draw with its labels [n] (int64).
  std::pair<at::Tensor, at::Tensor> sample_labeled(int64_t n, at::Generator& gen) const;
  int64_t dim() const override;
  std::string spec() const override { return spec_; }
  /// {C, H, W}.
  std::vector<int64_t> image_shape() const;
  /// The images it draws from.
  const ImageSet& images() const { return set_; }
  /// The map T into model space.
  const ImageTransform& transform() const { return transform_; }
  /// Dequantizes `levels` [n, C, H, W] with `gen` and maps them to model space: flat rows
  /// [n, D] and the transform's log-determinant [n].
  std::pair<at::Tensor, at::Tensor> to_model(const at::Tensor& levels, at::Generator& gen) const;
  /// Model-space rows [n, D] back to pixels in [0, 1], shaped [n, C, H, W].
  at::Tensor to_pixels(const at::Tensor& rows) const;

 private:
  ImageSet set_;
  ImageTransform transform_;
  std::string spec_;
};

/// Whether `spec` names an image data set (fashion-mnist..., mnist-idx:..., png:...).
bool is_image_spec(const std::string& spec);

/// The training and test parts of an image spec:
///   fashion-mnist[:key=value]...   Debian's dataset-fashion-mnist (train / t10k files in
///                                  $CNF_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)
///   png:FOLDER[:key=value]...      a folder of PNG images (10% held out, shuffled by seed 0)
/// keys: size=S (down-sample to S x S), classes=A+B+... (class subset), n=N (first N
/// training images), test=N (first N test images), transform=scale|logit|logit:LAMBDA.
/// E.g. "fashion-mnist:size=14:classes=0+7:n=2000".
struct ImageSplit {
  /// The training images as a source.
  std::shared_ptr<const ImageSource> train;
  /// The held-out test images (levels, not dequantized).
  ImageSet test;
};
/// The keys of an image spec (see ImageSplit), read without touching any file.
struct ImageSpec {
  /// png: the folder; empty for fashion-mnist.
  std::string folder;
  /// size=S (0: the files' own size).
  int64_t size = 0;
  /// n=N (0: every training image).
  int64_t n = 0;
  /// test=N (0: every test image).
  int64_t n_test = 0;
  /// classes=A+B+... (empty: all).
  std::vector<int64_t> classes;
  /// transform=... (scale by default).
  ImageTransform transform;
  /// {C, H, W} when the spec alone fixes it (fashion-mnist: {1, S, S}, S = size or 28);
  /// empty for a PNG folder, whose size only its files tell.
  std::vector<int64_t> shape() const;
};
/// Reads the keys of an image spec; errors name the bad key or value.
ImageSpec parse_image_spec(const std::string& spec);
/// Loads both parts of an image spec (see ImageSplit); errors name the bad key or file.
ImageSplit load_image_spec(const std::string& spec);

}  // namespace cnf::data
