#include "transport/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/bytes.h"
#include "common/fd.h"
#include "common/random.h"
#include "common/sha256.h"

namespace hotpot {
namespace transport {
namespace tcp {

namespace {

int PollTimeoutMs(Deadline deadline) {
  if (deadline == Deadline::max()) return -1;
  auto now = Clock::now();
  if (deadline <= now) return 0;
  // Round up so a wait never ends just before the deadline and spins.
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now).count();
  long long ms = (us + 999) / 1000;
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// Waits for `events` on fd. DEADLINE_EXCEEDED when the deadline passes first.
Status WaitFd(int fd, short events, Deadline deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    int rc = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "poll");
    }
    if (rc > 0) return Status::Ok();  // readiness or HUP/ERR: the following recv/send reports which
    if (Clock::now() >= deadline) return Status(Code::kDeadlineExceeded, "timed out waiting for socket");
  }
}

bool IsDisconnectErrno(int e) {
  return e == ECONNRESET || e == EPIPE || e == ENOTCONN || e == ESHUTDOWN || e == ECONNABORTED || e == ETIMEDOUT;
}

// Reads exactly n bytes. *why = kClosed on EOF/reset, kTimeout, or kIo.
Status RecvExact(int fd, uint8_t* buf, size_t n, Deadline deadline, ReadFailure* why, IoCounters* io) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
      if (io) io->bytes_in.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      continue;
    }
    if (r == 0) {
      *why = ReadFailure::kClosed;
      return Status(Code::kUnavailable, got == 0 ? "connection closed by peer" : "connection closed mid-frame");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      Status st = WaitFd(fd, POLLIN, deadline);
      if (!st.ok()) {
        *why = st.code() == Code::kDeadlineExceeded ? ReadFailure::kTimeout : ReadFailure::kIo;
        return st;
      }
      continue;
    }
    int e = errno;
    *why = IsDisconnectErrno(e) ? ReadFailure::kClosed : ReadFailure::kIo;
    return Status::FromErrno(e, "recv", Code::kUnavailable);
  }
  return Status::Ok();
}

void PutHelloIds(uint8_t out[8], uint32_t client_id, uint32_t server_id) {
  PutU32(out, client_id);
  PutU32(out + 4, server_id);
}

// HMAC over (label, first nonce, second nonce, both ids): the server proves with ("hotpot-server", client
// nonce, server nonce), the client with ("hotpot-client", server nonce, client nonce), so neither proof can be
// replayed as the other.
void HandshakeMac(const std::string& secret, const char* label, const uint8_t* first_nonce,
                  const uint8_t* second_nonce, uint32_t client_id, uint32_t server_id, uint8_t out[kMacSize]) {
  uint8_t ids[8];
  PutHelloIds(ids, client_id, server_id);
  HmacSha256 h(secret.data(), secret.size());
  h.Update(label, std::strlen(label));
  h.Update(first_nonce, kNonceSize);
  h.Update(second_nonce, kNonceSize);
  h.Update(ids, sizeof ids);
  h.Final(out);
}

void ServerMac(const std::string& secret, const uint8_t* cn, const uint8_t* sn, uint32_t client_id, uint32_t server_id,
               uint8_t out[kMacSize]) {
  HandshakeMac(secret, "hotpot-server", cn, sn, client_id, server_id, out);
}

void ClientMac(const std::string& secret, const uint8_t* cn, const uint8_t* sn, uint32_t client_id, uint32_t server_id,
               uint8_t out[kMacSize]) {
  HandshakeMac(secret, "hotpot-client", sn, cn, client_id, server_id, out);
}

// Both directions' frame keys of a connection whose handshake used these nonces and ids; the client seals with
// c2s and opens with s2c, the server the other way round.
Status DeriveFrameKeys(const std::string& secret, const uint8_t* cn, const uint8_t* sn, uint32_t client_id,
                       uint32_t server_id, bool client, FrameKeys* keys) {
  static_assert(kMacSize == kFrameKeySize, "frame keys are HMAC-SHA256 outputs");
  uint8_t c2s[kFrameKeySize], s2c[kFrameKeySize];
  HandshakeMac(secret, "hotpot-frames-c2s", cn, sn, client_id, server_id, c2s);
  HandshakeMac(secret, "hotpot-frames-s2c", cn, sn, client_id, server_id, s2c);
  Status st = keys->send.Init(client ? c2s : s2c, true);
  if (st.ok()) st = keys->recv.Init(client ? s2c : c2s, false);
  std::memset(c2s, 0, sizeof c2s);
  std::memset(s2c, 0, sizeof s2c);
  return st;
}

// The authenticated data of a protected frame: its header with the checksum field (bytes 12-15) zeroed — the
// checksum covers the sealed bytes, which do not exist yet when the sender seals.
void FrameAad(const uint8_t hdr[wire::kHeaderSize], uint8_t aad[wire::kHeaderSize]) {
  std::memcpy(aad, hdr, wire::kHeaderSize);
  std::memset(aad + 12, 0, 4);
}

Status SendError(int fd, const wire::FrameHeader& req, Code code, const std::string& msg, Deadline deadline,
                 IoCounters* io, FrameCipher* seal = nullptr) {
  wire::FrameHeader h;
  h.type = req.type;
  h.request_id = req.request_id;
  h.flags = wire::kFlagResponse | wire::kFlagError;
  h.status = static_cast<uint32_t>(code);
  return WriteFrame(fd, h, reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), deadline, io, seal);
}

// A first handshake message of the other mode: both ends are told which mode each uses.
Status RefuseMode(int fd, const wire::FrameHeader& req, bool server_certs, Deadline deadline, IoCounters* io) {
  const std::string msg =
      server_certs ? "this node authenticates the data plane with certificates, the peer with the cluster secret "
                     "(is the peer running with --insecure?)"
                   : "this node authenticates the data plane with the cluster secret (--insecure), the peer with "
                     "certificates (every node must use the same --insecure setting)";
  Status ignored = SendError(fd, req, Code::kUnauthenticated, msg, deadline, io);
  (void)ignored;
  return Status(Code::kUnauthenticated, msg);
}

// A peer's text quoted in our status or log: at most `max` printable characters.
std::string QuotePeerText(const std::vector<uint8_t>& p, size_t max = 200) {
  return PrintableName(std::string(p.begin(), p.end()), max);
}

bool IsPrintableText(const std::vector<uint8_t>& p) {
  if (p.empty() || p.size() > 512) return false;
  for (uint8_t c : p)
    if (c < 0x20 && c != '\t' && c != '\n') return false;
  return true;
}

}  // namespace

Status WriteFrame(int fd, const wire::FrameHeader& h, const uint8_t* data, size_t len, Deadline deadline,
                  IoCounters* io, FrameCipher* seal) {
  if (len > wire::kMaxPayload) return Status(Code::kInvalidArgument, "frame payload too large: " + std::to_string(len));
  uint8_t hdr[wire::kHeaderSize];
  if (seal != nullptr) {
    // One buffer per thread for the sealed payload: a connection is used by one thread at a time.
    thread_local std::vector<uint8_t> sealed;
    sealed.resize(len + kFrameTagSize);
    uint8_t aad[wire::kHeaderSize];
    wire::EncodeHeader(h, nullptr, 0, hdr);
    PutU32(hdr + 8, uint32_t(len + kFrameTagSize));
    FrameAad(hdr, aad);
    HOTPOT_RETURN_IF_ERROR(seal->Seal(aad, sizeof aad, data, len, sealed.data()));
    data = sealed.data();
    len = sealed.size();
    // No CRC32C of a sealed payload (its checksum field stays 0): the tag already authenticates every byte of it and
    // of the header, and a checksum on top cost both ends a pass over the page (~0.3 us per 4 KiB each).
  } else {
    wire::EncodeHeader(h, data, len, hdr);
  }
  struct iovec iov[2];
  iov[0].iov_base = hdr;
  iov[0].iov_len = sizeof hdr;
  iov[1].iov_base = const_cast<uint8_t*>(data);
  iov[1].iov_len = len;
  int iovcnt = len > 0 ? 2 : 1;
  struct iovec* cur = iov;
  while (iovcnt > 0) {
    struct msghdr m = {};
    m.msg_iov = cur;
    m.msg_iovlen = static_cast<size_t>(iovcnt);
    // MSG_NOSIGNAL: a peer that went away must yield EPIPE here, not SIGPIPE for the whole process.
    ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        HOTPOT_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, deadline));
        continue;
      }
      int e = errno;
      return Status::FromErrno(e, "send", Code::kUnavailable);
    }
    if (io) io->bytes_out.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    size_t left = static_cast<size_t>(n);
    while (iovcnt > 0 && left >= cur->iov_len) {
      left -= cur->iov_len;
      cur++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      cur->iov_base = static_cast<uint8_t*>(cur->iov_base) + left;
      cur->iov_len -= left;
    }
  }
  return Status::Ok();
}

