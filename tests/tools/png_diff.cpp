// png_diff.cpp - `skv_png_diff DIR_A DIR_B [MAX]`: the test helper that compares two folders of PNGs
// (the same file names, the same sizes) and fails when a pixel differs by more than MAX (default 0).
// Prints the largest difference; used by the TP-vs-one-rank CLI tests.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "runtime/image_io.h"

namespace fs = std::filesystem;

std::set<std::string> pngs(const std::string& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".png") s.insert(e.path().filename().string());
  return s;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: skv_png_diff DIR_A DIR_B [MAX]\n");
    return 2;
  }
  const int max_ok = argc > 3 ? std::atoi(argv[3]) : 0;
  try {
    const auto a = pngs(argv[1]), b = pngs(argv[2]);
    if (a != b || a.empty()) {
      std::fprintf(stderr, "png_diff: %s has %zu PNGs, %s has %zu, names %s\n", argv[1], a.size(), argv[2], b.size(),
                   a == b ? "equal (but none)" : "differ");
      return 1;
    }
    int worst = 0;
    std::string where;
    for (const auto& n : a) {
      int wa, ha, wb, hb;
      const auto pa = skv::read_png_rgb(std::string(argv[1]) + "/" + n, &wa, &ha);
      const auto pb = skv::read_png_rgb(std::string(argv[2]) + "/" + n, &wb, &hb);
      if (wa != wb || ha != hb) {
        std::fprintf(stderr, "png_diff: %s is %dx%d in one folder and %dx%d in the other\n", n.c_str(), wa, ha, wb, hb);
        return 1;
      }
      for (size_t i = 0; i < pa.size(); ++i) {
        const int d = std::abs(int(pa[i]) - int(pb[i]));
        if (d > worst) {
          worst = d;
          where = n;
        }
      }
    }
    std::printf("png_diff: %zu images, largest pixel difference %d%s%s (allowed %d)\n", a.size(), worst,
                worst ? " in " : "", where.c_str(), max_ok);
    return worst <= max_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "png_diff: %s\n", e.what());
    return 1;
  }
}
