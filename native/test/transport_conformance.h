// Transport conformance suite: behaviour every transport::Transport implementation must show, independent of
// the wire underneath. transport_test.cc runs it against NewTcpTransport; an RDMA transport registers the same
// suite with its own factory:
//
//   static bool reg = hotpot_test::RegisterTransportConformance("tcp", [](TransportOptions o) {
//     return NewTcpTransport(o); });
//
// Each check creates its own transports (listening on `host`, port 0) and shuts them down, so checks are
// independent. Assertions are about data, codes and counts; waits are bounded but never asserted as timings.
#pragma once

#include <dirent.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "transport/transport.h"

namespace hotpot_test {

using TransportFactory =
    std::function<std::unique_ptr<hotpot::transport::Transport>(hotpot::transport::TransportOptions)>;

namespace conformance {

using namespace hotpot;
using namespace hotpot::transport;
using namespace std::chrono_literals;

constexpr uint16_t kEcho = 16;      // replies with the request bytes
constexpr uint16_t kFail = 17;      // replies ABORTED with payload {0xA0, 0xB1, 0xC2} or, empty request, FAILED_PRECONDITION "boom"
constexpr uint16_t kSleep = 18;     // sleeps u32 ms from the request, then echoes
constexpr uint16_t kWhoAmI = 19;    // replies peer_node_id u32 + trace_id[16]
constexpr uint16_t kBlock = 20;     // blocks until the node's gate opens (bounded), then echoes
// Replies the status the request describes: code u8, reason u16, with_payload u8, message bytes; with_payload
// also sends kReasonPayload.
constexpr uint16_t kFailReason = 21;
// Relays along a path: the request is u32 node ids; with ids left, calls the first with the rest (from the handler,
// a nested call) and replies its own call depth u8 followed by that answer; with none, replies its depth alone.
constexpr uint16_t kRelay = 22;
inline const std::vector<uint8_t> kReasonPayload = {0x00, 0x11, 0xFF, 0x7F, 0x00};  // binary (a NUL byte): not text

inline int CountOpenFds() {
  DIR* d = ::opendir("/proc/self/fd");
  CHECK(d != nullptr);
  int n = 0;
  while (struct dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') n++;
  ::closedir(d);
  return n;
}

template <typename F>
inline bool WaitUntil(F cond, std::chrono::milliseconds limit = 10000ms) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return cond();
}

// One transport with the standard handler and counters the checks read.
struct Node {
  std::unique_ptr<Transport> t;
  uint16_t port = 0;
  std::string address;
  std::atomic<int> handled{0};
  std::atomic<int> blocked{0};
  std::mutex mu;
  std::condition_variable cv;
  bool gate_open = false;
  std::vector<std::string> log;

  // The handler uses the members above, so the transport's threads must be gone before they are destroyed.
  ~Node() {
    OpenGate();
    if (t) t->Shutdown();
  }
  void OpenGate() {
    std::lock_guard<std::mutex> lk(mu);
    gate_open = true;
    cv.notify_all();
  }
  bool LogContains(const std::string& s) {
    std::lock_guard<std::mutex> lk(mu);
    for (auto& l : log)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};

struct Env {
  TransportFactory factory;
  std::string host;
  // What the server logs when a peer of another cluster (another secret; with certificates, another CA) is refused.
  std::string refusal_log = "bad cluster secret";