Status ReadFrame(int fd, Deadline deadline, uint32_t max_payload, wire::FrameHeader* h, std::vector<uint8_t>* payload,
                 ReadFailure* why, IoCounters* io, FrameCipher* open) {
  *why = ReadFailure::kNone;
  uint8_t hdr[wire::kHeaderSize];
  HOTPOT_RETURN_IF_ERROR(RecvExact(fd, hdr, sizeof hdr, deadline, why, io));
  Status st = wire::DecodeHeader(hdr, sizeof hdr, h, max_payload + (open != nullptr ? uint32_t(kFrameTagSize) : 0));
  if (!st.ok()) {
    *why = ReadFailure::kMalformed;
    return st;
  }
  // Allocation is bounded by max_payload, checked above before any byte of payload is accepted.
  payload->resize(h->length);
  if (h->length > 0) HOTPOT_RETURN_IF_ERROR(RecvExact(fd, payload->data(), h->length, deadline, why, io));
  // A sealed payload has no checksum (WriteFrame: the field is 0): its tag is checked instead, below.
  if (open == nullptr)
    st = wire::VerifyPayload(*h, payload->data(), payload->size());
  else if (h->checksum != 0)
    st = Status(Code::kDataLoss, "sealed frame with a checksum (a sealed frame's checksum field is 0)");
  if (!st.ok()) {
    *why = ReadFailure::kMalformed;
    return st;
  }
  if (open != nullptr) {
    uint8_t aad[wire::kHeaderSize];
    FrameAad(hdr, aad);
    st = open->Open(aad, sizeof aad, payload->data(), payload->size(), payload->data());
    if (!st.ok()) {
      *why = ReadFailure::kMalformed;
      return st;
    }
    payload->resize(payload->size() - kFrameTagSize);
    h->length = uint32_t(payload->size());
  }
  return Status::Ok();
}

Status ServerHandshake(int fd, const std::string& secret, uint32_t self_id, Deadline deadline, uint32_t* peer_id,
                       ReadFailure* why, IoCounters* io, FrameKeys* keys) {
  *why = ReadFailure::kNone;
  wire::FrameHeader h;
  std::vector<uint8_t> p;
  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &h, &p, why, io));
  if (h.type == kTypeCertHello && h.flags == 0) return RefuseMode(fd, h, /*server_certs=*/false, deadline, io);
  if (h.type != kTypeHello || h.flags != 0)
    return Status(Code::kUnauthenticated, "expected HELLO, got type " + std::to_string(h.type));
  if (p.size() != 4 + kNonceSize)
    return Status(Code::kUnauthenticated, "HELLO payload of " + std::to_string(p.size()) + " bytes, expected 36");
  uint32_t client_id = GetU32(p.data());
  uint8_t cn[kNonceSize];
  std::memcpy(cn, p.data() + 4, kNonceSize);

  uint8_t resp[4 + kNonceSize + kMacSize];
  PutU32(resp, self_id);
  uint8_t* sn = resp + 4;
  HOTPOT_RETURN_IF_ERROR(RandomBytes(sn, kNonceSize));
  ServerMac(secret, cn, sn, client_id, self_id, resp + 4 + kNonceSize);
  wire::FrameHeader rh;
  rh.type = kTypeHello;
  rh.request_id = h.request_id;
  rh.flags = wire::kFlagResponse;
  HOTPOT_RETURN_IF_ERROR(WriteFrame(fd, rh, resp, sizeof resp, deadline, io));

  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &h, &p, why, io));
  if (h.type != kTypeAuth || h.flags != 0)
    return Status(Code::kUnauthenticated, "expected AUTH, got type " + std::to_string(h.type));
  uint8_t want[kMacSize];
  ClientMac(secret, cn, sn, client_id, self_id, want);
  if (p.size() != kMacSize || !ConstantTimeEqual(p.data(), want, kMacSize)) {
    // Tell the client why before closing so its Call can report UNAUTHENTICATED rather than a reset.
    Status ignored = SendError(fd, h, Code::kUnauthenticated, "bad cluster secret", deadline, io);
    (void)ignored;
    return Status(Code::kUnauthenticated, "bad cluster secret");
  }
  wire::FrameHeader ok;
  ok.type = kTypeAuth;
  ok.request_id = h.request_id;
  ok.flags = wire::kFlagResponse;
  HOTPOT_RETURN_IF_ERROR(WriteFrame(fd, ok, nullptr, 0, deadline, io));
  if (keys != nullptr) HOTPOT_RETURN_IF_ERROR(DeriveFrameKeys(secret, cn, sn, client_id, self_id, false, keys));
  *peer_id = client_id;
  return Status::Ok();
}

Status ClientHandshake(int fd, const std::string& secret, uint32_t self_id, uint32_t expected_peer_id,
                       Deadline deadline, ReadFailure* why, IoCounters* io, FrameKeys* keys) {
  *why = ReadFailure::kNone;
  uint8_t hello[4 + kNonceSize];
  PutU32(hello, self_id);
  uint8_t* cn = hello + 4;
  HOTPOT_RETURN_IF_ERROR(RandomBytes(cn, kNonceSize));
  wire::FrameHeader h;
  h.type = kTypeHello;
  h.request_id = 1;
  HOTPOT_RETURN_IF_ERROR(WriteFrame(fd, h, hello, sizeof hello, deadline, io));

  wire::FrameHeader rh;
  std::vector<uint8_t> p;
  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &rh, &p, why, io));
  if (rh.type != kTypeHello || !(rh.flags & wire::kFlagResponse) || rh.request_id != 1)
    return Status(Code::kUnauthenticated, "unexpected handshake reply type " + std::to_string(rh.type));
  if (rh.flags & wire::kFlagError)
    return Status(static_cast<Code>(rh.status == 0 ? uint32_t(Code::kUnknown) : rh.status),
                  "peer refused HELLO: " + QuotePeerText(p));
  if (p.size() != 4 + kNonceSize + kMacSize)
    return Status(Code::kUnauthenticated, "HELLO reply of " + std::to_string(p.size()) + " bytes, expected 68");
  uint32_t server_id = GetU32(p.data());
  uint8_t sn[kNonceSize];  // a copy: p is read into again below
  std::memcpy(sn, p.data() + 4, kNonceSize);
  uint8_t want[kMacSize];
  ServerMac(secret, cn, sn, self_id, server_id, want);
  bool server_ok = ConstantTimeEqual(want, p.data() + 4 + kNonceSize, kMacSize);

  uint8_t mac[kMacSize] = {};
  if (server_ok) ClientMac(secret, cn, sn, self_id, server_id, mac);
  wire::FrameHeader ah;
  ah.type = kTypeAuth;
  ah.request_id = 2;
  Status sent = WriteFrame(fd, ah, mac, sizeof mac, deadline, io);
  if (!server_ok) return Status(Code::kUnauthenticated, "server failed to prove the cluster secret (bad cluster secret)");
  HOTPOT_RETURN_IF_ERROR(sent);
  if (server_id != expected_peer_id)
    return Status(Code::kUnavailable, "peer identifies as node " + std::to_string(server_id) + ", expected node " +
                                          std::to_string(expected_peer_id));
  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &rh, &p, why, io));
  if (rh.type != kTypeAuth || !(rh.flags & wire::kFlagResponse) || rh.request_id != 2)
    return Status(Code::kUnauthenticated, "unexpected AUTH reply type " + std::to_string(rh.type));
  if ((rh.flags & wire::kFlagError) || rh.status != 0)
    return Status(Code::kUnauthenticated, "peer refused authentication: " + QuotePeerText(p));
  if (keys != nullptr) HOTPOT_RETURN_IF_ERROR(DeriveFrameKeys(secret, cn, sn, self_id, server_id, true, keys));
  return Status::Ok();
}

