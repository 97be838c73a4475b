#include "cnf/io/plot.h"

// Cairo's headers include their siblings by quoted name, so this path needs no -I.
#include <cairo/cairo.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

namespace cnf::io {
namespace {

const RGB kInk{34, 34, 34};
const RGB kFrame{110, 110, 110};
const RGB kGrid{228, 228, 228};
const RGB kMinorGrid{243, 243, 243};
const RGB kReference{120, 120, 120};
/// Tableau's ten colors (matplotlib's default cycle): distinct, and readable in grey too.
const RGB kPalette[10] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                          {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                          {188, 189, 34},  {23, 190, 207}};
constexpr int kMarkers = 7;
const char* const kFont = "DejaVu Sans";

/// A rectangle in pixels, [x0, x1] x [y0, y1] with y downwards.
struct Box {
  double x0, y0, x1, y1;
  double width() const { return x1 - x0; }
  double height() const { return y1 - y0; }
};

/// Valid UTF-8 passes; otherwise every byte outside ASCII becomes '?' (Cairo refuses a
/// string that is not UTF-8, and labels come from users: run folders, data specs).
std::string utf8_or_ascii(const std::string& s) {
  size_t i = 0;
  bool valid = true;
  while (i < s.size() && valid) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) valid = false;
    for (size_t k = 1; valid && k < n; ++k)
      valid = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    i += n;
  }
  if (valid) return s;
  std::string out = s;
  for (auto& ch : out)
    if (static_cast<unsigned char>(ch) >= 0x80) ch = '?';
  return out;
}

/// One image: a white RGB surface and its drawing context, written as PNG by save().
class Canvas {
 public:
  Canvas(int width, int height)
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height)),
        cr_(cairo_create(surface_)) {
    cairo_set_source_rgb(cr_, 1, 1, 1);
    cairo_paint(cr_);
    cairo_select_font_face(cr_, kFont, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  }
  ~Canvas() {
    cairo_destroy(cr_);
    cairo_surface_destroy(surface_);
  }
  Canvas(const Canvas&) = delete;
  Canvas& operator=(const Canvas&) = delete;

  cairo_t* cr() const { return cr_; }

  void color(RGB c, double alpha = 1.0) const {
    cairo_set_source_rgba(cr_, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0, alpha);
  }
  void font(double size, bool bold = false) const {
    cairo_select_font_face(cr_, kFont, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr_, size);
  }
  double text_width(const std::string& s) const {
    cairo_text_extents_t e;
    cairo_text_extents(cr_, utf8_or_ascii(s).c_str(), &e);
    return e.x_advance;
  }
  /// `s` shortened with "..." until it is at most `width` pixels wide.
  std::string fit(std::string s, double width) const {
    s = utf8_or_ascii(s);
    if (text_width(s) <= width) return s;
    while (!s.empty() && text_width(s + "...") > width) {
      s.pop_back();
      while (!s.empty() && (static_cast<unsigned char>(s.back()) >> 6) == 2) s.pop_back();
      if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
    }
    return s + "...";
  }
  /// Draws `s` with its anchor at (x, y): ax = 0, 0.5, 1 for left, centre, right; the text's
  /// vertical middle (of a digit's height) at y. `angle` in radians, counter-clockwise.
  void text(double x, double y, const std::string& s, double ax, RGB c, double angle = 0) const {
    if (s.empty()) return;
    const std::string u = utf8_or_ascii(s);
    cairo_font_extents_t fe;
    cairo_font_extents(cr_, &fe);
    cairo_save(cr_);
    cairo_translate(cr_, x, y);
    cairo_rotate(cr_, -angle);
    color(c);
    cairo_move_to(cr_, -ax * text_width(u), 0.35 * fe.ascent);
    cairo_show_text(cr_, u.c_str());
    cairo_restore(cr_);
  }
  void rect(const Box& b) const { cairo_rectangle(cr_, b.x0, b.y0, b.width(), b.height()); }

  void save(const std::string& path) const {
    cairo_surface_flush(surface_);
    CNF_CHECK(cairo_status(cr_) == CAIRO_STATUS_SUCCESS, "plot '", path,
              "': drawing failed: ", cairo_status_to_string(cairo_status(cr_)));
    std::string png;
    auto sink = [](void* closure, const unsigned char* data, unsigned int size) {
      static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), size);
      return CAIRO_STATUS_SUCCESS;
    };
    const cairo_status_t s = cairo_surface_write_to_png_stream(surface_, sink, &png);
    CNF_CHECK(s == CAIRO_STATUS_SUCCESS && !png.empty(), "plot '", path,
              "': PNG encoding failed: ", cairo_status_to_string(s));
    write_atomic(path, [&](std::ostream& out) {
      out.write(png.data(), static_cast<std::streamsize>(png.size()));
    });
  }

 private:
  cairo_surface_t* surface_;
  cairo_t* cr_;
};

/// Font sizes of an image, from its smaller side (12 px ticks at 600 pixels).
struct Fonts {
  double tick, label, title;
  explicit Fonts(int width, int height) {
    tick = std::clamp(std::min(width, height) / 50.0, 8.0, 30.0);
    label = tick * 1.1;
    title = tick * 1.25;
  }
};

// ---------------------------------------------------------------------------------------
// Axes: a data range mapped onto a pixel interval, linear or logarithmic.

double forward(double v, Scale s) {
  return s == Scale::linear ? v : s == Scale::log10 ? std::log10(v) : std::log2(v);
}
double inverse(double u, Scale s) {
  return s == Scale::linear ? u : s == Scale::log10 ? std::pow(10.0, u) : std::exp2(u);
}
bool drawable(double v, Scale s) { return std::isfinite(v) && (s == Scale::linear || v > 0); }

struct AxisMap {
  double lo, hi;
  Scale scale;
  double p0, p1;  // pixels of lo and hi
  double operator()(double v) const {
    const double a = forward(lo, scale), b = forward(hi, scale);
    return p0 + (forward(v, scale) - a) / (b - a) * (p1 - p0);
  }
};

