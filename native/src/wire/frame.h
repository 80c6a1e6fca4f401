// The data-plane frame: a fixed 64-byte little-endian header followed by `length` payload bytes.
// Used on peer TCP connections (transport/) and on the app<->daemon unix socket (shim protocol).
//
//   off size field
//    0   4  magic        'HPOT' = 0x544F5048 (bytes 'H','P','O','T' on the wire)
//    4   2  version      kWireVersion
//    6   2  type         MsgType
//    8   4  length       payload bytes, <= kMaxPayload
//   12   4  checksum     CRC32C of the payload (0 in a sealed frame: its AEAD tag covers the payload)
//   16   8  request_id   echoed in the response
//   24   4  flags        kFlagResponse | kFlagError; bits 8-9 of a request: its call depth (see below)
//   28   4  status       Code of a response in bits 0-7 (0 = OK), its protocol-defined reason in bits 16-31 (0 =
//                          none); an error response's payload is a UTF-8 message
//   32  16  trace_id     W3C trace context (all zero = none)
//   48   8  span_id
//   56   1  trace_flags
//   57   7  epoch        the sender's membership epoch (56 bits; 0 = none: the shim socket, handshake frames). A
//                          request from a node its receiver knows was declared dead at this epoch or later is
//                          refused (docs/design/consistency.md "Fencing")
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "common/status.h"

namespace hotpot {
namespace wire {

constexpr uint32_t kMagic = 0x544F5048u;
constexpr uint16_t kWireVersion = 1;
constexpr size_t kHeaderSize = 64;
constexpr uint32_t kMaxPayload = 16u << 20;  // 16 MiB: bounds every allocation a peer can cause
constexpr uint32_t kFlagResponse = 1u << 0;
constexpr uint32_t kFlagError = 1u << 1;
constexpr uint64_t kMaxEpoch = (uint64_t(1) << 56) - 1;
// Call depth of a request: 0 when sent by a thread that serves no request, d + 1 when sent by a handler serving a
// request of depth d (capped at kMaxCallDepth). Senders keep one connection pool per depth, so a handler's nested
// call never waits for a connection held by a call that is itself waiting for that handler: with one shared pool,
// owners that log their prepares on each other (PREPARE -> PREPARE_COPY) stalled in a cycle until their deadlines.
constexpr uint32_t kFlagDepthShift = 8;
constexpr uint32_t kFlagDepthMask = 3u << kFlagDepthShift;
constexpr uint8_t kMaxCallDepth = 3;
inline uint8_t FrameDepth(uint32_t flags) { return uint8_t((flags & kFlagDepthMask) >> kFlagDepthShift); }

struct TraceContext {
  uint8_t trace_id[16] = {};
  uint8_t span_id[8] = {};
  uint8_t flags = 0;
  bool valid() const;
};

struct FrameHeader {
  uint16_t version = kWireVersion;
  uint16_t type = 0;
  uint32_t length = 0;
  uint32_t checksum = 0;
  uint64_t request_id = 0;
  uint32_t flags = 0;
  uint32_t status = 0;
  TraceContext trace;
  uint64_t epoch = 0;  // <= kMaxEpoch (EncodeHeader keeps the low 56 bits)
};

// The header's status field for a Status, and back (code in bits 0-7, reason in bits 16-31).
inline uint32_t PackStatus(Code code, uint16_t reason) { return uint32_t(code) | (uint32_t(reason) << 16); }
inline Code StatusCode(uint32_t status) { return static_cast<Code>(status & 0xFF); }
inline uint16_t StatusReason(uint32_t status) { return uint16_t(status >> 16); }

// Writes the 64-byte header for `payload` (computes length and checksum).
void EncodeHeader(const FrameHeader& h, const uint8_t* payload, size_t payload_len, uint8_t out[kHeaderSize]);

// Parses and validates a header: magic, version, flags, status, length <= max_payload.
// Does not check the checksum (the payload is not read yet); see VerifyPayload.
Status DecodeHeader(const uint8_t* buf, size_t len, FrameHeader* out, uint32_t max_payload = kMaxPayload);

// Checks the payload against the header's length and checksum.
Status VerifyPayload(const FrameHeader& h, const uint8_t* payload, size_t len);

}  // namespace wire
}  // namespace hotpot
