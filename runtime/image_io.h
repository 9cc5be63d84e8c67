// image_io.h - PNG output (libpng) and a side-by-side grid helper for reports.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace skv {

// 8-bit RGB, row-major, w * h * 3 bytes.
void write_png_rgb(const std::string& path, const uint8_t* rgb, int w, int h);
// The PNG file's bytes, in memory (the HTTP server's b64_json).
std::string encode_png_rgb(const uint8_t* rgb, int w, int h);
// Reads an 8-bit RGB or grey PNG into RGB (used by tests and the demo report).
std::vector<uint8_t> read_png_rgb(const std::string& path, int* w, int* h);

// Tiles equally sized RGB images into a grid with `pad` pixels of background between them.
std::vector<uint8_t> tile_rgb(const std::vector<std::vector<uint8_t>>& imgs, int w, int h, int cols, int pad,
                              uint8_t background, int* out_w, int* out_h);

}  // namespace skv
