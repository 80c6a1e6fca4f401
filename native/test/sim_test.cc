// Deterministic simulation of a cluster (docs/design/engine.md "Deterministic simulation"): 3-5 engines in this
// process on a simulated network and clock (sim.h), driven from one thread by a seeded random schedule of fetches,
// one-owner and multi-owner commits, snapshot reads, resolver rounds and faults (dropped, delayed and duplicated
// messages, partitions between node pairs, crashes and restarts on the node's own pool). After the faults heal it
// checks, against its own record of what was acknowledged (it trusts nothing the engines say about themselves):
//   - no acknowledged commit is lost, no aborted one applied: each counter lies in [acknowledged, acknowledged +
//     in doubt];
//   - no snapshot read ever shows part of a multi-owner commit (the counters of one group always move together);
//   - no page stays locked;
//   - every acknowledged commit has at least N holders;
//   - after a refresh every node shows the owners' state.
// A failing run prints its seed and the last events; SIM_SEED=<seed> runs that seed alone, the same way.
//   SIM_SEEDS=<count> (default 100)  SIM_FIRST_SEED=<seed> (default 1)  SIM_OPS=<operations per seed> (default 250)
//   SIM_INTERLEAVE=<probability per message> overrides the seed's interleaving rate;
//   SIM_VERBOSE=1 prints one line per operation; SIM_TRACE=1 puts every delivered message in the printed trail;
//   SIM_RESTARTS_HEAVY=1 makes a quarter of the faults planned restarts (handoffs, leave, restart).
//   SIM_WATCH=<node>:<page> notes every change of that copy; SIM_TRAIL=<events> keeps more of the trail (400);
//   SIM_GREP=<text> prints every note (engine log lines included) containing the text as it happens.
// scripts/sim.sh runs many seeds.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "sim.h"
#include "test_util.h"

using namespace hotpot;
using namespace hotpot::engine;

namespace {

constexpr uint64_t kDs = 7;
constexpr uint32_t kSlotsPerPage = 4;  // u64 counters at offsets 0, 8, 16, 24 of every page
constexpr auto kTimeout = std::chrono::milliseconds(1000);

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// The seed being run, for the abort handler (a CHECK inside the engine or the harness aborts).
uint64_t g_seed = 0;
sim::SimWorld* g_world = nullptr;

void OnAbort(int) {
  if (g_world != nullptr) {
    std::fprintf(stderr, "sim: last events of the failing run:\n");
    g_world->PrintTrail(stderr);
  }
  std::fprintf(stderr, "sim: FAILED with seed %llu (rerun: SIM_SEED=%llu native/test/out/rel/sim_test)\n",
               (unsigned long long)g_seed, (unsigned long long)g_seed);
  signal(SIGABRT, SIG_DFL);
}

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "sim: invariant violated: %s\n", what.c_str());
  std::abort();
}

struct Slot {
  uint64_t page;
  uint32_t offset;
};

// Counters that every commit touching them increments together: a group spread over several owners is a
// multi-owner commit, and a snapshot read must show its counters equal.
struct Group {
  std::vector<Slot> slots;
  uint64_t acked = 0;     // commits acknowledged to the app
  uint64_t in_doubt = 0;  // commits that failed in a way that may have applied
  uint64_t aborted = 0;   // ABORTED: nothing applied
  uint64_t running = 0;   // commits in progress (an interleaved snapshot may already see them)
};

uint64_t U64At(const uint8_t* page, uint32_t off) {
  uint64_t v;
  std::memcpy(&v, page + off, 8);
  return v;
}

