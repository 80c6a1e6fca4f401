// Fuzz target for everything that parses bytes from a peer before authentication or framing is trusted:
//   - wire::DecodeHeader + wire::VerifyPayload on the raw input,
//   - the TCP transport's frame reader (tcp::ReadFrame) over a socketpair holding the input,
//   - the server and client halves of both handshakes (cluster secret; certificates) reading the input as the other
//     side's messages (the certificate ones with a test CA's node certificates, test/test_certs.h),
//   - the reader of protected frames (after a handshake), which must refuse whatever it cannot authenticate.
// Builds with the standalone driver (driver.cc) or with clang -fsanitize=fuzzer.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../test/test_certs.h"
#include "fuzz_input.h"
#include "transport/tcp_transport.h"
#include "wire/frame.h"

using namespace hotpot;
using namespace hotpot::transport;

namespace {

// Node 1 and node 2 of one test CA, made once.
struct FuzzCerts {
  hotpot_test::TestCa ca{"fuzz"};
  std::shared_ptr<const NodeCredentials> node1 = ca.Node("node-1"), node2 = ca.Node("node-2");
};
const FuzzCerts& Certs() {
  static FuzzCerts c;
  return c;
}

void FuzzDecode(const uint8_t* data, size_t size) {
  wire::FrameHeader h;
  if (!wire::DecodeHeader(data, size, &h).ok()) return;
  if (h.length > wire::kMaxPayload) __builtin_trap();  // DecodeHeader must have refused it
  size_t avail = size - wire::kHeaderSize;
  Status st = wire::VerifyPayload(h, data + wire::kHeaderSize, avail < h.length ? avail : h.length);
  (void)st;
}

// mode 0: frame reader loop; 1: server handshake then reader loop; 2: client handshake; 3: protected-frame reader;
// 4: server certificate handshake then reader loop; 5: client certificate handshake.
void FuzzSocket(uint8_t mode, const uint8_t* data, size_t size) {
  hotpot_fuzz::SocketInput sock;
  if (!hotpot_fuzz::PutOnSocket(data, size, &sock)) return;
  const int reader = sock.local.get();
  Deadline deadline = DeadlineIn(std::chrono::seconds(1));
  tcp::ReadFailure why = tcp::ReadFailure::kNone;
  wire::FrameHeader h;
  std::vector<uint8_t> payload;
  if (mode == 1) {
    uint32_t peer = 0;
    if (!tcp::ServerHandshake(reader, "fuzz-secret", 1, deadline, &peer, &why, nullptr).ok()) return;
  } else if (mode == 2) {
    Status st = tcp::ClientHandshake(reader, "fuzz-secret", 2, 1, deadline, &why, nullptr);
    (void)st;
    return;
  } else if (mode == 4) {
    uint32_t peer = 0;
    std::string identity;
    auto check = [](uint32_t id, const std::string& name) {
      return id == 2 && name != "node-2" ? Status(Code::kUnauthenticated, "not node-2") : Status::Ok();
    };
    FrameKeys keys;
    Status st = tcp::ServerCertHandshake(reader, *Certs().node1, 1, check, deadline, &peer, &identity, &why, nullptr,
                                         &keys);
    if (!st.ok()) return;
    if (identity.empty() || identity.size() > kMaxIdentitySize) __builtin_trap();
  } else if (mode == 5) {
    FrameKeys keys;
    Status st = tcp::ClientCertHandshake(reader, *Certs().node2, 2, 1, "node-1", deadline, &why, nullptr, &keys);
    (void)st;
    return;
  }
  FrameCipher opener;
  if (mode == 3) {
    const uint8_t key[kFrameKeySize] = {};
    if (!opener.Init(key, false).ok()) __builtin_trap();
  }
  for (int frames = 0; frames < 64; frames++) {
    Status st = tcp::ReadFrame(reader, deadline, wire::kMaxPayload, &h, &payload, &why, nullptr,
                               mode == 3 ? &opener : nullptr);
    if (!st.ok()) {
      if (why == tcp::ReadFailure::kNone) __builtin_trap();  // every failure must say why
      return;
    }
    if (payload.size() != h.length) __builtin_trap();
  }
}

std::vector<uint8_t> MakeFrame(uint16_t type, uint32_t flags, const std::vector<uint8_t>& payload) {
  wire::FrameHeader h;
  h.type = type;
  h.flags = flags;
  h.request_id = 7;
  std::vector<uint8_t> out(wire::kHeaderSize);
  wire::EncodeHeader(h, payload.data(), payload.size(), out.data());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzDecode(data, size);
  // The mode comes from a byte that is otherwise a header byte (version high byte), so the same input
  // exercises decode and one socket path; most inputs keep it 0 and so take the plain reader path.
  uint8_t mode = size > 5 ? data[5] % 6 : 0;
  // Modes 3-5 read the bytes after the first 8 (whose byte 5 chose it), so their frames can be well-formed.
  if (mode >= 3) {
    if (size > 8) FuzzSocket(mode, data + 8, size - 8);
  } else {
    FuzzSocket(mode, data, size);
  }
  return 0;
}

// Seeds for the standalone driver: well-formed frames and handshake messages, so mutations start deep.
extern "C" void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out) {
  out->push_back(MakeFrame(16, 0, std::vector<uint8_t>(24, 0)));
  {
    // Mode 3: 8 selector bytes, then a frame sealed with the all-zero key the reader opens with.
    std::vector<uint8_t> seed = {0, 0, 0, 0, 0, 3, 0, 0};
    FrameCipher sealer;
    const uint8_t key[kFrameKeySize] = {};
    std::vector<uint8_t> plain(24, 1), sealed(plain.size() + kFrameTagSize);
    uint8_t hdr[wire::kHeaderSize], aad[wire::kHeaderSize];
    wire::FrameHeader h;
    h.type = 16;
    h.request_id = 7;
    wire::EncodeHeader(h, nullptr, 0, hdr);
    hdr[8] = uint8_t(sealed.size());
    std::memcpy(aad, hdr, sizeof hdr);
    std::memset(aad + 12, 0, 4);
    if (sealer.Init(key, true).ok() && sealer.Seal(aad, sizeof aad, plain.data(), plain.size(), sealed.data()).ok()) {
      wire::EncodeHeader(h, sealed.data(), sealed.size(), hdr);
      seed.insert(seed.end(), hdr, hdr + sizeof hdr);
      seed.insert(seed.end(), sealed.begin(), sealed.end());
      out->push_back(seed);
    }
  }
  out->push_back(MakeFrame(16, 0, {}));
  out->push_back(MakeFrame(tcp::kTypeHello, 0, std::vector<uint8_t>(36, 0x11)));
  auto two = MakeFrame(tcp::kTypeHello, 0, std::vector<uint8_t>(36, 0x22));
  auto auth = MakeFrame(tcp::kTypeAuth, 0, std::vector<uint8_t>(32, 0x33));
  two.insert(two.end(), auth.begin(), auth.end());
  out->push_back(two);
  out->push_back(MakeFrame(tcp::kTypeHello, wire::kFlagResponse, std::vector<uint8_t>(68, 0x44)));
  out->push_back(MakeFrame(17, wire::kFlagResponse | wire::kFlagError, {'n', 'o'}));
  {
    // Modes 4 and 5: 8 selector bytes, then certificate handshake messages with real certificates (the server half
    // reads a CERT_HELLO of node 2 and a CERT_AUTH; the client half a CERT_HELLO response of node 1), so mutations
    // reach the certificate and signature checks.
    const std::vector<uint8_t>& der = Certs().node2->cert_der();
    std::vector<uint8_t> hello = {2, 0, 0, 0};
    hello.resize(4 + 32 + 32, 0x55);
    hello.insert(hello.end(), der.begin(), der.end());
    std::vector<uint8_t> seed = {0, 0, 0, 0, 0, 4, 0, 0};
    auto f = MakeFrame(tcp::kTypeCertHello, 0, hello);
    auto auth = MakeFrame(tcp::kTypeCertAuth, 0, std::vector<uint8_t>(71, 0x30));
    seed.insert(seed.end(), f.begin(), f.end());
    seed.insert(seed.end(), auth.begin(), auth.end());
    out->push_back(seed);
    const std::vector<uint8_t>& der1 = Certs().node1->cert_der();
    std::vector<uint8_t> resp = {1, 0, 0, 0};
    resp.resize(4 + 32 + 32, 0x66);
    resp.push_back(uint8_t(der1.size()));
    resp.push_back(uint8_t(der1.size() >> 8));
    resp.insert(resp.end(), der1.begin(), der1.end());
    resp.insert(resp.end(), 72, 0x30);
    seed = {0, 0, 0, 0, 0, 5, 0, 0};
    f = MakeFrame(tcp::kTypeCertHello, wire::kFlagResponse, resp);
    seed.insert(seed.end(), f.begin(), f.end());
    out->push_back(seed);
  }
  std::vector<uint8_t> many;
  for (int i = 0; i < 4; i++) {
    auto f = MakeFrame(uint16_t(16 + i), 0, std::vector<uint8_t>(size_t(i * 100), uint8_t(i)));
    many.insert(many.end(), f.begin(), f.end());
  }
  out->push_back(many);
}
