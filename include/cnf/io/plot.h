/// \file
/// cnf/io/plot.h — small PNG plots without a plotting library: scatter plots, density
/// heat maps and trajectories in 2-D, rendered into an RGB raster and written with
/// stb_image_write (atomically, see io/files.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

namespace cnf::io {

/// An sRGB color, 8 bits per channel.
using RGB = std::array<uint8_t, 3>;

/// One set of points in a scatter plot: [N, 2] tensor (any float dtype, any device).
struct Series {
  /// The points [N, 2], (x, y) per row.
  at::Tensor points;
  /// Point color (matplotlib blue by default).
  RGB color{31, 119, 180};
  /// Legend entry; empty: none.
  std::string label;
};

/// Size, data range and look of a plot.
struct PlotOptions {
  /// Image width in pixels, in [64, 16384].
  int width = 600;
  /// Image height in pixels, in [64, 16384].
  int height = 600;
  /// Data range shown, {xmin, xmax, ymin, ymax}; all zero means "fit the data" (with 5%
  /// margin, same scale on both axes).
  std::array<double, 4> range{0, 0, 0, 0};
  std::string title;  ///< drawn with a built-in 5x7 pixel font (ASCII)
  /// Radius of a point in pixels, in [0, 64].
  int point_radius = 1;
  /// Opacity of each point in [0, 1]; < 1 shows density through overdraw.
  double alpha = 0.5;
};

/// Scatter plot of several series on one axes box.
void scatter_png(const std::string& path, const std::vector<Series>& series,
                 const PlotOptions& options = {});

/// Several scatter panels side by side in one PNG, each with its own title and
/// the same data range (so they can be compared).
void panels_png(const std::string& path, const std::vector<std::vector<Series>>& panels,
                const std::vector<std::string>& titles, const PlotOptions& options = {});

/// Counts of 2-D points `xy` [N, 2] in `bins` x `bins` equal cells over [lo, hi]^2 (points
/// outside fall into the border cells), as float64 [bins, bins] with row 0 at the top
/// (y = hi), ready for heatmap_png.
at::Tensor histogram_2d(const at::Tensor& xy, int64_t bins, double lo, double hi);

/// Heat map of values on a grid: `values` [H, W] (row 0 is the top, i.e. y = ymax) over
/// `range` = {xmin, xmax, ymin, ymax}, colored with a perceptual (viridis-like) map.
void heatmap_png(const std::string& path, const at::Tensor& values, std::array<double, 4> range,
                 const PlotOptions& options = {});

/// Trajectories: `paths` [T, N, 2] (time-major), each drawn as a polyline, with the
/// start points (index 0) and end points (index T-1) marked in distinct colors.
void trajectories_png(const std::string& path, const at::Tensor& paths,
                      const PlotOptions& options = {});

}  // namespace cnf::io
