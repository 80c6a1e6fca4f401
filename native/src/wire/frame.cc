#include "wire/frame.h"

#include <cstring>

namespace hotpot {
namespace wire {

bool TraceContext::valid() const {
  for (uint8_t b : trace_id)
    if (b != 0) return true;
  return false;
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
  for (size_t i = 0; i < 7; i++) out[57 + i] = uint8_t(h.epoch >> (8 * i));
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
  if ((h.flags & ~(kFlagResponse | kFlagError | kFlagDepthMask)) != 0)
    return Status(Code::kInvalidArgument, "unknown frame flags");
  if ((h.flags & kFlagResponse) != 0 && (h.flags & kFlagDepthMask) != 0)
    return Status(Code::kInvalidArgument, "a response carries no call depth");
  h.status = GetU32(buf + 28);
  if ((h.status & 0xFFFF) > static_cast<uint32_t>(Code::kUnauthenticated))
    return Status(Code::kInvalidArgument, "bad frame status");
  std::memcpy(h.trace.trace_id, buf + 32, 16);
  std::memcpy(h.trace.span_id, buf + 48, 8);
  h.trace.flags = buf[56];
  for (size_t i = 0; i < 7; i++) h.epoch |= uint64_t(buf[57 + i]) << (8 * i);
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
