#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "test_util.h"
#include "wire/frame.h"

using namespace hotpot;

TEST(header_round_trips) {
  wire::FrameHeader h;
  h.type = 16;
  h.request_id = 0x1122334455667788ull;
  h.flags = wire::kFlagResponse;
  h.trace.trace_id[0] = 7;
  h.epoch = wire::kMaxEpoch - 5;
  std::vector<uint8_t> payload(100, 0xAB);
  uint8_t buf[wire::kHeaderSize];
  wire::EncodeHeader(h, payload.data(), payload.size(), buf);
  wire::FrameHeader d;
  CHECK_OK(wire::DecodeHeader(buf, sizeof buf, &d));
  CHECK(d.type == 16 && d.request_id == h.request_id && d.length == 100 && d.trace.trace_id[0] == 7 &&
        d.epoch == wire::kMaxEpoch - 5);
  CHECK_OK(wire::VerifyPayload(d, payload.data(), payload.size()));
  payload[3] ^= 1;
  CHECK(wire::VerifyPayload(d, payload.data(), payload.size()).code() == Code::kDataLoss);
}

TEST(header_rejects_garbage) {
  uint8_t buf[wire::kHeaderSize] = {};
  wire::FrameHeader d;
  CHECK(!wire::DecodeHeader(buf, sizeof buf, &d).ok());
  wire::FrameHeader h;
  wire::EncodeHeader(h, nullptr, 0, buf);
  CHECK_OK(wire::DecodeHeader(buf, sizeof buf, &d));
  CHECK(!wire::DecodeHeader(buf, 10, &d).ok());
  buf[26] = 1;  // an unknown flag
  CHECK(!wire::DecodeHeader(buf, sizeof buf, &d).ok());
  buf[26] = 0;
  PutU32(buf + 8, wire::kMaxPayload + 1);
  CHECK(wire::DecodeHeader(buf, sizeof buf, &d).code() == Code::kResourceExhausted);
}

TEST(request_call_depth_round_trips_and_responses_carry_none) {
  uint8_t buf[wire::kHeaderSize];
  wire::FrameHeader h, d;
  for (uint8_t depth = 0; depth <= wire::kMaxCallDepth; depth++) {
    h.flags = uint32_t(depth) << wire::kFlagDepthShift;
    wire::EncodeHeader(h, nullptr, 0, buf);
    CHECK_OK(wire::DecodeHeader(buf, sizeof buf, &d));
    CHECK(wire::FrameDepth(d.flags) == depth);
  }
  h.flags = wire::kFlagResponse | (1u << wire::kFlagDepthShift);
  wire::EncodeHeader(h, nullptr, 0, buf);
  CHECK(wire::DecodeHeader(buf, sizeof buf, &d).code() == Code::kInvalidArgument);
  h.flags = 1u << (wire::kFlagDepthShift + 2);  // the bit above the depth field
  wire::EncodeHeader(h, nullptr, 0, buf);
  CHECK(wire::DecodeHeader(buf, sizeof buf, &d).code() == Code::kInvalidArgument);
}

TEST(crc32c_known_vector) {
  const char* s = "123456789";
  CHECK(Crc32c(reinterpret_cast<const uint8_t*>(s), 9) == 0xE3069283u);
}

TEST(crc32c_matches_bitwise_reference_for_every_length) {
  // Reference: the bit-at-a-time definition, so the fast path (hardware or table) is checked independently.
  auto ref = [](const uint8_t* d, size_t n) {
    uint32_t c = ~0u;
    for (size_t i = 0; i < n; i++) {
      c ^= d[i];
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
  };
  std::vector<uint8_t> buf(4096 + 17);
  for (size_t i = 0; i < buf.size(); i++) buf[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t off = 0; off < 9; off++)
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(63), size_t(4096)})
      CHECK(Crc32c(buf.data() + off, n) == ref(buf.data() + off, n));
  // Incremental use equals one pass.
  uint32_t a = Crc32c(buf.data(), 1000);
  CHECK(Crc32c(buf.data() + 1000, 3000, a) == Crc32c(buf.data(), 4000));
}

TEST_MAIN("frame")