  std::unique_ptr<Node> Start(uint32_t id, const std::string& secret = "conformance-secret",
                              size_t max_conns = 4, bool listen = true) {
    auto n = std::make_unique<Node>();
    Node* raw = n.get();
    TransportOptions o;
    o.node_id = id;
    o.cluster_secret = secret;
    o.max_connections_per_peer = max_conns;
    o.handshake_timeout = 2000ms;
    o.log = [raw](const std::string& line) {
      std::lock_guard<std::mutex> lk(raw->mu);
      raw->log.push_back(line);
    };
    n->t = factory(o);
    CHECK(n->t != nullptr);
    n->t->SetHandler([raw](const Request& req, Reply* reply) {
      raw->handled.fetch_add(1);
      switch (req.type) {
        case kEcho:
          reply->payload.assign(req.data, req.data + req.len);
          break;
        case kFail:
          if (req.len == 0) {
            reply->status = Status(Code::kFailedPrecondition, "boom");
          } else {
            reply->status = Status(Code::kAborted, "conflict");
            reply->payload = {0xA0, 0xB1, 0xC2};
          }
          break;
        case kSleep: {
          uint32_t ms = 0;
          if (req.len >= 4) std::memcpy(&ms, req.data, 4);
          std::this_thread::sleep_for(std::chrono::milliseconds(ms));
          reply->payload.assign(req.data, req.data + req.len);
          break;
        }
        case kWhoAmI:
          reply->payload.resize(4 + 16);
          std::memcpy(reply->payload.data(), &req.peer_node_id, 4);
          std::memcpy(reply->payload.data() + 4, req.trace.trace_id, 16);
          break;
        case kFailReason: {
          if (req.len < 4) {
            reply->status = Status(Code::kInvalidArgument, "short kFailReason request");
            break;
          }
          uint16_t reason = 0;
          std::memcpy(&reason, req.data + 1, 2);
          reply->status = Status(static_cast<Code>(req.data[0]), reason,
                                 std::string(reinterpret_cast<const char*>(req.data) + 4, req.len - 4));
          if (req.data[3] != 0) reply->payload = kReasonPayload;
          break;
        }
        case kRelay: {
          reply->payload.assign(1, req.depth);
          if (req.len < 4) break;
          uint32_t next = 0;
          std::memcpy(&next, req.data, 4);
          std::vector<uint8_t> rest(req.data + 4, req.data + req.len), inner;
          reply->status = raw->t->Call(next, kRelay, rest.data(), rest.size(), &inner, DeadlineIn(10000ms));
          reply->payload.insert(reply->payload.end(), inner.begin(), inner.end());
          break;
        }
        case kBlock: {
          raw->blocked.fetch_add(1);
          std::unique_lock<std::mutex> lk(raw->mu);
          raw->cv.wait_for(lk, 10s, [raw] { return raw->gate_open; });
          reply->payload.assign(req.data, req.data + req.len);
          break;
        }
        default:
          reply->status = Status(Code::kUnimplemented, "type " + std::to_string(req.type));
      }
    });
    if (listen) {
      CHECK_OK(n->t->Listen(host, 0, &n->port));
      CHECK(n->port != 0);
      n->address = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(n->port);
    }
    return n;
  }
};

inline std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    v[i] = uint8_t(x);
  }
  return v;
}

inline Status CallVec(Transport* t, uint32_t node, uint16_t type, const std::vector<uint8_t>& req,
                      std::vector<uint8_t>* resp, std::chrono::milliseconds timeout = 10000ms,
                      const wire::TraceContext* trace = nullptr) {
  return t->Call(node, type, req.data(), req.size(), resp, DeadlineIn(timeout), trace);
}

inline std::vector<uint8_t> SleepReq(uint32_t ms, uint32_t tag) {
  std::vector<uint8_t> v(8);
  std::memcpy(v.data(), &ms, 4);
  std::memcpy(v.data() + 4, &tag, 4);
  return v;
}

// ---- checks ----

inline void EchoRoundTrip(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  for (size_t size : {size_t(0), size_t(1), size_t(4096), size_t(1) << 20}) {
    auto req = Pattern(size, uint32_t(size));
    std::vector<uint8_t> resp{9, 9};
    CHECK_OK(CallVec(b->t.get(), 1, kEcho, req, &resp));
    CHECK(resp == req);
  }
  // The server sees the caller's authenticated id and the trace context.
  wire::TraceContext tc;
  for (int i = 0; i < 16; i++) tc.trace_id[i] = uint8_t(0x40 + i);
  std::vector<uint8_t> resp;
  CHECK_OK(CallVec(b->t.get(), 1, kWhoAmI, {}, &resp, 10000ms, &tc));
  CHECK(resp.size() == 20);
  uint32_t who = 0;
  std::memcpy(&who, resp.data(), 4);
  CHECK(who == 2);
  CHECK(std::memcmp(resp.data() + 4, tc.trace_id, 16) == 0);
  CHECK(a->handled.load() == 5);
  auto sa = a->t->Stats(), sb = b->t->Stats();
  CHECK(sb.requests_sent == 5 && sa.requests_served == 5);
  CHECK(sb.bytes_out > (1u << 20) && sa.bytes_in > (1u << 20) && sb.bytes_in > (1u << 20));
  CHECK(sa.handshake_failures == 0 && sa.malformed_frames == 0);
  // Reserved (handshake) types are refused locally.
  CHECK(b->t->Call(1, 1, nullptr, 0, &resp, DeadlineIn(1000ms)).code() == Code::kInvalidArgument);
  b->t->Shutdown();
  a->t->Shutdown();
  CHECK(a->t->Stats().connections_open == 0 && b->t->Stats().connections_open == 0);
}

inline void ConcurrentCalls(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (uint32_t th = 0; th < 8; th++) {
    threads.emplace_back([&, th] {
      for (uint32_t i = 0; i < 200; i++) {
        auto req = Pattern(16 + (i % 64) * 8, th * 1000 + i);
        std::vector<uint8_t> resp;
        Status st = CallVec(b->t.get(), 1, kEcho, req, &resp);
        if (st.ok() && resp == req) ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok.load() == 1600);
  CHECK(a->handled.load() == 1600);
  CHECK(b->t->Stats().requests_sent == 1600);
}

inline void ErrorPropagates(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  std::vector<uint8_t> resp;
  Status st = CallVec(b->t.get(), 1, kFail, {1}, &resp);
  CHECK(st.code() == Code::kAborted);
  CHECK((resp == std::vector<uint8_t>{0xA0, 0xB1, 0xC2}));
  st = CallVec(b->t.get(), 1, kFail, {}, &resp);
  CHECK(st.code() == Code::kFailedPrecondition);
  CHECK(st.message().find("boom") != std::string::npos);
  // Unknown type reaches the handler, which answers UNIMPLEMENTED; the connection stays usable.
  st = CallVec(b->t.get(), 1, 99, {}, &resp);
  CHECK(st.code() == Code::kUnimplemented);
  CHECK_OK(CallVec(b->t.get(), 1, kEcho, {7}, &resp));
  CHECK((resp == std::vector<uint8_t>{7}));
}

inline std::vector<uint8_t> FailReasonReq(Code code, uint16_t reason, bool with_payload, const std::string& message) {
  std::vector<uint8_t> v(4);
  v[0] = static_cast<uint8_t>(code);
  std::memcpy(v.data() + 1, &reason, 2);
  v[3] = with_payload ? 1 : 0;
  v.insert(v.end(), message.begin(), message.end());
  return v;
}

// A handler's reason code (Status::reason) reaches the caller with the code, alone or with a payload; a status
// without one arrives with reason 0 (never a reason left over from an earlier reply on the same connection).
inline void ErrorReasonPropagates(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  std::vector<uint8_t> resp;
  // Reasons using the low byte, the high byte and all 16 bits; codes from both ends of the range.
  const struct {
    Code code;
    uint16_t reason;
  } cases[] = {{Code::kUnavailable, 1},
               {Code::kAborted, 0x00FF},
               {Code::kFailedPrecondition, 0x0100},
               {Code::kCancelled, 0xFFFF},
               {Code::kUnauthenticated, 0xA55A}};
  for (const auto& c : cases) {
    const std::string text = "reason case " + std::to_string(c.reason);
    resp = {9, 9};
    Status st = CallVec(b->t.get(), 1, kFailReason, FailReasonReq(c.code, c.reason, false, text), &resp);
    CHECK(st.code() == c.code);
    CHECK(st.reason() == c.reason);
    CHECK(st.message().find(text) != std::string::npos);  // the transport may add context around it
    // With a payload: the same code and reason, and the payload byte for byte.
    resp.clear();
    st = CallVec(b->t.get(), 1, kFailReason, FailReasonReq(c.code, c.reason, true, text), &resp);
    CHECK(st.code() == c.code);
    CHECK(st.reason() == c.reason);
    CHECK(resp == kReasonPayload);
    // A plain status (no reason) right after, on the same pooled connection: reason 0.
    st = CallVec(b->t.get(), 1, kFail, {}, &resp);
    CHECK(st.code() == Code::kFailedPrecondition && st.reason() == 0);
    CHECK(st.message().find("boom") != std::string::npos);
    st = CallVec(b->t.get(), 1, kFail, {1}, &resp);
    CHECK(st.code() == Code::kAborted && st.reason() == 0);
    CHECK((resp == std::vector<uint8_t>{0xA0, 0xB1, 0xC2}));
    CHECK_OK(CallVec(b->t.get(), 1, kEcho, {7}, &resp));
  }
  // An explicit reason 0 is the same as none.
  Status st = CallVec(b->t.get(), 1, kFailReason, FailReasonReq(Code::kNotFound, 0, false, "no reason"), &resp);
  CHECK(st.code() == Code::kNotFound && st.reason() == 0);
  CHECK(st.message().find("no reason") != std::string::npos);
  CHECK(a->handled.load() == 5 * 5 + 1);
}

inline void DeadlineThenNextCallWorks(Env& env) {
  auto a = env.Start(1);
  auto b = env.Start(2, "conformance-secret", /*max_conns=*/1);
  b->t->SetPeer(1, a->address);
  std::vector<uint8_t> resp;
  Status st = CallVec(b->t.get(), 1, kSleep, SleepReq(600, 1), &resp, 100ms);
  CHECK(st.code() == Code::kDeadlineExceeded);
  CHECK(b->t->Stats().call_timeouts >= 1);
  // The late answer (tag 1) must never surface as the answer to these calls.
  for (uint32_t tag = 2; tag < 6; tag++) {
    auto req = SleepReq(0, tag);
    CHECK_OK(CallVec(b->t.get(), 1, kSleep, req, &resp));
    CHECK(resp == req);
  }
  // After the slow handler finished, the peer still answers correctly.
  CHECK(WaitUntil([&] { return a->handled.load() == 5; }));
  auto req = SleepReq(0, 7);
  CHECK_OK(CallVec(b->t.get(), 1, kSleep, req, &resp));
  CHECK(resp == req);
}

inline void UnknownPeer(Env& env) {
  auto b = env.Start(2);
  std::vector<uint8_t> resp;
  Status st = CallVec(b->t.get(), 42, kEcho, {1}, &resp);
  CHECK(st.code() == Code::kUnavailable);
  CHECK(st.message().find("42") != std::string::npos);
  b->t->SetPeer(42, "127.0.0.1:1");
  b->t->RemovePeer(42);
  CHECK(CallVec(b->t.get(), 42, kEcho, {1}, &resp).code() == Code::kUnavailable);
}

inline void PeerShutDown(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  std::vector<uint8_t> resp;
  CHECK_OK(CallVec(b->t.get(), 1, kEcho, {1, 2}, &resp));  // leaves a pooled connection behind
  a->t->Shutdown();
  for (int i = 0; i < 3; i++) {
    Status st = CallVec(b->t.get(), 1, kEcho, {1}, &resp, 10000ms);
    CHECK(st.code() == Code::kUnavailable);
    CHECK(st.message().find("peer 1") != std::string::npos);
  }
}

inline void WrongSecretRefused(Env& env) {
  auto a = env.Start(1, "right-secret"), b = env.Start(2, "wrong-secret");
  b->t->SetPeer(1, a->address);
  std::vector<uint8_t> resp;
  Status st = CallVec(b->t.get(), 1, kEcho, {1}, &resp);
  CHECK(st.code() == Code::kUnauthenticated);
  CHECK(WaitUntil([&] { return a->t->Stats().handshake_failures >= 1; }));
  CHECK(b->t->Stats().handshake_failures >= 1);
  CHECK(a->handled.load() == 0);
  CHECK(WaitUntil([&] { return a->LogContains(env.refusal_log); }));
  // The server keeps serving peers that know the secret.
  auto c = env.Start(3, "right-secret");
  c->t->SetPeer(1, a->address);
  CHECK_OK(CallVec(c->t.get(), 1, kEcho, {5}, &resp));
  CHECK(a->handled.load() == 1);
}

inline void MutualCalls(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  a->t->SetPeer(2, b->address);
  b->t->SetPeer(1, a->address);
  std::atomic<int> ok{0};
  auto run = [&](Transport* t, uint32_t peer, uint32_t seed) {
    for (uint32_t i = 0; i < 100; i++) {
      auto req = Pattern(64 + i, seed + i);
      std::vector<uint8_t> resp;
      if (CallVec(t, peer, kEcho, req, &resp).ok() && resp == req) ok.fetch_add(1);
    }
  };
  std::vector<std::thread> ts;
  for (int k = 0; k < 2; k++) {
    ts.emplace_back(run, a->t.get(), 2, 1000 * k);
    ts.emplace_back(run, b->t.get(), 1, 5000 + 1000 * k);
  }
  for (auto& t : ts) t.join();
  CHECK(ok.load() == 400);
  CHECK(a->handled.load() == 200 && b->handled.load() == 200);
}

// Handlers that call back along a cycle (a -> b -> a -> b, as owners logging prepares on each other do) while every
// connection of the outer calls is taken: the nested calls have pools of their own, so nothing waits for a
// connection held by a call that waits for it. With one connection per peer and one shared pool this deadlocks.
inline void NestedCallsNeverWaitForTheirCallers(Env& env) {
  auto a = env.Start(1, "conformance-secret", 1), b = env.Start(2, "conformance-secret", 1);
  a->t->SetPeer(2, b->address);
  b->t->SetPeer(1, a->address);
  auto path = [](std::vector<uint32_t> ids) {
    std::vector<uint8_t> v(ids.size() * 4);
    std::memcpy(v.data(), ids.data(), v.size());
    return v;
  };
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int k = 0; k < 3; k++) {
    ts.emplace_back([&] {
      std::vector<uint8_t> resp;
      for (int i = 0; i < 20; i++)
        if (CallVec(a->t.get(), 2, kRelay, path({1, 2, 1}), &resp, 5000ms).ok() &&
            resp == std::vector<uint8_t>{0, 1, 2, 3})
          ok.fetch_add(1);
    });
    ts.emplace_back([&] {
      std::vector<uint8_t> resp;
      for (int i = 0; i < 20; i++)
        if (CallVec(b->t.get(), 1, kRelay, path({2, 1}), &resp, 5000ms).ok() && resp == std::vector<uint8_t>{0, 1, 2})
          ok.fetch_add(1);
    });
  }
  for (auto& t : ts) t.join();
  CHECK(ok.load() == 120);
  // Depth stops growing at the wire's maximum: a longer chain still works, its deepest calls share one pool.
  std::vector<uint8_t> resp;
  CHECK_OK(CallVec(a->t.get(), 2, kRelay, path({1, 2, 1, 2}), &resp, 5000ms));
  CHECK(resp == (std::vector<uint8_t>{0, 1, 2, 3, 3}));
}

inline void ShutdownWithCallsInFlight(Env& env) {
  auto a = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a->address);
  std::vector<Status> results(4);
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++) {
    ts.emplace_back([&, i] {
      std::vector<uint8_t> resp;
      results[i] = CallVec(b->t.get(), 1, kBlock, {uint8_t(i)}, &resp, 20000ms);
    });
  }
  CHECK(WaitUntil([&] { return a->blocked.load() == 4; }));
  // The handler is still blocked: the calls can only end because of Shutdown, not because they were answered.
  b->t->Shutdown();
  for (auto& t : ts) t.join();
  for (auto& st : results) CHECK(st.code() == Code::kUnavailable);
  std::vector<uint8_t> resp;
  CHECK(CallVec(b->t.get(), 1, kEcho, {1}, &resp).code() == Code::kUnavailable);
  b->t->Shutdown();  // idempotent
  a->OpenGate();
  a->t->Shutdown();
  a->t->Shutdown();
}

inline void SetPeerChangeDropsPool(Env& env) {
  auto a1 = env.Start(1), a2 = env.Start(1), b = env.Start(2);
  b->t->SetPeer(1, a1->address);
  std::vector<uint8_t> resp;
  CHECK_OK(CallVec(b->t.get(), 1, kEcho, {1}, &resp));
  CHECK(a1->handled.load() == 1 && a2->handled.load() == 0);
  b->t->SetPeer(1, a1->address);  // same address: pool kept
  b->t->SetPeer(1, a2->address);
  CHECK_OK(CallVec(b->t.get(), 1, kEcho, {2}, &resp));
  CHECK(a1->handled.load() == 1 && a2->handled.load() == 1);
}

inline void NoFdLeak(Env& env) {
  int before = CountOpenFds();
  {
    auto a = env.Start(1), b = env.Start(2), bad = env.Start(3, "other-secret");
    b->t->SetPeer(1, a->address);
    bad->t->SetPeer(1, a->address);
    std::vector<uint8_t> resp;
    for (int i = 0; i < 20; i++) CHECK_OK(CallVec(b->t.get(), 1, kEcho, Pattern(100, i), &resp));
    CHECK(CallVec(b->t.get(), 1, kSleep, SleepReq(300, 1), &resp, 50ms).code() == Code::kDeadlineExceeded);
    CHECK(CallVec(bad->t.get(), 1, kEcho, {1}, &resp).code() == Code::kUnauthenticated);
    b->t->SetPeer(7, "127.0.0.1:1");
    (void)CallVec(b->t.get(), 7, kEcho, {1}, &resp, 2000ms);
    b->t->Shutdown();
    bad->t->Shutdown();
    a->t->Shutdown();
  }
  CHECK(CountOpenFds() == before);
}

}  // namespace conformance

