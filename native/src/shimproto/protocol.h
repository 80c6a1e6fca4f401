// The app<->daemon shim protocol on the node's unix socket: framed with wire/frame.h (types >= 100), one request
// then one response, fds as SCM_RIGHTS ancillary data on the same message. Shared by both ends
// (engine/shim_server.cc and shim/), so every encoder and decoder lives here once and every decoder checks every
// length and count against the payload before reading.
//
// Payloads (all little-endian):
//   HELLO     req  version u32                                   resp version u32, server pid u32
//   OPEN      req  flags u32 (bit0 create, bit1 read-only), size u64, mode u8, pad[3] = 0, replicas u32, name_len u16, name
//             resp session u64, dataset u64, size u64, mode u8, pad[3] = 0, replicas u32, chunk u32
//                  + 1 fd (page file)
//   MAP       req  session u64, offset u64, length u64, addr u64                    + 1 fd (uffd)
//             resp mapping u64
//   COMMIT    req  session u64, replicas u32, flags u32 (bit0 = more batches follow, bit1 = extras follow the
//                  pages), n u32, n x {page u64, 4096 B}
//                  [extras, final batch only: nreads u32, nreads x {offset u64, len u64}, lease_len u32, lease]
//             resp (final batch) status u32, msg_len u16 (0 for OK, <= 4096), msg, copies u32, replicas u32
//                  (N asked for: copies < replicas = applied but under-replicated), pages u64, ranges u64, bytes u64, n u32, n x {offset u64, len u32}      (intermediate batches: empty OK)
//   ROLLBACK  req  session u64                                       resp empty (session resynced)
//   BASE      req  session u64, n u32, n x page u64                  resp n x 4096 B (base images)
//   RESYNC    req  session u64                                       resp empty
//   CLOSE     req  session u64                                       resp empty
//   PUBLICATION req session u64                                      resp seq u64, open_commits u32
//             (the node's publication state of the session's dataset, for snapshot reads)
// Errors: a response with kFlagError, status = Code, payload = UTF-8 message. COMMIT reports ABORTED inside an OK
// frame so it can carry the conflicting ranges.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/fd.h"
#include "common/page.h"
#include "common/status.h"
#include "wire/frame.h"

namespace hotpot {
namespace shimproto {

constexpr uint32_t kProtocolVersion = 1;

enum MsgType : uint16_t {
  kHello = 100,
  kOpen = 101,
  kMap = 102,
  kCommit = 103,
  kRollback = 104,
  kBase = 105,
  kResync = 106,
  kClose = 107,
  kPublication = 108,
  // PUBLICATION_MAP: request = session; response = empty payload + the fd of the shared page holding the
  // dataset's publication word (PublicationWord below), which the app maps read-only.
  kPublicationMap = 109,
};

// Bounds every allocation a peer can cause on either end.
constexpr size_t kMaxNameLen = 1024;
constexpr uint32_t kMaxCommitBatchPages = 2048;   // 8 MiB of page data per COMMIT message
constexpr uint32_t kMaxBasePages = 1024;          // 4 MiB per BASE response
constexpr uint32_t kMaxConflicts = 65536;
constexpr size_t kMaxStatusMessage = 4096;  // COMMIT response: longer messages are cut
constexpr size_t kMaxFdsPerMessage = 1;
constexpr uint32_t kMaxSessionsPerConnection = 1024;
constexpr uint32_t kMaxMappingsPerSession = 1024;
constexpr uint32_t kCommitFlagMore = 1u << 0;
constexpr uint32_t kCommitFlagExtras = 1u << 1;
constexpr uint32_t kMaxCommitReads = 65536;
constexpr uint32_t kMaxLeaseBytes = 64 * 1024;
constexpr uint32_t kOpenFlagCreate = 1u << 0;
// The session only reads: the daemon checks read permission only and refuses its commits.
constexpr uint32_t kOpenFlagReadOnly = 1u << 1;

// The publication state as one 64-bit word in a shared page the app maps read-only (PUBLICATION_MAP), so a
// snapshot probe is a load instead of a round trip: bit 0 = busy (a change is being written now), bits 1..16 =
// open commits (saturating), bits 17..63 = seq. The daemon sets busy before changing node-cache content and stores
// the next seq with busy clear after it (release stores); a reader that loads the same word, busy clear and no
// open commit, before and after its loads (acquire) saw every commit whole.
constexpr uint64_t kPublicationBusy = 1;
inline uint64_t PublicationWord(uint64_t seq, size_t open_commits, bool busy) {
  const uint64_t open = open_commits > 0xFFFF ? 0xFFFF : open_commits;
  return (seq << 17) | (open << 1) | (busy ? kPublicationBusy : 0);
}
// seq, and the open commits counting a change in progress as one more.
inline void DecodePublicationWord(uint64_t w, uint64_t* seq, uint32_t* open_commits) {
  *seq = w >> 17;
  *open_commits = uint32_t((w >> 1) & 0xFFFF) + uint32_t(w & kPublicationBusy);
}

// One received or to-be-sent message.
struct Message {
  wire::FrameHeader header;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
};

// Sends header + payload (+ fds on the first byte) completely; retries EINTR and partial writes.
Status SendMessage(int sock, const wire::FrameHeader& header, const uint8_t* payload, size_t len,
                   const int* fds, size_t nfds);
// Receives one complete message. EOF before the first byte -> UNAVAILABLE "connection closed". Any fd beyond
// kMaxFdsPerMessage, or truncated ancillary data, is an error (the fds received are closed).
Status RecvMessage(int sock, Message* out, uint32_t max_payload = wire::kMaxPayload);

// Little-endian payload writer/reader with bounds checks.
class Writer {
 public:
  void U8(uint8_t v) { buf_.push_back(v); }
  void U16(uint16_t v) { size_t o = Grow(2); PutU16(&buf_[o], v); }
  void U32(uint32_t v) { size_t o = Grow(4); PutU32(&buf_[o], v); }
  void U64(uint64_t v) { size_t o = Grow(8); PutU64(&buf_[o], v); }
  void Bytes(const void* p, size_t n);
  std::vector<uint8_t>& buf() { return buf_; }

