// Transport tests: the conformance suite against the TCP transport, then TCP-specific hostile-peer tests,
// then a small 4 KiB round-trip measurement (printed, never asserted).
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "common/fd.h"
#include "transport/tcp_transport.h"
#include "transport_conformance.h"

using namespace hotpot;
using namespace hotpot::transport;
using namespace hotpot_test::conformance;

static bool registered = hotpot_test::RegisterTransportConformance(
    "tcp", [](TransportOptions o) { return NewTcpTransport(o); });

namespace {

Env TcpEnv() {
  Env e;
  e.factory = [](TransportOptions o) { return NewTcpTransport(o); };
  e.host = "127.0.0.1";
  return e;
}

UniqueFd RawConnect(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  CHECK(fd.valid());
  struct timeval tv = {10, 0};  // a bound on how long a broken server could make the test wait
  CHECK(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

void SendRaw(int fd, const std::vector<uint8_t>& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // the server may already have hung up; the disconnect check follows
    off += size_t(n);
  }
}

// Reads until the server closes; fails if it is still open after the receive timeout.
void ExpectDisconnected(int fd) {
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) return;
    CHECK(n > 0);  // EAGAIN here means the server kept a bad connection open
  }
}

std::vector<uint8_t> Frame(uint16_t type, const std::vector<uint8_t>& payload, uint64_t request_id = 1) {
  wire::FrameHeader h;
  h.type = type;
  h.request_id = request_id;
  std::vector<uint8_t> out(wire::kHeaderSize);
  wire::EncodeHeader(h, payload.data(), payload.size(), out.data());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// A peer that behaves: proves other connections keep working while a hostile one is thrown out.
void CheckGoodClientWorks(Node* server, Node* client) {
  int before = server->handled.load();
  std::vector<uint8_t> resp;
  auto req = Pattern(333, 77);
  CHECK_OK(CallVec(client->t.get(), 1, kEcho, req, &resp));
  CHECK(resp == req);
  CHECK(server->handled.load() == before + 1);
}

}  // namespace

TEST(garbage_before_handshake_disconnects_only_that_connection) {
  Env env = TcpEnv();
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  CheckGoodClientWorks(a.get(), b.get());  // b now holds a pooled, authenticated connection
  int handled = a->handled.load();
  UniqueFd raw = RawConnect(a->port);
  SendRaw(raw.get(), std::vector<uint8_t>(100, 0xAB));
  ExpectDisconnected(raw.get());
  CHECK(WaitUntil([&] { return a->t->Stats().malformed_frames >= 1; }));
  CHECK(a->t->Stats().handshake_failures >= 1);
  CHECK(a->handled.load() == handled);
  CheckGoodClientWorks(a.get(), b.get());
}

TEST(huge_length_header_is_rejected_before_allocation) {
  Env env = TcpEnv();
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  for (uint32_t len : {wire::kMaxPayload + 1, 0xFFFFFFFFu, 100000u /* legal later, too big for a handshake */}) {
    auto f = Frame(tcp::kTypeHello, {});
    PutU32(f.data() + 8, len);
    UniqueFd raw = RawConnect(a->port);
    SendRaw(raw.get(), f);
    ExpectDisconnected(raw.get());
  }
  CHECK(WaitUntil([&] { return a->t->Stats().malformed_frames >= 3; }));
  CheckGoodClientWorks(a.get(), b.get());
}

TEST(bad_checksum_disconnects) {
  Env env = TcpEnv();
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  auto f = Frame(tcp::kTypeHello, std::vector<uint8_t>(36, 1));
  f[wire::kHeaderSize + 5] ^= 0x10;  // payload no longer matches the header CRC
  UniqueFd raw = RawConnect(a->port);
  SendRaw(raw.get(), f);
  ExpectDisconnected(raw.get());
  CHECK(WaitUntil([&] { return a->t->Stats().malformed_frames >= 1; }));
  CheckGoodClientWorks(a.get(), b.get());
}