namespace {

constexpr char kTranscriptLabel[] = "hotpot-data-plane-v1";
constexpr char kServerLabel[] = "hotpot-server";
constexpr char kClientLabel[] = "hotpot-client";
constexpr size_t kCertHelloFixed = 4 + kNonceSize + kX25519KeySize;  // id, nonce, ephemeral key

// What both ends of a certificate handshake know once the CERT_HELLO response is out.
struct CertTranscript {
  uint32_t client_id = 0, server_id = 0;
  uint8_t cn[kNonceSize], sn[kNonceSize];
  uint8_t ce[kX25519KeySize], se[kX25519KeySize];
  const uint8_t* client_cert = nullptr;
  size_t client_cert_len = 0;
  const uint8_t* server_cert = nullptr;
  size_t server_cert_len = 0;

  void Hash(uint8_t out[kSha256Size]) const {
    Sha256 h;
    uint8_t u[8];
    h.Update(kTranscriptLabel, sizeof kTranscriptLabel - 1);
    PutHelloIds(u, client_id, server_id);
    h.Update(u, 8);
    h.Update(cn, sizeof cn);
    h.Update(sn, sizeof sn);
    h.Update(ce, sizeof ce);
    h.Update(se, sizeof se);
    PutU32(u, uint32_t(client_cert_len));
    h.Update(u, 4);
    h.Update(client_cert, client_cert_len);
    PutU32(u, uint32_t(server_cert_len));
    h.Update(u, 4);
    h.Update(server_cert, server_cert_len);
    h.Final(out);
  }
};

// What a side signs, or checks the other's signature over: its role's label, then the transcript hash.
std::vector<uint8_t> SignedMessage(const char* label, const uint8_t th[kSha256Size]) {
  std::vector<uint8_t> m(label, label + std::strlen(label));
  m.insert(m.end(), th, th + kSha256Size);
  return m;
}

Status DeriveCertFrameKeys(const uint8_t shared[kX25519KeySize], const uint8_t th[kSha256Size], bool client,
                           FrameKeys* keys) {
  uint8_t c2s[kFrameKeySize], s2c[kFrameKeySize];
  HkdfSha256(shared, kX25519KeySize, th, kSha256Size, "hotpot-frames-c2s", c2s, sizeof c2s);
  HkdfSha256(shared, kX25519KeySize, th, kSha256Size, "hotpot-frames-s2c", s2c, sizeof s2c);
  Status st = keys->send.Init(client ? c2s : s2c, true);
  if (st.ok()) st = keys->recv.Init(client ? s2c : c2s, false);
  std::memset(c2s, 0, sizeof c2s);
  std::memset(s2c, 0, sizeof s2c);
  return st;
}

std::string Quoted(const std::string& identity) { return "\"" + PrintableName(identity) + "\""; }

}  // namespace

Status ServerCertHandshake(int fd, const NodeCredentials& creds, uint32_t self_id, const PeerIdentityCheck& check,
                           Deadline deadline, uint32_t* peer_id, std::string* peer_identity, ReadFailure* why,
                           IoCounters* io, FrameKeys* keys) {
  *why = ReadFailure::kNone;
  wire::FrameHeader h;
  std::vector<uint8_t> hello;
  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &h, &hello, why, io));
  if (h.type == kTypeHello && h.flags == 0) return RefuseMode(fd, h, /*server_certs=*/true, deadline, io);
  if (h.type != kTypeCertHello || h.flags != 0)
    return Status(Code::kUnauthenticated, "expected CERT_HELLO, got type " + std::to_string(h.type));
  // Every refusal from here on is sent to the client too, so its Call reports why rather than a reset.
  auto refuse = [&](const Status& st) {
    Status ignored = SendError(fd, h, Code::kUnauthenticated, st.message(), deadline, io);
    (void)ignored;
    return st;
  };
  if (hello.size() <= kCertHelloFixed)
    return refuse(Status(Code::kUnauthenticated, "CERT_HELLO of " + std::to_string(hello.size()) + " bytes"));
  CertTranscript t;
  t.client_id = GetU32(hello.data());
  t.server_id = self_id;
  std::memcpy(t.cn, hello.data() + 4, kNonceSize);
  std::memcpy(t.ce, hello.data() + 4 + kNonceSize, kX25519KeySize);
  t.client_cert = hello.data() + kCertHelloFixed;
  t.client_cert_len = hello.size() - kCertHelloFixed;
  PeerCertificate client;
  Status st = creds.VerifyPeer(t.client_cert, t.client_cert_len, &client);
  if (!st.ok()) return refuse(st.Prefixed("node " + std::to_string(t.client_id) + ": "));
  if (check) {
    st = check(t.client_id, client.identity());
    if (!st.ok()) return refuse(st);
  }

  EphemeralKey eph;
  HOTPOT_RETURN_IF_ERROR(eph.Generate());
  uint8_t shared[kX25519KeySize];
  st = eph.Agree(t.ce, shared);
  if (!st.ok()) return refuse(st);
  HOTPOT_RETURN_IF_ERROR(RandomBytes(t.sn, kNonceSize));
  std::memcpy(t.se, eph.public_key(), kX25519KeySize);
  t.server_cert = creds.cert_der().data();
  t.server_cert_len = creds.cert_der().size();
  uint8_t th[kSha256Size];
  t.Hash(th);
  std::vector<uint8_t> sig;
  std::vector<uint8_t> msg = SignedMessage(kServerLabel, th);
  HOTPOT_RETURN_IF_ERROR(creds.Sign(msg.data(), msg.size(), &sig));
  std::vector<uint8_t> resp(kCertHelloFixed + 2);
  PutU32(resp.data(), self_id);
  std::memcpy(resp.data() + 4, t.sn, kNonceSize);
  std::memcpy(resp.data() + 4 + kNonceSize, t.se, kX25519KeySize);
  resp[kCertHelloFixed] = uint8_t(t.server_cert_len);
  resp[kCertHelloFixed + 1] = uint8_t(t.server_cert_len >> 8);
  resp.insert(resp.end(), t.server_cert, t.server_cert + t.server_cert_len);
  resp.insert(resp.end(), sig.begin(), sig.end());
  wire::FrameHeader rh;
  rh.type = kTypeCertHello;
  rh.request_id = h.request_id;
  rh.flags = wire::kFlagResponse;
  HOTPOT_RETURN_IF_ERROR(WriteFrame(fd, rh, resp.data(), resp.size(), deadline, io));

  std::vector<uint8_t> auth;
  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &h, &auth, why, io));
  if (h.type == kTypeCertAuth && (h.flags & wire::kFlagError))
    return Status(Code::kUnauthenticated, "the peer refused this node: " + QuotePeerText(auth));
  if (h.type != kTypeCertAuth || h.flags != 0)
    return Status(Code::kUnauthenticated, "expected CERT_AUTH, got type " + std::to_string(h.type));
  msg = SignedMessage(kClientLabel, th);
  st = auth.size() > kMaxSignatureSize ? Status(Code::kUnauthenticated, "CERT_AUTH signature too long")
                                       : client.VerifySignature(msg.data(), msg.size(), auth.data(), auth.size());
  if (!st.ok()) {
    std::memset(shared, 0, sizeof shared);
    return refuse(Status(Code::kUnauthenticated, "node " + std::to_string(t.client_id) + " (" +
                                                     Quoted(client.identity()) + "): " + st.message()));
  }
  if (keys != nullptr) st = DeriveCertFrameKeys(shared, th, false, keys);
  std::memset(shared, 0, sizeof shared);
  HOTPOT_RETURN_IF_ERROR(st);
  wire::FrameHeader ok;
  ok.type = kTypeCertAuth;
  ok.request_id = h.request_id;
  ok.flags = wire::kFlagResponse;
  HOTPOT_RETURN_IF_ERROR(WriteFrame(fd, ok, nullptr, 0, deadline, io));
  *peer_id = t.client_id;
  *peer_identity = client.identity();
  return Status::Ok();
}