 private:
  size_t Grow(size_t n) { size_t o = buf_.size(); buf_.resize(o + n); return o; }
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  explicit Reader(const std::vector<uint8_t>& v) : p_(v.data()), n_(v.size()) {}
  bool U8(uint8_t* v);
  bool U16(uint16_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  // Points *p at the next n bytes (no copy).
  bool Bytes(size_t n, const uint8_t** p);
  size_t remaining() const { return n_ - off_; }
  bool done() const { return off_ == n_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

// Typed requests/responses.
struct OpenRequest {
  std::string name;
  bool create = false;
  bool read_only = false;
  uint64_t size = 0;
  uint8_t mode = 1;
  uint32_t replicas = 1;
};
struct OpenResponse {
  uint64_t session = 0, dataset = 0, size = 0;
  uint8_t mode = 1;
  uint32_t replicas = 0, chunk_size = 0;
};
struct MapRequest {
  uint64_t session = 0, offset = 0, length = 0, addr = 0;
};
struct CommitConflict {
  uint64_t offset = 0;
  uint32_t len = 0;
};
struct CommitResponse {
  Status status;
  uint32_t copies = 0;
  uint32_t replicas = 0;  // N asked for; copies < replicas: applied, under-replicated (topped up in the background)
  uint64_t pages = 0, ranges = 0, bytes = 0;
  std::vector<CommitConflict> conflicts;
};
// COMMIT batch header; the pages follow in the payload at `pages_offset` (n x {page u64, 4096 bytes}).
struct CommitReadRange {
  uint64_t offset = 0, len = 0;
};
struct CommitBatch {
  uint64_t session = 0;
  uint32_t replicas = 0, flags = 0, n = 0;
  const uint8_t* pages = nullptr;  // into the decoded payload
  std::vector<CommitReadRange> reads;  // kCommitFlagExtras
  std::vector<uint8_t> lease;
};

struct HelloResponse {
  uint32_t version = 0;
  uint32_t server_pid = 0;
};

std::vector<uint8_t> EncodeHelloRequest(uint32_t version);
Status DecodeHelloRequest(const std::vector<uint8_t>& p, uint32_t* version);
std::vector<uint8_t> EncodeHelloResponse(const HelloResponse& r);
Status DecodeHelloResponse(const std::vector<uint8_t>& p, HelloResponse* out);
std::vector<uint8_t> EncodeOpenRequest(const OpenRequest& r);
Status DecodeOpenRequest(const std::vector<uint8_t>& p, OpenRequest* out);
std::vector<uint8_t> EncodeOpenResponse(const OpenResponse& r);
Status DecodeOpenResponse(const std::vector<uint8_t>& p, OpenResponse* out);
std::vector<uint8_t> EncodeMapRequest(const MapRequest& r);
Status DecodeMapRequest(const std::vector<uint8_t>& p, MapRequest* out);
// Writes the batch header; the caller appends n x {page u64, 4096 bytes}.
void EncodeCommitBatchHeader(Writer* w, uint64_t session, uint32_t replicas, uint32_t flags, uint32_t n);
// Appends the extras (after the pages of a final batch sent with kCommitFlagExtras).
void EncodeCommitExtras(Writer* w, const std::vector<CommitReadRange>& reads, const std::vector<uint8_t>& lease);
Status DecodeCommitBatch(const std::vector<uint8_t>& p, CommitBatch* out);
std::vector<uint8_t> EncodeCommitResponse(const CommitResponse& r);
Status DecodeCommitResponse(const std::vector<uint8_t>& p, CommitResponse* out);
std::vector<uint8_t> EncodeSession(uint64_t session);
Status DecodeSession(const std::vector<uint8_t>& p, uint64_t* session);
std::vector<uint8_t> EncodeBaseRequest(uint64_t session, const std::vector<uint64_t>& pages);
Status DecodeBaseRequest(const std::vector<uint8_t>& p, uint64_t* session, std::vector<uint64_t>* pages);
// PUBLICATION response (the request is EncodeSession).
struct PublicationResponse {
  uint64_t seq = 0;
  uint32_t open_commits = 0;
};
std::vector<uint8_t> EncodePublicationResponse(const PublicationResponse& r);
Status DecodePublicationResponse(const std::vector<uint8_t>& p, PublicationResponse* out);

}  // namespace shimproto
}  // namespace hotpot
