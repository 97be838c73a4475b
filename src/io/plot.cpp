#include "cnf/io/plot.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

// The implementation lives in this file only; static so it cannot clash with another copy
// of stb linked into the same program.
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace cnf::io {
namespace {

// ---------------------------------------------------------------------------------------
// A 5x7 bitmap font for printable ASCII (32..126). Each glyph is 7 rows, top first; bit 4
// of a row is the leftmost column. The descending letters g, p, q, y are stored from
// their x-height down and drawn kDescent rows lower, so a line of text is 9 rows tall.
constexpr uint8_t kFont[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},  // ' '
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04},  // !
    {0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00},  // "
    {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A},  // #
    {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04},  // $
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},  // %
    {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D},  // &
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00},  // '
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},  // (
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},  // )
    {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00},  // *
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00},  // +
    {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08},  // ,
    {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00},  // -
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C},  // .
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00},  // /
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E},  // 0
    {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},  // 1
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F},  // 2
    {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},  // 3
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02},  // 4
    {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},  // 5
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E},  // 6
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},  // 7
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E},  // 8
    {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},  // 9
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00},  // :
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08},  // ;
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},  // <
    {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00},  // =
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},  // >
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04},  // ?
    {0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E},  // @
    {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11},  // A
    {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},  // B
    {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E},  // C
    {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},  // D
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F},  // E
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},  // F
    {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F},  // G
    {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},  // H
    {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},  // I
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},  // J
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},  // K
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},  // L
    {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11},  // M
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},  // N
    {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},  // O
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},  // P
    {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D},  // Q
    {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},  // R
    {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E},  // S
    {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // T
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},  // U
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},  // V
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A},  // W
    {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},  // X
    {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04},  // Y
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F},  // Z
    {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E},  // [
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00},  // backslash
    {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E},  // ]
    {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00},  // ^
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F},  // _
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00},  // `
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F},  // a
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E},  // b
    {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E},  // c
    {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F},  // d
    {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E},  // e
    {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08},  // f
    {0x0F, 0x11, 0x11, 0x13, 0x0D, 0x01, 0x0E},  // g
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11},  // h
    {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E},  // i
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C},  // j
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12},  // k
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},  // l
    {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11},  // m
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},  // n
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E},  // o
    {0x16, 0x19, 0x11, 0x19, 0x16, 0x10, 0x10},  // p
    {0x0D, 0x13, 0x11, 0x13, 0x0D, 0x01, 0x01},  // q
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},  // r
    {0x00, 0x00, 0x0F, 0x10, 0x0E, 0x01, 0x1E},  // s
    {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06},  // t
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D},  // u
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},  // v
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A},  // w
    {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11},  // x
    {0x11, 0x11, 0x11, 0x13, 0x0D, 0x01, 0x0E},  // y
    {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F},  // z
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02},  // {
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // |
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08},  // }
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00},  // ~
};
constexpr int kGlyphW = 5, kGlyphH = 7, kAdvance = 6, kDescent = 2;

bool descends(int code) { return code == 'g' || code == 'p' || code == 'q' || code == 'y'; }

const RGB kWhite{255, 255, 255};
const RGB kInk{40, 40, 40};
const RGB kFrame{90, 90, 90};
const RGB kGrid{232, 232, 232};

/// Pixel rectangle [x0, x1) x [y0, y1).
struct Box {
  int x0, y0, x1, y1;
  bool contains(int x, int y) const { return x >= x0 && x < x1 && y >= y0 && y < y1; }
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

class Canvas {
 public:
  Canvas(int width, int height)
      : width_(width), height_(height), rgb_(static_cast<size_t>(width) * height * 3, 255) {}

  int width() const { return width_; }
  int height() const { return height_; }
  const uint8_t* data() const { return rgb_.data(); }

  /// "over" compositing in sRGB space: plain, but overdraw still darkens dense regions.
  void blend(int x, int y, RGB c, double alpha) {
    if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
    uint8_t* p = &rgb_[(static_cast<size_t>(y) * width_ + x) * 3];
    for (int k = 0; k < 3; ++k)
      p[k] = static_cast<uint8_t>(std::lround(p[k] * (1.0 - alpha) + c[k] * alpha));
  }