Status ClientCertHandshake(int fd, const NodeCredentials& creds, uint32_t self_id, uint32_t expected_peer_id,
                           const std::string& expected_identity, Deadline deadline, ReadFailure* why, IoCounters* io,
                           FrameKeys* keys) {
  *why = ReadFailure::kNone;
  CertTranscript t;
  t.client_id = self_id;
  EphemeralKey eph;
  HOTPOT_RETURN_IF_ERROR(eph.Generate());
  HOTPOT_RETURN_IF_ERROR(RandomBytes(t.cn, kNonceSize));
  std::memcpy(t.ce, eph.public_key(), kX25519KeySize);
  t.client_cert = creds.cert_der().data();
  t.client_cert_len = creds.cert_der().size();
  std::vector<uint8_t> hello(kCertHelloFixed);
  PutU32(hello.data(), self_id);
  std::memcpy(hello.data() + 4, t.cn, kNonceSize);
  std::memcpy(hello.data() + 4 + kNonceSize, t.ce, kX25519KeySize);
  hello.insert(hello.end(), t.client_cert, t.client_cert + t.client_cert_len);
  wire::FrameHeader h;
  h.type = kTypeCertHello;
  h.request_id = 1;
  HOTPOT_RETURN_IF_ERROR(WriteFrame(fd, h, hello.data(), hello.size(), deadline, io));

  wire::FrameHeader rh;
  std::vector<uint8_t> p;
  HOTPOT_RETURN_IF_ERROR(ReadFrame(fd, deadline, kMaxHandshakePayload, &rh, &p, why, io));
  if (rh.type != kTypeCertHello || !(rh.flags & wire::kFlagResponse) || rh.request_id != 1) {
    // A server of the cluster-secret mode answers CERT_HELLO with an error of type 3, so this is neither.
    return Status(Code::kUnauthenticated, "unexpected handshake reply type " + std::to_string(rh.type));
  }
  if (rh.flags & wire::kFlagError) return Status(Code::kUnauthenticated, "peer refused HELLO: " + QuotePeerText(p));

  // From here a refusal is also sent to the server (an error CERT_AUTH) so it logs why this node hung up.
  auto refuse = [&](const Status& st) {
    wire::FrameHeader ah;
    ah.type = kTypeCertAuth;
    ah.request_id = 2;
    ah.flags = wire::kFlagError;
    ah.status = uint32_t(Code::kUnauthenticated);
    const std::string& m = st.message();
    Status ignored = WriteFrame(fd, ah, reinterpret_cast<const uint8_t*>(m.data()), std::min<size_t>(m.size(), 512),
                                deadline, io);
    (void)ignored;
    return st;
  };
  if (p.size() < kCertHelloFixed + 2)
    return refuse(Status(Code::kUnauthenticated, "CERT_HELLO reply of " + std::to_string(p.size()) + " bytes"));
  t.server_id = GetU32(p.data());
  std::memcpy(t.sn, p.data() + 4, kNonceSize);
  std::memcpy(t.se, p.data() + 4 + kNonceSize, kX25519KeySize);
  t.server_cert_len = size_t(p[kCertHelloFixed]) | size_t(p[kCertHelloFixed + 1]) << 8;
  if (t.server_cert_len > p.size() - kCertHelloFixed - 2)
    return refuse(Status(Code::kUnauthenticated, "CERT_HELLO reply: certificate length past the end"));
  t.server_cert = p.data() + kCertHelloFixed + 2;
  const uint8_t* sig = t.server_cert + t.server_cert_len;
  const size_t sig_len = p.size() - kCertHelloFixed - 2 - t.server_cert_len;
  if (t.server_id != expected_peer_id) {
    Status st(Code::kUnavailable, "peer identifies as node " + std::to_string(t.server_id) + ", expected node " +
                                      std::to_string(expected_peer_id));
    return refuse(st);
  }
  const std::string who = "node " + std::to_string(t.server_id);
  if (expected_identity.empty())
    return refuse(Status(Code::kUnauthenticated, who + ": no identity known for it (membership lists none)"));
  PeerCertificate server;
  Status st = creds.VerifyPeer(t.server_cert, t.server_cert_len, &server);
  if (!st.ok()) return refuse(st.Prefixed(who + ": "));
  if (server.identity() != expected_identity) {
    return refuse(Status(Code::kUnauthenticated, who + " presented a certificate for " + Quoted(server.identity()) +
                                                     ", the membership lists " + Quoted(expected_identity)));
  }
  uint8_t th[kSha256Size];
  t.Hash(th);
  std::vector<uint8_t> msg = SignedMessage(kServerLabel, th);
  st = sig_len == 0 || sig_len > kMaxSignatureSize ? Status(Code::kUnauthenticated, "no valid signature")
                                                   : server.VerifySignature(msg.data(), msg.size(), sig, sig_len);
  if (!st.ok()) return refuse(st.Prefixed(who + " (" + Quoted(server.identity()) + "): "));
  uint8_t shared[kX25519KeySize];
  st = eph.Agree(t.se, shared);
  if (!st.ok()) return refuse(st.Prefixed(who + ": "));

  msg = SignedMessage(kClientLabel, th);
  std::vector<uint8_t> mine;
  st = creds.Sign(msg.data(), msg.size(), &mine);
  if (st.ok()) {
    wire::FrameHeader ah;
    ah.type = kTypeCertAuth;
    ah.request_id = 2;
    st = WriteFrame(fd, ah, mine.data(), mine.size(), deadline, io);
  }
  if (st.ok()) st = ReadFrame(fd, deadline, kMaxHandshakePayload, &rh, &p, why, io);
  if (st.ok() && (rh.type != kTypeCertAuth || !(rh.flags & wire::kFlagResponse) || rh.request_id != 2))
    st = Status(Code::kUnauthenticated, "unexpected CERT_AUTH reply type " + std::to_string(rh.type));
  if (st.ok() && ((rh.flags & wire::kFlagError) || rh.status != 0))
    st = Status(Code::kUnauthenticated, "peer refused authentication: " + QuotePeerText(p));
  if (st.ok() && keys != nullptr) st = DeriveCertFrameKeys(shared, th, true, keys);
  std::memset(shared, 0, sizeof shared);
  return st;
}

Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port) {
  auto bad = [&]() { return Status(Code::kInvalidArgument, "bad peer address '" + address + "' (want host:port)"); };
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= address.size()) return bad();
  std::string h = address.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return bad();
    h = h.substr(1, h.size() - 2);
  }
  unsigned long v = 0;
  for (size_t i = colon + 1; i < address.size(); i++) {
    char c = address[i];
    if (c < '0' || c > '9') return bad();
    v = v * 10 + static_cast<unsigned long>(c - '0');
    if (v > 65535) return bad();
  }
  if (v == 0) return bad();
  *host = h;
  *port = static_cast<uint16_t>(v);
  return Status::Ok();
}

namespace {

Status SetNoDelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    return Status::FromErrno(errno, "setsockopt(TCP_NODELAY)");
  return Status::Ok();
}

std::string PeerAddrString(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "unknown";
}

// The depth of the request the handler on this thread serves, plus one: the depth of the calls it makes. 0 on
// threads serving no request.
thread_local uint8_t t_call_depth = 0;

struct CallDepthScope {
  uint8_t saved;
  explicit CallDepthScope(uint8_t serving) : saved(t_call_depth) {
    t_call_depth = std::min<uint8_t>(uint8_t(serving + 1), wire::kMaxCallDepth);
  }
  ~CallDepthScope() { t_call_depth = saved; }
};