class Simulation {
 public:
  Simulation(uint64_t seed, bool restarts_heavy)
      : seed_(seed), world_(seed), restarts_heavy_(restarts_heavy || EnvU64("SIM_RESTARTS_HEAVY", 0) != 0) {
    g_world = &world_;
    world_.trace_messages = EnvU64("SIM_TRACE", 0) != 0;
    n_ = 3 + int(world_.Uniform(3));
    replicas_ = (n_ >= 4 && world_.Chance(0.5)) ? 3 : 2;
    pages_ = uint64_t(2 * n_);
    // Fault mix of this seed.
    world_.rates.drop_request = 0.01 * double(world_.Uniform(3));
    world_.rates.drop_reply = 0.01 * double(world_.Uniform(3));
    world_.rates.delay = 0.05;
    world_.rates.max_delay = std::chrono::milliseconds(world_.Uniform(400));
    world_.rates.duplicate = 0.01 * double(world_.Uniform(3));
    world_.rates.crash_before = 0.002 * double(world_.Uniform(2));
    world_.rates.crash_after = 0.002 * double(world_.Uniform(2));
    // From a second stream, so that a seed without interleaving runs as it did before interleaving existed.
    std::mt19937_64 side(seed * 0x9E3779B97F4A7C15ull + 1);
    world_.rates.interleave = 0.02 * double(side() % 4);
    if (const char* v = std::getenv("SIM_INTERLEAVE"); v && *v) world_.rates.interleave = std::atof(v);
    // Another app's operation in the middle of a message (not nested further): a second session on each node.
    world_.interleave = [this] {
      if (nested_) return;
      nested_ = true;
      const uint64_t roll = world_.Uniform(10);
      if (roll < 6) Commit(1);
      else if (roll < 9) Snapshot(1);
      else Fetch();
      nested_ = false;
    };
    MakeGroups();
    for (uint64_t p = 0; p < pages_; p++) owner_.push_back(uint32_t(p % uint64_t(n_)) + 1);
    era_.assign(pages_, 0);
    recovering_.assign(pages_, false);
    engines_.resize(size_t(n_));
    sessions_.assign(2 * size_t(n_), 0);
    declared_dead_.assign(size_t(n_), false);
    for (int i = 0; i < n_; i++) RemoveTree(Dir(i));
    for (int i = 0; i < n_; i++) StartEngine(i);
    Publish();
    for (int i = 0; i < n_; i++) CHECK_OK(engines_[size_t(i)]->OpenDataset(Info()));
    for (int i = 0; i < n_; i++) OpenSessionOn(i);
  }

  ~Simulation() {
    for (auto& e : engines_)
      if (e) e->Shutdown();
    engines_.clear();
    for (int i = 0; i < n_; i++) RemoveTree(Dir(i));
    g_world = nullptr;
  }

  // Returns the run's summary line (a function of the seed alone).
  std::string Run(uint64_t ops) {
    world_.Note("nodes " + std::to_string(n_) + ", N " + std::to_string(replicas_) + ", pages " +
                std::to_string(pages_) + ", groups " + std::to_string(groups_.size()));
    for (uint64_t op = 0; op < ops; op++) Step();
    Heal();
    CheckFinal();
    char line[512];
    std::snprintf(line, sizeof line,
                 "sim: seed %llu ok: %d nodes, N=%u, %llu ops, %llu acked (%llu under-replicated) / %llu in doubt / "
                 "%llu aborted commits, "
                 "%llu snapshots (%llu refused), %llu crashes, %llu handoffs (%llu moved), %llu msgs (%llu dropped, %llu dup, %llu interleaved), %.0f ms "
                 "simulated",
                 (unsigned long long)seed_, n_, replicas_, (unsigned long long)ops, (unsigned long long)Sum(&Group::acked),
                 (unsigned long long)under_replicated_, (unsigned long long)Sum(&Group::in_doubt), (unsigned long long)Sum(&Group::aborted),
                 (unsigned long long)snapshots_, (unsigned long long)snapshots_refused_,
                 (unsigned long long)world_.stats().crashes, (unsigned long long)handoffs_,
                 (unsigned long long)handoffs_moved_, (unsigned long long)world_.stats().delivered,
                 (unsigned long long)(world_.stats().dropped_requests + world_.stats().dropped_replies +
                                      world_.stats().partitioned),
                 (unsigned long long)world_.stats().duplicated, (unsigned long long)world_.stats().interleaved,
                 world_.clock().ElapsedMs());
    std::fprintf(stderr, "%s\n", line);
    return line;
  }

 private:
  // ---- cluster