TEST(skipping_handshake_with_fetch_frame_never_reaches_handler) {
  Env env = TcpEnv();
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  UniqueFd raw = RawConnect(a->port);
  std::vector<uint8_t> fetch(24, 0);
  PutU32(fetch.data() + 16, 1);  // count = 1 page
  SendRaw(raw.get(), Frame(16 /* FETCH_PAGES */, fetch));
  ExpectDisconnected(raw.get());
  CHECK(WaitUntil([&] { return a->t->Stats().handshake_failures >= 1; }));
  CHECK(a->handled.load() == 0);
  CHECK(a->t->Stats().requests_served == 0);
  CHECK(a->LogContains("refused peer 127.0.0.1:"));
  CheckGoodClientWorks(a.get(), b.get());
}

TEST(silent_client_is_dropped_after_handshake_timeout) {
  Env env = TcpEnv();
  TransportOptions o;
  o.node_id = 1;
  o.cluster_secret = "conformance-secret";
  o.handshake_timeout = std::chrono::milliseconds(200);
  auto a = NewTcpTransport(o);
  uint16_t port = 0;
  CHECK_OK(a->Listen("127.0.0.1", 0, &port));
  UniqueFd raw = RawConnect(port);
  ExpectDisconnected(raw.get());
  CHECK(WaitUntil([&] { return a->Stats().handshake_failures == 1; }));
  a->Shutdown();
}

TEST(garbage_after_handshake_closes_that_connection_only) {
  Env env = TcpEnv();
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  CheckGoodClientWorks(a.get(), b.get());
  UniqueFd raw = RawConnect(a->port);
  tcp::ReadFailure why;
  CHECK_OK(tcp::ClientHandshake(raw.get(), "conformance-secret", 9, 1, DeadlineIn(std::chrono::seconds(10)), &why,
                                nullptr));
  // An authenticated request works on the raw connection and carries our id.
  SendRaw(raw.get(), Frame(kWhoAmI, {}, 55));
  wire::FrameHeader h;
  std::vector<uint8_t> p;
  CHECK_OK(tcp::ReadFrame(raw.get(), DeadlineIn(std::chrono::seconds(10)), wire::kMaxPayload, &h, &p, &why, nullptr));
  CHECK(h.request_id == 55 && (h.flags & wire::kFlagResponse) && p.size() == 20 && p[0] == 9);
  // Then a frame with a bad checksum: that connection is closed, the pooled one of b is not.
  auto f = Frame(kEcho, std::vector<uint8_t>(64, 3), 56);
  f[12] ^= 1;
  SendRaw(raw.get(), f);
  ExpectDisconnected(raw.get());
  CHECK(WaitUntil([&] { return a->t->Stats().malformed_frames >= 1; }));
  CHECK(a->LogContains("malformed frame from peer 9"));
  CheckGoodClientWorks(a.get(), b.get());
}

TEST(handshake_message_after_handshake_is_refused) {
  Env env = TcpEnv();
  auto a = env.Start(1);
  UniqueFd raw = RawConnect(a->port);
  tcp::ReadFailure why;
  CHECK_OK(tcp::ClientHandshake(raw.get(), "conformance-secret", 9, 1, DeadlineIn(std::chrono::seconds(10)), &why,
                                nullptr));
  SendRaw(raw.get(), Frame(tcp::kTypeAuth, std::vector<uint8_t>(32, 0)));
  ExpectDisconnected(raw.get());
  CHECK(a->handled.load() == 0);
}

TEST(wrong_node_at_address_is_not_used) {
  Env env = TcpEnv();
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(5, a->address);  // node 1 listens there, not node 5
  std::vector<uint8_t> resp;
  Status st = CallVec(b->t.get(), 5, kEcho, {1}, &resp);
  CHECK(st.code() == Code::kUnavailable);
  CHECK(st.message().find("identifies as node 1") != std::string::npos);
  CHECK(a->handled.load() == 0);
}

