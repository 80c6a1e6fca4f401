// A simulated network and clock for deterministic engine tests (native/test/sim_test.cc; docs/design/engine.md
// "Deterministic simulation").
//
// SimWorld is one simulated cluster's network and time. Every engine gets a SimTransport from it (EngineDeps) and
// the world's SimClock as its time source. Delivery is synchronous: Call runs the receiving engine's handler on the
// calling thread, so a test that drives the engines from one thread (with the resolver in manual mode) runs the
// whole cluster on that thread, and a run is a function of its seed. Faults, chosen by the world's seeded random
// source per message:
//   - a partition between two chosen nodes: their calls wait for the deadline and fail (DEADLINE_EXCEEDED);
//   - a dropped request (the handler never runs) or a dropped reply (it ran): DEADLINE_EXCEEDED at the deadline;
//   - a delay (virtual time passes before delivery; past the deadline it becomes a drop);
//   - a duplicate (the handler runs twice; the first reply is returned);
//   - a crash of the receiver just before or just after it handles the message;
//   - an interleaving: before delivering, the world runs the test's `interleave` hook (another app's operation, on
//     any node), so operations overlap the way concurrent threads would make them.
// A crashed node answers nothing and its own calls fail at once (UNAVAILABLE); its code that is still on the stack
// runs to its end (as a node that was cut off and then died), and the test restarts it on its own pool directory.
//
// Handlers of another node run nested inside a caller's Call: a component that held its lock while calling a peer
// would deadlock here, so the simulation also checks the engine's rule "no lock held across a peer call".
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/deps.h"
#include "transport/transport.h"

namespace hotpot {
namespace sim {

// Virtual time shared by every engine of a world: it moves only when someone sleeps (backoff, delays, timeouts) or
// the test advances it. It starts at the real clocks so deadlines computed from either stay in range.
class SimClock : public engine::TimeSource {
 public:
  SimClock()
      : mono0_(std::chrono::steady_clock::now()),
        unix0_ms_(uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count())) {}
  engine::TimePoint Now() override { return mono0_ + elapsed_; }
  uint64_t UnixMs() override {
    return unix0_ms_ + uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed_).count());
  }
  void SleepFor(std::chrono::nanoseconds d) override {
    if (d.count() > 0) elapsed_ += d;
  }
  void Advance(std::chrono::nanoseconds d) { SleepFor(d); }
  void AdvanceTo(engine::TimePoint t) {
    if (t > Now()) elapsed_ += t - Now();
  }
  double ElapsedMs() const { return std::chrono::duration<double, std::milli>(elapsed_).count(); }

 private:
  engine::TimePoint mono0_;
  uint64_t unix0_ms_;
  std::chrono::nanoseconds elapsed_{0};
};

// Per-message fault probabilities (0..1), checked in this order.
struct FaultRates {
  double crash_before = 0;  // the receiver crashes before handling
  double drop_request = 0;
  double delay = 0;  // then a uniform delay of up to max_delay
  std::chrono::milliseconds max_delay{0};
  double duplicate = 0;
  double crash_after = 0;  // the receiver handled it, then crashed (the reply is lost)
  double drop_reply = 0;
  double interleave = 0;  // run SimWorld::interleave before delivering
};

struct SimStats {
  uint64_t delivered = 0, refused = 0, partitioned = 0, dropped_requests = 0, dropped_replies = 0, delayed = 0,
           duplicated = 0, crashes = 0, late = 0, interleaved = 0;
};

class SimTransport;

class SimWorld {
 public:
  explicit SimWorld(uint64_t seed) : rng_(seed) {}

  SimClock& clock() { return *clock_; }
  std::shared_ptr<engine::TimeSource> time() { return clock_; }
  std::mt19937_64& rng() { return rng_; }
  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool Chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  std::unique_ptr<transport::Transport> NewTransport();

  FaultRates rates;
  bool trace_messages = false;  // every delivered message in the trail (SIM_TRACE=1)
  std::function<void()> interleave;  // another operation, run in the middle of this one (FaultRates::interleave)
  const SimStats& stats() const { return stats_; }