  std::string Dir(int i) const {
    return "/dev/shm/hotpot-sim-" + std::to_string(getpid()) + "-" + std::to_string(i);
  }
  static void RemoveTree(const std::string& dir) {
    const std::string cmd = "rm -rf '" + dir + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir.c_str());
  }
  uint32_t Id(int i) const { return uint32_t(i + 1); }
  // The chunk map (one page per chunk): the initial owner of page p is node p % n + 1; failover gives a dead owner's
  // pages to a live node (the dispatcher's FailOver below).
  uint32_t OwnerOf(uint64_t page) const {
    return page < owner_.size() ? owner_[page] : uint32_t(page % uint64_t(n_)) + 1;
  }

  DatasetInfo Info() const {
    DatasetInfo d;
    d.id = kDs;
    d.name = "sim";
    d.size_bytes = pages_ * kPageSize;
    d.replicas = replicas_;
    d.chunk_size_bytes = uint32_t(kPageSize);  // one page per chunk: neighbouring pages have different owners
    d.generation = generation_;
    for (uint64_t p = 0; p < pages_; p++) {
      ChunkInfo c{uint32_t(p), OwnerOf(p), {}, true};
      c.owner_recovering = p < recovering_.size() && recovering_[p];
      c.era = p < era_.size() ? era_[p] : 0;
      d.chunks.push_back(c);
    }
    return d;
  }

  void StartEngine(int i) {
    EngineOptions o;
    o.pool_dir = Dir(i) + "/pool";
    o.data_dir = Dir(i) + "/data";
    o.durability = pool::Durability::kDisk;
    o.cluster_secret = "sim-secret";
    o.request_timeout = kTimeout;
    o.chunk_size_bytes = uint32_t(kPageSize);
    o.log = [this, i](const std::string& line) { world_.Note("  [node " + std::to_string(Id(i)) + "] " + line); };
    EngineDeps deps;
    deps.transport = world_.NewTransport();
    deps.time = world_.time();
    deps.manual_resolver = true;
    // The control plane: every open is answered at once with the one dataset.
    OpenRequestFn on_open = [this, i](uint64_t rid, const std::string&, const CreateOptions*, const PeerCred&) {
      engines_[size_t(i)]->CompleteOpen(rid, Status::Ok(), kDs);
    };
    std::unique_ptr<Engine> e;
    CHECK_OK(Engine::StartWith(o, on_open, std::move(deps), &e));
    e->SetNodeId(Id(i));
    engines_[size_t(i)] = std::move(e);
  }

  // The dispatcher's membership: a node is alive unless it crashed and the dispatcher has noticed.
  void Publish() {
    epoch_++;
    std::vector<Member> ms;
    state_epoch_.resize(size_t(n_), 0);
    published_alive_.resize(size_t(n_), true);
    for (int i = 0; i < n_; i++) {
      const bool alive = !declared_dead_[size_t(i)];
      if (alive != published_alive_[size_t(i)]) state_epoch_[size_t(i)] = epoch_;  // the state changed at this epoch
      published_alive_[size_t(i)] = alive;
      ms.push_back(Member{Id(i), "sim:" + std::to_string(Id(i)), alive, state_epoch_[size_t(i)]});
    }
    for (int i = 0; i < n_; i++)
      if (Up(i)) engines_[size_t(i)]->SetMembers(epoch_, ms);
  }

  bool Up(int i) const { return engines_[size_t(i)] != nullptr && !world_.Crashed(Id(i)); }

  // As an app opening the dataset: waits (running the resolver) until the node's cached copies are checked.
  void OpenSessionOn(int i) {
    OpenResult r;
    Status st = engines_[size_t(i)]->Open("sim", nullptr, PeerCred{}, &r);
    if (!st.ok()) {
      world_.Note("node " + std::to_string(Id(i)) + ": open: " + st.ToString());
      sessions_[Session(i, 0)] = sessions_[Session(i, 1)] = 0;
      return;
    }
    sessions_[Session(i, 0)] = engines_[size_t(i)]->OpenSession(kDs, PeerCred{});
    sessions_[Session(i, 1)] = engines_[size_t(i)]->OpenSession(kDs, PeerCred{});
  }

  void Restart(int i) {
    world_.Note("restart node " + std::to_string(Id(i)));
    if (engines_[size_t(i)]) engines_[size_t(i)]->Shutdown();
    engines_[size_t(i)].reset();
    world_.Revive(Id(i));
    StartEngine(i);
    declared_dead_[size_t(i)] = false;
    Publish();
    // The dispatcher raises the era of the chunks a rejoining node owns: the versions it gave parts before it
    // restarted (aborted ones included) are never given again.
    for (uint64_t p = 0; p < pages_; p++)
      if (owner_[p] == Id(i)) era_[p]++;
    // A restarted node learns the members first, then the dataset (as from the dispatcher); every node the new map.
    PublishMap();
    OpenSessionOn(i);
    FailOver();  // one fewer member down: a failover that had to wait may go ahead
  }

  // ---- the workload

  void MakeGroups() {
    std::vector<Slot> all;
    for (uint64_t p = 0; p < pages_; p++)
      for (uint32_t s = 0; s < kSlotsPerPage; s++) all.push_back(Slot{p, s * 8});
    std::shuffle(all.begin(), all.end(), world_.rng());
    size_t at = 0;
    while (at < all.size()) {
      const size_t size = std::min<size_t>(all.size() - at, 1 + world_.Uniform(3));
      Group g;
      g.slots.assign(all.begin() + long(at), all.begin() + long(at + size));
      at += size;
      groups_.push_back(g);
    }
  }

  uint64_t Sum(uint64_t Group::*field) const {
    uint64_t s = 0;
    for (const Group& g : groups_) s += g.*field;
    return s;
  }

  int RandomUpNode() {
    std::vector<int> up;
    for (int i = 0; i < n_; i++)
      if (Up(i)) up.push_back(i);
    return up.empty() ? -1 : up[world_.Uniform(up.size())];
  }

  void Step() {
    Watch();
    const uint64_t roll = world_.Uniform(100);
    world_.clock().Advance(std::chrono::milliseconds(world_.Uniform(20)));
    if (roll < 50) return Commit();
    if (roll < 65) return Snapshot();
    if (roll < 70) return Fetch();
    if (roll < 80) return ResolverRound();
    if (roll < 84) return world_.clock().Advance(std::chrono::milliseconds(world_.Uniform(1500)));
    return Fault();
  }

  // SIM_WATCH=<node>:<page>: a note whenever that node's copy of the page changes version or state (debugging).
  void Watch() {
    static const std::string spec = std::getenv("SIM_WATCH") ? std::getenv("SIM_WATCH") : "";
    if (spec.empty()) return;
    const int i = std::atoi(spec.c_str()) - 1;
    const uint64_t page = std::strtoull(spec.c_str() + spec.find(':') + 1, nullptr, 10);
    PageDump d;
    if (i < 0 || i >= n_ || !Up(i) || !engines_[size_t(i)]->DumpPage(kDs, page, &d).ok()) return;
    const std::string now = "v" + std::to_string(d.version) + " state " + std::to_string(int(d.state));
    if (now != watched_) world_.Note("watch node " + std::to_string(i + 1) + " page " + std::to_string(page) + ": " + now);
    watched_ = now;
  }
  std::string watched_;

  // Increment every counter of one group from the session's view, as an app would: read, add one, commit.
  void Commit(int app = 0) {
    const int i = RandomUpNode();
    if (i < 0 || sessions_[Session(i, app)] == 0) return;
    Engine& e = *engines_[size_t(i)];
    const uint64_t s = sessions_[Session(i, app)];
    const size_t gi = world_.Uniform(groups_.size());
    Group& g = groups_[gi];
    e.ResyncSession(s);
    std::map<uint64_t, DirtyPage> dirty;
    for (const Slot& sl : g.slots) {
      if (dirty.count(sl.page) == 0) {
        Status st = e.EnsurePages(kDs, sl.page, 1);
        if (!st.ok() || world_.Crashed(Id(i))) return Note(i, "commit: page " + std::to_string(sl.page), st);
        DirtyPage dp;
        dp.page = sl.page;
        dp.data.resize(kPageSize);
        st = e.BaseImage(s, sl.page, dp.data.data());
        if (!st.ok()) return Note(i, "commit: base image", st);
        dirty.emplace(sl.page, std::move(dp));
      }
      uint8_t* at = dirty[sl.page].data.data() + sl.offset;
      const uint64_t v = U64At(at, 0) + 1;
      std::memcpy(at, &v, 8);
    }
    std::vector<DirtyPage> pages;
    for (auto& kv : dirty) pages.push_back(std::move(kv.second));
    CommitResult res;
    g.running++;
    const Status st = e.Commit(s, pages, replicas_, &res);
    g.running--;
    const bool crashed = world_.Crashed(Id(i));
    if (st.ok() && !crashed) {
      g.acked++;
      // Fewer than N copies is acknowledged only as a typed outcome (applied, under-replicated), which re-replication
      // must repair: the final check wants N holders of every acknowledged commit after healing.
      if (res.copies < replicas_ && !res.under_replicated)
        Fail("commit of group " + std::to_string(gi) + " on node " + std::to_string(Id(i)) + " acknowledged with " +
             std::to_string(res.copies) + " copies < N " + std::to_string(replicas_) + " and not under_replicated");
      if (res.under_replicated) under_replicated_++;
    } else if (st.code() == Code::kAborted && !crashed) {
      g.aborted++;
    } else {
      g.in_doubt++;
    }
    e.ResyncSession(s);
    Note(i, "commit group " + std::to_string(gi) + " (" + std::to_string(pages.size()) + " pages)" +
                (crashed ? " [committer crashed]" : ""),
         st);
  }

  // A snapshot of every page: the counters of a group must be equal, and never above what was ever tried.
  void Snapshot(int app = 0) {
    const int i = RandomUpNode();
    if (i < 0 || sessions_[Session(i, app)] == 0) return;
    std::vector<uint8_t> buf(pages_ * kPageSize);
    const Status st = engines_[size_t(i)]->ReadCommitted(sessions_[Session(i, app)], 0, uint32_t(pages_), buf.data());
    if (world_.Crashed(Id(i))) return;
    snapshots_++;
    if (!st.ok()) {
      snapshots_refused_++;
      return Note(i, "snapshot", st);
    }
    CheckGroups(buf.data(), "snapshot read on node " + std::to_string(Id(i)) + " (" + Versions(i) + ")", false);
  }

  // "page: version here / at its owner" for every page, for failure messages.
  std::string Versions(int i) {
    std::string out;
    for (uint64_t p = 0; p < pages_; p++) {
      PageDump here, there;
      const bool ok = engines_[size_t(i)]->DumpPage(kDs, p, &here).ok();
      const int o = int(OwnerOf(p)) - 1;
      const bool up = Up(o) && engines_[size_t(o)]->DumpPage(kDs, p, &there).ok();
      out += (p ? ", " : "") + std::to_string(p) + ": " + (ok ? std::to_string(here.version) : "?") + "/" +
             (up ? std::to_string(there.version) : "?");
    }
    return out;
  }

  void Fetch() {
    const int i = RandomUpNode();
    if (i < 0) return;
    const uint64_t first = world_.Uniform(pages_);
    const uint32_t count = uint32_t(1 + world_.Uniform(pages_ - first));
    Note(i, "fetch " + std::to_string(first) + "+" + std::to_string(count),
         engines_[size_t(i)]->EnsurePages(kDs, first, count));
  }

  void ResolverRound() {
    const int i = RandomUpNode();
    if (i < 0) return;
    engines_[size_t(i)]->RunResolverOnce();
    ChunksRecovered(i);
  }

  // ---- the dispatcher's chunk directory

  // Every page owned by a node declared dead gets a new owner, as long as fewer than N members are declared dead: one
  // live node (chosen at random) takes all of a dead owner's pages, which it must recover (owner_recovering) in a new
  // era. The map goes to every node that is up.
  void FailOver() {
    if (!sim_failover_) return;
    size_t dead = 0;
    for (int k = 0; k < n_; k++) dead += declared_dead_[size_t(k)] ? 1 : 0;
    if (dead >= replicas_) return world_.Note("failover: " + std::to_string(dead) + " members dead >= N: waiting");
    bool changed = false;
    for (int k = 0; k < n_; k++) {
      if (!declared_dead_[size_t(k)]) continue;
      std::vector<int> live;
      for (int j = 0; j < n_; j++)
        if (!declared_dead_[size_t(j)]) live.push_back(j);
      if (live.empty()) return;
      const uint32_t to = Id(live[world_.Uniform(live.size())]);
      for (uint64_t p = 0; p < pages_; p++) {
        if (OwnerOf(p) != Id(k)) continue;
        owner_[p] = to;
        era_[p]++;
        recovering_[p] = true;
        changed = true;
        world_.Note("failover: page " + std::to_string(p) + " node " + std::to_string(Id(k)) + " -> node " +
                    std::to_string(to) + " (era " + std::to_string(era_[p]) + ")");
      }
    }
    if (changed) PublishMap();
  }

  // The owner of a recovering chunk reported it recovered (RecoveredChunks): the map says so.
  void ChunksRecovered(int i) {
    bool changed = false;
    for (const RecoveredChunk& done : engines_[size_t(i)]->RecoveredChunks())
      if (done.ref.chunk < pages_ && recovering_[done.ref.chunk] && owner_[done.ref.chunk] == Id(i)) {
        recovering_[done.ref.chunk] = false;
        changed = true;
      }
    if (changed) PublishMap();
  }

  void PublishMap() {
    generation_++;
    for (int j = 0; j < n_; j++)
      if (Up(j)) {
        Status st = engines_[size_t(j)]->OpenDataset(Info());
        if (!st.ok()) Note(j, "load chunk map", st);
      }
  }

  void Fault() {
    const uint64_t roll = world_.Uniform(100);
    std::vector<int> down;
    for (int k = 0; k < n_; k++)
      if (!Up(k)) down.push_back(k);
    if (roll < 25) {
      // Crash one more node while enough stay up to commit with N copies.
      if (int(down.size()) + int(replicas_) >= n_) return;
      const int i = RandomUpNode();
      if (i >= 0) world_.Crash(Id(i));
    } else if (roll < 45) {
      if (!down.empty()) Restart(down[world_.Uniform(down.size())]);
    } else if (roll < 60) {
      // The dispatcher notices the crashed nodes (their leases ran out).
      bool changed = false;
      for (int k : down)
        if (!declared_dead_[size_t(k)]) declared_dead_[size_t(k)] = changed = true;
      if (changed) {
        world_.Note("membership: crashed nodes declared dead");
        Publish();
        FailOver();
      }
    } else if (roll < 75 && restarts_heavy_) {
      PlannedRestart();
    } else if (roll < 85) {
      if (world_.partitions() >= 2) return;
      const uint32_t a = Id(int(world_.Uniform(uint64_t(n_))));
      const uint32_t b = Id(int(world_.Uniform(uint64_t(n_))));
      if (a == b) return;
      world_.Note("partition " + std::to_string(a) + " | " + std::to_string(b));
      world_.Partition(a, b);
    } else if (roll < 90) {
      HandOff();
    } else if (roll < 94) {
      PlannedRestart();
    } else {
      world_.Note("heal partitions");
      world_.HealAll();
    }
  }

  // A node stopped with SIGTERM and started again (services/node/main.ts): it hands every owned chunk off, leaves (the
  // dispatcher marks it gone at once; a chunk it could not hand off fails over), and restarts on its pool.
  void PlannedRestart() {
    if (!sim_failover_) return;
    const int i = RandomUpNode();
    if (i < 0 || declared_dead_[size_t(i)]) return;
    size_t dead = 0;
    for (int k = 0; k < n_; k++) dead += declared_dead_[size_t(k)] ? 1 : 0;
    if (dead + 1 >= replicas_) return;  // leaving must not take the cluster below N members
    world_.Note("planned restart of node " + std::to_string(Id(i)));
    for (uint64_t p = 0; p < pages_; p++)
      if (OwnerOf(p) == Id(i) && !recovering_[p] && Up(i)) HandOff(i, p);
    if (!Up(i)) return;  // crashed while handing off: a crash like any other
    engines_[size_t(i)]->EndLease();
    declared_dead_[size_t(i)] = true;
    Publish();
    FailOver();
    Restart(i);
  }

  // A planned move of one chunk (a node stopping with SIGTERM, or drained), as services/node/handoff.ts drives it: the
  // owner copies the chunk to a live node (refusing new parts on it meanwhile), then the dispatcher moves it (one era
  // up) and the new map goes out; if the copy fails the owner serves the chunk again. Other apps' operations
  // interleave with its messages, as they do with a real handoff.
  void HandOff() {
    if (!sim_failover_) return;
    const int i = RandomUpNode();
    if (i < 0 || declared_dead_[size_t(i)]) return;
    std::vector<uint64_t> owned;
    for (uint64_t p = 0; p < pages_; p++)
      if (OwnerOf(p) == Id(i) && !recovering_[p]) owned.push_back(p);
    if (owned.empty()) return;
    HandOff(i, owned[world_.Uniform(owned.size())]);
  }

  void HandOff(int i, uint64_t p) {
    std::vector<int> targets;
    for (int j = 0; j < n_; j++)
      if (j != i && Up(j) && !declared_dead_[size_t(j)]) targets.push_back(j);
    if (targets.empty()) return;
    const int j = targets[world_.Uniform(targets.size())];
    uint64_t sent = 0;
    handoffs_++;
    const Status st = engines_[size_t(i)]->HandOffChunk(kDs, uint32_t(p), Id(j), 2 * kTimeout, &sent);
    Note(i, "handoff of page " + std::to_string(p) + " to node " + std::to_string(Id(j)), st);
    // A handoff fails for a fault (a crash, a drop, a lock held too long), never because a peer found it malformed.
    if (st.code() == Code::kInvalidArgument || st.code() == Code::kInternal) Fail("handoff refused: " + st.ToString());
    if (world_.Crashed(Id(i))) return;  // the dispatcher never heard of it: the chunk stays (failover moves it)
    if (!st.ok() || declared_dead_[size_t(j)] || !Up(j)) {
      engines_[size_t(i)]->AbandonHandOff(kDs, uint32_t(p));
      return;
    }
    owner_[p] = Id(j);
    era_[p]++;
    handoffs_moved_++;
    world_.Note("handoff: page " + std::to_string(p) + " node " + std::to_string(Id(i)) + " -> node " +
                std::to_string(Id(j)) + " (era " + std::to_string(era_[p]) + ")");
    PublishMap();
  }

  // ---- healing and the final checks

  void Heal() {
    world_.rates = sim::FaultRates{};
    world_.HealAll();
    world_.Note("heal: no more faults");
    for (int i = 0; i < n_; i++)
      if (!Up(i)) Restart(i);
    for (int i = 0; i < n_; i++)
      if (sessions_[Session(i, 0)] == 0) OpenSessionOn(i);
    // Resolver rounds until no page is locked and no commit is open anywhere (bounded: a lock or a mark that outlives
    // this stays forever).
    for (int round = 0; round < 60; round++) {
      world_.clock().Advance(std::chrono::milliseconds(500));
      for (int i = 0; i < n_; i++) {
        engines_[size_t(i)]->RunResolverOnce();
        ChunksRecovered(i);
      }
      // An open refused while a node still checked its copies (with their owners taking chunks over) is tried again.
      for (int i = 0; i < n_; i++)
        if (sessions_[Session(i, 0)] == 0) OpenSessionOn(i);
      const bool settled = std::none_of(recovering_.begin(), recovering_.end(), [](bool r) { return r; });
      bool opened = true;
      for (int i = 0; i < n_; i++) opened = opened && sessions_[Session(i, 0)] != 0;
      if (round >= 8 && settled && opened && LockedPages() == 0 && OpenMarks() == 0 && CopiesHeld() == 0) break;
    }
  }

  // Prepare copies (other owners' parts) still kept in the nodes' redo logs.
  uint64_t CopiesHeld() {
    uint64_t held = 0;
    for (int i = 0; i < n_; i++)
      for (const RedoView& r : engines_[size_t(i)]->Inspect().redo) {
        const std::string phase = r.phase;
        held += phase == "copy" || phase == "copy-applied" || phase == "copy-frozen";  // kept ones too: back at N
      }
    return held;
  }

  // Commits open (or copies unchecked) on the nodes, as their publication state says.
  uint64_t OpenMarks() {
    uint64_t open = 0;
    for (int i = 0; i < n_; i++) {
      PublicationInfo p;
      if (sessions_[Session(i, 0)] != 0 && engines_[size_t(i)]->Publication(sessions_[Session(i, 0)], &p).ok())
        open += p.open_commits;
    }
    return open;
  }

  uint64_t LockedPages() {
    uint64_t locked = 0;
    for (int i = 0; i < n_; i++) locked += engines_[size_t(i)]->Stats().locked_pages;
    return locked;
  }

  // Every group's counters equal; with `exact`, also within [acked, acked + in doubt].
  void CheckGroups(const uint8_t* pages, const std::string& where, bool exact) {
    for (size_t gi = 0; gi < groups_.size(); gi++) {
      const Group& g = groups_[gi];
      const uint64_t first = U64At(pages + g.slots[0].page * kPageSize, g.slots[0].offset);
      for (const Slot& sl : g.slots) {
        const uint64_t v = U64At(pages + sl.page * kPageSize, sl.offset);
        if (v != first)
          Fail(where + ": group " + std::to_string(gi) + " shows part of a commit: page " + std::to_string(sl.page) +
               "+" + std::to_string(sl.offset) + " = " + std::to_string(v) + ", page " +
               std::to_string(g.slots[0].page) + "+" + std::to_string(g.slots[0].offset) + " = " + std::to_string(first));
        if (v > g.acked + g.in_doubt + g.running)
          Fail(where + ": group " + std::to_string(gi) + " = " + std::to_string(v) + " but only " +
               std::to_string(g.acked) + " acknowledged + " + std::to_string(g.in_doubt) + " in doubt + " +
               std::to_string(g.running) + " running commits");
        if (exact && v < g.acked)
          Fail(where + ": group " + std::to_string(gi) + " = " + std::to_string(v) + " at page " + std::to_string(sl.page) +
               "+" + std::to_string(sl.offset) + " but " + std::to_string(g.acked) +
               " commits were acknowledged (lost update)");
      }
    }
  }

  void CheckFinal() {
    const uint64_t locked = LockedPages();
    if (locked != 0) Fail(std::to_string(locked) + " pages still locked after healing");
    for (uint64_t p = 0; p < pages_; p++)
      if (recovering_[p]) Fail("page " + std::to_string(p) + " is still being taken over by node " +
                               std::to_string(owner_[p]) + " after healing");
    // Every finished part's prepare copies are gone (released, or dropped once their owner said it finished them).
    const uint64_t copies = CopiesHeld();
    if (copies != 0) Fail(std::to_string(copies) + " prepare copies still kept after healing");
    // The owners' pages are the truth.
    std::vector<uint8_t> owners(pages_ * kPageSize);
    const size_t nodes = size_t(n_);
    std::vector<std::vector<PageDump>> dumps(nodes, std::vector<PageDump>(pages_));
    for (int i = 0; i < n_; i++)
      for (uint64_t p = 0; p < pages_; p++) CHECK_OK(engines_[size_t(i)]->DumpPage(kDs, p, &dumps[size_t(i)][p]));
    for (uint64_t p = 0; p < pages_; p++)
      std::memcpy(owners.data() + p * kPageSize, dumps[OwnerOf(p) - 1][p].data.data(), kPageSize);
    CheckGroups(owners.data(), "owners after healing", true);
    // N holders of every acknowledged commit: a holder of a page whose counter is at least the acknowledged count
    // holds the last acknowledged commit or a later one (counters only grow).
    for (size_t gi = 0; gi < groups_.size(); gi++) {
      const Group& g = groups_[gi];
      if (g.acked == 0) continue;
      for (const Slot& sl : g.slots) {
        uint32_t holders = 0;
        for (int i = 0; i < n_; i++) {
          const PageDump& d = dumps[size_t(i)][sl.page];
          if (d.state != pool::PageState::kAbsent && U64At(d.data.data(), sl.offset) >= g.acked) holders++;
        }
        if (holders < replicas_)
          Fail("group " + std::to_string(gi) + ": page " + std::to_string(sl.page) + " has " + std::to_string(holders) +
               " holders of its acknowledged commits, N = " + std::to_string(replicas_));
      }
    }
    // Every node: a consistent snapshot; after a refresh, the owners' state.
    std::vector<uint8_t> buf(pages_ * kPageSize);
    for (int i = 0; i < n_; i++) {
      Engine& e = *engines_[size_t(i)];
      if (sessions_[Session(i, 0)] == 0) Fail("node " + std::to_string(Id(i)) + " could not open the dataset after healing");
      const std::string where = "node " + std::to_string(Id(i)) + " after healing";
      Status st = e.ReadCommitted(sessions_[Session(i, 0)], 0, uint32_t(pages_), buf.data());
      if (!st.ok()) Fail(where + ": snapshot read refused: " + st.ToString());
      CheckGroups(buf.data(), where + " (" + Versions(i) + ")", false);
      st = e.RefreshPages(kDs, 0, pages_);
      if (!st.ok()) Fail(where + ": refresh: " + st.ToString());
      st = e.ReadCommitted(sessions_[Session(i, 0)], 0, uint32_t(pages_), buf.data());
      if (!st.ok()) Fail(where + ": snapshot read after refresh refused: " + st.ToString());
      for (uint64_t p = 0; p < pages_; p++)
        if (std::memcmp(buf.data() + p * kPageSize, owners.data() + p * kPageSize, kPageSize) != 0)
          Fail(where + ": page " + std::to_string(p) + " differs from its owner's after a refresh");
    }
  }

  void Note(int i, const std::string& what, const Status& st) {
    const std::string line = "node " + std::to_string(Id(i)) + ": " + what + ": " + (st.ok() ? "ok" : st.ToString());
    world_.Note(line);
    if (verbose_) std::fprintf(stderr, "  %s\n", line.c_str());
  }

  uint64_t seed_;
  sim::SimWorld world_;
  int n_ = 3;
  uint32_t replicas_ = 2;
  uint64_t pages_ = 6;
  uint64_t under_replicated_ = 0;  // acknowledged commits answered under_replicated
  uint64_t epoch_ = 0;
  // The chunk map (SIM_FAILOVER=0 keeps every page with its first owner).
  bool sim_failover_ = EnvU64("SIM_FAILOVER", 1) != 0;
  // SIM_RESTARTS_HEAVY=1: planned restarts take most of the partitions' share of the faults (a quarter of them).
  bool restarts_heavy_;
  std::vector<uint32_t> owner_, era_;
  std::vector<bool> recovering_;
  uint64_t generation_ = 1;
  std::vector<std::unique_ptr<Engine>> engines_;  // engines_[i] is node i + 1
  std::vector<uint64_t> sessions_;                // Session(i, app); 0 = no session (could not open yet)
  bool nested_ = false;                           // an interleaved operation is running
  size_t Session(int i, int app) const { return size_t(2 * i + app); }
  std::vector<bool> declared_dead_;
  std::vector<bool> published_alive_;   // each node's state in the last membership published
  std::vector<uint64_t> state_epoch_;   // the epoch at which it last changed
  std::vector<Group> groups_;
  uint64_t snapshots_ = 0, snapshots_refused_ = 0;
  uint64_t handoffs_ = 0, handoffs_moved_ = 0;
  bool verbose_ = EnvU64("SIM_VERBOSE", 0) != 0;
};

