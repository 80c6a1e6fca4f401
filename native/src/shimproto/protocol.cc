#include "shimproto/protocol.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstring>

namespace hotpot {
namespace shimproto {

namespace {

// Room for more fds than any message may carry, so an excess is detected (and closed) instead of silently
// truncated by the kernel.
constexpr size_t kCmsgFds = 8;

// Reads exactly `len` bytes, collecting any SCM_RIGHTS fds that arrive with them.
Status RecvExact(int sock, uint8_t* buf, size_t len, std::vector<UniqueFd>* fds, bool* eof_at_start) {
  size_t got = 0;
  while (got < len) {
    iovec iov{buf + got, len - got};
    alignas(cmsghdr) uint8_t cbuf[CMSG_SPACE(sizeof(int) * kCmsgFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof(cbuf);
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "recvmsg on the shim socket", Code::kUnavailable);
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          fds->emplace_back(fd);
        }
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) return Status(Code::kInvalidArgument, "too many fds attached to a shim message");
    if (n == 0) {
      if (got == 0 && eof_at_start != nullptr) *eof_at_start = true;
      return Status(Code::kUnavailable, got == 0 ? "connection closed" : "connection closed mid-message");
    }
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Status SendMessage(int sock, const wire::FrameHeader& header, const uint8_t* payload, size_t len, const int* fds,
                   size_t nfds) {
  if (len > wire::kMaxPayload) return Status(Code::kResourceExhausted, "shim message payload too large");
  if (nfds > kMaxFdsPerMessage) return Status(Code::kInvalidArgument, "too many fds for one shim message");
  uint8_t hdr[wire::kHeaderSize];
  wire::EncodeHeader(header, payload, len, hdr);
  size_t total = wire::kHeaderSize + len, sent = 0;
  bool fds_sent = nfds == 0;
  while (sent < total) {
    iovec iov[2];
    int niov = 0;
    if (sent < wire::kHeaderSize) {
      iov[niov++] = iovec{hdr + sent, wire::kHeaderSize - sent};
      if (len > 0) iov[niov++] = iovec{const_cast<uint8_t*>(payload), len};
    } else {
      iov[niov++] = iovec{const_cast<uint8_t*>(payload) + (sent - wire::kHeaderSize), total - sent};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = niov;
    alignas(cmsghdr) uint8_t cbuf[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    if (!fds_sent) {
      std::memset(cbuf, 0, sizeof(cbuf));
      msg.msg_control = cbuf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    // MSG_NOSIGNAL: a vanished peer must be an error return, never SIGPIPE in the app or the daemon.
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "sendmsg on the shim socket", Code::kUnavailable);
    }
    fds_sent = true;
    sent += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status RecvMessage(int sock, Message* out, uint32_t max_payload) {
  out->fds.clear();
  out->payload.clear();
  uint8_t hdr[wire::kHeaderSize];
  bool eof = false;
  HOTPOT_RETURN_IF_ERROR(RecvExact(sock, hdr, sizeof(hdr), &out->fds, &eof));
  HOTPOT_RETURN_IF_ERROR(wire::DecodeHeader(hdr, sizeof(hdr), &out->header, max_payload));
  out->payload.resize(out->header.length);
  if (out->header.length > 0)
    HOTPOT_RETURN_IF_ERROR(RecvExact(sock, out->payload.data(), out->payload.size(), &out->fds, nullptr));
  if (out->fds.size() > kMaxFdsPerMessage) {
    out->fds.clear();
    return Status(Code::kInvalidArgument, "too many fds attached to a shim message");
  }
  return wire::VerifyPayload(out->header, out->payload.data(), out->payload.size());
}

void Writer::Bytes(const void* p, size_t n) {
  if (n == 0) return;
  size_t o = Grow(n);
  std::memcpy(&buf_[o], p, n);
}

bool Reader::U8(uint8_t* v) {
  if (remaining() < 1) return false;
  *v = p_[off_++];
  return true;
}
bool Reader::U16(uint16_t* v) {
  if (remaining() < 2) return false;
  *v = GetU16(p_ + off_);
  off_ += 2;
  return true;
}
bool Reader::U32(uint32_t* v) {
  if (remaining() < 4) return false;
  *v = GetU32(p_ + off_);
  off_ += 4;
  return true;
}
bool Reader::U64(uint64_t* v) {
  if (remaining() < 8) return false;
  *v = GetU64(p_ + off_);
  off_ += 8;
  return true;
}
bool Reader::Bytes(size_t n, const uint8_t** p) {
  if (remaining() < n) return false;
  *p = p_ + off_;
  off_ += n;
  return true;
}

namespace {
Status Malformed(const char* what) { return Status(Code::kInvalidArgument, std::string("malformed ") + what); }
// Padding is zero on the wire, so a later version can give it a meaning without old peers misreading it.
bool Zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}
}  // namespace

std::vector<uint8_t> EncodeHelloRequest(uint32_t version) {
  Writer w;
  w.U32(version);
  return std::move(w.buf());
}

Status DecodeHelloRequest(const std::vector<uint8_t>& p, uint32_t* version) {
  Reader r(p);
  if (!r.U32(version) || !r.done()) return Malformed("HELLO request");
  return Status::Ok();
}

std::vector<uint8_t> EncodeHelloResponse(const HelloResponse& r) {
  Writer w;
  w.U32(r.version);
  w.U32(r.server_pid);
  return std::move(w.buf());
}

Status DecodeHelloResponse(const std::vector<uint8_t>& p, HelloResponse* out) {
  Reader r(p);
  if (!r.U32(&out->version) || !r.U32(&out->server_pid) || !r.done()) return Malformed("HELLO response");
  return Status::Ok();
}

std::vector<uint8_t> EncodeOpenRequest(const OpenRequest& r) {
  Writer w;
  w.U32((r.create ? kOpenFlagCreate : 0) | (r.read_only ? kOpenFlagReadOnly : 0));
  w.U64(r.size);
  w.U8(r.mode);
  w.U8(0);
  w.U8(0);
  w.U8(0);
  w.U32(r.replicas);
  w.U16(static_cast<uint16_t>(r.name.size()));
  w.Bytes(r.name.data(), r.name.size());
  return std::move(w.buf());
}

Status DecodeOpenRequest(const std::vector<uint8_t>& p, OpenRequest* out) {
  Reader r(p);
  uint32_t flags;
  uint16_t name_len;
  const uint8_t* pad;
  const uint8_t* name;
  if (!r.U32(&flags) || !r.U64(&out->size) || !r.U8(&out->mode) || !r.Bytes(3, &pad) || !r.U32(&out->replicas) ||
      !r.U16(&name_len) || !r.Bytes(name_len, &name) || !r.done())
    return Malformed("OPEN request");
  if ((flags & ~(kOpenFlagCreate | kOpenFlagReadOnly)) != 0) return Malformed("OPEN request (unknown flags)");
  if (!Zero(pad, 3)) return Malformed("OPEN request (padding not zero)");
  if (name_len == 0 || name_len > kMaxNameLen) return Status(Code::kInvalidArgument, "dataset name length out of range");
  for (uint16_t i = 0; i < name_len; i++)
    if (name[i] == 0) return Status(Code::kInvalidArgument, "dataset name contains a NUL byte");
  out->create = (flags & kOpenFlagCreate) != 0;
  out->read_only = (flags & kOpenFlagReadOnly) != 0;
  out->name.assign(reinterpret_cast<const char*>(name), name_len);
  return Status::Ok();
}

std::vector<uint8_t> EncodeOpenResponse(const OpenResponse& r) {
  Writer w;
  w.U64(r.session);
  w.U64(r.dataset);
  w.U64(r.size);
  w.U8(r.mode);
  w.U8(0);
  w.U8(0);
  w.U8(0);
  w.U32(r.replicas);
  w.U32(r.chunk_size);
  return std::move(w.buf());
}

Status DecodeOpenResponse(const std::vector<uint8_t>& p, OpenResponse* out) {
  Reader r(p);
  const uint8_t* pad;
  if (!r.U64(&out->session) || !r.U64(&out->dataset) || !r.U64(&out->size) || !r.U8(&out->mode) ||
      !r.Bytes(3, &pad) || !r.U32(&out->replicas) || !r.U32(&out->chunk_size) || !r.done())
    return Malformed("OPEN response");
  if (!Zero(pad, 3)) return Malformed("OPEN response (padding not zero)");
  return Status::Ok();
}

std::vector<uint8_t> EncodeMapRequest(const MapRequest& r) {
  Writer w;
  w.U64(r.session);
  w.U64(r.offset);
  w.U64(r.length);
  w.U64(r.addr);
  return std::move(w.buf());
}

Status DecodeMapRequest(const std::vector<uint8_t>& p, MapRequest* out) {
  Reader r(p);
  if (!r.U64(&out->session) || !r.U64(&out->offset) || !r.U64(&out->length) || !r.U64(&out->addr) || !r.done())
    return Malformed("MAP request");
  return Status::Ok();
}

void EncodeCommitBatchHeader(Writer* w, uint64_t session, uint32_t replicas, uint32_t flags, uint32_t n) {
  w->U64(session);
  w->U32(replicas);
  w->U32(flags);
  w->U32(n);
}

void EncodeCommitExtras(Writer* w, const std::vector<CommitReadRange>& reads, const std::vector<uint8_t>& lease) {
  w->U32(static_cast<uint32_t>(reads.size()));
  for (const CommitReadRange& r : reads) {
    w->U64(r.offset);
    w->U64(r.len);
  }
  w->U32(static_cast<uint32_t>(lease.size()));
  w->Bytes(lease.data(), lease.size());
}

Status DecodeCommitBatch(const std::vector<uint8_t>& p, CommitBatch* out) {
  Reader r(p);
  if (!r.U64(&out->session) || !r.U32(&out->replicas) || !r.U32(&out->flags) || !r.U32(&out->n))
    return Malformed("COMMIT request");
  if ((out->flags & ~(kCommitFlagMore | kCommitFlagExtras)) != 0) return Malformed("COMMIT request (unknown flags)");
  if ((out->flags & kCommitFlagMore) && (out->flags & kCommitFlagExtras))
    return Malformed("COMMIT request (extras only on the final batch)");
  if (out->n > kMaxCommitBatchPages) return Status(Code::kInvalidArgument, "COMMIT batch has too many pages");
  const size_t rec = 8 + kPageSize;
  out->reads.clear();
  out->lease.clear();
  if ((out->flags & kCommitFlagExtras) == 0) {
    if (r.remaining() != size_t(out->n) * rec) return Malformed("COMMIT request (page count does not match length)");
    if (!r.Bytes(r.remaining(), &out->pages)) return Malformed("COMMIT request");
    return Status::Ok();
  }
  if (r.remaining() < size_t(out->n) * rec || !r.Bytes(size_t(out->n) * rec, &out->pages))
    return Malformed("COMMIT request (truncated pages)");
  uint32_t nreads = 0, lease_len = 0;
  if (!r.U32(&nreads) || nreads > kMaxCommitReads || size_t(nreads) * 16 > r.remaining())
    return Malformed("COMMIT request (bad read-range count)");
  out->reads.resize(nreads);
  for (CommitReadRange& x : out->reads)
    if (!r.U64(&x.offset) || !r.U64(&x.len)) return Malformed("COMMIT request (truncated read range)");
  const uint8_t* lease = nullptr;
  if (!r.U32(&lease_len) || lease_len > kMaxLeaseBytes || !r.Bytes(lease_len, &lease) || !r.done())
    return Malformed("COMMIT request (bad lease)");
  out->lease.assign(lease, lease + lease_len);
  return Status::Ok();
}

std::vector<uint8_t> EncodeCommitResponse(const CommitResponse& r) {
  Writer w;
  w.U32(static_cast<uint32_t>(r.status.code()));
  std::string msg = r.status.ok() ? std::string() : r.status.message().substr(0, kMaxStatusMessage);
  w.U16(static_cast<uint16_t>(msg.size()));
  w.Bytes(msg.data(), msg.size());
  w.U32(r.copies);
  w.U32(r.replicas);
  w.U64(r.pages);
  w.U64(r.ranges);
  w.U64(r.bytes);
  size_t n = r.conflicts.size() < kMaxConflicts ? r.conflicts.size() : kMaxConflicts;
  w.U32(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; i++) {
    w.U64(r.conflicts[i].offset);
    w.U32(r.conflicts[i].len);
  }
  return std::move(w.buf());
}

Status DecodeCommitResponse(const std::vector<uint8_t>& p, CommitResponse* out) {
  Reader r(p);
  uint32_t code, n;
  uint16_t msg_len;
  const uint8_t* msg;
  if (!r.U32(&code) || !r.U16(&msg_len) || !r.Bytes(msg_len, &msg) || !r.U32(&out->copies) || !r.U32(&out->replicas) ||
      !r.U64(&out->pages) ||
      !r.U64(&out->ranges) || !r.U64(&out->bytes) || !r.U32(&n))
    return Malformed("COMMIT response");
  if (code > static_cast<uint32_t>(Code::kUnauthenticated) || n > kMaxConflicts || r.remaining() != size_t(n) * 12)
    return Malformed("COMMIT response");
  // An OK status has no message, and no message is longer than the encoder sends.
  if ((code == 0 && msg_len != 0) || msg_len > kMaxStatusMessage) return Malformed("COMMIT response (status message)");
  out->status = code == 0 ? Status::Ok()
                          : Status(static_cast<Code>(code), std::string(reinterpret_cast<const char*>(msg), msg_len));
  out->conflicts.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    if (!r.U64(&out->conflicts[i].offset) || !r.U32(&out->conflicts[i].len)) return Malformed("COMMIT response");
  }
  return Status::Ok();
}

std::vector<uint8_t> EncodeSession(uint64_t session) {
  Writer w;
  w.U64(session);
  return std::move(w.buf());
}

Status DecodeSession(const std::vector<uint8_t>& p, uint64_t* session) {
  Reader r(p);
  if (!r.U64(session) || !r.done()) return Malformed("session request");
  return Status::Ok();
}

std::vector<uint8_t> EncodeBaseRequest(uint64_t session, const std::vector<uint64_t>& pages) {
  Writer w;
  w.U64(session);
  w.U32(static_cast<uint32_t>(pages.size()));
  for (uint64_t pg : pages) w.U64(pg);
  return std::move(w.buf());
}

Status DecodeBaseRequest(const std::vector<uint8_t>& p, uint64_t* session, std::vector<uint64_t>* pages) {
  Reader r(p);
  uint32_t n;
  if (!r.U64(session) || !r.U32(&n)) return Malformed("BASE request");
  if (n == 0 || n > kMaxBasePages) return Status(Code::kInvalidArgument, "BASE request page count out of range");
  if (r.remaining() != size_t(n) * 8) return Malformed("BASE request (count does not match length)");
  pages->resize(n);
  for (uint32_t i = 0; i < n; i++) r.U64(&(*pages)[i]);
  return Status::Ok();
}

std::vector<uint8_t> EncodePublicationResponse(const PublicationResponse& r) {
  Writer w;
  w.U64(r.seq);
  w.U32(r.open_commits);
  return std::move(w.buf());
}

Status DecodePublicationResponse(const std::vector<uint8_t>& p, PublicationResponse* out) {
  Reader r(p);
  if (!r.U64(&out->seq) || !r.U32(&out->open_commits) || !r.done()) return Malformed("PUBLICATION response");
  return Status::Ok();
}

}  // namespace shimproto
}  // namespace hotpot
