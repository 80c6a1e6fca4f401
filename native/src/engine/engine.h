// The node's data plane. Started by the node daemon through the N-API binding; configured by the TypeScript
// control plane (node id, membership, chunk maps); serves peers (transport) and apps (shim server) on its own
// threads, with no JavaScript on those paths.
#pragma once

#include <algorithm>
#include <chrono>
#include <iterator>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/deps.h"
#include "engine/observe.h"
#include "engine/shim_backend.h"
#include "pool/pool.h"

namespace hotpot {
namespace engine {

struct EngineOptions {
  std::string pool_dir;
  std::string data_dir;
  pool::Durability durability = pool::Durability::kDisk;
  std::string cluster_secret;
  // Encrypt and authenticate peer frames after the handshake (transport::TransportOptions::protect_frames).
  bool protect_frames = true;
  // This node's TLS certificate and key and the cluster CA (PEM). All three set: the data plane authenticates peers
  // by certificate (transport::TransportOptions::credentials; members' identities are checked). None (--insecure):
  // by the cluster secret. The secret still signs MRSW lease certificates either way.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string tls_ca_pem;
  std::string data_host = "127.0.0.1";
  uint16_t data_port = 0;         // 0 = any free port
  std::string shim_socket_path;   // unix socket apps connect to
  uint32_t chunk_size_bytes = 4u << 20;
  std::chrono::milliseconds request_timeout{3000};
  // How long a page fault (and a gRPC Data read) on a page whose owner is not alive waits for an owner to be alive
  // again (the owner restarting, or a new owner) before it fails with UNAVAILABLE. 0 = fail at once.
  std::chrono::milliseconds owner_wait{10000};
  // The data plane: "tcp", or "rdma" (RdmaTransport over /dev/hotpot-rdma, kmod/: Start fails with
  // FAILED_PRECONDITION naming the device and the module when it is absent).
  std::string transport = "tcp";
  std::function<void(const std::string&)> log;
};

struct Member {
  uint32_t id = 0;
  std::string data_address;  // host:port
  bool alive = false;
  // The membership epoch at which the member last changed state (joined, rejoined, declared dead, left).
  uint64_t state_epoch = 0;
  // The member's store identity at its last join ("" = not told). When it changes, the member lost every copy it
  // held: owners stop counting it as a holder (it is refilled by re-replication).
  std::string store_id{};
  // Its stable name (--name), the CN its certificate must name on the data plane ("" = not told).
  std::string identity{};
  // The membership epoch at which it last rejoined with a replaced store (0: never, or not told).
  uint64_t store_replaced_epoch = 0;
  // As the dispatcher has it from its heartbeats: the epoch up to which a whole re-replication pass found every page
  // it owns at N live copies (0: not known). A member replaced after that may lack copies this one counted on.
  uint64_t replicated_through_epoch = 0;
};

// Pages first .. first + count - 1 of a dataset.
struct PageSpan {
  uint64_t first = 0;
  uint64_t count = 0;
  bool operator==(const PageSpan& o) const { return first == o.first && count == o.count; }
};
// Whether `page` is in one of `spans` (sorted, not overlapping): a binary search.
inline bool InSpans(const std::vector<PageSpan>& spans, uint64_t page) {
  auto it = std::upper_bound(spans.begin(), spans.end(), page,
                             [](uint64_t p, const PageSpan& s) { return p < s.first; });
  return it != spans.begin() && page - std::prev(it)->first < std::prev(it)->count;
}

struct ChunkInfo {
  uint32_t index = 0;
  uint32_t owner = 0;
  std::vector<uint32_t> replicas;
  bool owner_alive = false;
  // The owner's store was replaced since it last held this chunk (the dispatcher compares store identities): its
  // pool does not have the chunk's pages. The owner refuses to serve or commit them until it has recovered them
  // from the nodes holding copies (RecoveredChunks), and the dispatcher records that.
  bool owner_recovering = false;
  // How many times the chunk failed over (a new owner took it after its owner was declared dead). Every version its
  // owner gives a page is above era << kEraShift, so versions written before a failover — even ones that survive only
  // on a node that was down — are always older than the new owner's (docs/design/availability.md "Failover").
  uint32_t era = 0;
  // Pages of the chunk with no surviving copy (its owner recovered the chunk while no node held them): refused with
  // DATA_LOSS, never served as zeros, until an operator accepts the loss (docs/design/availability.md "Lost pages").
  std::vector<PageSpan> lost{};
};
constexpr uint32_t kEraShift = 40;

struct ChunkRef {
  uint64_t dataset_id = 0;
  uint32_t chunk = 0;
  bool operator<(const ChunkRef& o) const {
    return dataset_id != o.dataset_id ? dataset_id < o.dataset_id : chunk < o.chunk;
  }
};

// An owned chunk recovered from its holders that the chunk map does not show recovered yet, and the pages of it no
// node held (lost: the control plane reports them with the chunk).
struct RecoveredChunk {
  ChunkRef ref;
  std::vector<PageSpan> lost{};
};

// A dataset's chunk map, shared by its copies and copied on the first change (copy-on-write): the engine copies a
// dataset's state on every lookup (a page fault, each protocol message), and a 1 TiB dataset has 262 144 chunks, so a
// copy of the vector (~25 MiB) per lookup made a big dataset cost time and memory per operation. Reads of a const map
// never copy; a non-const access copies the entries first when another copy shares them.
class ChunkMap {
 public:
  using Vec = std::vector<ChunkInfo>;
  ChunkMap() = default;
  ChunkMap(std::initializer_list<ChunkInfo> l) : v_(std::make_shared<Vec>(l)) {}
  size_t size() const { return v_ ? v_->size() : 0; }
  bool empty() const { return size() == 0; }
  const ChunkInfo& operator[](size_t i) const { return (*v_)[i]; }
  ChunkInfo& operator[](size_t i) { return Mut()[i]; }
  Vec::const_iterator begin() const { return v_ ? v_->cbegin() : Empty().cbegin(); }
  Vec::const_iterator end() const { return v_ ? v_->cend() : Empty().cend(); }
  Vec::iterator begin() { return Mut().begin(); }
  Vec::iterator end() { return Mut().end(); }
  void push_back(ChunkInfo c) { Mut().push_back(std::move(c)); }
  void reserve(size_t n) { Mut().reserve(n); }

