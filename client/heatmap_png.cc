#include "client/heatmap_png.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>

namespace funnel {
namespace {

// 5×7 glyphs: seven rows, bit 4 is the leftmost pixel.
struct Glyph {
  char c;
  std::array<uint8_t, 7> rows;
};

constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
};

const Glyph* FindGlyph(char c) {
  const char up = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const Glyph& g : kFont) {
    if (g.c == up) return &g;
  }
  return nullptr;
}

constexpr int kAdvance = 6;  // glyph width 5 plus one column of spacing

void PutU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xFF));
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Appends length, type, data and the CRC of type + data.
void PutChunk(std::string& out, const char type[4], const std::string& data) {
  PutU32(out, static_cast<uint32_t>(data.size()));
  std::string typed(type, 4);
  typed += data;
  out += typed;
  PutU32(out, Crc32(Bytes(typed)));
}

// zlib stream (no compression): header, stored deflate blocks of at most 65535 bytes, Adler-32.
std::string StoredZlib(const std::vector<uint8_t>& raw) {
  std::string z = {static_cast<char>(0x78), static_cast<char>(0x01)};
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n == raw.size();
    z.push_back(static_cast<char>(last ? 1 : 0));  // BFINAL, BTYPE = 00 (stored)
    const uint16_t len = static_cast<uint16_t>(n), nlen = static_cast<uint16_t>(~len);
    z.push_back(static_cast<char>(len & 0xFF));
    z.push_back(static_cast<char>(len >> 8));
    z.push_back(static_cast<char>(nlen & 0xFF));
    z.push_back(static_cast<char>(nlen >> 8));
    z.append(reinterpret_cast<const char*>(raw.data()) + pos, n);
    pos += n;
  } while (pos < raw.size());
  PutU32(z, Adler32(raw));
  return z;
}

Rgb Lerp(Rgb a, Rgb b, double t) {
  auto mix = [t](uint8_t x, uint8_t y) {
    return static_cast<uint8_t>(std::lround(x + (static_cast<double>(y) - x) * t));
  };
  return {mix(a.r, b.r), mix(a.g, b.g), mix(a.b, b.b)};
}

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kBlack{0, 0, 0};
constexpr Rgb kGridGrey{128, 128, 128};
constexpr Rgb kMissing{225, 225, 225};

}  // namespace

RgbImage::RgbImage(int width, int height, Rgb background)
    : width_(std::max(width, 1)), height_(std::max(height, 1)) {
  rgb_.resize(static_cast<size_t>(width_) * height_ * 3);
  FillRect(0, 0, width_, height_, background);
}

