#include <cstring>
#include <vector>

#include "test_util.h"
#include "wire/frame.h"

using namespace hotpot;

TEST(header_round_trips) {
  wire::FrameHeader h;
  h.type = 16;
  h.request_id = 0x1122334455667788ull;
  h.flags = wire::kFlagResponse;
  h.trace.trace_id[0] = 7;
  std::vector<uint8_t> payload(100, 0xAB);
  uint8_t buf[wire::kHeaderSize];
  wire::EncodeHeader(h, payload.data(), payload.size(), buf);
  wire::FrameHeader d;
  CHECK_OK(wire::DecodeHeader(buf, sizeof buf, &d));
  CHECK(d.type == 16 && d.request_id == h.request_id && d.length == 100 && d.trace.trace_id[0] == 7);
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
  buf[60] = 1;  // reserved
  CHECK(!wire::DecodeHeader(buf, sizeof buf, &d).ok());
  buf[60] = 0;
  wire::PutU32(buf + 8, wire::kMaxPayload + 1);
  CHECK(wire::DecodeHeader(buf, sizeof buf, &d).code() == Code::kResourceExhausted);
}

TEST(crc32c_known_vector) {
  const char* s = "123456789";
  CHECK(wire::Crc32c(reinterpret_cast<const uint8_t*>(s), 9) == 0xE3069283u);
}

TEST_MAIN("frame")