  void fill(const Box& b, RGB c, double alpha = 1.0) {
    for (int y = b.y0; y < b.y1; ++y)
      for (int x = b.x0; x < b.x1; ++x) blend(x, y, c, alpha);
  }

  void outline(const Box& b, RGB c) {
    for (int x = b.x0; x < b.x1; ++x) {
      blend(x, b.y0, c, 1.0);
      blend(x, b.y1 - 1, c, 1.0);
    }
    for (int y = b.y0; y < b.y1; ++y) {
      blend(b.x0, y, c, 1.0);
      blend(b.x1 - 1, y, c, 1.0);
    }
  }

 private:
  int width_, height_;
  std::vector<uint8_t> rgb_;
};

int text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : static_cast<int>(s.size()) * kAdvance * scale - scale;
}

/// Draws `s` with its top-left corner at (x, y).
void draw_text(Canvas& c, int x, int y, const std::string& s, int scale, RGB color) {
  for (char ch : s) {
    int code = static_cast<unsigned char>(ch);
    if (code < 32 || code > 126) code = '?';
    const uint8_t* glyph = kFont[code - 32];
    const int top = y + (descends(code) ? kDescent * scale : 0);
    for (int row = 0; row < kGlyphH; ++row)
      for (int col = 0; col < kGlyphW; ++col)
        if (glyph[row] & (0x10 >> col))
          for (int dy = 0; dy < scale; ++dy)
            for (int dx = 0; dx < scale; ++dx)
              c.blend(x + col * scale + dx, top + row * scale + dy, color, 1.0);
    x += kAdvance * scale;
  }
}

/// Centers `s` in [x0, x1), shrinking the font and then cutting the text if it is too wide.
void draw_title(Canvas& c, int x0, int x1, int y, std::string s, int scale) {
  if (s.empty()) return;
  while (scale > 1 && text_width(s, scale) > x1 - x0 - 8) --scale;
  const int fit = std::max(1, (x1 - x0 - 8 + scale) / (kAdvance * scale));
  if (static_cast<int>(s.size()) > fit) s = s.substr(0, std::max(0, fit - 2)) + "..";
  draw_text(c, x0 + (x1 - x0 - text_width(s, scale)) / 2, y, s, scale, kInk);
}

// ---------------------------------------------------------------------------------------
// Axes: a pixel box, a data range and the map between them.

