#include "runtime/image_io.h"

#include <png.h>

#include <cstdio>
#include <memory>

#include "runtime/check.h"
#include "runtime/file_io.h"

namespace skv {

namespace {

void append_png_bytes(png_structp png, png_bytep data, png_size_t n) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), n);
}

void flush_nothing(png_structp) {}

}  // namespace

std::string encode_png_rgb(const uint8_t* rgb, int w, int h) {
  std::string bytes;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  SKV_CHECK(png && info, "libpng initialisation failed");
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    SKV_FAIL("libpng failed while encoding a {}x{} image", w, h);
  }
  png_set_write_fn(png, &bytes, &append_png_bytes, &flush_nothing);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h; ++y) png_write_row(png, const_cast<png_bytep>(rgb + static_cast<size_t>(y) * w * 3));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return bytes;
}

// Encodes in memory, then writes through file_io.h: a temporary name, every write checked, renamed into
// place when complete - a PNG under its final name is never empty or cut short.
void write_png_rgb(const std::string& path, const uint8_t* rgb, int w, int h) {
  std::string bytes;
  try {
    bytes = encode_png_rgb(rgb, w, h);
  } catch (const std::exception& e) {
    SKV_FAIL("{}: {}", path, e.what());
  }
  write_file_atomic(path, bytes);
}

std::vector<uint8_t> read_png_rgb(const std::string& path, int* w, int* h) {
  const std::string bytes = read_input_file(path, 1ull << 30);  // regular files only (file_io.h)
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  SKV_CHECK(png_image_begin_read_from_memory(&img, bytes.data(), bytes.size()), "{}: not a readable PNG", path);
  img.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> buf(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, buf.data(), 0, nullptr)) {
    png_image_free(&img);
    SKV_FAIL("{}: PNG decode failed ({})", path, img.message);
  }
  *w = static_cast<int>(img.width);
  *h = static_cast<int>(img.height);
  return buf;
}

std::vector<uint8_t> tile_rgb(const std::vector<std::vector<uint8_t>>& imgs, int w, int h, int cols, int pad,
                              uint8_t background, int* out_w, int* out_h) {
  const int n = static_cast<int>(imgs.size());
  const int rows = (n + cols - 1) / cols;
  const int W = cols * w + (cols + 1) * pad, H = rows * h + (rows + 1) * pad;
  std::vector<uint8_t> out(static_cast<size_t>(W) * H * 3, background);
  for (int i = 0; i < n; ++i) {
    const int ox = pad + (i % cols) * (w + pad), oy = pad + (i / cols) * (h + pad);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w * 3; ++x)
        out[(static_cast<size_t>(oy + y) * W + ox) * 3 + x] = imgs[i][static_cast<size_t>(y) * w * 3 + x];
  }
  *out_w = W;
  *out_h = H;
  return out;
}

}  // namespace skv