// Registers every check as a test case named "<prefix>_<check>".
inline bool RegisterTransportConformance(const char* prefix, TransportFactory factory,
                                         const std::string& host = "127.0.0.1",
                                         const std::string& refusal_log = "bad cluster secret") {
  static std::deque<std::string> names;  // Case keeps a const char*; deque never moves its elements
  auto env = std::make_shared<conformance::Env>();
  env->factory = std::move(factory);
  env->host = host;
  env->refusal_log = refusal_log;
  auto add = [&](const char* check, void (*fn)(conformance::Env&)) {
    names.push_back(std::string(prefix) + "_" + check);
    Registry().push_back({names.back().c_str(), [env, fn] { fn(*env); }});
  };
  add("echo_round_trip_0B_1B_4KiB_1MiB", conformance::EchoRoundTrip);
  add("concurrent_calls_8x200_get_own_answers", conformance::ConcurrentCalls);
  add("handler_error_propagates_code_and_payload", conformance::ErrorPropagates);
  add("handler_reason_code_propagates_alone_and_with_payload_plain_status_has_reason_0",
      conformance::ErrorReasonPropagates);
  add("deadline_exceeded_then_next_call_gets_own_answer", conformance::DeadlineThenNextCallWorks);
  add("unknown_peer_is_unavailable", conformance::UnknownPeer);
  add("shut_down_peer_is_unavailable", conformance::PeerShutDown);
  add("wrong_secret_is_unauthenticated_and_handler_never_runs", conformance::WrongSecretRefused);
  add("two_transports_call_each_other", conformance::MutualCalls);
  add("nested_calls_from_handlers_never_wait_for_their_callers", conformance::NestedCallsNeverWaitForTheirCallers);
  add("shutdown_with_calls_in_flight_returns", conformance::ShutdownWithCallsInFlight);
  add("set_peer_new_address_drops_pool", conformance::SetPeerChangeDropsPool);
  add("no_fd_leak", conformance::NoFdLeak);
  return true;
}

}  // namespace hotpot_test