// Pooled client connections to one peer address, one pool per call depth (wire/frame.h). Replaced (not mutated)
// when the address changes, so a connection always returns to the pool it came from and a closed pool drops it.
// A connection of the client pool: the socket and, with frame protection, its keys (their frame counters are the
// connection's, so they travel with it between calls).
struct ClientConn {
  UniqueFd fd;
  std::unique_ptr<FrameKeys> keys;
  FrameCipher* seal() const { return keys ? &keys->send : nullptr; }
  FrameCipher* open() const { return keys ? &keys->recv : nullptr; }
};

struct Peer {
  struct Pool {
    std::vector<ClientConn> idle;
    size_t open = 0;  // idle + in use + being connected
  };
  uint32_t node_id = 0;
  std::string address;
  std::string identity;  // what its certificate must name (certificate mode)
  std::mutex mu;
  std::condition_variable cv;
  Pool pools[wire::kMaxCallDepth + 1];
  // Sockets of calls in flight (under mu; erased before the socket is closed): RemovePeer shuts them down.
  std::unordered_set<int> in_use;
  bool closed = false;
  bool removed = false;  // by RemovePeer: the calls in flight were shut down
};

struct ServerConn {
  UniqueFd fd;  // closed only after the thread is joined, so Shutdown's shutdown(2) never hits a reused number
  std::string addr;
  // Set (under server_mu_) once the handshake succeeded: whom SetPeer checks the connection against.
  bool authenticated = false;
  uint32_t peer_id = 0;
  std::string identity;  // the peer's certificate's CN (certificate mode)
  std::thread thread;
  std::atomic<bool> done{false};
};

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(const TransportOptions& o) : opts_(o), node_id_(o.node_id) {
    if (opts_.max_connections_per_peer == 0) opts_.max_connections_per_peer = 1;
  }
  ~TcpTransport() override { Shutdown(); }

  void SetHandler(Handler handler) override { handler_ = std::move(handler); }
  void SetNodeId(uint32_t node_id) override { node_id_.store(node_id); }
  void SetEpoch(uint64_t epoch) override {
    epoch = std::min(epoch, wire::kMaxEpoch);
    uint64_t cur = epoch_.load();
    while (cur < epoch && !epoch_.compare_exchange_weak(cur, epoch)) {
    }
  }

  Status Listen(const std::string& host, uint16_t port, uint16_t* bound_port) override;
  void SetPeer(uint32_t node_id, const std::string& address, const std::string& identity) override;
  void RemovePeer(uint32_t node_id) override;
  void Reauthenticate() override;
  Status Call(uint32_t node_id, uint16_t type, const uint8_t* data, size_t len, std::vector<uint8_t>* response,
              Deadline deadline, const wire::TraceContext* trace) override;
  TransportStats Stats() const override;
  void Shutdown() override;

 private:
  void Log(const std::string& line) {
    if (!opts_.log) return;
    std::lock_guard<std::mutex> lk(log_mu_);
    opts_.log(line);
  }
  void AcceptLoop();
  void ServeConnection(ServerConn* conn);
  void ReapServerConnsLocked();  // server_mu_ held
  // Certificate mode: whether a client that proved `identity` may act as node `peer_id` (server_mu_ held).
  Status CheckPeerIdentityLocked(uint32_t peer_id, const std::string& identity);

  Status Acquire(const std::shared_ptr<Peer>& peer, uint8_t depth, Deadline deadline, ClientConn* out);
  Status Connect(const std::shared_ptr<Peer>& peer, Deadline deadline, ClientConn* out);
  void Release(const std::shared_ptr<Peer>& peer, uint8_t depth, ClientConn conn, bool reusable);
  static bool Removed(const std::shared_ptr<Peer>& peer);
  bool RegisterActive(int fd);
  void UnregisterActive(int fd);
  // Drops the idle connections; `abort_calls` also shuts down those of calls in flight, which then fail at once.
  static void ClosePeer(Peer* p, std::atomic<uint64_t>* open_gauge, bool abort_calls = false);

  TransportOptions opts_;
  std::atomic<uint32_t> node_id_;
  std::atomic<uint64_t> epoch_{0};
  Handler handler_;
  std::mutex log_mu_;

  IoCounters io_;
  std::atomic<uint64_t> requests_sent_{0}, requests_served_{0}, handshake_failures_{0}, malformed_frames_{0},
      connections_open_{0}, call_timeouts_{0};
  std::atomic<uint64_t> next_request_id_{1};
  std::atomic<bool> shutting_down_{false};

  // Server side.
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // eventfd: wakes the accept thread at Shutdown
  std::thread accept_thread_;
  std::mutex server_mu_;
  std::list<std::unique_ptr<ServerConn>> server_conns_;
  std::unordered_map<uint32_t, std::string> identities_;  // node id -> identity SetPeer listed (server_mu_)

  // Client side.
  std::mutex peers_mu_;
  std::unordered_map<uint32_t, std::shared_ptr<Peer>> peers_;
  std::mutex active_mu_;
  std::unordered_set<int> active_fds_;  // client sockets in use by a Call (shut down at Shutdown)
  std::mutex inflight_mu_;
  std::condition_variable inflight_cv_;
  size_t inflight_ = 0;
  std::mutex shutdown_mu_;
  bool shutdown_done_ = false;
};

Status TcpTransport::Listen(const std::string& host, uint16_t port, uint16_t* bound_port) {
  if (shutting_down_.load()) return Status(Code::kFailedPrecondition, "transport is shut down");
  if (listen_fd_.valid()) return Status(Code::kFailedPrecondition, "transport already listening");
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  std::string port_s = std::to_string(port);
  int gai = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_s.c_str(), &hints, &res);
  if (gai != 0)
    return Status(Code::kInvalidArgument, "resolve listen address " + host + ":" + port_s + ": " + gai_strerror(gai));
  Status last(Code::kUnavailable, "no usable address for " + host);
  UniqueFd fd;
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) {
      last = Status::FromErrno(errno, "socket");
      continue;
    }
    int one = 1;
    if (::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
      last = Status::FromErrno(errno, "setsockopt(SO_REUSEADDR)");
      continue;
    }
    if (::bind(s.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      last = Status::FromErrno(errno, "bind " + host + ":" + port_s, Code::kUnavailable);
      continue;
    }
    if (::listen(s.get(), 128) != 0) {
      last = Status::FromErrno(errno, "listen " + host + ":" + port_s, Code::kUnavailable);
      continue;
    }
    fd = std::move(s);
    break;
  }
  ::freeaddrinfo(res);
  if (!fd.valid()) return last;
  sockaddr_storage ss = {};
  socklen_t sl = sizeof ss;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return Status::FromErrno(errno, "getsockname");
  uint16_t p = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                        : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Status::FromErrno(errno, "eventfd");
  listen_fd_ = std::move(fd);
  wake_fd_ = std::move(wake);
  if (bound_port) *bound_port = p;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

