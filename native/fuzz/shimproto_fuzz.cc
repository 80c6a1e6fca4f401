// Fuzz target for the shim protocol (native/src/shimproto/protocol.h): every payload decoder of both ends (the
// daemon decodes what an app sends, the app decodes what the daemon answers) and the message reader over a unix
// socket. Each decoder must refuse or accept without reading out of bounds; an accepted payload must re-encode to
// exactly the input (the formats have no slack), which checks the codecs agree.
// Builds with the standalone driver (driver.cc) or with clang -fsanitize=fuzzer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_input.h"
#include "shimproto/protocol.h"

using namespace hotpot;
using namespace hotpot::shimproto;

namespace {

void Same(const std::vector<uint8_t>& enc, const std::vector<uint8_t>& in) {
  if (enc != in) __builtin_trap();
}

// Daemon side: what an app sends.
void FuzzRequests(uint8_t kind, const std::vector<uint8_t>& p) {
  switch (kind % 6) {
    case 0: {
      uint32_t version = 0;
      if (DecodeHelloRequest(p, &version).ok()) Same(EncodeHelloRequest(version), p);
      break;
    }
    case 1: {
      OpenRequest r;
      if (DecodeOpenRequest(p, &r).ok()) {
        if (r.name.empty() || r.name.size() > kMaxNameLen) __builtin_trap();
        Same(EncodeOpenRequest(r), p);
      }
      break;
    }
    case 2: {
      MapRequest r;
      if (DecodeMapRequest(p, &r).ok()) Same(EncodeMapRequest(r), p);
      break;
    }
    case 3: {
      CommitBatch b;
      if (DecodeCommitBatch(p, &b).ok()) {
        if (b.n > kMaxCommitBatchPages || b.reads.size() > kMaxCommitReads || b.lease.size() > kMaxLeaseBytes)
          __builtin_trap();
        Writer w;
        EncodeCommitBatchHeader(&w, b.session, b.replicas, b.flags, b.n);
        if (b.n > 0) w.Bytes(b.pages, size_t(b.n) * (8 + kPageSize));  // the shim server reads exactly these
        if (b.flags & kCommitFlagExtras) EncodeCommitExtras(&w, b.reads, b.lease);
        Same(w.buf(), p);
      }
      break;
    }
    case 4: {
      uint64_t session = 0;
      if (DecodeSession(p, &session).ok()) Same(EncodeSession(session), p);
      break;
    }
    default: {
      uint64_t session = 0;
      std::vector<uint64_t> pages;
      if (DecodeBaseRequest(p, &session, &pages).ok()) {
        if (pages.empty() || pages.size() > kMaxBasePages) __builtin_trap();
        Same(EncodeBaseRequest(session, pages), p);
      }
      break;
    }
  }
}

// App side: what the daemon answers.
void FuzzResponses(uint8_t kind, const std::vector<uint8_t>& p) {
  switch (kind % 4) {
    case 0: {
      HelloResponse r;
      if (DecodeHelloResponse(p, &r).ok()) Same(EncodeHelloResponse(r), p);
      break;
    }
    case 1: {
      OpenResponse r;
      if (DecodeOpenResponse(p, &r).ok()) Same(EncodeOpenResponse(r), p);
      break;
    }
    case 2: {
      CommitResponse r;
      if (DecodeCommitResponse(p, &r).ok()) {
        if (r.conflicts.size() > kMaxConflicts) __builtin_trap();
        Same(EncodeCommitResponse(r), p);
      }
      break;
    }
    default: {
      PublicationResponse r;
      if (DecodePublicationResponse(p, &r).ok()) Same(EncodePublicationResponse(r), p);
      break;
    }
  }
}

// The message reader both ends run on the unix socket, fed the input as the peer's bytes then EOF.
void FuzzRecv(const uint8_t* data, size_t size) {
  hotpot_fuzz::SocketInput sock;
  if (!hotpot_fuzz::PutOnSocket(data, size, &sock)) return;
  for (int messages = 0; messages < 64; messages++) {
    Message m;
    if (!RecvMessage(sock.local.get(), &m).ok()) return;
    if (m.payload.size() != m.header.length || !m.fds.empty()) __builtin_trap();
  }
}

}  // namespace

// Input: selector byte (bit 7: response side, low bits: which payload; selector 0xFF: the socket reader), then the
// payload (or, for the reader, the bytes on the socket).
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t sel = data[0];
  if (sel == 0xFF) {
    FuzzRecv(data + 1, size - 1);
    return 0;
  }
  const std::vector<uint8_t> p(data + 1, data + size);
  if (sel & 0x80)
    FuzzResponses(sel & 0x7F, p);
  else
    FuzzRequests(sel, p);
  return 0;
}

// Seeds for the standalone driver: one well-formed payload of each kind, and two framed messages for the reader.
extern "C" void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out) {
  auto with = [&](uint8_t sel, const std::vector<uint8_t>& body) { out->push_back(hotpot_fuzz::Selected(sel, body)); };
  with(0, EncodeHelloRequest(kProtocolVersion));
  OpenRequest orq;
  orq.name = "ds";
  orq.create = true;
  orq.size = 1 << 20;
  orq.replicas = 2;
  with(1, EncodeOpenRequest(orq));
  with(2, EncodeMapRequest(MapRequest{3, 4096, 8192, 0x7f0000000000ull}));
  Writer batch;
  EncodeCommitBatchHeader(&batch, 3, 2, kCommitFlagExtras, 1);
  batch.U64(5);
  std::vector<uint8_t> page(kPageSize, 0xAB);
  batch.Bytes(page.data(), page.size());
  EncodeCommitExtras(&batch, {CommitReadRange{100, 8}}, {1, 2, 3});
  with(3, batch.buf());
  with(4, EncodeSession(3));
  with(5, EncodeBaseRequest(3, {1, 9}));
  with(0x80, EncodeHelloResponse(HelloResponse{kProtocolVersion, 1234}));
  with(0x81, EncodeOpenResponse(OpenResponse{3, 7, 1 << 20, 1, 2, 1 << 16}));
  CommitResponse cr;
  cr.status = Status(Code::kAborted, "conflict");
  cr.copies = 1;
  cr.pages = 2;
  cr.conflicts.push_back(CommitConflict{4096, 8});
  with(0x82, EncodeCommitResponse(cr));
  with(0x83, EncodePublicationResponse(PublicationResponse{42, 1}));
  std::vector<uint8_t> framed;
  for (uint16_t type : {uint16_t(kHello), uint16_t(kOpen)}) {
    const std::vector<uint8_t> payload = type == kHello ? EncodeHelloRequest(kProtocolVersion) : EncodeOpenRequest(orq);
    wire::FrameHeader h;
    h.type = type;
    h.request_id = type;
    uint8_t hdr[wire::kHeaderSize];
    wire::EncodeHeader(h, payload.data(), payload.size(), hdr);
    framed.insert(framed.end(), hdr, hdr + sizeof hdr);
    framed.insert(framed.end(), payload.begin(), payload.end());
  }
  with(0xFF, framed);
}
