#include "cnf/io/image_grid.h"

#include <torch/torch.h>

#include <ostream>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

// A static copy of stb_image_write for this file (plot.cpp has its own).
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace cnf::io {

void image_grid_png(const std::string& path, const at::Tensor& pixels, int64_t columns,
                    int64_t scale, int64_t pad) {
  CNF_CHECK(pixels.dim() == 4 && (pixels.size(1) == 1 || pixels.size(1) == 3), "image grid '", path,
            "' needs images [N, C, H, W] with C = 1 or 3, got ", pixels.sizes());
  const int64_t n = pixels.size(0), c = pixels.size(1), h = pixels.size(2), w = pixels.size(3);
  CNF_CHECK(n >= 1, "image grid '", path, "' has no images");
  CNF_CHECK(columns >= 1 && scale >= 1 && pad >= 0, "image grid '", path,
            "': columns and scale must be >= 1 and pad >= 0");
  columns = std::min(columns, n);
  const int64_t rows = (n + columns - 1) / columns;
  const int64_t cell_h = h * scale + pad, cell_w = w * scale + pad;
  const int64_t height = rows * cell_h + pad, width = columns * cell_w + pad;
  CNF_CHECK(height * width <= 64LL * 1024 * 1024, "image grid '", path, "' would be ", width, "x",
            height, " pixels; draw fewer images or a smaller scale");
  // Magnify by repetition, then paste each image into a gray canvas.
  auto img = (pixels.detach().to(torch::kCPU, torch::kFloat32).clamp(0, 1) * 255).round();
  img = img.repeat_interleave(scale, 2).repeat_interleave(scale, 3);
  auto canvas = torch::full({c, height, width}, 128.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / columns, col = i % columns;
    canvas.slice(1, pad + r * cell_h, pad + r * cell_h + h * scale)
        .slice(2, pad + col * cell_w, pad + col * cell_w + w * scale)
        .copy_(img[i]);
  }
  auto bytes = canvas.permute({1, 2, 0}).contiguous().to(torch::kUInt8);
  std::string png;
  auto sink = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
  };
  // Gray images stay one channel.
  const int ok = stbi_write_png_to_func(sink, &png, static_cast<int>(width),
                                        static_cast<int>(height), static_cast<int>(c),
                                        bytes.data_ptr<uint8_t>(), static_cast<int>(width * c));
  CNF_CHECK(ok != 0 && !png.empty(), "image grid '", path, "': PNG encoding failed");
  write_atomic(path, [&](std::ostream& out) { out.write(png.data(), png.size()); });
}

}  // namespace cnf::io