  void Partition(uint32_t a, uint32_t b) { cut_.insert(Pair(a, b)); }
  void HealAll() { cut_.clear(); }
  bool Partitioned(uint32_t a, uint32_t b) const { return cut_.count(Pair(a, b)) != 0; }
  size_t partitions() const { return cut_.size(); }
  // The node stops answering and its own calls fail; until Revive (the test restarts its engine first).
  void Crash(uint32_t node) {
    if (crashed_.insert(node).second) {
      stats_.crashes++;
      Note("crash node " + std::to_string(node));
    }
  }
  void Revive(uint32_t node) { crashed_.erase(node); }
  bool Crashed(uint32_t node) const { return crashed_.count(node) != 0; }
  const std::set<uint32_t>& crashed() const { return crashed_; }

  // The last events (faults, crashes, the test's own notes), printed when a run fails.
  void Note(const std::string& line) {
    char at[32];
    std::snprintf(at, sizeof at, "%10.3f ms  ", clock_->ElapsedMs());
    trail_.push_back(at + line);
    // SIM_GREP=<text>: every note containing it is printed as it happens (how often a path runs, across seeds).
    static const char* grep = std::getenv("SIM_GREP");
    if (grep != nullptr && *grep != 0 && line.find(grep) != std::string::npos) std::fprintf(stderr, "  %s%s\n", at, line.c_str());
    if (trail_.size() > (std::getenv("SIM_TRAIL") ? std::strtoul(std::getenv("SIM_TRAIL"), nullptr, 10) : 400)) trail_.pop_front();
  }
  void PrintTrail(FILE* f) const {
    for (const std::string& l : trail_) std::fprintf(f, "  %s\n", l.c_str());
  }

  // SimTransport's Call.
  Status Deliver(uint32_t from, uint64_t epoch, uint32_t to, uint16_t type, const uint8_t* data, size_t len,
                 std::vector<uint8_t>* response, transport::Deadline deadline);

 private:
  friend class SimTransport;
  static std::pair<uint32_t, uint32_t> Pair(uint32_t a, uint32_t b) { return {std::min(a, b), std::max(a, b)}; }
  SimTransport* Find(uint32_t node) const;
  Status TimedOut(const std::string& what, transport::Deadline deadline) {
    clock_->AdvanceTo(deadline);
    return Status(Code::kDeadlineExceeded, "sim: " + what);
  }

  std::shared_ptr<SimClock> clock_ = std::make_shared<SimClock>();
  std::mt19937_64 rng_;
  std::set<std::pair<uint32_t, uint32_t>> cut_;
  std::set<uint32_t> crashed_;
  std::set<SimTransport*> endpoints_;
  std::deque<std::string> trail_;
  SimStats stats_;
};

class SimTransport : public transport::Transport {
 public:
  explicit SimTransport(SimWorld* world) : world_(world) {}
  ~SimTransport() override { Shutdown(); }

  void SetHandler(transport::Handler handler) override { handler_ = std::move(handler); }
  void SetNodeId(uint32_t node_id) override { node_id_ = node_id; }
  void SetEpoch(uint64_t epoch) override { epoch_ = std::max(epoch_, epoch); }
  Status Listen(const std::string&, uint16_t, uint16_t* bound_port) override {
    world_->endpoints_.insert(this);
    listening_ = true;
    *bound_port = uint16_t(20000 + world_->endpoints_.size());
    return Status::Ok();
  }
  // Nodes are reached by id in the world; addresses are not used.
  void SetPeer(uint32_t, const std::string&, const std::string&) override {}
  void RemovePeer(uint32_t) override {}
  Status Call(uint32_t node_id, uint16_t type, const uint8_t* data, size_t len, std::vector<uint8_t>* response,
              transport::Deadline deadline, const wire::TraceContext* = nullptr) override {
    requests_sent_++;
    return world_->Deliver(node_id_, epoch_, node_id, type, data, len, response, deadline);
  }
  transport::TransportStats Stats() const override {
    transport::TransportStats s;
    s.requests_sent = requests_sent_;
    s.requests_served = requests_served_;
    return s;
  }
  void Shutdown() override {
    listening_ = false;
    world_->endpoints_.erase(this);
  }

  uint32_t node_id() const { return node_id_; }
  void Handle(const transport::Request& req, transport::Reply* reply) {
    requests_served_++;
    handler_(req, reply);
  }

 private:
  SimWorld* world_;
  transport::Handler handler_;
  uint32_t node_id_ = 0;
  uint64_t epoch_ = 0;
  bool listening_ = false;
  uint64_t requests_sent_ = 0, requests_served_ = 0;
};