TEST(server_that_hangs_up_gives_unavailable_not_sigpipe) {
  // A listener that accepts and closes at once: the client's writes hit a dead socket.
  UniqueFd lfd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  CHECK(lfd.valid());
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(::bind(lfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  CHECK(::listen(lfd.get(), 16) == 0);
  socklen_t sl = sizeof addr;
  CHECK(::getsockname(lfd.get(), reinterpret_cast<sockaddr*>(&addr), &sl) == 0);
  std::thread closer([&] {
    for (int i = 0; i < 3; i++) {
      int c = ::accept(lfd.get(), nullptr, nullptr);
      if (c < 0) return;
      struct linger lg = {1, 0};  // RST rather than FIN
      CHECK(::setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
      ::close(c);
    }
  });
  Env env = TcpEnv();
  auto b = env.Start(2, "conformance-secret", 4, /*listen=*/false);
  b->t->SetPeer(1, "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
  std::vector<uint8_t> resp;
  for (int i = 0; i < 3; i++) {
    Status st = CallVec(b->t.get(), 1, kEcho, Pattern(4 << 20, 1), &resp);
    CHECK(st.code() == Code::kUnavailable);
  }
  closer.join();
}

TEST(pool_limit_queues_calls_and_honours_deadline_while_waiting) {
  Env env = TcpEnv();
  auto a = env.Start(1);
  auto b = env.Start(2, "conformance-secret", /*max_conns=*/1);
  b->t->SetPeer(1, a->address);
  std::vector<uint8_t> r1, r2;
  Status s1;
  std::thread slow([&] { s1 = CallVec(b->t.get(), 1, kSleep, SleepReq(400, 1), &r1); });
  CHECK(WaitUntil([&] { return a->handled.load() == 1; }));
  // The only connection is busy: a short deadline expires in the queue, an unbounded call waits its turn.
  CHECK(CallVec(b->t.get(), 1, kEcho, {1}, &r2, std::chrono::milliseconds(50)).code() == Code::kDeadlineExceeded);
  std::vector<uint8_t> req{4, 5, 6};
  CHECK_OK(b->t->Call(1, kEcho, req.data(), req.size(), &r2, Deadline::max()));
  CHECK(r2 == req);
  slow.join();
  CHECK_OK(s1);
  CHECK(r1 == SleepReq(400, 1));
  CHECK(b->t->Stats().connections_open == 1);  // one pooled connection, reused
}

TEST(split_host_port) {
  std::string h;
  uint16_t p = 0;
  CHECK_OK(tcp::SplitHostPort("127.0.0.1:7000", &h, &p));
  CHECK(h == "127.0.0.1" && p == 7000);
  CHECK_OK(tcp::SplitHostPort("[::1]:80", &h, &p));
  CHECK(h == "::1" && p == 80);
  for (const char* bad : {"", "host", ":80", "host:", "host:0", "host:65536", "host:12a", "[::1:80", "[]:80"})
    CHECK(tcp::SplitHostPort(bad, &h, &p).code() == Code::kInvalidArgument);
}

// Not a pass/fail check: prints the 4 KiB fetch round trip between two transports in this process.
TEST(bench_4k_fetch_round_trip) {
  int iters = 2000;
  if (const char* e = std::getenv("HOTPOT_BENCH_ITERS")) iters = std::max(100, std::atoi(e));
  TransportOptions o;
  o.cluster_secret = "bench";
  o.node_id = 1;
  auto a = NewTcpTransport(o);
  o.node_id = 2;
  auto b = NewTcpTransport(o);
  // Shaped like FETCH_PAGES of one page: 24-byte request, {version, state, pad} + 4096 bytes back.
  std::vector<uint8_t> page(16 + 4096, 0x5A);
  a->SetHandler([&page](const Request& req, Reply* reply) {
    if (req.len != 24) {
      reply->status = Status(Code::kInvalidArgument, "bad fetch");
      return;
    }
    reply->payload = page;
  });
  uint16_t port = 0;
  CHECK_OK(a->Listen("127.0.0.1", 0, &port));
  b->SetPeer(1, "127.0.0.1:" + std::to_string(port));
  std::vector<uint8_t> req(24, 0), resp;
  std::vector<double> us;
  us.reserve(size_t(iters));
  for (int i = 0; i < iters + 200; i++) {
    auto t0 = Clock::now();
    CHECK_OK(b->Call(1, 16, req.data(), req.size(), &resp, DeadlineIn(std::chrono::seconds(5))));
    auto t1 = Clock::now();
    CHECK(resp.size() == page.size());
    if (i >= 200) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::fprintf(stderr, "bench: tcp 4KiB fetch round trip over loopback, %d calls: p50 %.1f us, p90 %.1f us, p99 %.1f us\n",
               iters, us[us.size() / 2], us[us.size() * 90 / 100], us[us.size() * 99 / 100]);
  b->Shutdown();
  a->Shutdown();
}

TEST_MAIN("transport")
