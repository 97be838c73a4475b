/// \file
/// cnf/io/image_grid.h — image grids written as PNG (atomically, see io/files.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace cnf::io {

/// Writes images `pixels` [N, C, H, W] (C = 1 or 3; values in [0, 1], clamped) as a grid of
/// `columns` columns (rows as needed), each image magnified `scale` times, with a `pad`-pixel
/// gray border. A grid of N = 0 images is refused.
void image_grid_png(const std::string& path, const at::Tensor& pixels, int64_t columns,
                    int64_t scale = 1, int64_t pad = 1);

}  // namespace cnf::io
