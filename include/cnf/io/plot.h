/// \file
/// cnf/io/plot.h — PNG plots drawn with Cairo (antialiased, real fonts): scatter plots,
/// density heat maps and trajectories in 2-D, and line charts with log axes for studies
/// (error against NFE, losses). Every file is written atomically (see io/files.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <limits>
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
  std::string title;           ///< on top of the image (UTF-8)
  std::string xlabel;          ///< below the horizontal axis; empty: none
  std::string ylabel;          ///< beside the vertical axis; empty: none
  std::string colorbar_label;  ///< heat maps: beside the color bar; empty: none
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
/// `range` = {xmin, xmax, ymin, ymax}, colored with a perceptual (viridis-like) map; cells
/// that are not finite are grey.
void heatmap_png(const std::string& path, const at::Tensor& values, std::array<double, 4> range,
                 const PlotOptions& options = {});

/// One panel of heatmaps_png.
struct HeatmapPanel {
  at::Tensor values;           ///< [H, W], row 0 at the top, as for heatmap_png
  std::string title;           ///< above the panel
  std::string colorbar_label;  ///< beside its color bar
};

/// Several heat maps side by side over the same `range`, each `options.width` pixels wide
/// with its own color bar (`options.title`, when set, goes in a band above them all).
void heatmaps_png(const std::string& path, const std::vector<HeatmapPanel>& panels,
                  std::array<double, 4> range, const PlotOptions& options = {});

/// Trajectories: `paths` [T, N, 2] (time-major), each drawn as a polyline, with the
/// start points (index 0) and end points (index T-1) marked in distinct colors.
void trajectories_png(const std::string& path, const at::Tensor& paths,
                      const PlotOptions& options = {});

/// Scale of a chart axis.
enum class Scale {
  linear,  ///< ticks at 1, 2 or 5 times a power of ten
  log10,   ///< logarithmic; ticks at powers of ten (and 2 and 5 times them on short ranges)
  log2,    ///< logarithmic; ticks at powers of two (NFE 4, 8, 16, ...)
};

/// One tick of an axis.
struct Tick {
  double value;       ///< where, in data units
  std::string label;  ///< its text; empty for a minor tick
  bool major;         ///< labelled, with a stronger grid line
};

/// The ticks of an axis over [lo, hi] (log scales need 0 < lo): about six labelled ones in
/// natural steps (1, 2, 5 x 10^k; powers of ten; powers of two) and, on log10 axes, minor
/// ticks at 2..9 times each power of ten. Ticks outside [lo, hi] are left out.
std::vector<Tick> axis_ticks(double lo, double hi, Scale scale);

/// One line of a chart: y against x, a polyline with a marker at each point. A point that is
/// not finite, or not positive on a log axis, is left out and breaks the line there.
struct Line {
  std::vector<double> x;  ///< abscissae
  std::vector<double> y;  ///< ordinates, as many as x
  std::string label;      ///< legend entry; empty: none
  int color = -1;         ///< index into a 10-color palette; -1: the line's position in the list
  int marker = -1;        ///< index into 7 marker shapes; -1: the line's position; -2: no markers
  int dash = 0;           ///< 0 solid, 1 dashed, 2 dotted, 3 dash-dot
  double width = 1.8;     ///< line width in pixels, in (0, 20]
  double opacity = 1.0;   ///< in (0, 1]
};

/// A horizontal reference line across a chart (a floor, a target), grey and dashed.
struct Reference {
  double y;           ///< where, in data units
  std::string label;  ///< legend entry; empty: none
};

/// Size, axes and annotations of a line chart.
struct ChartOptions {
  /// Image width in pixels, in [64, 16384].
  int width = 760;
  /// Image height in pixels, in [64, 16384].
  int height = 480;
  std::string title;             ///< on top
  std::string xlabel;            ///< below the horizontal axis
  std::string ylabel;            ///< beside the vertical axis
  Scale xscale = Scale::linear;  ///< horizontal axis scale
  Scale yscale = Scale::linear;  ///< vertical axis scale
  /// {xmin, xmax, ymin, ymax}; a NaN end fits the data (and the references) with a small
  /// margin.
  std::array<double, 4> range{
      std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN(),
      std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  std::vector<Reference> references;  ///< horizontal reference lines
};

/// A line chart: labelled axes (log axes with natural ticks), a grid, the lines in distinct
/// colors, markers and dashes, reference lines, and a legend to the right of the axes box
/// (never over the data). A chart with no drawable point says so inside its box.
void line_chart_png(const std::string& path, const std::vector<Line>& lines,
                    const ChartOptions& options = {});

}  // namespace cnf::io
