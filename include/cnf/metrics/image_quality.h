/// \file
/// cnf/metrics/image_quality.h — sample quality of image models without Inception.
///
/// A small convolutional classifier, trained by cnf on the data set itself (e.g.
/// Fashion-MNIST), supplies features (its penultimate layer) for a Fréchet distance
///   FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})
/// between Gaussians fitted to the features of two image sets (the formula of FID, Heusel et
/// al. 2017). It is NOT the Inception FID: the numbers are comparable only between runs
/// that use the same classifier file. The classifier's accuracy on class-conditional
/// samples measures whether the samples show the class they were asked for.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <functional>
#include <string>

#include "cnf/data/images.h"

namespace cnf::metrics {

/// Fréchet distance between Gaussians fitted to features a [N, F] and b [M, F] (float64
/// inside; the matrix square root through a symmetric eigendecomposition).
double frechet_distance(const at::Tensor& a, const at::Tensor& b);

/// Training of the feature classifier (train_classifier).
struct ClassifierOptions {
  /// Adam steps.
  int64_t steps = 1500;
  /// Images per step.
  int64_t batch_size = 128;
  /// Adam learning rate.
  double lr = 2e-3;
  /// Width of the convolutions (level 1; level 2 has twice as many) and of the features.
  int64_t width = 32;
  /// Feature units (the penultimate layer).
  int64_t features = 128;
  /// Seeds the batches, the dequantization and the weight initialization.
  uint64_t seed = 0;
};

/// conv3x3(C -> w) ReLU, stride-2 conv3x3(w -> 2w) ReLU, stride-2 conv3x3(2w -> 2w) ReLU,
/// global average pool, linear(2w -> features) ReLU [the features], linear(features -> K).
/// Inputs are pixels in [0, 1], [B, C, H, W] or flat [B, C*H*W].
class ImageClassifierImpl : public torch::nn::Module {
 public:
  /// A classifier of `classes` >= 2 classes for `channels` x `height` x `width` images, with
  /// convolution width `conv_width` and `features` feature units.
  ImageClassifierImpl(int64_t channels, int64_t height, int64_t width, int64_t classes,
                      int64_t conv_width = 32, int64_t features = 128);
  /// The features [B, features] of pixels: the penultimate layer, after its ReLU.
  torch::Tensor features(const torch::Tensor& pixels);
  torch::Tensor forward(const torch::Tensor& pixels);  ///< logits [B, K]

  /// \var channels
  /// Image channels C.
  /// \var height
  /// Image height H.
  /// \var width
  /// Image width W.
  /// \var classes
  /// Number of classes K.
  /// \var conv_width
  /// Channels w of the first convolution.
  /// \var n_features
  /// Feature units.
  int64_t channels, height, width, classes, conv_width, n_features;
  /// \var conv1
  /// conv3x3 C -> w.
  /// \var conv2
  /// Stride-2 conv3x3 w -> 2w.
  /// \var conv3
  /// Stride-2 conv3x3 2w -> 2w.
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  /// \var fc
  /// Linear 2w -> features (the features, after ReLU).
  /// \var head
  /// Linear features -> K (the logits).
  torch::nn::Linear fc{nullptr}, head{nullptr};
};
/// Module holder (shared pointer) of ImageClassifierImpl.
TORCH_MODULE(ImageClassifier);

/// Trains a classifier on dequantized pixels of `train` (Adam, cross-entropy); `on_step`
/// (may be empty) sees the step and the loss.
ImageClassifier train_classifier(const data::ImageSet& train, const ClassifierOptions& options,
                                 const std::function<void(int64_t, double)>& on_step = {});

/// Accuracy of `classifier` on pixels [N, ...] against labels [N].
double classifier_accuracy(ImageClassifierImpl& classifier, const at::Tensor& pixels,
                           const at::Tensor& labels);
/// Features of pixels [N, ...], in batches, without autograd.
at::Tensor classifier_features(ImageClassifierImpl& classifier, const at::Tensor& pixels);

/// Writes / reads a classifier file (atomic write; the read names the file in its errors).
void save_classifier(ImageClassifierImpl& classifier, const std::string& path);
/// Reads a classifier written by save_classifier; errors name the file (missing, truncated,
/// not a cnf classifier).
ImageClassifier load_classifier(const std::string& path);

}  // namespace cnf::metrics