inline std::unique_ptr<transport::Transport> SimWorld::NewTransport() { return std::make_unique<SimTransport>(this); }

inline SimTransport* SimWorld::Find(uint32_t node) const {
  for (SimTransport* t : endpoints_)
    if (t->node_id() == node) return t;
  return nullptr;
}

inline Status SimWorld::Deliver(uint32_t from, uint64_t epoch, uint32_t to, uint16_t type, const uint8_t* data, size_t len,
                                std::vector<uint8_t>* response, transport::Deadline deadline) {
  const std::string what = "type " + std::to_string(type) + " " + std::to_string(from) + "->" + std::to_string(to);
  response->clear();
  if (Crashed(from))
    return Status(Code::kUnavailable, transport::kReasonNotSent, "sim: node " + std::to_string(from) + " has crashed");
  SimTransport* target = Find(to);
  if (target == nullptr || Crashed(to)) {
    stats_.refused++;
    clock_->Advance(std::chrono::microseconds(100));
    // As a TCP connect refused: nothing of the request left (transport::kReasonNotSent).
    return Status(Code::kUnavailable, transport::kReasonNotSent,
                  "sim: connection refused by node " + std::to_string(to));
  }
  if (Partitioned(from, to)) {
    stats_.partitioned++;
    return TimedOut("partitioned: " + what, deadline);
  }
  if (Chance(rates.crash_before)) {
    Note("crash before handling " + what);
    Crash(to);
    return Status(Code::kUnavailable, "sim: node " + std::to_string(to) + " crashed");
  }
  if (Chance(rates.drop_request)) {
    stats_.dropped_requests++;
    Note("drop request " + what);
    return TimedOut("request dropped: " + what, deadline);
  }
  if (Chance(rates.delay) && rates.max_delay.count() > 0) {
    stats_.delayed++;
    clock_->Advance(std::chrono::microseconds(Uniform(uint64_t(rates.max_delay.count()) * 1000 + 1)));
  }
  if (interleave && Chance(rates.interleave)) {
    stats_.interleaved++;
    interleave();
    if (Crashed(from)) return Status(Code::kUnavailable, "sim: node " + std::to_string(from) + " has crashed");
    target = Find(to);
    if (target == nullptr || Crashed(to)) return Status(Code::kUnavailable, "sim: node " + std::to_string(to) + " crashed");
  }
  clock_->Advance(std::chrono::microseconds(20));  // one hop
  if (clock_->Now() > deadline) {
    stats_.late++;
    return TimedOut("late: " + what, deadline);
  }
  transport::Request req;
  req.type = type;
  const std::vector<uint8_t> body(data, data + len);  // the receiver gets its own copy, as from a socket
  req.data = body.data();
  req.len = body.size();
  req.peer_node_id = from;
  req.peer_epoch = epoch;
  transport::Reply reply;
  target->Handle(req, &reply);
  stats_.delivered++;
  if (Crashed(to) || Find(to) != target)  // it crashed while handling (a nested fault)
    return Status(Code::kUnavailable, "sim: node " + std::to_string(to) + " crashed while handling " + what);
  if (Chance(rates.duplicate)) {
    stats_.duplicated++;
    Note("duplicate " + what);
    transport::Reply again;
    target->Handle(req, &again);
    if (Crashed(to)) return Status(Code::kUnavailable, "sim: node " + std::to_string(to) + " crashed");
  }
  if (Crashed(from)) return Status(Code::kUnavailable, "sim: node " + std::to_string(from) + " has crashed");
  if (Chance(rates.crash_after)) {
    Note("crash after handling " + what);
    Crash(to);
    return Status(Code::kUnavailable, "sim: node " + std::to_string(to) + " crashed");
  }
  if (Chance(rates.drop_reply)) {
    stats_.dropped_replies++;
    Note("drop reply " + what);
    return TimedOut("reply dropped: " + what, deadline);
  }
  clock_->Advance(std::chrono::microseconds(20));
  if (clock_->Now() > deadline) {
    stats_.late++;
    return TimedOut("reply late: " + what, deadline);
  }
  if (trace_messages) Note("deliver " + what + ": " + (reply.status.ok() ? "ok" : reply.status.ToString()));
  *response = std::move(reply.payload);
  return reply.status;
}

}  // namespace sim
}  // namespace hotpot