/// Tick positions at 1, 2 or 5 times a power of ten, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target, double* step_out) {
  std::vector<double> ticks;
  const double span = hi - lo;
  if (!(span > 0) || !std::isfinite(span)) return ticks;
  const double raw = span / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k += 1)
    ticks.push_back(k * step);
  if (step_out) *step_out = step;
  return ticks;
}

std::string format_tick(double v, double step) {
  char buf[32];
  if (std::abs(v) < step * 1e-6) v = 0;  // no "-0" or "1e-17" at the origin
  const double biggest = std::max(std::abs(v), step);
  if (biggest >= 1e5 || step < 1e-4) {
    std::snprintf(buf, sizeof(buf), "%.2g", v);
  } else {
    const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  }
  return buf;
}

/// A value on a log axis as people write it: 0.01, 5, 1000, 1e-05 -> "1e-5".
std::string format_log_tick(double v) {
  char buf[32];
  if (v >= 1e-3 && v < 1e5) {
    std::snprintf(buf, sizeof(buf), "%.4g", v);
  } else {
    const int e = static_cast<int>(std::floor(std::log10(v) + 1e-9));
    const double m = v / std::pow(10.0, e);
    if (std::abs(m - 1) < 1e-6)
      std::snprintf(buf, sizeof(buf), "1e%d", e);
    else
      std::snprintf(buf, sizeof(buf), "%.2ge%d", m, e);
  }
  return buf;
}

// ---------------------------------------------------------------------------------------
// Drawing parts shared by every plot.

/// Grid lines (minor ones fainter) inside the box, for both axes.
void draw_grid(const Canvas& c, const Box& box, const AxisMap& x, const std::vector<Tick>& xt,
               const AxisMap& y, const std::vector<Tick>& yt) {
  cairo_t* cr = c.cr();
  cairo_set_line_width(cr, 1.0);
  for (bool major : {false, true}) {
    c.color(major ? kGrid : kMinorGrid);
    for (const auto& t : xt)
      if (t.major == major) {
        const double px = std::round(x(t.value)) + 0.5;
        cairo_move_to(cr, px, box.y0);
        cairo_line_to(cr, px, box.y1);
      }
    for (const auto& t : yt)
      if (t.major == major) {
        const double py = std::round(y(t.value)) + 0.5;
        cairo_move_to(cr, box.x0, py);
        cairo_line_to(cr, box.x1, py);
      }
    cairo_stroke(cr);
  }
}

/// The frame, outward tick marks, tick labels and axis labels.
void draw_frame(const Canvas& c, const Fonts& f, const Box& box, const AxisMap& x,
                const std::vector<Tick>& xt, const AxisMap& y, const std::vector<Tick>& yt,
                const std::string& xlabel, const std::string& ylabel) {
  cairo_t* cr = c.cr();
  c.color(kFrame);
  cairo_set_line_width(cr, 1.0);
  cairo_rectangle(cr, std::round(box.x0) + 0.5, std::round(box.y0) + 0.5,
                  std::round(box.width()) - 1, std::round(box.height()) - 1);
  const double major = 0.4 * f.tick, minor = 0.2 * f.tick;
  for (const auto& t : xt) {
    const double px = std::round(x(t.value)) + 0.5;
    cairo_move_to(cr, px, box.y1);
    cairo_line_to(cr, px, box.y1 + (t.major ? major : minor));
  }
  for (const auto& t : yt) {
    const double py = std::round(y(t.value)) + 0.5;
    cairo_move_to(cr, box.x0, py);
    cairo_line_to(cr, box.x0 - (t.major ? major : minor), py);
  }
  cairo_stroke(cr);
  c.font(f.tick);
  double widest = 0;
  for (const auto& t : yt)
    if (!t.label.empty()) {
      c.text(box.x0 - major - 3, y(t.value), t.label, 1.0, kInk);
      widest = std::max(widest, c.text_width(t.label));
    }
  for (const auto& t : xt)
    if (!t.label.empty()) c.text(x(t.value), box.y1 + major + 0.8 * f.tick, t.label, 0.5, kInk);
  c.font(f.label);
  if (!xlabel.empty())
    c.text(0.5 * (box.x0 + box.x1), box.y1 + major + 0.8 * f.tick + 1.5 * f.label,
           c.fit(xlabel, box.width()), 0.5, kInk);
  if (!ylabel.empty())
    c.text(box.x0 - major - 6 - widest - 0.75 * f.label, 0.5 * (box.y0 + box.y1),
           c.fit(ylabel, box.height()), 0.5, kInk, M_PI / 2);
}

/// Room below the box for x tick labels (and the x label), left of it for y tick labels
/// (the widest of `ylabels`) and the y label.
double bottom_margin(const Fonts& f, bool xlabel) {
  return 0.4 * f.tick + 1.4 * f.tick + (xlabel ? 1.6 * f.label : 0) + 4;
}
double left_margin(const Canvas& c, const Fonts& f, const std::vector<Tick>& yticks, bool ylabel) {
  c.font(f.tick);
  double widest = c.text_width("0.0");
  for (const auto& t : yticks) widest = std::max(widest, c.text_width(t.label));
  return 8 + widest + 0.4 * f.tick + 3 + (ylabel ? 1.5 * f.label : 0);
}
double title_band(const Fonts& f, bool title) { return title ? 2.0 * f.title : 0.8 * f.tick; }

void draw_title(const Canvas& c, const Fonts& f, double x0, double x1, double y,
                const std::string& s) {
  if (s.empty()) return;
  c.font(f.title, true);
  c.text(0.5 * (x0 + x1), y, c.fit(s, x1 - x0 - 8), 0.5, kInk);
}

