#include "wire/frame.h"

#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace hotpot {
namespace wire {

namespace {

// CRC32C (Castagnoli), reflected polynomial 0x82F63B78, slicing-by-1 table built once.
struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
  }
};

const Crc32cTable& Table() {
  static const Crc32cTable table;
  return table;
}

}  // namespace

bool TraceContext::valid() const {
  for (uint8_t b : trace_id)
    if (b != 0) return true;
  return false;
}

namespace {

uint32_t Crc32cTableImpl(const uint8_t* data, size_t len, uint32_t crc) {
  const uint32_t* t = Table().t;
  for (size_t i = 0; i < len; i++) crc = t[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes the same (Castagnoli, reflected) CRC 8 bytes per instruction: every
// frame is checksummed on both ends, so the table version alone cost ~14 us per 4 KiB page on this VM.
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(const uint8_t* data, size_t len, uint32_t crc) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t v;
    std::memcpy(&v, data, 8);
    c = _mm_crc32_u64(c, v);
    data += 8;
    len -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (len-- > 0) c32 = _mm_crc32_u8(c32, *data++);
  return c32;
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t Crc32c(const uint8_t* data, size_t len, uint32_t crc) {
  crc = ~crc;
#if defined(__x86_64__)
  if (kHaveSse42) return ~Crc32cHardware(data, len, crc);
#endif
  return ~Crc32cTableImpl(data, len, crc);
}

void EncodeHeader(const FrameHeader& h, const uint8_t* payload, size_t payload_len, uint8_t out[kHeaderSize]) {
  std::memset(out, 0, kHeaderSize);
  PutU32(out + 0, kMagic);
  PutU16(out + 4, h.version);
  PutU16(out + 6, h.type);
  PutU32(out + 8, static_cast<uint32_t>(payload_len));
  PutU32(out + 12, payload_len ? Crc32c(payload, payload_len) : 0);
  PutU64(out + 16, h.request_id);
  PutU32(out + 24, h.flags);
  PutU32(out + 28, h.status);
  std::memcpy(out + 32, h.trace.trace_id, 16);
  std::memcpy(out + 48, h.trace.span_id, 8);
  out[56] = h.trace.flags;
}

Status DecodeHeader(const uint8_t* buf, size_t len, FrameHeader* out, uint32_t max_payload) {
  if (len < kHeaderSize) return Status(Code::kInvalidArgument, "frame header truncated");
  if (GetU32(buf) != kMagic) return Status(Code::kInvalidArgument, "bad frame magic");
  FrameHeader h;
  h.version = GetU16(buf + 4);
  if (h.version != kWireVersion)
    return Status(Code::kFailedPrecondition, "unsupported wire version " + std::to_string(h.version));
  h.type = GetU16(buf + 6);
  h.length = GetU32(buf + 8);
  if (h.length > max_payload)
    return Status(Code::kResourceExhausted, "frame payload " + std::to_string(h.length) + " exceeds limit");
  h.checksum = GetU32(buf + 12);
  h.request_id = GetU64(buf + 16);
  h.flags = GetU32(buf + 24);
  if ((h.flags & ~(kFlagResponse | kFlagError)) != 0) return Status(Code::kInvalidArgument, "unknown frame flags");
  h.status = GetU32(buf + 28);
  if ((h.status & 0xFFFF) > static_cast<uint32_t>(Code::kUnauthenticated))
    return Status(Code::kInvalidArgument, "bad frame status");
  std::memcpy(h.trace.trace_id, buf + 32, 16);
  std::memcpy(h.trace.span_id, buf + 48, 8);
  h.trace.flags = buf[56];
  for (size_t i = 57; i < kHeaderSize; i++)
    if (buf[i] != 0) return Status(Code::kInvalidArgument, "reserved header bytes not zero");
  *out = h;
  return Status::Ok();
}

Status VerifyPayload(const FrameHeader& h, const uint8_t* payload, size_t len) {
  if (len != h.length) return Status(Code::kInvalidArgument, "payload length mismatch");
  uint32_t c = len ? Crc32c(payload, len) : 0;
  if (c != h.checksum) return Status(Code::kDataLoss, "frame checksum mismatch");
  return Status::Ok();
}

}  // namespace wire
}  // namespace hotpot