void RgbImage::Set(int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  uint8_t* p = &rgb_[(static_cast<size_t>(y) * width_ + x) * 3];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

Rgb RgbImage::At(int x, int y) const {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return kBlack;
  const uint8_t* p = &rgb_[(static_cast<size_t>(y) * width_ + x) * 3];
  return {p[0], p[1], p[2]};
}

void RgbImage::FillRect(int x, int y, int w, int h, Rgb c) {
  for (int j = std::max(y, 0); j < std::min(y + h, height_); ++j) {
    for (int i = std::max(x, 0); i < std::min(x + w, width_); ++i) Set(i, j, c);
  }
}

int RgbImage::TextWidth(const std::string& text, int scale) {
  return text.empty() ? 0 : (static_cast<int>(text.size()) * kAdvance - 1) * scale;
}

int RgbImage::DrawText(int x, int y, const std::string& text, Rgb color, int scale) {
  for (size_t k = 0; k < text.size(); ++k) {
    const Glyph* g = FindGlyph(text[k]);
    if (g == nullptr) continue;
    const int gx = x + static_cast<int>(k) * kAdvance * scale;
    for (int row = 0; row < 7; ++row) {
      for (int col = 0; col < 5; ++col) {
        if (g->rows[row] & (0x10 >> col))
          FillRect(gx + col * scale, y + row * scale, scale, scale, color);
      }
    }
  }
  return TextWidth(text, scale);
}

uint32_t Crc32(std::span<const uint8_t> data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : data) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t Adler32(std::span<const uint8_t> data) {
  uint32_t a = 1, b = 0;
  for (uint8_t x : data) {
    a = (a + x) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

std::string EncodePng(const RgbImage& image) {
  const int w = image.width(), h = image.height();
  std::vector<uint8_t> raw;
  raw.reserve(static_cast<size_t>(h) * (1 + static_cast<size_t>(w) * 3));
  const std::vector<uint8_t>& px = image.pixels();
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter type None
    const auto row = px.begin() + static_cast<std::ptrdiff_t>(y) * w * 3;
    raw.insert(raw.end(), row, row + static_cast<std::ptrdiff_t>(w) * 3);
  }
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  PutU32(ihdr, static_cast<uint32_t>(w));
  PutU32(ihdr, static_cast<uint32_t>(h));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit, RGB, deflate, adaptive, no interlace
  PutChunk(png, "IHDR", ihdr);
  PutChunk(png, "IDAT", StoredZlib(raw));
  PutChunk(png, "IEND", "");
  return png;
}

Rgb ScoreColor(double score) {
  constexpr Rgb kRed{0xF0, 0x49, 0x6E}, kYellow{0xEB, 0xB8, 0x39}, kGreen{0x0C, 0xD7, 0x9F};
  const double s = std::isnan(score) ? 0.0 : std::clamp(score, 0.0, 1.0);
  return s < 0.5 ? Lerp(kRed, kYellow, s * 2.0) : Lerp(kYellow, kGreen, (s - 0.5) * 2.0);
}

RgbImage RenderHeatmap(const Heatmap& hm, HeatmapLayout* layout_out) {
  constexpr int kScale = 2, kMargin = 10, kBarW = 18;
  const int text_h = RgbImage::TextHeight(kScale);
  const int rows = static_cast<int>(hm.row_labels.size());
  const int cols = static_cast<int>(hm.column_labels.size());
  int row_label_w = RgbImage::TextWidth("DEPTH %", kScale);
  for (const auto& l : hm.row_labels)
    row_label_w = std::max(row_label_w, RgbImage::TextWidth(l, kScale));
  int col_label_w = 0;
  for (const auto& l : hm.column_labels)
    col_label_w = std::max(col_label_w, RgbImage::TextWidth(l, kScale));

  HeatmapLayout L;
  // Wide enough for every column label when there are few columns; else label every stride-th.
  L.cell_w = cols <= 24 ? std::clamp(col_label_w + 8, 30, 60) : 30;
  L.cell_h = 22;
  const int stride = std::max(1, (col_label_w + 8 + L.cell_w - 1) / L.cell_w);
  L.grid_x = kMargin + row_label_w + 8;
  const int axis_title_y = kMargin + text_h + 10;  // "DEPTH %" above the depth labels
  L.grid_y = axis_title_y + text_h + 6;
  const int grid_w = cols * L.cell_w + 1, grid_h = rows * L.cell_h + 1;
  const int bar_x = L.grid_x + grid_w + 16;
  const std::string x_title = "CONTEXT LENGTH (TOKENS)";
  const int width = std::max({bar_x + kBarW + 6 + RgbImage::TextWidth("1.0", kScale) + kMargin,
                              kMargin * 2 + RgbImage::TextWidth(hm.title, kScale),
                              L.grid_x + RgbImage::TextWidth(x_title, kScale) + kMargin});
  const int height = L.grid_y + grid_h + 8 + text_h + 10 + text_h + kMargin;
  RgbImage img(width, height, kWhite);

  img.DrawText(kMargin, kMargin, hm.title, kBlack, kScale);
  img.FillRect(L.grid_x, L.grid_y, grid_w, grid_h, kGridGrey);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      double v = std::nan("");
      if (r < static_cast<int>(hm.values.size()) && c < static_cast<int>(hm.values[r].size())) {
        v = hm.values[r][c];
      }
      img.FillRect(L.grid_x + c * L.cell_w + 1, L.grid_y + r * L.cell_h + 1, L.cell_w - 1,
                   L.cell_h - 1, std::isnan(v) ? kMissing : ScoreColor(v));
    }
    const std::string& label = hm.row_labels[r];
    img.DrawText(L.grid_x - 8 - RgbImage::TextWidth(label, kScale),
                 L.grid_y + r * L.cell_h + (L.cell_h - text_h) / 2 + 1, label, kBlack, kScale);
  }
  const int labels_y = L.grid_y + grid_h + 8;
  for (int c = 0; c < cols; c += stride) {
    const std::string& label = hm.column_labels[c];
    const int cx = L.grid_x + c * L.cell_w + L.cell_w / 2;
    img.DrawText(cx - RgbImage::TextWidth(label, kScale) / 2, labels_y, label, kBlack, kScale);
  }
  img.DrawText(L.grid_x - 8 - RgbImage::TextWidth("DEPTH %", kScale), axis_title_y, "DEPTH %",
               kBlack, kScale);
  img.DrawText(L.grid_x, labels_y + text_h + 10, x_title, kBlack, kScale);
  // Colour bar: 1.0 at the top, 0.0 at the bottom.
  for (int y = 0; y < grid_h; ++y) {
    const double s = grid_h > 1 ? 1.0 - static_cast<double>(y) / (grid_h - 1) : 1.0;
    img.FillRect(bar_x, L.grid_y + y, kBarW, 1, ScoreColor(s));
  }
  img.DrawText(bar_x + kBarW + 6, L.grid_y, "1.0", kBlack, kScale);
  img.DrawText(bar_x + kBarW + 6, L.grid_y + grid_h - text_h, "0.0", kBlack, kScale);
  if (layout_out != nullptr) *layout_out = L;
  return img;
}

}  // namespace funnel