/// A legend as one row of swatches and labels centred under the box (scatter plots: it never
/// covers a point); `items` are labels with a color and opacity.
struct Swatch {
  std::string label;
  RGB color;
};
void draw_legend_row(const Canvas& c, const Fonts& f, double x0, double x1, double y,
                     const std::vector<Swatch>& items) {
  if (items.empty()) return;
  c.font(f.tick);
  const double gap = 1.2 * f.tick, dot = 0.35 * f.tick;
  const double each = (x1 - x0) / static_cast<double>(items.size());
  double total = 0;
  std::vector<std::string> text;
  for (const auto& it : items) {
    text.push_back(c.fit(it.label, each - 3 * dot - gap));
    total += 3 * dot + c.text_width(text.back()) + gap;
  }
  double x = 0.5 * (x0 + x1 - total + gap);
  for (size_t i = 0; i < items.size(); ++i) {
    c.color(items[i].color);
    cairo_arc(c.cr(), x + dot, y, dot, 0, 2 * M_PI);
    cairo_fill(c.cr());
    c.text(x + 3 * dot, y, text[i], 0, kInk);
    x += 3 * dot + c.text_width(text[i]) + gap;
  }
}

// ---------------------------------------------------------------------------------------
// Data preparation and checks.

std::vector<double> points_of(const at::Tensor& t, const std::string& path,
                              const std::string& what) {
  CNF_CHECK(t.defined(), "plot '", path, "': ", what, " is an undefined tensor");
  CNF_CHECK(t.dim() == 2 && t.size(1) == 2, "plot '", path, "': ", what,
            " must be [N, 2] points, got shape ", t.sizes(),
            "; select two coordinates first, e.g. x.slice(1, 0, 2)");
  const at::Tensor cpu = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = cpu.data_ptr<double>();
  return std::vector<double>(p, p + cpu.numel());
}

void check_size(int width, int height, const std::string& path) {
  CNF_CHECK(width >= 64 && width <= 16384 && height >= 64 && height <= 16384, "plot '", path,
            "': width and height must be in [64, 16384] pixels, got ", width, "x", height);
}

void check_options(const PlotOptions& o, const std::string& path) {
  check_size(o.width, o.height, path);
  CNF_CHECK(o.point_radius >= 0 && o.point_radius <= 64, "plot '", path,
            "': point_radius must be in [0, 64], got ", o.point_radius);
  CNF_CHECK(o.alpha > 0 && o.alpha <= 1, "plot '", path, "': alpha must be in (0, 1], got ",
            o.alpha);
}

bool range_is_auto(const std::array<double, 4>& r) {
  return r[0] == 0 && r[1] == 0 && r[2] == 0 && r[3] == 0;
}

void check_range(const std::array<double, 4>& r, const std::string& path) {
  CNF_CHECK(std::isfinite(r[0]) && std::isfinite(r[1]) && std::isfinite(r[2]) &&
                std::isfinite(r[3]) && r[0] < r[1] && r[2] < r[3],
            "plot '", path, "': range must be {xmin, xmax, ymin, ymax} with xmin < xmax and ",
            "ymin < ymax, got {", r[0], ", ", r[1], ", ", r[2], ", ", r[3],
            "}; all zeros fits the data");
}