void TcpTransport::ReapServerConnsLocked() {
  for (auto it = server_conns_.begin(); it != server_conns_.end();) {
    if ((*it)->done.load()) {
      if ((*it)->thread.joinable()) (*it)->thread.join();
      it = server_conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void TcpTransport::AcceptLoop() {
  for (;;) {
    struct pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    // The 1 s tick only reaps finished connection threads; nothing waits on it.
    int rc = ::poll(p, 2, 1000);
    if (shutting_down_.load()) return;
    if (rc < 0) {
      if (errno == EINTR) continue;
      Log("transport: accept poll failed: " + Status::FromErrno(errno, "poll").ToString());
      return;
    }
    {
      std::lock_guard<std::mutex> lk(server_mu_);
      ReapServerConnsLocked();
    }
    if (rc == 0 || !(p[0].revents & POLLIN)) continue;
    sockaddr_storage ss = {};
    socklen_t sl = sizeof ss;
    UniqueFd c(::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!c.valid()) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED) continue;
      Log("transport: " + Status::FromErrno(e, "accept").ToString());
      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        // Out of fds/memory: back off instead of spinning on a listener that stays readable.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    std::string addr = PeerAddrString(ss);
    Status st = SetNoDelay(c.get());
    if (!st.ok()) {
      Log("transport: connection from " + addr + ": " + st.ToString());
      continue;
    }
    std::lock_guard<std::mutex> lk(server_mu_);
    if (server_conns_.size() >= kMaxServerConnections) {
      Log("transport: refused connection from " + addr + ": too many connections");
      continue;
    }
    auto conn = std::make_unique<ServerConn>();
    conn->fd = std::move(c);
    conn->addr = addr;
    ServerConn* raw = conn.get();
    connections_open_.fetch_add(1);
    raw->thread = std::thread([this, raw] { ServeConnection(raw); });
    server_conns_.push_back(std::move(conn));
  }
}

void TcpTransport::ServeConnection(ServerConn* conn) {
  const int fd = conn->fd.get();
  uint32_t peer_id = 0;
  ReadFailure why = ReadFailure::kNone;
  std::unique_ptr<FrameKeys> keys;
  if (opts_.protect_frames) keys = std::make_unique<FrameKeys>();
  std::string identity;
  Status st;
  if (opts_.credentials) {
    auto check = [this](uint32_t id, const std::string& presented) {
      std::lock_guard<std::mutex> lk(server_mu_);
      return CheckPeerIdentityLocked(id, presented);
    };
    st = ServerCertHandshake(fd, *opts_.credentials, node_id_.load(), check, DeadlineIn(opts_.handshake_timeout),
                             &peer_id, &identity, &why, &io_, keys.get());
  } else {
    st = ServerHandshake(fd, opts_.cluster_secret, node_id_.load(), DeadlineIn(opts_.handshake_timeout), &peer_id,
                         &why, &io_, keys.get());
  }
  if (st.ok()) {
    // Checked again with the registration, atomically: SetPeer may have listed the id since the handshake's check.
    std::lock_guard<std::mutex> lk(server_mu_);
    if (opts_.credentials) st = CheckPeerIdentityLocked(peer_id, identity);
    if (st.ok()) {
      conn->authenticated = true;
      conn->peer_id = peer_id;
      conn->identity = identity;
    }
  }
  FrameCipher* open = keys ? &keys->recv : nullptr;
  FrameCipher* seal = keys ? &keys->send : nullptr;
  if (!st.ok()) {
    if (!shutting_down_.load()) {
      handshake_failures_.fetch_add(1);
      if (why == ReadFailure::kMalformed) malformed_frames_.fetch_add(1);
      if (st.code() == Code::kUnauthenticated && st.message() == "bad cluster secret")
        Log("refused peer " + conn->addr + ": bad cluster secret");
      else
        Log("refused peer " + conn->addr + ": handshake failed: " + st.ToString());
    }
  } else {
    const std::string who = "peer " + std::to_string(peer_id) + " (" + conn->addr + ")";
    wire::FrameHeader h;
    std::vector<uint8_t> payload;
    for (;;) {
      st = ReadFrame(fd, Deadline::max(), wire::kMaxPayload, &h, &payload, &why, &io_, open);
      if (!st.ok()) {
        if (why == ReadFailure::kMalformed) {
          malformed_frames_.fetch_add(1);
          Log("malformed frame from " + who + ": " + st.ToString() + "; closing connection");
        } else if (why == ReadFailure::kIo && !shutting_down_.load()) {
          Log("connection from " + who + ": " + st.ToString());
        }
        break;
      }
      if ((h.flags & ~wire::kFlagDepthMask) != 0 || h.type < kFirstUserType) {
        // A response, or a handshake message after the handshake: the peer is confused; framing may be too.
        malformed_frames_.fetch_add(1);
        Log("malformed frame from " + who + ": unexpected type " + std::to_string(h.type) + " flags " +
            std::to_string(h.flags) + "; closing connection");
        break;
      }
      Request req;
      req.type = h.type;
      req.data = payload.data();
      req.len = payload.size();
      req.trace = h.trace;
      req.peer_node_id = peer_id;
      req.peer_epoch = h.epoch;
      req.depth = wire::FrameDepth(h.flags);
      Reply reply;
      if (handler_) {
        CallDepthScope nested(req.depth);
        handler_(req, &reply);
      } else {
        reply.status = Status(Code::kUnimplemented, "no handler on node " + std::to_string(node_id_.load()));
      }
      requests_served_.fetch_add(1, std::memory_order_relaxed);
      wire::FrameHeader rh;
      rh.type = h.type;
      rh.request_id = h.request_id;
      rh.flags = wire::kFlagResponse;
      const std::vector<uint8_t>* body = &reply.payload;
      std::vector<uint8_t> msg;
      if (!reply.status.ok()) {
        rh.flags |= wire::kFlagError;
        rh.status = wire::PackStatus(reply.status.code(), reply.status.reason());
        if (reply.payload.empty()) {
          msg.assign(reply.status.message().begin(), reply.status.message().end());
          body = &msg;
        }
      }
      if (body->size() > wire::kMaxPayload) {
        rh.flags |= wire::kFlagError;
        rh.status = static_cast<uint32_t>(Code::kInternal);
        const std::string m = "response of " + std::to_string(body->size()) + " bytes exceeds frame limit";
        msg.assign(m.begin(), m.end());
        body = &msg;
      }
      st = WriteFrame(fd, rh, body->data(), body->size(), Deadline::max(), &io_, seal);
      if (!st.ok()) {
        if (!shutting_down_.load()) Log("connection from " + who + ": " + st.ToString());
        break;
      }
    }
  }
  // FIN now so the peer sees the close at once; the fd number stays ours until the thread is reaped.
  ::shutdown(fd, SHUT_RDWR);
  connections_open_.fetch_sub(1);
  conn->done.store(true);
}

void TcpTransport::ClosePeer(Peer* p, std::atomic<uint64_t>* open_gauge, bool abort_calls) {
  std::lock_guard<std::mutex> lk(p->mu);
  p->closed = true;
  if (abort_calls) {
    p->removed = true;
    for (int fd : p->in_use) ::shutdown(fd, SHUT_RDWR);
  }
  for (Peer::Pool& pool : p->pools) {
    pool.open -= pool.idle.size();
    open_gauge->fetch_sub(pool.idle.size());
    pool.idle.clear();
  }
  p->cv.notify_all();
}

Status TcpTransport::CheckPeerIdentityLocked(uint32_t peer_id, const std::string& identity) {
  auto it = identities_.find(peer_id);
  // A node this one has not heard of yet (it joined a moment ago): any node's certificate, remembered with the
  // connection until SetPeer says whose the id is.
  if (it == identities_.end() || it->second == identity) return Status::Ok();
  return Status(Code::kUnauthenticated, "node " + std::to_string(peer_id) + " presented a certificate for \"" +
                                            PrintableName(identity) + "\", the membership lists \"" +
                                            PrintableName(it->second) + "\"");
}

void TcpTransport::SetPeer(uint32_t node_id, const std::string& address, const std::string& identity) {
  if (!identity.empty()) {
    std::lock_guard<std::mutex> lk(server_mu_);
    identities_[node_id] = identity;
    for (auto& c : server_conns_) {
      if (!c->authenticated || c->peer_id != node_id || !opts_.credentials || c->identity == identity) continue;
      // Accepted before this node knew whose the id is: it was not that node.
      Log("dropping connection from " + c->addr + ": node " + std::to_string(node_id) +
          " presented a certificate for \"" + PrintableName(c->identity) + "\", the membership lists \"" +
          PrintableName(identity) + "\"");
      c->authenticated = false;
      ::shutdown(c->fd.get(), SHUT_RDWR);
    }
  }
  std::shared_ptr<Peer> old;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto it = peers_.find(node_id);
    if (it != peers_.end() && it->second->address == address && it->second->identity == identity) return;
    auto p = std::make_shared<Peer>();
    p->node_id = node_id;
    p->address = address;
    p->identity = identity;
    if (it != peers_.end()) {
      old = std::move(it->second);
      it->second = std::move(p);
    } else {
      peers_.emplace(node_id, std::move(p));
    }
  }
  if (old) ClosePeer(old.get(), &connections_open_);
}

void TcpTransport::RemovePeer(uint32_t node_id) {
  std::shared_ptr<Peer> old;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto it = peers_.find(node_id);
    if (it == peers_.end()) return;
    old = std::move(it->second);
    peers_.erase(it);
  }
  // The peer is no member now (declared dead, or gone): a call waiting on it would wait out its deadline for an answer
  // that may never come (a paused or cut-off node), holding up a takeover or a commit. It fails at once instead.
  ClosePeer(old.get(), &connections_open_, true);
}