 private:
  static const Vec& Empty() {
    static const Vec empty;
    return empty;
  }
  // The owner of this ChunkMap object is the only one touching it (copies live in other objects), so use_count()
  // == 1 means no other copy can see a change.
  Vec& Mut() {
    if (!v_) v_ = std::make_shared<Vec>();
    else if (v_.use_count() > 1) v_ = std::make_shared<Vec>(*v_);
    return *v_;
  }
  std::shared_ptr<Vec> v_;
};

struct DatasetInfo {
  uint64_t id = 0;
  std::string name;
  uint64_t size_bytes = 0;
  Mode mode = Mode::kMrmw;
  uint32_t replicas = 1;
  uint32_t chunk_size_bytes = 0;
  ChunkMap chunks;
  // The chunk map's generation at the dispatcher (0 = not known). PREPARE and FETCH_PAGES carry the generation the
  // sender routed by; an owner whose map is older refuses them (kReasonMapBehind) until it has loaded the newer one.
  uint64_t generation = 0;
};

// An app asked (over the unix socket) to open or create a dataset by name: the control plane resolves it with the
// dispatcher, calls OpenDataset, then CompleteOpen(request_id, ...). Called on an engine thread.
using OpenRequestFn =
    std::function<void(uint64_t request_id, const std::string& name, const CreateOptions* create, const PeerCred& cred)>;

// One member per line of engine/counters.def (the one list of counters, with their JS and metric names).
struct EngineCounters {
#define HOTPOT_COUNTER(field, js_name, metric, unit, description) uint64_t field = 0;
#include "engine/counters.def"
#undef HOTPOT_COUNTER
};

struct ChunkStat {
  uint64_t dataset_id = 0;
  uint32_t chunk = 0;
  bool owned = false;
  uint64_t pages_owned = 0, pages_committed = 0, pages_redundant = 0;
  // Owner's view (owned chunks only): the chunk's owner per the chunk map, the other nodes it knows to hold
  // committed (fetched, kept coherent by push) or redundant (replica top-up only) copies of its pages, and the
  // fewest distinct holders (owner included) of any page of the chunk that was ever served or written.
  uint32_t owner = 0;
  // Only members alive in this node's view count: holders on nodes declared dead (or gone) are `down_holders`.
  std::vector<uint32_t> committed_holders, redundant_holders, down_holders;
  uint32_t replica_count = 0;
  uint32_t replicas_wanted = 0;   // the dataset's N
  bool under_replicated = false;  // replica_count < replicas_wanted

};

struct EngineStats {
  uint32_t node_id = 0;
  uint16_t data_port = 0;
  EngineCounters counters;
  pool::PoolStats pool;
  uint64_t open_sessions = 0;
  uint64_t locked_pages = 0;
  std::vector<ChunkStat> chunks;
};

struct PageDump {
  pool::PageState state = pool::PageState::kAbsent;
  uint64_t version = 0;
  std::vector<uint8_t> data;  // 4096 bytes
};

// Operator views (`hotpot stat`): redo records in flight and the apps' sessions.
struct RedoView {
  uint32_t slot = 0;
  uint64_t txid = 0;
  uint64_t dataset_id = 0;
  uint32_t committer = 0;
  const char* phase = "";  // prepared | applying | applied | decided (a commit decision of this node)
  uint64_t ranges = 0, bytes = 0;
  uint64_t sender_epoch = 0;  // a multi-part commit's part: the epoch stamped on its PREPARE (0 = not known)
};
struct SessionView {
  uint64_t session_id = 0;
  uint64_t dataset_id = 0;
  std::string dataset_name;
  PeerCred cred;
};
struct InspectView {
  std::vector<RedoView> redo;
  std::vector<SessionView> sessions;
};

class Engine : public ShimBackend {
 public:
  ~Engine() override = default;
  // With a TCP transport and the real clocks.
  static Status Start(const EngineOptions& options, OpenRequestFn on_open, std::unique_ptr<Engine>* out);
  // With the given transport and time source (tests: native/test/sim.h).
  static Status StartWith(const EngineOptions& options, OpenRequestFn on_open, EngineDeps deps,
                          std::unique_ptr<Engine>* out);