/// The data's bounding box with a 5% margin, widened along one axis so that one data unit
/// has the same length in pixels on both axes (circles stay circles).
std::array<double, 4> fit_range(const std::vector<const std::vector<double>*>& sets, double box_w,
                                double box_h) {
  double lo[2] = {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
  double hi[2] = {-lo[0], -lo[1]};
  for (const auto* xy : sets)
    for (size_t i = 0; i + 1 < xy->size(); i += 2) {
      if (!std::isfinite((*xy)[i]) || !std::isfinite((*xy)[i + 1])) continue;
      for (int k = 0; k < 2; ++k) {
        lo[k] = std::min(lo[k], (*xy)[i + k]);
        hi[k] = std::max(hi[k], (*xy)[i + k]);
      }
    }
  if (!(lo[0] <= hi[0])) return {-1, 1, -1, 1};  // nothing finite to show
  double center[2], half[2];
  for (int k = 0; k < 2; ++k) {
    center[k] = 0.5 * (lo[k] + hi[k]);
    half[k] = 0.5 * (hi[k] - lo[k]) * 1.05;
  }
  // A single point (or a line) has no extent to fit; show one unit around it.
  if (half[0] <= 0 && half[1] <= 0) half[0] = half[1] = 1;
  const double unit = std::max(2 * half[0] / box_w, 2 * half[1] / box_h);
  half[0] = 0.5 * unit * box_w;
  half[1] = 0.5 * unit * box_h;
  return {center[0] - half[0], center[0] + half[0], center[1] - half[1], center[1] + half[1]};
}

// ---------------------------------------------------------------------------------------
// Viridis-like map: the matplotlib viridis colors at nine evenly spaced positions,
// interpolated linearly (close enough to stay perceptually ordered and colorblind-safe).
RGB colormap(double v) {
  static const double kAnchors[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                        {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                        {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
  v = std::clamp(v, 0.0, 1.0) * 8;
  const int i = std::min(7, static_cast<int>(v));
  const double f = v - i;
  RGB out;
  for (int k = 0; k < 3; ++k)
    out[k] = static_cast<uint8_t>(std::lround(kAnchors[i][k] * (1 - f) + kAnchors[i + 1][k] * f));
  return out;
}

/// An image surface of `rows` x `cols` cells with color(r, c) each, drawn scaled into `box`
/// without smoothing (a grid is shown as it is).
template <class ColorOf>
void paint_cells(const Canvas& c, const Box& box, int64_t rows, int64_t cols, ColorOf color_of) {
  cairo_surface_t* img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, static_cast<int>(cols),
                                                    static_cast<int>(rows));
  cairo_surface_flush(img);
  unsigned char* data = cairo_image_surface_get_data(img);
  const int stride = cairo_image_surface_get_stride(img);
  for (int64_t r = 0; r < rows && data != nullptr; ++r) {
    auto* row = reinterpret_cast<uint32_t*>(data + r * stride);
    for (int64_t k = 0; k < cols; ++k) {
      const RGB v = color_of(r, k);
      row[k] = 0xFF000000u | uint32_t{v[0]} << 16 | uint32_t{v[1]} << 8 | uint32_t{v[2]};
    }
  }
  cairo_surface_mark_dirty(img);
  cairo_t* cr = c.cr();
  cairo_save(cr);
  c.rect(box);
  cairo_clip(cr);
  cairo_translate(cr, box.x0, box.y0);
  cairo_scale(cr, box.width() / static_cast<double>(cols),
              box.height() / static_cast<double>(rows));
  cairo_set_source_surface(cr, img, 0, 0);
  cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
  cairo_paint(cr);
  cairo_restore(cr);
  cairo_surface_destroy(img);
}

std::vector<Tick> linear_ticks(double lo, double hi) {
  std::vector<Tick> out;
  double step = 1;
  for (double v : nice_ticks(lo, hi, 6, &step)) out.push_back({v, format_tick(v, step), true});
  return out;
}

void render_scatter_panel(const Canvas& c, const Fonts& f, const Box& box,
                          const std::array<double, 4>& range, const std::vector<Series>& series,
                          const std::vector<std::vector<double>>& xy, const PlotOptions& o) {
  const AxisMap x{range[0], range[1], Scale::linear, box.x0, box.x1};
  const AxisMap y{range[2], range[3], Scale::linear, box.y1, box.y0};
  const auto xt = linear_ticks(range[0], range[1]), yt = linear_ticks(range[2], range[3]);
  draw_grid(c, box, x, xt, y, yt);
  cairo_t* cr = c.cr();
  cairo_save(cr);
  c.rect(box);
  cairo_clip(cr);
  // A radius-0 point is one pixel: a 0.5-radius disk keeps its area.
  const double r = o.point_radius == 0 ? 0.5 : o.point_radius;
  for (size_t s = 0; s < series.size(); ++s) {
    c.color(series[s].color, o.alpha);
    for (size_t i = 0; i + 1 < xy[s].size(); i += 2) {
      if (!std::isfinite(xy[s][i]) || !std::isfinite(xy[s][i + 1])) continue;
      cairo_new_sub_path(cr);
      cairo_arc(cr, x(xy[s][i]), y(xy[s][i + 1]), r, 0, 2 * M_PI);
      cairo_fill(cr);  // one fill per disk: overlaps darken, showing density
    }
  }
  cairo_restore(cr);
  draw_frame(c, f, box, x, xt, y, yt, o.xlabel, o.ylabel);
}

// ---------------------------------------------------------------------------------------
// Line charts.

// A closed regular polygon of `sides` corners at distance `radius` from (x, y), the first at
// angle `phase` (y down).
void regular_polygon(cairo_t* cr, double x, double y, double radius, int sides, double phase) {
  for (int k = 0; k < sides; ++k) {
    const double a = phase + 2 * M_PI * k / sides;
    if (k == 0)
      cairo_move_to(cr, x + radius * std::cos(a), y + radius * std::sin(a));
    else
      cairo_line_to(cr, x + radius * std::cos(a), y + radius * std::sin(a));
  }
  cairo_close_path(cr);
}

// Markers: circle, square, triangle up, diamond, triangle down, pentagon, hexagon.
void marker_path(cairo_t* cr, int shape, double x, double y, double r) {
  switch (shape % kMarkers) {
    case 0:
      cairo_new_sub_path(cr);
      cairo_arc(cr, x, y, r, 0, 2 * M_PI);
      break;
    case 1:
      cairo_rectangle(cr, x - 0.85 * r, y - 0.85 * r, 1.7 * r, 1.7 * r);
      break;
    case 2:  // triangle up
      cairo_move_to(cr, x, y - 1.15 * r);
      cairo_line_to(cr, x + r, y + 0.7 * r);
      cairo_line_to(cr, x - r, y + 0.7 * r);
      cairo_close_path(cr);
      break;
    case 3:  // diamond
      cairo_move_to(cr, x, y - 1.2 * r);
      cairo_line_to(cr, x + r, y);
      cairo_line_to(cr, x, y + 1.2 * r);
      cairo_line_to(cr, x - r, y);
      cairo_close_path(cr);
      break;
    case 4:  // triangle down
      cairo_move_to(cr, x, y + 1.15 * r);
      cairo_line_to(cr, x + r, y - 0.7 * r);
      cairo_line_to(cr, x - r, y - 0.7 * r);
      cairo_close_path(cr);
      break;
    case 5:
      regular_polygon(cr, x, y, 1.1 * r, 5, -M_PI / 2);
      break;
    default:
      regular_polygon(cr, x, y, 1.05 * r, 6, 0);
      break;
  }
}

void set_dash(cairo_t* cr, int dash, double width) {
  const double w = std::max(1.0, width);
  if (dash % 4 == 1) {
    const double d[] = {5 * w, 2.5 * w};
    cairo_set_dash(cr, d, 2, 0);
  } else if (dash % 4 == 2) {
    const double d[] = {1.2 * w, 1.8 * w};
    cairo_set_dash(cr, d, 2, 0);
  } else if (dash % 4 == 3) {
    const double d[] = {5 * w, 2 * w, 1.2 * w, 2 * w};
    cairo_set_dash(cr, d, 4, 0);
  } else {
    cairo_set_dash(cr, nullptr, 0, 0);
  }
}

/// Fitted [lo, hi] of one axis: the data's extent padded by 4% of its span in the axis's own
/// scale (a single value gets one unit or a factor of two around it); a finite fixed end wins.
std::pair<double, double> fit_axis(double lo, double hi, double fixed_lo, double fixed_hi,
                                   Scale s) {
  if (!(lo <= hi)) {  // nothing drawable
    lo = s == Scale::linear ? 0 : 1;
    hi = s == Scale::linear ? 1 : 10;
  }
  double a = forward(lo, s), b = forward(hi, s);
  if (b - a < 1e-12 * std::max(1.0, std::abs(a))) {
    a -= 1;
    b += 1;
  }
  const double pad = 0.04 * (b - a);
  lo = std::isfinite(fixed_lo) ? fixed_lo : inverse(a - pad, s);
  hi = std::isfinite(fixed_hi) ? fixed_hi : inverse(b + pad, s);
  return {lo, hi};
}

}  // namespace

// -----------------------------------------------------------------------------------------

std::vector<Tick> axis_ticks(double lo, double hi, Scale scale) {
  CNF_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "axis_ticks: needs lo < hi, got [",
            lo, ", ", hi, "]");
  if (scale == Scale::linear) return linear_ticks(lo, hi);
  CNF_CHECK(lo > 0, "axis_ticks: a log axis needs lo > 0, got ", lo);
  std::vector<Tick> out;
  const double eps = 1e-9;
  auto inside = [&](double v) { return v >= lo * (1 - eps) && v <= hi * (1 + eps); };
  if (scale == Scale::log2) {
    const int k0 = static_cast<int>(std::ceil(std::log2(lo) - eps));
    const int k1 = static_cast<int>(std::floor(std::log2(hi) + eps));
    const int every = std::max(1, (k1 - k0 + 1 + 7) / 8);  // at most ~8 labels
    for (int k = k0; k <= k1; ++k) {
      const bool major = (k - k0) % every == 0;
      out.push_back({std::exp2(k), major ? format_log_tick(std::exp2(k)) : "", major});
    }
  } else {
    const int e0 = static_cast<int>(std::floor(std::log10(lo) + eps));
    const int e1 = static_cast<int>(std::ceil(std::log10(hi) - eps));
    const int decades = e1 - e0;
    const int every = std::max(1, (decades + 7) / 8);
    for (int e = e0; e <= e1; ++e) {
      const double p = std::pow(10.0, e);
      for (int m = 1; m <= 9; ++m) {
        const double v = m * p;
        if (!inside(v)) continue;
        // Short ranges label 2 and 5 too (and 3 on the shortest), so a panel never shows
        // fewer than two numbers.
        const bool label = m == 1 ? (e - e0) % every == 0
                                  : (decades <= 3 && (m == 2 || m == 5)) || (hi / lo < 8 && m == 3);
        if (m == 1 || decades <= 12) out.push_back({v, label ? format_log_tick(v) : "", label});
      }
    }
  }
  int labelled = 0;
  for (const auto& t : out) labelled += t.major ? 1 : 0;
  if (labelled < 2) {  // within one short stretch: plain decimal steps, placed on the log axis
    out.clear();
    double step = 1;
    for (double v : nice_ticks(lo, hi, 4, &step))
      if (v > 0) out.push_back({v, format_tick(v, step), true});
  }
  return out;
}

void scatter_png(const std::string& path, const std::vector<Series>& series,
                 const PlotOptions& options) {
  PlotOptions inner = options;
  inner.title.clear();
  panels_png(path, {series},
             options.title.empty() ? std::vector<std::string>{} : std::vector{options.title},
             inner);
}

void panels_png(const std::string& path, const std::vector<std::vector<Series>>& panels,
                const std::vector<std::string>& titles, const PlotOptions& options) {
  check_options(options, path);
  CNF_CHECK(!panels.empty(), "plot '", path, "': no panels given; pass at least one");
  CNF_CHECK(titles.empty() || titles.size() == panels.size(), "plot '", path, "': ", titles.size(),
            " titles for ", panels.size(), " panels; give one per panel or none");
  CNF_CHECK(panels.size() <= 64, "plot '", path, "': ", panels.size(),
            " panels is too many for one image (at most 64)");

  const int n = static_cast<int>(panels.size());
  const Fonts f(options.width, options.height);
  const bool has_titles =
      std::any_of(titles.begin(), titles.end(), [](const std::string& t) { return !t.empty(); });
  const double banner = options.title.empty() ? 0 : std::round(2.0 * f.title);
  Canvas c(options.width * n, options.height + static_cast<int>(banner));

  std::vector<std::vector<std::vector<double>>> xy(panels.size());
  std::vector<const std::vector<double>*> all;
  for (size_t p = 0; p < panels.size(); ++p)
    for (size_t s = 0; s < panels[p].size(); ++s)
      xy[p].push_back(points_of(panels[p][s].points, path,
                                "panel " + std::to_string(p) + " series " + std::to_string(s)));
  for (const auto& panel : xy)
    for (const auto& set : panel) all.push_back(&set);
  bool legend = false;
  for (const auto& panel : panels)
    for (const auto& s : panel) legend = legend || !s.label.empty();

  // The box of a panel at x offset ox: room for ticks, labels, the title and a legend row.
  auto box_at = [&](double ox, const std::array<double, 4>& range) {
    const double left =
        left_margin(c, f, linear_ticks(range[2], range[3]), !options.ylabel.empty());
    const double bottom = bottom_margin(f, !options.xlabel.empty()) + (legend ? 1.6 * f.tick : 0);
    return Box{ox + left, banner + title_band(f, has_titles), ox + options.width - 0.8 * f.tick,
               banner + options.height - bottom};
  };
  std::array<double, 4> range = options.range;
  if (range_is_auto(range)) {
    const Box guess = box_at(0, {-10, 10, -10, 10});
    range = fit_range(all, guess.width(), guess.height());
  }
  check_range(range, path);

  if (banner > 0) draw_title(c, f, 0, options.width * n, 0.55 * banner, options.title);
  for (int p = 0; p < n; ++p) {
    const double ox = p * options.width;
    const Box box = box_at(ox, range);
    render_scatter_panel(c, f, box, range, panels[p], xy[p], options);
    if (has_titles) draw_title(c, f, ox, ox + options.width, box.y0 - f.title, titles[p]);
    std::vector<Swatch> items;
    for (const auto& s : panels[p])
      if (!s.label.empty()) items.push_back({s.label, s.color});
    draw_legend_row(c, f, ox, ox + options.width, banner + options.height - 0.9 * f.tick, items);
  }
  c.save(path);
}

at::Tensor histogram_2d(const at::Tensor& xy, int64_t bins, double lo, double hi) {
  CNF_CHECK(xy.dim() == 2 && xy.size(1) == 2, "histogram_2d needs points [N, 2], got ", xy.sizes());
  CNF_CHECK(bins >= 1 && hi > lo, "histogram_2d needs bins >= 1 and hi > lo, got ", bins, ", [", lo,
            ", ", hi, "]");
  auto idx = ((xy.to(torch::kFloat64) - lo) / (hi - lo) * static_cast<double>(bins))
                 .floor()
                 .to(torch::kLong)
                 .clamp(0, bins - 1);
  auto flat = (bins - 1 - idx.select(1, 1)) * bins + idx.select(1, 0);
  return torch::bincount(flat, {}, bins * bins).to(torch::kFloat64).reshape({bins, bins});
}

void heatmap_png(const std::string& path, const at::Tensor& values, std::array<double, 4> range,
                 const PlotOptions& options) {
  PlotOptions inner = options;
  inner.title.clear();
  heatmaps_png(path, {{values, options.title, options.colorbar_label}}, range, inner);
}

void heatmaps_png(const std::string& path, const std::vector<HeatmapPanel>& panels,
                  std::array<double, 4> range, const PlotOptions& options) {
  check_options(options, path);
  check_range(range, path);
  CNF_CHECK(!panels.empty() && panels.size() <= 64, "heat map '", path,
            "': give 1 to 64 panels, got ", panels.size());
  const int n = static_cast<int>(panels.size());
  const Fonts f(options.width, options.height);
  const double banner = options.title.empty() ? 0 : std::round(2.0 * f.title);
  bool has_titles = false;
  for (const auto& p : panels) has_titles = has_titles || !p.title.empty();
  Canvas c(options.width * n, options.height + static_cast<int>(banner));
  if (banner > 0) draw_title(c, f, 0, options.width * n, 0.55 * banner, options.title);

  for (int p = 0; p < n; ++p) {
    const at::Tensor& values = panels[p].values;
    CNF_CHECK(values.defined() && values.dim() == 2 && values.size(0) > 0 && values.size(1) > 0,
              "heat map '", path, "': panel ", p,
              " values must be a non-empty [H, W] grid, got shape ",
              values.defined() ? values.sizes() : at::IntArrayRef{});
    const at::Tensor grid = values.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const int64_t rows = grid.size(0), cols = grid.size(1);
    const double* v = grid.data_ptr<double>();
    double vmin = std::numeric_limits<double>::infinity(), vmax = -vmin;
    for (int64_t i = 0; i < grid.numel(); ++i)
      if (std::isfinite(v[i])) {
        vmin = std::min(vmin, v[i]);
        vmax = std::max(vmax, v[i]);
      }
    const bool spread = vmax > vmin;
    auto bar_ticks = spread ? linear_ticks(vmin, vmax) : std::vector<Tick>{};
    c.font(f.tick);
    double bar_label_w = c.text_width("0.0");
    for (const auto& t : bar_ticks) bar_label_w = std::max(bar_label_w, c.text_width(t.label));

    const double ox = p * options.width;
    const double bar_w = 0.9 * f.tick;
    const double right = 0.8 * f.tick + bar_w + 0.4 * f.tick + 4 + bar_label_w +
                         (panels[p].colorbar_label.empty() ? 0 : 1.6 * f.label) + 6;
    const double left =
        left_margin(c, f, linear_ticks(range[2], range[3]), !options.ylabel.empty());
    Box box{ox + left, banner + title_band(f, has_titles), ox + options.width - right,
            banner + options.height - bottom_margin(f, !options.xlabel.empty())};
    // Square cells where the room allows: one data unit as long on both axes.
    const double unit =
        std::min(box.width() / (range[1] - range[0]), box.height() / (range[3] - range[2]));
    const double w = unit * (range[1] - range[0]), h = unit * (range[3] - range[2]);
    box = Box{box.x0, box.y0, box.x0 + w, box.y0 + h};

    const RGB kMissing{200, 200, 200};
    paint_cells(c, box, rows, cols, [&](int64_t r, int64_t k) {
      const double value = v[r * cols + k];
      if (!std::isfinite(value)) return kMissing;
      return colormap(spread ? (value - vmin) / (vmax - vmin) : 0.5);
    });
    const AxisMap x{range[0], range[1], Scale::linear, box.x0, box.x1};
    const AxisMap y{range[2], range[3], Scale::linear, box.y1, box.y0};
    draw_frame(c, f, box, x, linear_ticks(range[0], range[1]), y, linear_ticks(range[2], range[3]),
               options.xlabel, options.ylabel);
    if (has_titles) draw_title(c, f, ox, ox + options.width, box.y0 - f.title, panels[p].title);

    // The color bar, with its own ticks.
    const Box bar{box.x1 + 0.8 * f.tick, box.y0, box.x1 + 0.8 * f.tick + bar_w, box.y1};
    paint_cells(c, bar, 256, 1, [](int64_t r, int64_t) { return colormap(1.0 - (r + 0.5) / 256); });
    const AxisMap bar_y{spread ? vmin : 0.0, spread ? vmax : 1.0, Scale::linear, bar.y1, bar.y0};
    // Its frame, with ticks on the right.
    cairo_t* cr = c.cr();
    c.color(kFrame);
    cairo_set_line_width(cr, 1.0);
    c.rect(bar);
    for (const auto& t : bar_ticks) {
      const double py = std::round(bar_y(t.value)) + 0.5;
      cairo_move_to(cr, bar.x1, py);
      cairo_line_to(cr, bar.x1 + 0.4 * f.tick, py);
    }
    cairo_stroke(cr);
    c.font(f.tick);
    for (const auto& t : bar_ticks)
      c.text(bar.x1 + 0.4 * f.tick + 3, bar_y(t.value), t.label, 0, kInk);
    if (!spread && std::isfinite(vmin)) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.3g", vmin);
      c.text(bar.x1 + 4, 0.5 * (bar.y0 + bar.y1), buf, 0, kInk);
    }
    if (!panels[p].colorbar_label.empty()) {
      c.font(f.label);
      c.text(bar.x1 + 0.4 * f.tick + 6 + bar_label_w + 0.8 * f.label, 0.5 * (bar.y0 + bar.y1),
             c.fit(panels[p].colorbar_label, bar.height()), 0.5, kInk, M_PI / 2);
    }
  }
  c.save(path);
}