void TcpTransport::Reauthenticate() {
  {
    std::lock_guard<std::mutex> lk(server_mu_);
    for (auto& c : server_conns_) {
      if (!c->authenticated) continue;
      c->authenticated = false;
      ::shutdown(c->fd.get(), SHUT_RDWR);
    }
  }
  // Each peer starts over with an empty pool (as SetPeer with a new address): connections in use are closed, not
  // pooled, when their call ends.
  std::vector<std::shared_ptr<Peer>> old;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    for (auto& kv : peers_) {
      auto p = std::make_shared<Peer>();
      p->node_id = kv.second->node_id;
      p->address = kv.second->address;
      p->identity = kv.second->identity;
      old.push_back(std::move(kv.second));
      kv.second = std::move(p);
    }
  }
  for (auto& p : old) ClosePeer(p.get(), &connections_open_);
  Log("closed every data-plane connection: they authenticate again (the certificate revocation list changed)");
}

bool TcpTransport::RegisterActive(int fd) {
  std::lock_guard<std::mutex> lk(active_mu_);
  if (shutting_down_.load()) return false;
  active_fds_.insert(fd);
  return true;
}

void TcpTransport::UnregisterActive(int fd) {
  std::lock_guard<std::mutex> lk(active_mu_);
  active_fds_.erase(fd);
}

Status TcpTransport::Connect(const std::shared_ptr<Peer>& peer, Deadline deadline, ClientConn* out) {
  const std::string who = "peer " + std::to_string(peer->node_id) + " (" + peer->address + ")";
  std::string host;
  uint16_t port = 0;
  Status st = SplitHostPort(peer->address, &host, &port);
  if (!st.ok()) return Status(Code::kUnavailable, who + ": " + st.message());
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  int gai = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) return Status(Code::kUnavailable, who + ": resolve: " + gai_strerror(gai));
  Deadline connect_deadline = std::min(deadline, DeadlineIn(opts_.connect_timeout));
  Status last(Code::kUnavailable, who + ": no address");
  UniqueFd fd;
  for (struct addrinfo* ai = res; ai != nullptr && !fd.valid(); ai = ai->ai_next) {
    UniqueFd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) {
      last = Status::FromErrno(errno, who + ": socket", Code::kUnavailable);
      continue;
    }
    // Registered before connecting so Shutdown can interrupt a connect in progress.
    if (!RegisterActive(s.get())) {
      last = Status(Code::kUnavailable, "transport is shut down");
      break;
    }
    int rc = ::connect(s.get(), ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS || err == EINTR) {
      Status w = WaitFd(s.get(), POLLOUT, connect_deadline);
      if (!w.ok()) {
        UnregisterActive(s.get());
        if (Clock::now() >= deadline) last = Status(Code::kDeadlineExceeded, who + ": connect: deadline exceeded");
        else last = Status(Code::kUnavailable, who + ": connect timed out");
        continue;
      }
      socklen_t el = sizeof err;
      if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
    }
    if (err != 0) {
      UnregisterActive(s.get());
      last = Status::FromErrno(err, who + ": connect", Code::kUnavailable);
      continue;
    }
    st = SetNoDelay(s.get());
    if (!st.ok()) {
      UnregisterActive(s.get());
      last = Status(Code::kUnavailable, who + ": " + st.message());
      continue;
    }
    fd = std::move(s);
  }
  ::freeaddrinfo(res);
  if (!fd.valid()) return last;
  connections_open_.fetch_add(1);
  ReadFailure why = ReadFailure::kNone;
  std::unique_ptr<FrameKeys> keys;
  if (opts_.protect_frames) keys = std::make_unique<FrameKeys>();
  const Deadline handshake_deadline = std::min(deadline, DeadlineIn(opts_.handshake_timeout));
  if (opts_.credentials) {
    st = ClientCertHandshake(fd.get(), *opts_.credentials, node_id_.load(), peer->node_id, peer->identity,
                             handshake_deadline, &why, &io_, keys.get());
  } else {
    st = ClientHandshake(fd.get(), opts_.cluster_secret, node_id_.load(), peer->node_id, handshake_deadline, &why,
                         &io_, keys.get());
  }
  if (!st.ok()) {
    UnregisterActive(fd.get());
    connections_open_.fetch_sub(1);
    if (shutting_down_.load()) return Status(Code::kUnavailable, "transport is shut down");
    if (why == ReadFailure::kMalformed) malformed_frames_.fetch_add(1);
    if (st.code() == Code::kUnauthenticated) {
      handshake_failures_.fetch_add(1);
      Log("handshake with " + who + " failed: " + st.message());
    }
    if (why == ReadFailure::kTimeout && Clock::now() >= deadline)
      return Status(Code::kDeadlineExceeded, who + ": handshake: deadline exceeded");
    Code c = st.code() == Code::kUnauthenticated ? Code::kUnauthenticated : Code::kUnavailable;
    return Status(c, who + ": handshake: " + st.message());
  }
  out->fd = std::move(fd);
  out->keys = std::move(keys);
  return Status::Ok();
}

Status TcpTransport::Acquire(const std::shared_ptr<Peer>& peer, uint8_t depth, Deadline deadline, ClientConn* out) {
  Peer::Pool& pool = peer->pools[depth];
  {
    std::unique_lock<std::mutex> lk(peer->mu);
    for (;;) {
      if (peer->closed || shutting_down_.load())
        return Status(Code::kUnavailable, "peer " + std::to_string(peer->node_id) + " address changed or removed");
      while (!pool.idle.empty()) {
        ClientConn conn = std::move(pool.idle.back());
        pool.idle.pop_back();
        // An idle connection has nothing to read; readable means EOF/reset (peer restarted) or stray bytes.
        // Either way it cannot carry a new call safely, and we learn it before sending anything.
        struct pollfd p = {conn.fd.get(), POLLIN | POLLRDHUP, 0};
        int rc = ::poll(&p, 1, 0);
        if (rc == 0 && RegisterActive(conn.fd.get())) {
          peer->in_use.insert(conn.fd.get());
          *out = std::move(conn);
          return Status::Ok();
        }
        pool.open--;
        connections_open_.fetch_sub(1);
      }
      if (pool.open < opts_.max_connections_per_peer) {
        pool.open++;
        break;
      }
      if (deadline == Deadline::max()) {
        peer->cv.wait(lk);  // wait_until(max) overflows inside some condition_variable implementations
        continue;
      }
      if (peer->cv.wait_until(lk, deadline) == std::cv_status::timeout && Clock::now() >= deadline) {
        call_timeouts_.fetch_add(1);
        return Status(Code::kDeadlineExceeded,
                      "peer " + std::to_string(peer->node_id) + ": deadline exceeded waiting for a connection");
      }
    }
  }
  Status st = Connect(peer, deadline, out);
  std::lock_guard<std::mutex> lk(peer->mu);
  if (st.ok() && peer->closed) {  // removed while connecting: nothing would shut this call down
    UnregisterActive(out->fd.get());
    out->fd.reset();
    connections_open_.fetch_sub(1);
    st = Status(Code::kUnavailable, "peer " + std::to_string(peer->node_id) + " address changed or removed");
  }
  if (!st.ok()) {
    pool.open--;
    peer->cv.notify_all();
    return st;
  }
  peer->in_use.insert(out->fd.get());
  return st;
}

bool TcpTransport::Removed(const std::shared_ptr<Peer>& peer) {
  std::lock_guard<std::mutex> lk(peer->mu);
  return peer->removed;
}

