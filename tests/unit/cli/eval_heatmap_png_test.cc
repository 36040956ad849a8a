// The NIAH heatmap PNG writer, decoded with zlib (an independent inflater and CRC): signature,
// chunk layout and CRCs, IHDR, the Adler-32-checked stored deflate stream, and pixels.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "client/heatmap_png.h"

namespace funnel {
namespace {

struct Chunk {
  std::string type;
  std::string data;
  uint32_t crc = 0;
};

uint32_t ReadU32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 3]));
}

// Splits a PNG into chunks; fails the test on a bad signature or a truncated chunk.
std::vector<Chunk> ParseChunks(const std::string& png) {
  std::vector<Chunk> chunks;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  size_t at = 8;
  while (at + 12 <= png.size()) {
    Chunk c;
    const uint32_t len = ReadU32(png, at);
    EXPECT_LE(at + 12 + len, png.size());
    c.type = png.substr(at + 4, 4);
    c.data = png.substr(at + 8, len);
    c.crc = ReadU32(png, at + 8 + len);
    chunks.push_back(c);
    at += 12 + len;
  }
  EXPECT_EQ(at, png.size()) << "trailing bytes";
  return chunks;
}

struct Decoded {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> raw;  // filter byte + RGB per row
};

Decoded Decode(const std::string& png) {
  Decoded d;
  std::string idat;
  for (const Chunk& c : ParseChunks(png)) {
    const std::string typed = c.type + c.data;
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(typed.data()), typed.size()));
    EXPECT_EQ(c.crc, crc) << "bad CRC in chunk " << c.type;
    if (c.type == "IHDR") {
      EXPECT_EQ(c.data.size(), 13u);
      d.width = ReadU32(c.data, 0);
      d.height = ReadU32(c.data, 4);
      EXPECT_EQ(c.data[8], 8);   // bit depth
      EXPECT_EQ(c.data[9], 2);   // RGB
      EXPECT_EQ(c.data[12], 0);  // no interlace
    } else if (c.type == "IDAT") {
      idat += c.data;
    }
  }
  uLongf size = static_cast<uLongf>(d.height) * (1 + 3 * static_cast<uLongf>(d.width));
  d.raw.resize(size);
  // uncompress checks the zlib header, every stored block's LEN/NLEN and the Adler-32.
  EXPECT_EQ(
      uncompress(d.raw.data(), &size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()),
      Z_OK);
  EXPECT_EQ(size, d.raw.size());
  return d;
}

Rgb PixelAt(const Decoded& d, uint32_t x, uint32_t y) {
  const size_t row = static_cast<size_t>(y) * (1 + 3 * d.width);
  EXPECT_EQ(d.raw[row], 0) << "filter byte of row " << y;
  const uint8_t* p = &d.raw[row + 1 + 3 * static_cast<size_t>(x)];
  return {p[0], p[1], p[2]};
}

TEST(HeatmapPngTest, EncodesChunksWithValidCrcsAndPixels) {
  RgbImage img(3, 2, {255, 255, 255});
  img.Set(0, 0, {255, 0, 0});
  img.Set(2, 1, {1, 2, 3});
  const std::string png = EncodePng(img);
  const std::vector<Chunk> chunks = ParseChunks(png);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].type, "IHDR");
  EXPECT_EQ(chunks[1].type, "IDAT");
  EXPECT_EQ(chunks[2].type, "IEND");
  const Decoded d = Decode(png);
  EXPECT_EQ(d.width, 3u);
  EXPECT_EQ(d.height, 2u);
  EXPECT_EQ(PixelAt(d, 0, 0), (Rgb{255, 0, 0}));
  EXPECT_EQ(PixelAt(d, 1, 0), (Rgb{255, 255, 255}));
  EXPECT_EQ(PixelAt(d, 2, 1), (Rgb{1, 2, 3}));
}

TEST(HeatmapPngTest, LargeImageSpansSeveralStoredBlocks) {
  RgbImage img(200, 150, {0, 0, 0});  // 150 * 601 = 90150 raw bytes: two stored blocks
  img.FillRect(100, 75, 100, 75, {9, 8, 7});
  const Decoded d = Decode(EncodePng(img));
  EXPECT_EQ(d.raw.size(), 90150u);
  EXPECT_EQ(PixelAt(d, 99, 74), (Rgb{0, 0, 0}));
  EXPECT_EQ(PixelAt(d, 199, 149), (Rgb{9, 8, 7}));
}

TEST(HeatmapPngTest, ChecksumsMatchKnownValues) {
  const std::string text = "123456789";
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  EXPECT_EQ(Crc32(bytes), 0xCBF43926u);    // the CRC-32 check value
  EXPECT_EQ(Adler32(bytes), 0x091E01DEu);  // the Adler-32 of "123456789"
}

TEST(HeatmapPngTest, ColormapEndsAreThePaperColours) {
  EXPECT_EQ(ScoreColor(0.0), (Rgb{0xF0, 0x49, 0x6E}));
  EXPECT_EQ(ScoreColor(0.5), (Rgb{0xEB, 0xB8, 0x39}));
  EXPECT_EQ(ScoreColor(1.0), (Rgb{0x0C, 0xD7, 0x9F}));
  EXPECT_EQ(ScoreColor(2.0), ScoreColor(1.0));
  // Halfway between red and yellow: (0xF0+0xEB)/2 = 237.5 -> 238, (0x49+0xB8)/2 = 128.5 -> 129,
  // (0x6E+0x39)/2 = 83.5 -> 84.
  EXPECT_EQ(ScoreColor(0.25), (Rgb{238, 129, 84}));
}

TEST(HeatmapPngTest, HeatmapCellsHaveTheirScoreColours) {
  Heatmap hm;
  hm.title = "pyramidkv B=128";
  hm.row_labels = {"0", "50", "100"};
  hm.column_labels = {"1000", "2000"};
  hm.values = {{1.0, 0.0}, {0.5, std::nan("")}, {0.0, 1.0}};
  HeatmapLayout layout;
  const RgbImage img = RenderHeatmap(hm, &layout);
  const Decoded d = Decode(EncodePng(img));
  ASSERT_EQ(d.width, static_cast<uint32_t>(img.width()));
  ASSERT_EQ(d.height, static_cast<uint32_t>(img.height()));
  auto center = [&](int row, int col) {
    return PixelAt(d,
                   static_cast<uint32_t>(layout.grid_x + col * layout.cell_w + layout.cell_w / 2),
                   static_cast<uint32_t>(layout.grid_y + row * layout.cell_h + layout.cell_h / 2));
  };
  EXPECT_EQ(center(0, 0), (Rgb{0x0C, 0xD7, 0x9F}));
  EXPECT_EQ(center(0, 1), (Rgb{0xF0, 0x49, 0x6E}));
  EXPECT_EQ(center(1, 0), (Rgb{0xEB, 0xB8, 0x39}));
  EXPECT_EQ(center(1, 1), (Rgb{225, 225, 225}));  // no result
  EXPECT_EQ(center(2, 1), (Rgb{0x0C, 0xD7, 0x9F}));
  // Grid lines are grey.
  EXPECT_EQ(
      PixelAt(d, static_cast<uint32_t>(layout.grid_x), static_cast<uint32_t>(layout.grid_y + 5)),
      (Rgb{128, 128, 128}));
}

}  // namespace
}  // namespace funnel