void trajectories_png(const std::string& path, const at::Tensor& paths,
                      const PlotOptions& options) {
  check_options(options, path);
  CNF_CHECK(paths.defined() && paths.dim() == 3 && paths.size(2) == 2 && paths.size(0) > 0,
            "trajectory plot '", path, "': paths must be [T, N, 2] (time-major, T >= 1), got ",
            "shape ", paths.defined() ? paths.sizes() : at::IntArrayRef{},
            "; stack the solver's outputs along dim 0");
  const at::Tensor cpu = paths.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const int64_t steps = cpu.size(0), n = cpu.size(1);
  const double* p = cpu.data_ptr<double>();
  auto at = [&](int64_t t, int64_t i, int k) { return p[(t * n + i) * 2 + k]; };

  const Fonts f(options.width, options.height);
  Canvas c(options.width, options.height);
  auto box_for = [&](const std::array<double, 4>& r) {
    return Box{left_margin(c, f, linear_ticks(r[2], r[3]), !options.ylabel.empty()),
               title_band(f, !options.title.empty()), options.width - 0.8 * f.tick,
               options.height - bottom_margin(f, !options.xlabel.empty()) - 1.6 * f.tick};
  };
  std::array<double, 4> range = options.range;
  if (range_is_auto(range)) {
    const std::vector<double> all(p, p + cpu.numel());
    const Box guess = box_for({-10, 10, -10, 10});
    range = fit_range({&all}, guess.width(), guess.height());
  }
  check_range(range, path);
  const Box box = box_for(range);
  const AxisMap x{range[0], range[1], Scale::linear, box.x0, box.x1};
  const AxisMap y{range[2], range[3], Scale::linear, box.y1, box.y0};
  const auto xt = linear_ticks(range[0], range[1]), yt = linear_ticks(range[2], range[3]);
  draw_grid(c, box, x, xt, y, yt);

  const RGB kLine{90, 90, 90}, kStart{31, 119, 180}, kEnd{214, 39, 40};
  cairo_t* cr = c.cr();
  cairo_save(cr);
  c.rect(box);
  cairo_clip(cr);
  // Lines are fainter than the points: many overlapping paths would otherwise go black.
  c.color(kLine, std::max(0.05, 0.4 * options.alpha));
  cairo_set_line_width(cr, 0.8);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (int64_t i = 0; i < n; ++i) {
    bool pen = false;
    for (int64_t t = 0; t < steps; ++t) {
      const double a = at(t, i, 0), b = at(t, i, 1);
      if (!std::isfinite(a) || !std::isfinite(b)) {
        pen = false;
        continue;
      }
      if (pen)
        cairo_line_to(cr, x(a), y(b));
      else
        cairo_move_to(cr, x(a), y(b));
      pen = true;
    }
    cairo_stroke(cr);  // one stroke per path: overlapping paths darken
  }
  const double r = std::max(1, options.point_radius);
  for (auto [t, color] : {std::pair<int64_t, RGB>{0, kStart}, {steps - 1, kEnd}}) {
    c.color(color, std::max(options.alpha, 0.6));
    for (int64_t i = 0; i < n; ++i) {
      const double a = at(t, i, 0), b = at(t, i, 1);
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      cairo_new_sub_path(cr);
      cairo_arc(cr, x(a), y(b), r, 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  cairo_restore(cr);
  draw_frame(c, f, box, x, xt, y, yt, options.xlabel, options.ylabel);
  draw_legend_row(c, f, 0, options.width, options.height - 0.9 * f.tick,
                  {{"start", kStart}, {"end", kEnd}});
  draw_title(c, f, 0, options.width, 0.5 * title_band(f, true), options.title);
  c.save(path);
}

void line_chart_png(const std::string& path, const std::vector<Line>& lines,
                    const ChartOptions& o) {
  check_size(o.width, o.height, path);
  CNF_CHECK(lines.size() <= 1000, "chart '", path, "': ", lines.size(),
            " lines is too many for one chart (at most 1000)");
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& l = lines[i];
    CNF_CHECK(l.x.size() == l.y.size(), "chart '", path, "': line ", i, " ('", l.label, "') has ",
              l.x.size(), " x values but ", l.y.size(), " y values; give one y per x");
    CNF_CHECK(l.width > 0 && l.width <= 20 && l.opacity > 0 && l.opacity <= 1, "chart '", path,
              "': line ", i, " ('", l.label, "') needs width in (0, 20] and opacity in (0, 1]");
  }
  for (int k = 0; k < 4; ++k) {
    const Scale s = k < 2 ? o.xscale : o.yscale;
    CNF_CHECK(std::isnan(o.range[k]) || drawable(o.range[k], s), "chart '", path, "': range end ",
              k, " = ", o.range[k], " cannot be shown on ",
              s == Scale::linear ? "a linear" : "a log", " axis; use NaN to fit the data");
  }

  // The extent of everything drawable, then the axes.
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  size_t points = 0;
  for (const auto& l : lines)
    for (size_t i = 0; i < l.x.size(); ++i)
      if (drawable(l.x[i], o.xscale) && drawable(l.y[i], o.yscale)) {
        xlo = std::min(xlo, l.x[i]);
        xhi = std::max(xhi, l.x[i]);
        ylo = std::min(ylo, l.y[i]);
        yhi = std::max(yhi, l.y[i]);
        ++points;
      }
  for (const auto& r : o.references)
    if (drawable(r.y, o.yscale)) {
      ylo = std::min(ylo, r.y);
      yhi = std::max(yhi, r.y);
    }
  const auto [x0, x1] = fit_axis(xlo, xhi, o.range[0], o.range[1], o.xscale);
  const auto [y0, y1] = fit_axis(ylo, yhi, o.range[2], o.range[3], o.yscale);
  CNF_CHECK(x0 < x1 && y0 < y1, "chart '", path, "': the range {", x0, ", ", x1, ", ", y0, ", ", y1,
            "} is empty; give xmin < xmax and ymin < ymax");
  const auto xt = axis_ticks(x0, x1, o.xscale), yt = axis_ticks(y0, y1, o.yscale);

  const Fonts f(o.width, o.height);
  Canvas c(o.width, o.height);

  // The legend, right of the box: at most 30% of the width, entries shortened to fit.
  struct Entry {
    std::string label;
    int line;  // index into lines, or -1 - reference index
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < lines.size(); ++i)
    if (!lines[i].label.empty()) entries.push_back({lines[i].label, static_cast<int>(i)});
  for (size_t i = 0; i < o.references.size(); ++i)
    if (!o.references[i].label.empty())
      entries.push_back({o.references[i].label, -1 - static_cast<int>(i)});
  c.font(f.tick);
  const double swatch = 2.4 * f.tick;
  double legend_w = 0;
  for (auto& e : entries) {
    e.label = c.fit(e.label, 0.3 * o.width - swatch - 12);
    legend_w = std::max(legend_w, swatch + 8 + c.text_width(e.label) + 10);
  }

  const Box box{left_margin(c, f, yt, !o.ylabel.empty()), title_band(f, !o.title.empty()),
                o.width - (entries.empty() ? 1.2 * f.tick : legend_w + 1.0 * f.tick),
                o.height - bottom_margin(f, !o.xlabel.empty())};
  CNF_CHECK(box.width() > 8 && box.height() > 8, "chart '", path, "': ", o.width, "x", o.height,
            " pixels leave no room for the axes; make the chart larger or the labels shorter");
  const AxisMap x{x0, x1, o.xscale, box.x0, box.x1};
  const AxisMap y{y0, y1, o.yscale, box.y1, box.y0};
  draw_grid(c, box, x, xt, y, yt);

  cairo_t* cr = c.cr();
  cairo_save(cr);
  c.rect(box);
  cairo_clip(cr);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
  for (const auto& r : o.references)
    if (drawable(r.y, o.yscale)) {
      c.color(kReference);
      cairo_set_line_width(cr, 1.2);
      set_dash(cr, 1, 1.2);
      cairo_move_to(cr, box.x0, y(r.y));
      cairo_line_to(cr, box.x1, y(r.y));
      cairo_stroke(cr);
    }
  const double marker_r = 0.3 * f.tick + 0.6;
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& l = lines[i];
    const int color = l.color >= 0 ? l.color : static_cast<int>(i);
    c.color(kPalette[color % 10], l.opacity);
    cairo_set_line_width(cr, l.width);
    set_dash(cr, l.dash, l.width);
    bool pen = false;
    for (size_t k = 0; k < l.x.size(); ++k) {
      if (!drawable(l.x[k], o.xscale) || !drawable(l.y[k], o.yscale)) {
        pen = false;
        continue;
      }
      if (pen)
        cairo_line_to(cr, x(l.x[k]), y(l.y[k]));
      else
        cairo_move_to(cr, x(l.x[k]), y(l.y[k]));
      pen = true;
    }
    cairo_stroke(cr);
    if (l.marker == -2) continue;
    const int shape = l.marker >= 0 ? l.marker : static_cast<int>(i);
    for (size_t k = 0; k < l.x.size(); ++k)
      if (drawable(l.x[k], o.xscale) && drawable(l.y[k], o.yscale))
        marker_path(cr, shape, x(l.x[k]), y(l.y[k]), marker_r);
    cairo_fill(cr);
  }
  cairo_restore(cr);
  draw_frame(c, f, box, x, xt, y, yt, o.xlabel, o.ylabel);
  if (points == 0) {
    c.font(f.label);
    c.text(0.5 * (box.x0 + box.x1), 0.5 * (box.y0 + box.y1), "no finite data to show", 0.5, kFrame);
  }
  draw_title(c, f, 0, o.width, 0.5 * title_band(f, true), o.title);

  // Legend entries: a short stretch of the line (with its dash and marker) and the label.
  double ly = box.y0 + 0.8 * f.tick;
  const double lx = box.x1 + 1.0 * f.tick, step = 1.5 * f.tick;
  for (const auto& e : entries) {
    if (ly > o.height - 0.5 * f.tick) break;  // more entries than rows: the rest are cut
    if (e.line >= 0) {
      const Line& l = lines[e.line];
      const int color = l.color >= 0 ? l.color : e.line;
      c.color(kPalette[color % 10], l.opacity);
      cairo_set_line_width(cr, l.width);
      set_dash(cr, l.dash, l.width);
      cairo_move_to(cr, lx, ly);
      cairo_line_to(cr, lx + swatch, ly);
      cairo_stroke(cr);
      if (l.marker != -2) {
        marker_path(cr, l.marker >= 0 ? l.marker : e.line, lx + 0.5 * swatch, ly, marker_r);
        cairo_fill(cr);
      }
    } else {
      c.color(kReference);
      cairo_set_line_width(cr, 1.2);
      set_dash(cr, 1, 1.2);
      cairo_move_to(cr, lx, ly);
      cairo_line_to(cr, lx + swatch, ly);
      cairo_stroke(cr);
    }
    c.font(f.tick);
    c.text(lx + swatch + 6, ly, e.label, 0, kInk);
    ly += step;
  }
  cairo_set_dash(cr, nullptr, 0, 0);
  c.save(path);
}

}  // namespace cnf::io