std::string RunSeed(uint64_t seed, uint64_t ops, bool restarts_heavy = false) {
  g_seed = seed;
  Simulation s(seed, restarts_heavy);
  return s.Run(ops);
}

}  // namespace

// The same seed twice gives the same run: the simulation is deterministic (or a failure would not reproduce).
TEST(SameSeedSameRun) {
  const std::string a = RunSeed(3, 120), b = RunSeed(3, 120);
  CHECK(a == b);
  CHECK(RunSeed(4, 120) != a);
}

TEST(RandomSchedulesKeepTheInvariants) {
  const uint64_t ops = EnvU64("SIM_OPS", 250);
  if (const char* one = std::getenv("SIM_SEED"); one && *one) {
    RunSeed(std::strtoull(one, nullptr, 10), ops);
    return;
  }
  const uint64_t first = EnvU64("SIM_FIRST_SEED", 1), count = EnvU64("SIM_SEEDS", 100);
  for (uint64_t seed = first; seed < first + count; seed++) RunSeed(seed, ops);
}

// Seeds that found a defect (docs/design/availability.md and consistency.md name each one's cause), so a change that
// brings one back fails here and not only in a long run. The random range above covers few of them.
TEST(SeedsThatOnceFailedStillPass) {
  const uint64_t ops = EnvU64("SIM_OPS", 250);
  for (uint64_t seed : {113, 232, 372, 373, 440, 477, 1210, 2378, 3195, 3833, 4553, 4965, 8091, 9301, 9302, 9401, 9402,
                        9501, 9601, 9702, 9802, 9901, 9967, 10331, 12002})
    RunSeed(seed, ops);
  for (uint64_t seed : {356, 433, 613, 1115, 2716, 3961}) RunSeed(seed, ops, true);  // with frequent planned restarts
}

int main() {
  signal(SIGABRT, OnAbort);
  return ::hotpot_test::RunAll("sim");
}
