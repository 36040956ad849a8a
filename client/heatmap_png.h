// NIAH heatmaps as PNG files, written without an image library.
//
// EncodePng writes an 8-bit RGB PNG: IHDR, one IDAT holding a zlib stream of stored
// (uncompressed) deflate blocks with its Adler-32, IEND; every chunk carries its CRC-32.
// RenderHeatmap draws a depth × context-length grid in the style of the PyramidKV needle figures
// (colormap red #F0496E → yellow #EBB839 → green #0CD79F over scores 0..1, grey grid lines),
// with tick labels, a title and a colour bar in a built-in 5×7 pixel font.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace funnel {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

// Row-major RGB pixels; (0, 0) is the top-left corner.
class RgbImage {
 public:
  RgbImage(int width, int height, Rgb background);

  int width() const { return width_; }
  int height() const { return height_; }
  // Out-of-range coordinates are ignored (Set) or read as black (At).
  void Set(int x, int y, Rgb color);
  Rgb At(int x, int y) const;
  void FillRect(int x, int y, int w, int h, Rgb color);
  // Draws `text` (upper-cased; characters without a glyph are blank) with its top-left corner at
  // (x, y); each font pixel is a scale × scale square. Returns the drawn width in pixels.
  int DrawText(int x, int y, const std::string& text, Rgb color, int scale);
  static int TextWidth(const std::string& text, int scale);
  static int TextHeight(int scale) { return 7 * scale; }

  const std::vector<uint8_t>& pixels() const { return rgb_; }

 private:
  int width_;
  int height_;
  std::vector<uint8_t> rgb_;
};

// CRC-32 (ISO 3309, as PNG chunks use) and Adler-32 (zlib) of `data`.
uint32_t Crc32(std::span<const uint8_t> data);
uint32_t Adler32(std::span<const uint8_t> data);

// The PNG file bytes of `image`.
std::string EncodePng(const RgbImage& image);

// The colormap at `score` (clamped to [0, 1]).
Rgb ScoreColor(double score);

struct Heatmap {
  std::string title;
  std::vector<std::string> row_labels;     // depths, top to bottom
  std::vector<std::string> column_labels;  // context lengths, left to right
  // values[row][column] in [0, 1]; NaN: no result (drawn light grey).
  std::vector<std::vector<double>> values;
};

// Cell geometry of a rendered heatmap, for callers (and tests) that look up cell pixels.
struct HeatmapLayout {
  int grid_x = 0, grid_y = 0;  // top-left corner of cell (0, 0)
  int cell_w = 0, cell_h = 0;  // cell pitch, grid line included
};

RgbImage RenderHeatmap(const Heatmap& heatmap, HeatmapLayout* layout = nullptr);

}  // namespace funnel