void TcpTransport::Release(const std::shared_ptr<Peer>& peer, uint8_t depth, ClientConn conn, bool reusable) {
  UnregisterActive(conn.fd.get());
  Peer::Pool& pool = peer->pools[depth];
  std::lock_guard<std::mutex> lk(peer->mu);
  peer->in_use.erase(conn.fd.get());
  if (reusable && !peer->closed && !shutting_down_.load()) {
    pool.idle.push_back(std::move(conn));
  } else {
    conn.fd.reset();
    pool.open--;
    connections_open_.fetch_sub(1);
  }
  peer->cv.notify_all();  // waiters of every depth share the condition variable
}

Status TcpTransport::Call(uint32_t node_id, uint16_t type, const uint8_t* data, size_t len,
                          std::vector<uint8_t>* response, Deadline deadline, const wire::TraceContext* trace) {
  if (response) response->clear();
  if (type < kFirstUserType)
    return Status(Code::kInvalidArgument, "message type " + std::to_string(type) + " is reserved for the transport");
  if (len > wire::kMaxPayload)
    return Status(Code::kInvalidArgument, "request of " + std::to_string(len) + " bytes exceeds frame limit");
  {
    std::lock_guard<std::mutex> lk(inflight_mu_);
    if (shutting_down_.load()) return Status(Code::kUnavailable, "transport is shut down");
    inflight_++;
  }
  struct InflightGuard {
    TcpTransport* t;
    ~InflightGuard() {
      std::lock_guard<std::mutex> lk(t->inflight_mu_);
      if (--t->inflight_ == 0) t->inflight_cv_.notify_all();
    }
  } guard{this};

  std::shared_ptr<Peer> peer;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto it = peers_.find(node_id);
    if (it != peers_.end()) peer = it->second;
  }
  if (!peer) return Status(Code::kUnavailable, kReasonNotSent, "no address for node " + std::to_string(node_id));
  const std::string who = "peer " + std::to_string(node_id);

  const uint8_t depth = t_call_depth;
  ClientConn fd;
  {
    const Status acquired = Acquire(peer, depth, deadline, &fd);
    if (!acquired.ok()) return Status(acquired.code(), kReasonNotSent, acquired.message());
  }

  wire::FrameHeader h;
  h.type = type;
  h.flags = uint32_t(depth) << wire::kFlagDepthShift;
  h.request_id = next_request_id_.fetch_add(1, std::memory_order_relaxed);
  h.epoch = epoch_.load();
  if (trace) h.trace = *trace;
  Status st = WriteFrame(fd.fd.get(), h, data, len, deadline, &io_, fd.seal());
  if (!st.ok()) {
    Release(peer, depth, std::move(fd), false);
    if (shutting_down_.load()) return Status(Code::kUnavailable, "transport is shut down");
    if (Removed(peer)) return Status(Code::kUnavailable, who + " was removed from the members during the call");
    if (st.code() == Code::kDeadlineExceeded) {
      call_timeouts_.fetch_add(1);
      return Status(Code::kDeadlineExceeded, who + ": deadline exceeded sending type " + std::to_string(type));
    }
    return Status(Code::kUnavailable, who + " (" + peer->address + "): " + st.message());
  }
  requests_sent_.fetch_add(1, std::memory_order_relaxed);

  wire::FrameHeader rh;
  std::vector<uint8_t> body;
  ReadFailure why = ReadFailure::kNone;
  st = ReadFrame(fd.fd.get(), deadline, wire::kMaxPayload, &rh, &body, &why, &io_, fd.open());
  if (!st.ok()) {
    // Never reuse: a late response would otherwise be read as the answer to a later call.
    Release(peer, depth, std::move(fd), false);
    if (shutting_down_.load()) return Status(Code::kUnavailable, "transport is shut down");
    if (Removed(peer)) return Status(Code::kUnavailable, who + " was removed from the members during the call");
    if (why == ReadFailure::kTimeout) {
      call_timeouts_.fetch_add(1);
      return Status(Code::kDeadlineExceeded, who + ": deadline exceeded waiting for reply to type " +
                                                 std::to_string(type));
    }
    if (why == ReadFailure::kMalformed) {
      malformed_frames_.fetch_add(1);
      Log("malformed response from " + who + " (" + peer->address + "): " + st.ToString());
      return Status(Code::kUnavailable, who + ": malformed response: " + st.message());
    }
    return Status(Code::kUnavailable, who + " (" + peer->address + "): " + st.message());
  }
  if (!(rh.flags & wire::kFlagResponse) || rh.request_id != h.request_id || rh.type != type) {
    Release(peer, depth, std::move(fd), false);
    malformed_frames_.fetch_add(1);
    Log("unexpected reply from " + who + ": request_id " + std::to_string(rh.request_id) + " (sent " +
        std::to_string(h.request_id) + "), type " + std::to_string(rh.type));
    return Status(Code::kUnavailable, who + ": reply does not match the request");
  }
  Release(peer, depth, std::move(fd), true);
  bool is_error = (rh.flags & wire::kFlagError) || rh.status != 0;
  if (!is_error) {
    if (response) *response = std::move(body);
    return Status::Ok();
  }
  Code code = wire::StatusCode(rh.status) == Code::kOk ? Code::kUnknown : wire::StatusCode(rh.status);
  std::string msg = who + ": " + CodeName(code);
  if (IsPrintableText(body)) msg += ": " + std::string(body.begin(), body.end());
  if (response) *response = std::move(body);
  const uint16_t reason = wire::StatusReason(rh.status);
  return Status(code, reason == kReasonNotSent ? 0 : reason, msg);  // it was sent: the peer answered
}

TransportStats TcpTransport::Stats() const {
  TransportStats s;
  s.requests_sent = requests_sent_.load();
  s.requests_served = requests_served_.load();
  s.bytes_out = io_.bytes_out.load();
  s.bytes_in = io_.bytes_in.load();
  s.handshake_failures = handshake_failures_.load();
  s.malformed_frames = malformed_frames_.load();
  s.connections_open = connections_open_.load();
  s.call_timeouts = call_timeouts_.load();
  return s;
}

void TcpTransport::Shutdown() {
  std::lock_guard<std::mutex> once(shutdown_mu_);
  if (shutdown_done_) return;
  {
    // Under inflight_mu_ so no Call can slip in between the flag and the in-flight count.
    std::lock_guard<std::mutex> lk(inflight_mu_);
    shutting_down_.store(true);
  }
  // Client side first: a handler blocked in a nested Call must be released before its server thread is joined.
  {
    std::lock_guard<std::mutex> lk(active_mu_);
    for (int fd : active_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  std::vector<std::shared_ptr<Peer>> peers;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    for (auto& kv : peers_) peers.push_back(kv.second);
    peers_.clear();
  }
  for (auto& p : peers) ClosePeer(p.get(), &connections_open_);

  if (accept_thread_.joinable()) {
    uint64_t one = 1;
    if (::write(wake_fd_.get(), &one, sizeof one) != static_cast<ssize_t>(sizeof one))
      Log("transport: " + Status::FromErrno(errno, "write(eventfd)").ToString());
    accept_thread_.join();
  }
  listen_fd_.reset();
  wake_fd_.reset();
  std::list<std::unique_ptr<ServerConn>> conns;
  {
    std::lock_guard<std::mutex> lk(server_mu_);
    for (auto& c : server_conns_) ::shutdown(c->fd.get(), SHUT_RDWR);
    conns.swap(server_conns_);
  }
  for (auto& c : conns)
    if (c->thread.joinable()) c->thread.join();
  conns.clear();
  {
    std::unique_lock<std::mutex> lk(inflight_mu_);
    inflight_cv_.wait(lk, [this] { return inflight_ == 0; });
  }
  shutdown_done_ = true;
}

}  // namespace
}  // namespace tcp

std::unique_ptr<Transport> NewTcpTransport(const TransportOptions& options) {
  return std::make_unique<tcp::TcpTransport>(options);
}

uint8_t ThreadCallDepth() { return tcp::t_call_depth; }
AdoptCallDepth::AdoptCallDepth(uint8_t depth) : saved_(tcp::t_call_depth) {
  tcp::t_call_depth = std::min<uint8_t>(depth, wire::kMaxCallDepth);
}
AdoptCallDepth::~AdoptCallDepth() { tcp::t_call_depth = saved_; }

}  // namespace transport
}  // namespace hotpot