struct Axes {
  Box box;
  std::array<double, 4> range;  // xmin, xmax, ymin, ymax
  double px(double x) const {
    return box.x0 + (x - range[0]) / (range[1] - range[0]) * box.width();
  }
  double py(double y) const {
    return box.y1 - (y - range[2]) / (range[3] - range[2]) * box.height();
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

/// Margins around the axes box of one panel, and font scales.
struct Layout {
  int left, right, top, bottom;
  int tick_scale, title_scale;
};

Layout make_layout(int width, int height, bool has_title, int extra_right = 0) {
  Layout l;
  l.tick_scale = std::max(1, std::min(width, height) / 500);
  l.title_scale = std::max(1, (std::min(width, height) + 100) / 250);
  l.left = 8 + 7 * kAdvance * l.tick_scale;  // room for labels like "-12.50"
  l.right = 14 + extra_right;
  l.top = has_title ? (kGlyphH + kDescent) * l.title_scale + 14 : 12;
  l.bottom = kGlyphH * l.tick_scale + 16;
  return l;
}

Box plot_box(int ox, int oy, int width, int height, const Layout& l) {
  return Box{ox + l.left, oy + l.top, ox + width - l.right, oy + height - l.bottom};
}

void draw_grid(Canvas& c, const Axes& a) {
  for (double t : nice_ticks(a.range[0], a.range[1], 6, nullptr)) {
    int x = static_cast<int>(std::floor(a.px(t)));
    for (int y = a.box.y0; y < a.box.y1; ++y)
      if (a.box.contains(x, y)) c.blend(x, y, kGrid, 1.0);
  }
  for (double t : nice_ticks(a.range[2], a.range[3], 6, nullptr)) {
    int y = static_cast<int>(std::floor(a.py(t)));
    for (int x = a.box.x0; x < a.box.x1; ++x)
      if (a.box.contains(x, y)) c.blend(x, y, kGrid, 1.0);
  }
}

void draw_frame(Canvas& c, const Axes& a, int scale) {
  c.outline(Box{a.box.x0 - 1, a.box.y0 - 1, a.box.x1 + 1, a.box.y1 + 1}, kFrame);
  const int tick = 4 * scale;
  double step = 1;
  for (double t : nice_ticks(a.range[0], a.range[1], 6, &step)) {
    int x = static_cast<int>(std::floor(a.px(t)));
    for (int k = 1; k <= tick; ++k) c.blend(x, a.box.y1 + k, kFrame, 1.0);
    std::string label = format_tick(t, step);
    // Kept inside the image: the last label would otherwise be cut at the right edge.
    const int left = std::clamp(x - text_width(label, scale) / 2, 0,
                                std::max(0, c.width() - text_width(label, scale) - 1));
    draw_text(c, left, a.box.y1 + tick + 4, label, scale, kInk);
  }
  for (double t : nice_ticks(a.range[2], a.range[3], 6, &step)) {
    int y = static_cast<int>(std::floor(a.py(t)));
    for (int k = 1; k <= tick; ++k) c.blend(a.box.x0 - 1 - k, y, kFrame, 1.0);
    std::string label = format_tick(t, step);
    draw_text(c, a.box.x0 - tick - 4 - text_width(label, scale), y - kGlyphH * scale / 2, label,
              scale, kInk);
  }
}

void draw_legend(Canvas& c, const Box& box, const std::vector<std::pair<std::string, RGB>>& items,
                 int scale) {
  if (items.empty()) return;
  int text_w = 0;
  for (const auto& item : items) text_w = std::max(text_w, text_width(item.first, scale));
  const int line_h = (kGlyphH + kDescent) * scale + 4, swatch = kGlyphH * scale;
  const int w = text_w + swatch + 16, h = static_cast<int>(items.size()) * line_h + 7;
  Box frame{box.x1 - w - 6, box.y0 + 6, box.x1 - 6, box.y0 + 6 + h};
  c.fill(frame, kWhite, 0.85);
  c.outline(frame, RGB{200, 200, 200});
  int y = frame.y0 + 5;
  for (const auto& item : items) {
    c.fill(Box{frame.x0 + 5, y, frame.x0 + 5 + swatch, y + swatch}, item.second);
    draw_text(c, frame.x0 + swatch + 10, y, item.first, scale, kInk);
    y += line_h;
  }
}

void draw_disk(Canvas& c, const Box& clip, double cx, double cy, int radius, RGB color,
               double alpha) {
  const int x0 = static_cast<int>(std::floor(cx)), y0 = static_cast<int>(std::floor(cy));
  // r^2 + r keeps the small disks round-ish instead of diamond-shaped.
  const int limit = radius * radius + radius;
  for (int dy = -radius; dy <= radius; ++dy)
    for (int dx = -radius; dx <= radius; ++dx)
      if (dx * dx + dy * dy <= limit && clip.contains(x0 + dx, y0 + dy))
        c.blend(x0 + dx, y0 + dy, color, alpha);
}

/// A line segment clipped to `clip` (Liang-Barsky), one blended pixel per step of the
/// longer axis. The end pixel is left to the next segment so joints are not drawn twice.
void draw_segment(Canvas& c, const Box& clip, double x0, double y0, double x1, double y1, RGB color,
                  double alpha) {
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) || !std::isfinite(y1)) return;
  double t0 = 0, t1 = 1;
  const double dx = x1 - x0, dy = y1 - y0;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - clip.x0, clip.x1 - x0, y0 - clip.y0, clip.y1 - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return;
    } else {
      const double r = q[i] / p[i];
      if (p[i] < 0)
        t0 = std::max(t0, r);
      else
        t1 = std::min(t1, r);
    }
  }
  if (t0 > t1) return;
  const double ax = x0 + t0 * dx, ay = y0 + t0 * dy;
  const double bx = x0 + t1 * dx, by = y0 + t1 * dy;
  const int steps = static_cast<int>(std::ceil(std::max(std::abs(bx - ax), std::abs(by - ay))));
  for (int i = 0; i < std::max(steps, 1); ++i) {
    const double f = steps > 0 ? static_cast<double>(i) / steps : 0.0;
    const int x = static_cast<int>(std::floor(ax + f * (bx - ax)));
    const int y = static_cast<int>(std::floor(ay + f * (by - ay)));
    if (clip.contains(x, y)) c.blend(x, y, color, alpha);
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

void check_options(const PlotOptions& o, const std::string& path) {
  CNF_CHECK(o.width >= 64 && o.width <= 16384 && o.height >= 64 && o.height <= 16384, "plot '",
            path, "': width and height must be in [64, 16384] pixels, got ", o.width, "x",
            o.height);
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
std::array<double, 4> fit_range(const std::vector<const std::vector<double>*>& sets, int box_w,
                                int box_h) {
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

void save_png(const std::string& path, const Canvas& c) {
  std::string png;
  auto sink = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
  };
  const int ok =
      stbi_write_png_to_func(sink, &png, c.width(), c.height(), 3, c.data(), c.width() * 3);
  CNF_CHECK(ok != 0 && !png.empty(), "plot '", path, "': PNG encoding failed (out of memory?)");
  write_atomic(path, [&](std::ostream& out) { out.write(png.data(), png.size()); });
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

void render_scatter_panel(Canvas& c, const Axes& axes, const std::vector<Series>& series,
                          const std::vector<std::vector<double>>& xy, const PlotOptions& o,
                          const Layout& l) {
  draw_grid(c, axes);
  for (size_t s = 0; s < series.size(); ++s)
    for (size_t i = 0; i + 1 < xy[s].size(); i += 2) {
      const double x = xy[s][i], y = xy[s][i + 1];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      draw_disk(c, axes.box, axes.px(x), axes.py(y), o.point_radius, series[s].color, o.alpha);
    }
  draw_frame(c, axes, l.tick_scale);
  std::vector<std::pair<std::string, RGB>> legend;
  for (const auto& s : series)
    if (!s.label.empty()) legend.emplace_back(s.label, s.color);
  draw_legend(c, axes.box, legend, l.tick_scale);
}

}  // namespace

// -----------------------------------------------------------------------------------------

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

  // width x height is the size of each panel; an overall title gets a band on top.
  const int n = static_cast<int>(panels.size());
  const bool has_titles =
      std::any_of(titles.begin(), titles.end(), [](const std::string& t) { return !t.empty(); });
  const Layout l = make_layout(options.width, options.height, has_titles);
  const int banner = options.title.empty() ? 0 : (kGlyphH + kDescent) * l.title_scale + 12;
  Canvas c(options.width * n, options.height + banner);

  std::vector<std::vector<std::vector<double>>> xy(panels.size());
  std::vector<const std::vector<double>*> all;
  for (size_t p = 0; p < panels.size(); ++p)
    for (size_t s = 0; s < panels[p].size(); ++s)
      xy[p].push_back(points_of(panels[p][s].points, path,
                                "panel " + std::to_string(p) + " series " + std::to_string(s)));
  for (const auto& panel : xy)
    for (const auto& set : panel) all.push_back(&set);

  const Box first = plot_box(0, banner, options.width, options.height, l);
  std::array<double, 4> range = options.range;
  if (range_is_auto(range)) range = fit_range(all, first.width(), first.height());
  check_range(range, path);

  if (banner > 0) draw_title(c, 0, c.width(), 8, options.title, l.title_scale);
  for (int p = 0; p < n; ++p) {
    const int ox = p * options.width;
    const Axes axes{plot_box(ox, banner, options.width, options.height, l), range};
    render_scatter_panel(c, axes, panels[p], xy[p], options, l);
    if (has_titles) draw_title(c, ox, ox + options.width, banner + 8, titles[p], l.title_scale);
  }
  save_png(path, c);
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
  check_options(options, path);
  check_range(range, path);
  CNF_CHECK(values.defined() && values.dim() == 2 && values.size(0) > 0 && values.size(1) > 0,
            "heat map '", path, "': values must be a non-empty [H, W] grid, got shape ",
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

  const Layout base = make_layout(options.width, options.height, !options.title.empty());
  const int bar_w = 14 * base.tick_scale;
  const int label_w = 8 * kAdvance * base.tick_scale;
  const Layout l =
      make_layout(options.width, options.height, !options.title.empty(), bar_w + label_w + 14);
  Canvas c(options.width, options.height);
  const Axes axes{plot_box(0, 0, options.width, options.height, l), range};

  // Nearest-cell lookup per pixel: the grid is shown as it is, not smoothed.
  const RGB kMissing{200, 200, 200};
  for (int y = axes.box.y0; y < axes.box.y1; ++y) {
    const int64_t r = std::min<int64_t>(
        rows - 1, static_cast<int64_t>((y - axes.box.y0 + 0.5) / axes.box.height() * rows));
    for (int x = axes.box.x0; x < axes.box.x1; ++x) {
      const int64_t k = std::min<int64_t>(
          cols - 1, static_cast<int64_t>((x - axes.box.x0 + 0.5) / axes.box.width() * cols));
      const double value = v[r * cols + k];
      RGB color = kMissing;
      if (std::isfinite(value))
        color = colormap(vmax > vmin ? (value - vmin) / (vmax - vmin) : 0.5);
      c.blend(x, y, color, 1.0);
    }
  }
  draw_frame(c, axes, l.tick_scale);

  // Color bar with its own value ticks.
  const Box bar{axes.box.x1 + 12, axes.box.y0, axes.box.x1 + 12 + bar_w, axes.box.y1};
  for (int y = bar.y0; y < bar.y1; ++y) {
    const RGB color = colormap(1.0 - (y - bar.y0 + 0.5) / bar.height());
    for (int x = bar.x0; x < bar.x1; ++x) c.blend(x, y, color, 1.0);
  }
  c.outline(Box{bar.x0 - 1, bar.y0 - 1, bar.x1 + 1, bar.y1 + 1}, kFrame);
  if (vmax > vmin) {
    double step = 1;
    for (double t : nice_ticks(vmin, vmax, 5, &step)) {
      const int y = static_cast<int>(bar.y1 - (t - vmin) / (vmax - vmin) * bar.height());
      for (int k = 1; k <= 3 * l.tick_scale; ++k) c.blend(bar.x1 + k, y, kFrame, 1.0);
      draw_text(c, bar.x1 + 3 * l.tick_scale + 3, y - kGlyphH * l.tick_scale / 2,
                format_tick(t, step), l.tick_scale, kInk);
    }
  } else if (std::isfinite(vmin)) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.3g", vmin);
    draw_text(c, bar.x1 + 4, (bar.y0 + bar.y1) / 2, buf, l.tick_scale, kInk);
  }
  draw_title(c, 0, options.width, 8, options.title, l.title_scale);
  save_png(path, c);
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

  const Layout l = make_layout(options.width, options.height, !options.title.empty());
  const Box box = plot_box(0, 0, options.width, options.height, l);
  std::array<double, 4> range = options.range;
  if (range_is_auto(range)) {
    const std::vector<double> all(p, p + cpu.numel());
    range = fit_range({&all}, box.width(), box.height());
  }
  check_range(range, path);

  Canvas c(options.width, options.height);
  const Axes axes{box, range};
  draw_grid(c, axes);
  const RGB kLine{110, 110, 110}, kStart{31, 119, 180}, kEnd{214, 39, 40};
  // Lines are fainter than the points: many overlapping paths would otherwise go black.
  const double line_alpha = std::max(0.05, 0.5 * options.alpha);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t + 1 < steps; ++t)
      draw_segment(c, box, axes.px(at(t, i, 0)), axes.py(at(t, i, 1)), axes.px(at(t + 1, i, 0)),
                   axes.py(at(t + 1, i, 1)), kLine, line_alpha);
  const int r = std::max(1, options.point_radius);
  for (int64_t i = 0; i < n; ++i) {
    for (auto [t, color] : {std::pair<int64_t, RGB>{0, kStart}, {steps - 1, kEnd}}) {
      const double x = at(t, i, 0), y = at(t, i, 1);
      if (std::isfinite(x) && std::isfinite(y))
        draw_disk(c, box, axes.px(x), axes.py(y), r, color, std::max(options.alpha, 0.6));
    }
  }
  draw_frame(c, axes, l.tick_scale);
  draw_legend(c, box, {{"start", kStart}, {"end", kEnd}}, l.tick_scale);
  draw_title(c, 0, options.width, 8, options.title, l.title_scale);
  save_png(path, c);
}

}  // namespace cnf::io