  virtual uint16_t data_port() const = 0;
  virtual void SetNodeId(uint32_t node_id) = 0;
  virtual void SetMembers(uint64_t epoch, const std::vector<Member>& members) = 0;
  // The certificates the data plane refuses (SHA-256 fingerprints, `hotpot certs revoke`): a change closes every
  // data-plane connection so each authenticates again. No-op without certificates (--insecure). INVALID_ARGUMENT for
  // a malformed fingerprint (nothing changes).
  virtual Status SetRevokedCertificates(const std::vector<std::string>& sha256_fingerprints) = 0;
  // Adds or replaces a dataset's chunk map and opens its pool store.
  virtual Status OpenDataset(const DatasetInfo& info) = 0;
  virtual void CompleteOpen(uint64_t request_id, const Status& status, uint64_t dataset_id) = 0;
  virtual EngineStats Stats() = 0;
  virtual Status DumpPage(uint64_t dataset_id, uint64_t page, PageDump* out) = 0;
  // The committed content of pages [first, first + count) of the session's dataset as one consistent state:
  // every commit whole or not at all (docs/design/consistency.md "Snapshot reads"). Fetches absent pages, then
  // copies them in one step while no commit is open on this node for the dataset; UNAVAILABLE if one stays open
  // for about 2 s. Not the session's base images: the latest state this node shows.
  virtual Status ReadCommitted(uint64_t session_id, uint64_t first_page, uint32_t count, uint8_t* out) = 0;
  // Checks this node's cached copies of pages [first, first + count) with their owners and installs newer ones
  // (an MRSW holder's view after acquire is at least the newest committed version). Pages not cached here are
  // left alone (a first access fetches the current page). UNAVAILABLE naming the pages whose owner is down or did
  // not answer.
  virtual Status RefreshPages(uint64_t dataset_id, uint64_t first_page, uint64_t count) = 0;
  // Until when this node's membership lease is surely valid (unix ms, by this node's clock: heartbeat sent + lease).
  // Past it, the dispatcher may have declared the node dead and commits may have skipped pushing to it, so its
  // cached copies may be stale: every dataset gets an "unchecked" mark (snapshot reads here fail) until a later
  // deadline arrives and a check of every cached page with its owner completes. 0 = no lease (tests).
  virtual void SetLeaseDeadline(uint64_t unix_ms) = 0;
  // This node is leaving the cluster (a planned stop, before its Leave): from the Leave on the others stop pushing to
  // it, so its cached copies may miss commits at once, while apps are still served until the engine stops. Ends the
  // lease now and for good: every dataset gets the unchecked mark in this call (snapshot reads here fail), the owner
  // side refuses what needs a lease, and a later SetLeaseDeadline (a heartbeat answered late) does not lift it.
  virtual void EndLease() = 0;
  // This node begins a planned stop (before its handoffs): from this call on it serves no snapshot read, for good.
  // Its copies may miss commits from the first handoff on (a new owner's pushes to pages still owned here are
  // dropped; after the Leave nobody pushes here), and a check between two handoffs cannot vouch for what follows.
  virtual void HideSnapshots() = 0;
  // The dispatcher ended every MRSW lease of this node with a fencing epoch below `epoch` (it was declared dead, left
  // or restarted; JoinResponse.mrsw_lease_floor): commits under such a lease are refused here, never sent. Only rises.
  virtual void SetMrswLeaseFloor(uint64_t epoch) = 0;
  // This node's store (pool) identity, for the dispatcher (pool::StoreIdentity).
  virtual pool::StoreIdentity Store() = 0;
  // The membership epoch up to which every page this node owns (datasets with N >= 2) was found at N live copies by a
  // whole re-replication pass started at that epoch or later (0: no such pass yet). Sent with every heartbeat: a
  // member that rejoined with a replaced store after it may have held this node's only other copy of a page, so
  // the dispatcher counts it as down when this node's chunks fail over (docs/design/availability.md "Lost pages").
  virtual uint64_t ReplicatedThrough() = 0;
  // Owned chunks marked owner_recovering that this node has recovered from the other holders (it serves them
  // again) while its chunk map still says recovering: the control plane reports them to the dispatcher.
  virtual std::vector<RecoveredChunk> RecoveredChunks() = 0;
  // Planned handoff of an owned chunk to `target` (docs/design/availability.md "Handoff"): refuses PREPARE and FETCH
  // of the chunk from now on, waits (up to `timeout`) until no commit holds its pages, and copies every written page
  // to `target`. OK: the caller moves the chunk at the dispatcher and loads the chunk map that says so (this node's
  // pages then become cached copies), or calls AbandonHandOff when the dispatcher still names this node. An error:
  // nothing changed, the chunk is served here again. `pages_sent`: the pages copied.
  virtual Status HandOffChunk(uint64_t dataset_id, uint32_t chunk, uint32_t target, std::chrono::milliseconds timeout,
                              uint64_t* pages_sent) = 0;
  virtual void AbandonHandOff(uint64_t dataset_id, uint32_t chunk) = 0;
  // Events, latency histograms and span records (engine/observe.h); lives as long as the engine.
  virtual observe::Observer* observer() = 0;
  virtual InspectView Inspect() = 0;
  // One round of the resolver's periodic work (EngineDeps::manual_resolver; a no-op race otherwise).
  virtual void RunResolverOnce() = 0;
  virtual void Shutdown() = 0;
};

}  // namespace engine
}  // namespace hotpot
