// The engine's facade (docs/design/engine.md "Rooms"): it owns the components and the context they share, wires
// them in call order, and implements Engine (the node daemon's side, through the binding) and ShimBackend (the
// apps' side, through the shim server) by delegating. Observation of whole operations (fault and commit latency,
// the node's commit span and events) happens here, around the component that does the work.
#include "engine/engine.h"

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>

#include "engine/cluster_view.h"
#include "engine/committer.h"
#include "engine/core.h"
#include "engine/dispatch.h"
#include "engine/fetcher.h"
#include "engine/node_cache.h"
#include "engine/owner.h"
#include "engine/part_copies.h"
#include "engine/peers.h"
#include "engine/replicator.h"
#include "engine/resolver.h"
#include "engine/fan_out.h"
#include "engine/shim_server.h"
#include "transport/rdma_transport.h"

namespace hotpot {
namespace engine {
namespace {

// Commit steps to different owners in flight at once per node, beyond the committing thread's own (FanOut).
constexpr unsigned kFanOutThreads = 8;

// An app's commit or page fault that took half the request timeout or more is logged with its outcome (once per
// kind and dataset every 5 s): where a client's time went is otherwise known only to the client.
void LogIfSlow(Context* ctx, const char* kind, uint64_t ds, const std::string& what, uint64_t ns, const Status& st) {
  const auto took = std::chrono::nanoseconds(ns);
  if (!ctx->Slow(took)) return;
  ctx->LogLimited(std::string("slow ") + kind + " " + std::to_string(ds),
                  "engine: " + what + " of dataset " + std::to_string(ds) + " took " +
                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
                      " ms: " + st.ToString());
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineOptions& o, OpenRequestFn on_open) : on_open_(std::move(on_open)) { ctx_.opt = o; }
  ~EngineImpl() override { Shutdown(); }

  Status Init(EngineDeps deps);

  // Engine
  uint16_t data_port() const override { return port_; }
  void SetNodeId(uint32_t id) override {
    ctx_.node_id.store(id);
    transport_->SetNodeId(id);
  }
  void SetMembers(uint64_t epoch, const std::vector<Member>& members) override;
  Status OpenDataset(const DatasetInfo& info) override;
  // Promotes the cached pages of chunks this node gained and demotes the owned pages of chunks it lost, comparing
  // `info` with the map loaded `before` (nullptr: the first map since the start; every chunk is looked at).
  void ChangeOwnership(const DatasetInfo& info, uint32_t chunk_size, pool::DatasetStore* store,
                       const DatasetInfo* before);
  void CompleteOpen(uint64_t request_id, const Status& status, uint64_t dataset_id) override;
  EngineStats Stats() override;
  Status DumpPage(uint64_t dataset_id, uint64_t page, PageDump* out) override;
  Status ReadCommitted(uint64_t session_id, uint64_t first_page, uint32_t count, uint8_t* out) override;
  Status RefreshPages(uint64_t dataset_id, uint64_t first_page, uint64_t count) override;
  pool::StoreIdentity Store() override;
  std::vector<RecoveredChunk> RecoveredChunks() override { return view_->RecoveredChunks(); }
  uint64_t ReplicatedThrough() override { return owner_->ReplicatedThrough(view_->Datasets()); }
  Status HandOffChunk(uint64_t dataset_id, uint32_t chunk, uint32_t target, std::chrono::milliseconds timeout,
                      uint64_t* pages_sent) override;
  void AbandonHandOff(uint64_t dataset_id, uint32_t chunk) override { owner_->EndHandOff(ChunkRef{dataset_id, chunk}); }
  void SetLeaseDeadline(uint64_t unix_ms) override { resolver_->SetLeaseDeadline(unix_ms); }
  void EndLease() override { resolver_->EndLease(); }
  void HideSnapshots() override { resolver_->HideSnapshots(); }
  void SetMrswLeaseFloor(uint64_t epoch) override {
    uint64_t cur = ctx_.mrsw_lease_floor.load();
    while (cur < epoch && !ctx_.mrsw_lease_floor.compare_exchange_weak(cur, epoch)) {
    }
  }
  Status SetRevokedCertificates(const std::vector<std::string>& fingerprints) override {
    if (!credentials_) return Status::Ok();
    bool changed = false;
    HOTPOT_RETURN_IF_ERROR(credentials_->revoked().Replace(fingerprints, &changed));
    if (changed) transport_->Reauthenticate();
    return Status::Ok();
  }
  observe::Observer* observer() override { return &obs_; }
  InspectView Inspect() override;
  void RunResolverOnce() override {
    if (!ctx_.shut.load()) resolver_->RunOnce();
  }
  void Shutdown() override;

  // ShimBackend
  Status Open(const std::string& name, const CreateOptions* create, const PeerCred& cred, OpenResult* out) override;
  Status EnsurePages(uint64_t dataset_id, uint64_t first_page, uint32_t count) override;
  Status PrefetchPages(uint64_t dataset_id, uint64_t first_page, uint32_t count) override;
  uint64_t OpenSession(uint64_t dataset_id, const PeerCred& cred) override { return cache_->OpenSession(dataset_id, cred); }
  void CloseSession(uint64_t session_id) override { cache_->CloseSession(session_id); }
  void ResyncSession(uint64_t session_id) override { cache_->ResyncSession(session_id); }
  Status BaseImage(uint64_t session_id, uint64_t page, uint8_t* out4096) override;
  Status Commit(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                CommitResult* result) override {
    return CommitWith(session_id, pages, replicas, CommitExtras{}, result);
  }
  Status CommitWith(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                    const CommitExtras& extras, CommitResult* result) override;
  Status Publication(uint64_t session_id, PublicationInfo* out) override;
  Status PublicationMemory(uint64_t session_id, int* fd) override;

 private:
  // The dataset an open session belongs to (NOT_FOUND for an unknown or closed session).
  Status SessionDataset(uint64_t session_id, DatasetState* out) {
    uint64_t ds = 0;
    HOTPOT_RETURN_IF_ERROR(cache_->SessionDataset(session_id, &ds));
    return view_->FindDataset(ds, out);
  }
  void NoteCommit(uint64_t ds, const Status& st, const CommitResult& result, uint64_t ns);

  Context ctx_;
  OpenRequestFn on_open_;
  std::shared_ptr<TimeSource> time_;
  std::unique_ptr<pool::Pool> pool_;
  std::unique_ptr<transport::Transport> transport_;
  std::shared_ptr<const transport::NodeCredentials> credentials_;  // certificate mode: whose revocation list SetRevokedCertificates replaces
  observe::Observer obs_;
  // Helper threads for the steps of a commit that go to different owners at once (none in deterministic tests).
  std::unique_ptr<FanOut> fan_out_;
  // Components, in call order (each calls only components declared before it).
  std::unique_ptr<ClusterView> view_;
  std::unique_ptr<NodeCache> cache_;
  std::unique_ptr<Peers> peers_;
  std::unique_ptr<Replicator> replicator_;
  std::unique_ptr<PartCopies> copies_;
  std::unique_ptr<Owner> owner_;
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<Committer> committer_;
  std::unique_ptr<Resolver> resolver_;
  std::unique_ptr<PeerDispatch> dispatch_;
  std::unique_ptr<ShimServer> shim_;
  bool manual_resolver_ = false;
  uint16_t port_ = 0;
  std::mutex shutdown_mu_;

  // Apps' opens waiting for the control plane (Open / CompleteOpen).
  struct PendingOpen {
    bool done = false;
    Status status;
    uint64_t dataset_id = 0;
  };
  std::mutex open_mu_;
  std::condition_variable open_cv_;
  std::map<uint64_t, PendingOpen> pending_;
  uint64_t next_request_ = 1;
};

// ---------------------------------------------------------------------------------------------------------------
// Lifecycle

Status EngineImpl::Init(EngineDeps deps) {
  time_ = deps.time ? deps.time : RealTime();
  manual_resolver_ = deps.manual_resolver;
  pool::PoolOptions po;
  po.pool_dir = ctx_.opt.pool_dir;
  po.data_dir = ctx_.opt.data_dir;
  po.durability = ctx_.opt.durability;
  HOTPOT_RETURN_IF_ERROR(ctx_.faults.LoadFromEnv());
  // Certificates are checked before anything is opened: a bad one is a configuration error of this node.
  std::shared_ptr<const transport::NodeCredentials> credentials;
  const EngineOptions& o = ctx_.opt;
  if (!deps.transport && (!o.tls_cert_pem.empty() || !o.tls_key_pem.empty() || !o.tls_ca_pem.empty())) {
    if (o.tls_cert_pem.empty() || o.tls_key_pem.empty() || o.tls_ca_pem.empty())
      return Status(Code::kInvalidArgument, "engine: the data plane needs all of certificate, key and CA, or none");
    HOTPOT_RETURN_IF_ERROR(
        transport::NodeCredentials::FromPem(o.tls_cert_pem, o.tls_key_pem, o.tls_ca_pem, &credentials));
  }
  HOTPOT_RETURN_IF_ERROR(pool::Pool::Open(po, &pool_));
  ctx_.store_created = pool_->identity().created;
  if (const uint64_t replayed = pool_->Stats().journal_replayed; replayed != 0)
    ctx_.Log("pool: replayed " + std::to_string(replayed) +
             " page images from the page journal into the data dir (persisted, not yet written back when the node "
             "stopped)");
  if (deps.transport) {
    transport_ = std::move(deps.transport);
  } else {
    transport::TransportOptions to;
    to.cluster_secret = ctx_.opt.cluster_secret;
    to.protect_frames = ctx_.opt.protect_frames;
    credentials_ = credentials;
    to.credentials = std::move(credentials);
    to.log = ctx_.opt.log;
    if (o.transport == "rdma") {
      Status st;
      transport_ = transport::NewRdmaTransport(to, transport::RdmaOptions{}, &st);
      if (!transport_) return st.ok() ? Status(Code::kInternal, "engine: could not create the RDMA transport") : st;
    } else if (o.transport == "tcp") {
      transport_ = transport::NewTcpTransport(to);
      if (!transport_) return Status(Code::kInternal, "engine: could not create the TCP transport");
    } else {
      return Status(Code::kInvalidArgument, "engine: transport must be tcp or rdma, not '" + o.transport + "'");
    }
  }
  ctx_.time = time_.get();
  ctx_.transport = transport_.get();
  ctx_.rdma = dynamic_cast<transport::RdmaTransport*>(transport_.get());
  ctx_.pool = pool_.get();
  ctx_.obs = &obs_;
  if (!deps.manual_resolver) {
    fan_out_ = std::make_unique<FanOut>(kFanOutThreads);
    ctx_.fan_out = fan_out_.get();
  }
  view_ = std::make_unique<ClusterView>(&ctx_);
  cache_ = std::make_unique<NodeCache>(&ctx_);
  peers_ = std::make_unique<Peers>(&ctx_);
  replicator_ = std::make_unique<Replicator>(&ctx_, view_.get(), cache_.get(), peers_.get());
  copies_ = std::make_unique<PartCopies>(&ctx_, view_.get(), peers_.get());
  owner_ = std::make_unique<Owner>(&ctx_, view_.get(), cache_.get(), replicator_.get(), copies_.get());
  fetcher_ = std::make_unique<Fetcher>(&ctx_, view_.get(), cache_.get(), owner_.get(), peers_.get());
  committer_ = std::make_unique<Committer>(&ctx_, view_.get(), cache_.get(), owner_.get(), fetcher_.get(),
                                           replicator_.get(), peers_.get());
  resolver_ = std::make_unique<Resolver>(&ctx_, view_.get(), cache_.get(), copies_.get(), owner_.get(),
                                         fetcher_.get(), committer_.get(), peers_.get());
  dispatch_ = std::make_unique<PeerDispatch>(&ctx_, view_.get(), cache_.get(), copies_.get(), owner_.get(),
                                             committer_.get(), resolver_.get());
  if (!manual_resolver_) ctx_.wake_resolver = [this] { resolver_->Wake(); };
  // Decision records are loaded before the transport listens: an OUTCOME query must never be answered "aborted"
  // (presumed) for a commit whose decision is on disk. Parts found prepared or applying wait for their dataset.
  committer_->Recover();
  copies_->Load();
  for (auto& kv : pool_->redo().InFlight())
    if (kv.second.phase == pool::RedoPhase::kPrepared || kv.second.phase == pool::RedoPhase::kApplying ||
        kv.second.phase == pool::RedoPhase::kFrozen ||
        (kv.second.phase == pool::RedoPhase::kApplied && kv.second.commit_id != 0))
      owner_->NoteUnrecovered(TxKey{kv.second.committer_node_id, kv.second.txid});
  transport_->SetHandler([this](const transport::Request& req, transport::Reply* reply) { dispatch_->Handle(req, reply); });
  HOTPOT_RETURN_IF_ERROR(transport_->Listen(ctx_.opt.data_host, ctx_.opt.data_port, &port_));
  if (!ctx_.opt.shim_socket_path.empty())
    HOTPOT_RETURN_IF_ERROR(StartShimServer(ctx_.opt.shim_socket_path, this, ctx_.opt.log, &shim_));
  if (!manual_resolver_) {
    copies_->Start();
    resolver_->Start();
  }
  return Status::Ok();
}

void EngineImpl::Shutdown() {
  std::lock_guard<std::mutex> g(shutdown_mu_);
  {
    // Wake Open() callers waiting for the control plane first: the shim server joins its threads, and one may be
    // waiting for a control plane that is itself blocked calling Shutdown.
    std::lock_guard<std::mutex> l(open_mu_);
    if (ctx_.shut.exchange(true)) return;
    for (auto& kv : pending_) {
      if (!kv.second.done) {
        kv.second.done = true;
        kv.second.status = Status(Code::kUnavailable, "engine shut down");
      }
    }
  }
  open_cv_.notify_all();
  if (resolver_) resolver_->Stop();
  if (copies_) copies_->Stop();
  if (shim_) shim_->Shutdown();
  if (transport_) transport_->Shutdown();
  shim_.reset();
  // The transport stays allocated until the destructor: a caller racing with Shutdown gets UNAVAILABLE from it
  // instead of touching freed memory.
  if (view_) view_->DetachStores();
  pool_.reset();
}

void EngineImpl::SetMembers(uint64_t epoch, const std::vector<Member>& members) {
  const std::map<uint32_t, Member> prev = view_->SetMembers(members);
  if (ctx_.shut.load()) return;
  transport_->SetEpoch(epoch);  // stamped on every request from now on (fencing)
  if (ctx_.wake_resolver) ctx_.wake_resolver();  // parts whose committer came back are asked about at once
  const uint32_t self = ctx_.self();
  std::map<uint32_t, Member> next;
  for (const Member& m : members) next[m.id] = m;
  for (const auto& kv : next) {
    if (kv.first == self) continue;
    if (kv.second.alive) {
      auto it = prev.find(kv.first);
      if (it == prev.end() || !it->second.alive || it->second.data_address != kv.second.data_address ||
          it->second.identity != kv.second.identity)
        transport_->SetPeer(kv.first, kv.second.data_address, kv.second.identity);
    } else {
      transport_->RemovePeer(kv.first);
    }
  }
  for (const auto& kv : prev)
    if (next.count(kv.first) == 0 && kv.first != self) transport_->RemovePeer(kv.first);
  // A member whose store was replaced holds none of the copies this node's owner side recorded for it.
  for (const auto& kv : next) {
    auto it = prev.find(kv.first);
    if (it != prev.end() && !it->second.store_id.empty() && !kv.second.store_id.empty() &&
        it->second.store_id != kv.second.store_id) {
      ctx_.Log("engine: node " + std::to_string(kv.first) + " rejoined with a replaced store: its copies no longer count");
      owner_->ForgetHolder(kv.first);
    }
  }
  uint64_t seen = ctx_.members_epoch.load();
  while (seen < epoch && !ctx_.members_epoch.compare_exchange_weak(seen, epoch)) {
  }
  ctx_.Log("engine: membership epoch " + std::to_string(epoch) + ", " + std::to_string(members.size()) + " members");
  if (obs_.events().enabled(observe::EventKind::kMembership)) {
    observe::Event e;
    e.kind = observe::EventKind::kMembership;
    e.txid = epoch;
    e.count = members.size();
    for (const Member& m : members) e.page += m.alive ? 1 : 0;  // alive members
    obs_.Emit(e);
  }
}

void EngineImpl::ChangeOwnership(const DatasetInfo& info, uint32_t chunk_size, pool::DatasetStore* store,
                                 const DatasetInfo* before) {
  const uint32_t self = ctx_.self();
  const uint64_t per_chunk = chunk_size / kPageSize, pages = store->page_count();
  // Chunk maps list chunks in index order; a lookup by position (with a scan for a map that does not) keeps a map of
  // 262 144 chunks (1 TiB) linear, not quadratic.
  auto owner_in = [](const DatasetInfo& i, uint32_t c) -> uint32_t {
    if (c < i.chunks.size() && i.chunks[c].index == c) return i.chunks[c].owner;
    for (const ChunkInfo& x : i.chunks)
      if (x.index == c) return x.owner;
    return 0;
  };
  for (const ChunkInfo& c : info.chunks) {
    const uint64_t first = uint64_t(c.index) * per_chunk;
    if (first >= pages) continue;
    const uint64_t end = std::min(first + per_chunk, pages);
    const uint32_t was = before ? owner_in(*before, c.index) : 0;
    if (c.owner == self && (before == nullptr || was != self)) owner_->GainChunk(ChunkRef{info.id, c.index});
    if (c.owner == self && c.owner_recovering) continue;  // the recovery installs the pages as owned
    if (c.owner == self && (before == nullptr || was != self)) {
      // Gained (a handoff to this node, or the first map after a start): its copies are the chunk's pages now.
      uint64_t promoted = 0;
      for (const auto& [pg, m] : store->WrittenPages(first, end)) {
        if (m.state == PageState::kCommitted || m.state == PageState::kRedundant) {
          if (store->SetState(pg, PageState::kOwned).ok()) promoted++;
        }
      }
      if (before != nullptr || promoted > 0) {
        ctx_.counters.chunks_taken_over++;
        ctx_.Note(observe::EventKind::kChunkOwned, was, info.id, first, promoted);
        ctx_.Log("engine: now owns chunk " + std::to_string(c.index) + " of dataset " + std::to_string(info.id) +
                 (was ? " (from node " + std::to_string(was) + ")" : "") + ": " + std::to_string(promoted) +
                 " cached pages promoted");
      }
    } else if (c.owner != self && (before == nullptr || was == self)) {
      // Lost (handed off, or moved while this node was down): owned copies become cached ones, which pushes keep
      // coherent from now on (an owned copy is never pushed to). Refused here first: this map is not the view's yet.
      if (was == self) owner_->LoseChunk(ChunkRef{info.id, c.index});
      uint64_t demoted = 0;
      for (const auto& [pg, m] : store->WrittenPages(first, end))
        if (m.state == PageState::kOwned && store->SetState(pg, PageState::kCommitted).ok()) demoted++;
      if (demoted > 0) owner_->LoseChunk(ChunkRef{info.id, c.index});
      owner_->ForgetChunk(info.id, first, end - first);
      owner_->EndHandOff(ChunkRef{info.id, c.index});
      if (before != nullptr) ctx_.Fault(FaultPoint::kOpenAfterDemote);
      // After a failover the new owner may have changed these pages already (this node was down or cut off): they
      // are checked with it before snapshot reads here succeed again, like copies that missed a push.
      if (demoted > 0 && before != nullptr) cache_->Missed(info.id);
      if (before != nullptr || demoted > 0) {
        ctx_.counters.chunks_handed_off++;
        ctx_.Note(observe::EventKind::kChunkHandedOff, c.owner, info.id, first, demoted);
        ctx_.Log("engine: chunk " + std::to_string(c.index) + " of dataset " + std::to_string(info.id) +
                 " is owned by node " + std::to_string(c.owner) + " now: " + std::to_string(demoted) +
                 " owned pages kept as cached copies");
      }
    }
  }
}

Status EngineImpl::HandOffChunk(uint64_t dataset_id, uint32_t chunk, uint32_t target, std::chrono::milliseconds timeout,
                                uint64_t* pages_sent) {
  *pages_sent = 0;
  if (ctx_.shut.load()) return Status(Code::kUnavailable, "engine shut down");
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(dataset_id, &d));
  const uint64_t mono0 = observe::MonoNowNs();
  size_t sent = 0;
  const Deadline until = ctx_.time->Now() + timeout;
  Status st = owner_->HandOff(d, chunk, target, until, &sent);
  if (st.ok()) {
    // Nodes a push of this dataset from here failed to are known here only: the target, owning the chunk, would not
    // flag their fetches, and a page fetched from it next to their stale copy showed half of a commit (simulation
    // seed 3961 with SIM_RESTARTS_HEAVY=1: a node cut off from the stopping owner only). They are told to check their
    // copies before the chunk moves; one that cannot be told keeps the chunk here (a failover then suspects everyone).
    const std::vector<uint32_t> untold = resolver_->TellCheckCopiesNow(dataset_id, until);
    if (!untold.empty()) {
      owner_->EndHandOff(ChunkRef{dataset_id, chunk});
      st = Status(Code::kUnavailable, "node " + std::to_string(untold.front()) + " missed a push of dataset " +
                                          std::to_string(dataset_id) +
                                          " from here and cannot be told to check its copies: the chunk stays here");
    }
  }
  *pages_sent = sent;
  ctx_.Log("engine: handoff of chunk " + std::to_string(chunk) + " of dataset " + std::to_string(dataset_id) +
           " to node " + std::to_string(target) + ": " + (st.ok() ? "pages copied" : st.ToString()) + " (" +
           std::to_string(sent) + " pages, " + std::to_string((observe::MonoNowNs() - mono0) / 1000000) + " ms)");
  return st;
}

Status EngineImpl::OpenDataset(const DatasetInfo& info) {
  if (ctx_.shut.load()) return Status(Code::kUnavailable, "engine shut down");
  if (info.size_bytes == 0 || info.size_bytes % kPageSize != 0)
    return Status(Code::kInvalidArgument,
                  "dataset " + std::to_string(info.id) + ": size must be a positive multiple of 4096");
  const uint32_t chunk = info.chunk_size_bytes ? info.chunk_size_bytes : ctx_.opt.chunk_size_bytes;
  if (chunk == 0 || chunk % kPageSize != 0)
    return Status(Code::kInvalidArgument,
                  "dataset " + std::to_string(info.id) + ": chunk size must be a multiple of 4096");
  const uint64_t nchunks = (info.size_bytes + chunk - 1) / chunk;
  for (const ChunkInfo& c : info.chunks)
    if (c.index >= nchunks)
      return Status(Code::kInvalidArgument, "dataset " + std::to_string(info.id) + ": chunk index " +
                                                std::to_string(c.index) + " beyond the dataset");
  pool::DatasetStore* store = nullptr;
  HOTPOT_RETURN_IF_ERROR(pool_->OpenDataset(info.id, info.size_bytes, &store));
  DatasetState loaded;
  const bool known = view_->FindDataset(info.id, &loaded).ok();
  ChangeOwnership(info, chunk, store, known ? &loaded.info : nullptr);
  // Only pages ever written matter below: an empty 1 TiB dataset is 268 million untouched pages.
  const std::vector<std::pair<uint64_t, PageMeta>> written = store->WrittenPages(0, store->page_count());
  if (!known) {
    // First open since this engine started, with pages from before: pushes this node made as their owner may have
    // missed nodes, which are told to check their copies at their next fetch from here (before anything is served).
    bool owned = false;
    for (size_t i = 0; i < written.size() && !owned; i++) owned = written[i].second.state == PageState::kOwned;
    if (owned) owner_->SuspectEveryone(info.id);
  }
  if (!view_->PutDataset(info, chunk, store)) return Status::Ok();
  // First open after a start: finish what the redo log left, and check the cached copies with their owners.
  owner_->RecoverRecords(info.id, info.replicas ? info.replicas : 1, store);
  std::vector<uint64_t> cached;
  for (const auto& [pg, m] : store->WrittenPages(0, store->page_count())) {
    if (m.state == PageState::kCommitted || m.state == PageState::kRedundant) cached.push_back(pg);
  }
  if (!cached.empty()) {
    ctx_.Log("engine: dataset " + std::to_string(info.id) + ": " + std::to_string(cached.size()) +
             " cached pages from before the restart are checked with their owners before apps may open it");
    resolver_->QueueRevalidation(info.id, std::move(cached));
  }
  return Status::Ok();
}

void EngineImpl::CompleteOpen(uint64_t request_id, const Status& status, uint64_t dataset_id) {
  {
    std::lock_guard<std::mutex> l(open_mu_);
    auto it = pending_.find(request_id);
    if (it == pending_.end() || it->second.done) return;  // timed out or unknown: nothing waits any more
    it->second.done = true;
    it->second.status = status;
    it->second.dataset_id = dataset_id;
  }
  open_cv_.notify_all();
}

Status EngineImpl::Open(const std::string& name, const CreateOptions* create, const PeerCred& cred, OpenResult* out) {
  if (!on_open_) return Status(Code::kUnavailable, "engine: no control plane attached to resolve dataset names");
  uint64_t rid;
  {
    std::lock_guard<std::mutex> l(open_mu_);
    if (ctx_.shut.load()) return Status(Code::kUnavailable, "engine shut down");
    rid = next_request_++;
    pending_[rid] = PendingOpen{};
  }
  on_open_(rid, name, create, cred);
  uint64_t ds_id = 0;
  {
    std::unique_lock<std::mutex> l(open_mu_);
    const bool done = open_cv_.wait_for(l, std::chrono::seconds(15), [&] { return pending_[rid].done; });
    const PendingOpen p = pending_[rid];
    pending_.erase(rid);
    if (!done)
      return Status(Code::kDeadlineExceeded, "open of dataset '" + name + "': control plane did not answer in 15 s");
    if (!p.status.ok()) return p.status;
    ds_id = p.dataset_id;
  }
  HOTPOT_RETURN_IF_ERROR(resolver_->WaitReady(ds_id));
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds_id, &d));
  out->dataset_id = ds_id;
  out->size_bytes = d.info.size_bytes;
  out->mode = d.info.mode;
  out->replicas = d.info.replicas;
  out->chunk_size_bytes = d.chunk_size;
  out->page_fd = d.store->app_fd();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Reads

Status EngineImpl::EnsurePages(uint64_t dataset_id, uint64_t first_page, uint32_t count) {
  const uint64_t mono0 = observe::MonoNowNs();
  const uint64_t runs0 = observe::ThreadFetchRuns();
  // A node past its lease may have lost its chunks and missed pushes: the mark goes up before a fetch installs a
  // current page next to them (as in ReadCommitted).
  resolver_->CheckLease();
  Status st = fetcher_->EnsurePages(dataset_id, first_page, count, ctx_.opt.owner_wait);
  const uint64_t ns = observe::MonoNowNs() - mono0;
  obs_.fault_latency().Add(ns);
  LogIfSlow(&ctx_, "fault", dataset_id, "a page fault on pages " + std::to_string(first_page) + "+" +
                                            std::to_string(count), ns, st);
  // Remote runs were recorded by the fetcher; a fault served without any is a local one.
  if (observe::ThreadFetchRuns() == runs0 && obs_.events().enabled(observe::EventKind::kFaultLocal)) {
    observe::Event e;
    e.kind = observe::EventKind::kFaultLocal;
    e.node = ctx_.self();
    e.dataset = dataset_id;
    e.page = first_page;
    e.count = count;
    e.latency_ns = ns;
    e.status = st.code();
    obs_.Emit(e);
  }
  return st;
}

Status EngineImpl::PrefetchPages(uint64_t dataset_id, uint64_t first_page, uint32_t count) {
  resolver_->CheckLease();
  return fetcher_->EnsurePages(dataset_id, first_page, count);
}

Status EngineImpl::BaseImage(uint64_t session_id, uint64_t page, uint8_t* out4096) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &d));
  uint64_t version = 0;
  return cache_->BaseImage(session_id, d, page, out4096, &version);
}

Status EngineImpl::ReadCommitted(uint64_t session_id, uint64_t first_page, uint32_t count, uint8_t* out) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &d));
  const uint64_t ds = d.info.id;
  if (count == 0 || first_page >= d.store->page_count() || count > d.store->page_count() - first_page)
    return Status(Code::kOutOfRange, "pages " + std::to_string(first_page) + "+" + std::to_string(count) +
                                         " beyond dataset " + std::to_string(ds));
  Backoff backoff(time_.get(), std::chrono::microseconds(50), std::chrono::microseconds(2000),
                  time_->Now() + std::chrono::seconds(2));
  // A node whose lease ran out (it was paused or cut off longer than the lease) may hold copies that missed commits
  // — and, once its chunks failed over, owned pages that others changed since: the "unchecked" mark goes up before
  // this read looks, not only at the resolver's next round.
  resolver_->CheckLease();
  for (;;) {
    HOTPOT_RETURN_IF_ERROR(EnsurePages(ds, first_page, count));
    bool ready = false;
    HOTPOT_RETURN_IF_ERROR(cache_->ReadConsistent(d, first_page, count, out, &ready));
    if (ready) return Status::Ok();
    // What is open may be closed by the resolver (a check of the cached copies): without its thread, a round here.
    if (manual_resolver_) resolver_->RunOnce();
    if (!backoff.Wait())
      return Status(Code::kUnavailable, "dataset " + std::to_string(ds) + ": a commit stays open on node " +
                                            std::to_string(ctx_.self()) + ", no consistent read within 2 s");
  }
}

Status EngineImpl::RefreshPages(uint64_t dataset_id, uint64_t first_page, uint64_t count) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(dataset_id, &d));
  if (count == 0 || first_page >= d.store->page_count() || count > d.store->page_count() - first_page)
    return Status(Code::kOutOfRange, "pages " + std::to_string(first_page) + "+" + std::to_string(count) +
                                         " beyond dataset " + std::to_string(dataset_id));
  std::vector<uint64_t> pages;
  for (uint64_t pg = first_page; pg < first_page + count; pg++) {
    const PageState st = d.store->GetMeta(pg).state;
    if (st == PageState::kCommitted || st == PageState::kRedundant) pages.push_back(pg);
  }
  // A page whose owner is down (or did not answer) is asked again until an owner answers — the failover gives its
  // chunk a new owner within the lease + 2 s — as a fault on it waits (EngineOptions::owner_wait): the MRSW holder
  // is given the lease once its copies are current rather than refused while the takeover is under way.
  Backoff wait_owner(time_.get(), std::chrono::milliseconds(5), std::chrono::milliseconds(200),
                     time_->Now() + ctx_.opt.owner_wait, /*leave_room=*/false);
  std::vector<uint64_t> unchecked;
  for (;;) {
    std::vector<uint64_t> failed;
    unchecked.clear();
    resolver_->CheckLease();
    fetcher_->RefreshFromOwners(d, pages, &unchecked, &failed, /*wait_unlocked=*/true);
    unchecked.insert(unchecked.end(), failed.begin(), failed.end());
    if (unchecked.empty()) return Status::Ok();
    std::sort(unchecked.begin(), unchecked.end());
    if (!wait_owner.Wait()) break;
    HOTPOT_RETURN_IF_ERROR(view_->FindDataset(dataset_id, &d));  // the chunk map may name another owner now
    pages = unchecked;
  }
  return Status(Code::kUnavailable, std::to_string(unchecked.size()) + " cached pages of dataset " +
                                        std::to_string(dataset_id) + " (first: page " + std::to_string(unchecked[0]) +
                                        ") could not be checked with their owner: it is down or did not answer within " +
                                        std::to_string(ctx_.opt.owner_wait.count()) + " ms");
}

Status EngineImpl::Publication(uint64_t session_id, PublicationInfo* out) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &d));
  resolver_->CheckLease();  // as in ReadCommitted
  *out = cache_->Publication(d.info.id);
  return Status::Ok();
}

Status EngineImpl::PublicationMemory(uint64_t session_id, int* fd) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &d));
  return cache_->PublicationFd(d.info.id, fd);
}

// ---------------------------------------------------------------------------------------------------------------
// Commits

Status EngineImpl::CommitWith(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                              const CommitExtras& extras, CommitResult* result) {
  const uint64_t mono0 = observe::MonoNowNs();
  // The app's context (set by the shim server from the frame header) is the parent of this node's commit span; the
  // owners' spans are children of the latter. With tracing off here, the app's context still travels on.
  const wire::TraceContext* app = observe::CurrentTrace();
  observe::SpanTimer span(&obs_, "hotpot.node.commit", app);
  observe::TraceScope scope(span.active() ? span.context() : (app ? *app : wire::TraceContext{}));
  uint64_t ds = 0;
  (void)cache_->SessionDataset(session_id, &ds);
  if (obs_.events().enabled(observe::EventKind::kCommitStart)) {
    observe::Event e;
    e.kind = observe::EventKind::kCommitStart;
    e.node = ctx_.self();
    e.dataset = ds;
    e.count = pages.size();
    obs_.Emit(e);
  }
  Status st;
  {
    observe::CommitPhases phases(&obs_, span.active() ? span.context() : wire::TraceContext{});
    phases.Start("hotpot.commit.diff");
    st = committer_->Commit(session_id, pages, replicas, extras, result);
  }
  const uint64_t ns = observe::MonoNowNs() - mono0;
  obs_.commit_latency().Add(ns);
  LogIfSlow(&ctx_, "commit", ds, "a commit of " + std::to_string(pages.size()) + " pages", ns, st);
  if (span.active()) {
    span.Attr("hotpot.node", int64_t(ctx_.self()));
    span.Attr("hotpot.dataset", int64_t(ds));
    span.Attr("hotpot.pages", int64_t(result->pages));
    span.Attr("hotpot.ranges", int64_t(result->ranges));
    span.Attr("hotpot.bytes", int64_t(result->bytes));
    span.Attr("hotpot.copies", int64_t(result->copies));
    span.Attr("hotpot.conflicts", int64_t(result->conflicts.size()));
    span.Attr("hotpot.outcome", std::string(CodeName(st.code())));
  }
  span.End(st.code());
  NoteCommit(ds, st, *result, ns);
  return st;
}

void EngineImpl::NoteCommit(uint64_t ds, const Status& st, const CommitResult& result, uint64_t ns) {
  observe::Event e;
  e.node = ctx_.self();
  e.dataset = ds;
  e.latency_ns = ns;
  e.status = st.code();
  e.count = result.ranges;
  e.page = result.pages;
  e.kind = observe::EventKind::kCommitEnd;
  std::snprintf(e.detail, sizeof e.detail, "copies=%u", result.copies);
  obs_.Emit(e);
  if (st.ok()) return;
  e.kind = observe::EventKind::kAbort;
  std::snprintf(e.detail, sizeof e.detail, "%s", CodeName(st.code()));
  obs_.Emit(e);
  for (size_t i = 0; i < result.conflicts.size() && i < 16; i++) {
    observe::Event c = e;
    c.kind = observe::EventKind::kConflict;
    c.page = result.conflicts[i].offset / kPageSize;
    c.count = result.conflicts[i].len;
    std::snprintf(c.detail, sizeof c.detail, "offset=%llu", (unsigned long long)result.conflicts[i].offset);
    obs_.Emit(c);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Introspection

EngineStats EngineImpl::Stats() {
  EngineStats s;
  s.node_id = ctx_.self();
  s.data_port = port_;
  const Counters& c = ctx_.counters;
  EngineCounters& k = s.counters;
#define HOTPOT_COUNTER(field, ...) k.field = c.field;
#include "engine/counters.def"
#undef HOTPOT_COUNTER
  if (ctx_.shut.load()) return s;
  s.pool = pool_->Stats();
  k.fdatasyncs = s.pool.fdatasyncs;  // the pool counts them (a counter of the engine's own stays 0)
  s.open_sessions = cache_->Sessions().size();
  s.locked_pages = owner_->LockedPages();
  const std::vector<uint32_t> alive_nodes = view_->AliveNodes();
  const std::set<uint32_t> alive(alive_nodes.begin(), alive_nodes.end());
  for (const DatasetState& d : view_->Datasets()) {
    const uint64_t per_chunk = d.chunk_size / kPageSize;
    const uint64_t total = d.store->page_count();
    const std::vector<std::pair<uint64_t, PageMeta>> written = d.store->WrittenPages(0, total);
    auto next = written.begin();
    for (uint64_t first = 0, chunk = 0; first < total; first += per_chunk, chunk++) {
      ChunkStat cs;
      cs.dataset_id = d.info.id;
      cs.chunk = uint32_t(chunk);
      uint32_t owner = 0;
      cs.owned = ChunkOwner(d, first, &owner) && owner == ctx_.self();
      cs.owner = owner;
      if (cs.owned) owner_->ChunkHolders(d, first, per_chunk, alive, std::max<uint32_t>(1, d.info.replicas), &cs);
      for (; next != written.end() && next->first < first + per_chunk; ++next) {
        switch (next->second.state) {
          case PageState::kOwned: cs.pages_owned++; break;
          case PageState::kCommitted: cs.pages_committed++; break;
          case PageState::kRedundant: cs.pages_redundant++; break;
          default: break;
        }
      }
      s.chunks.push_back(cs);
    }
  }
  return s;
}

Status EngineImpl::DumpPage(uint64_t dataset_id, uint64_t page, PageDump* out) {
  DatasetState d;
  Status found = view_->FindDataset(dataset_id, &d);
  if (!found.ok()) {
    // Not loaded by the control plane (yet): the pool may still hold it from before a restart.
    if (ctx_.shut.load() || !pool_ || (d.store = pool_->FindDataset(dataset_id)) == nullptr) return found;
  }
  if (page >= d.store->page_count())
    return Status(Code::kOutOfRange, PageName(dataset_id, page) + " beyond the dataset end");
  out->data.assign(kPageSize, 0);
  PageMeta m;
  HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(page, out->data.data(), &m));
  out->state = m.state;
  out->version = m.version;
  return Status::Ok();
}

pool::StoreIdentity EngineImpl::Store() {
  if (ctx_.shut.load() || !pool_) return pool::StoreIdentity{};
  return pool_->identity();
}

InspectView EngineImpl::Inspect() {
  InspectView v;
  if (ctx_.shut.load() || !pool_) return v;
  for (const auto& kv : pool_->redo().InFlight()) {
    RedoView r;
    r.slot = kv.first;
    r.txid = kv.second.txid;
    r.dataset_id = kv.second.dataset_id;
    r.committer = kv.second.committer_node_id;
    switch (kv.second.phase) {
      case pool::RedoPhase::kPrepared: r.phase = "prepared"; break;
      case pool::RedoPhase::kApplying: r.phase = "applying"; break;
      case pool::RedoPhase::kApplied: r.phase = "applied"; break;
      case pool::RedoPhase::kDecided: r.phase = "decided"; break;  // this node's commit decision
      case pool::RedoPhase::kCopy: r.phase = "copy"; break;        // another owner's prepared part
      case pool::RedoPhase::kCopyApplied: r.phase = "copy-applied"; break;  // ... that its owner applied
      case pool::RedoPhase::kFrozen: r.phase = "frozen"; break;  // prepared, settled by its participants only
      case pool::RedoPhase::kCopyFrozen: r.phase = "copy-frozen"; break;
      default: r.phase = "free"; break;
    }
    r.ranges = kv.second.ranges.size();
    for (const auto& rr : kv.second.ranges) r.bytes += rr.bytes.size();
    r.sender_epoch = kv.second.sender_epoch;
    v.redo.push_back(r);
  }
  for (const NodeCache::SessionInfo& s : cache_->Sessions()) {
    SessionView sv;
    sv.session_id = s.id;
    sv.dataset_id = s.ds;
    sv.cred = s.cred;
    sv.dataset_name = view_->DatasetName(s.ds);
    v.sessions.push_back(sv);
  }
  return v;
}

}  // namespace

Status Engine::Start(const EngineOptions& options, OpenRequestFn on_open, std::unique_ptr<Engine>* out) {
  return StartWith(options, std::move(on_open), EngineDeps{}, out);
}

Status Engine::StartWith(const EngineOptions& options, OpenRequestFn on_open, EngineDeps deps,
                         std::unique_ptr<Engine>* out) {
  if (options.pool_dir.empty()) return Status(Code::kInvalidArgument, "engine: pool_dir is required");
  if (options.request_timeout.count() <= 0) return Status(Code::kInvalidArgument, "engine: request_timeout must be > 0");
  auto e = std::make_unique<EngineImpl>(options, std::move(on_open));
  Status st = e->Init(std::move(deps));
  if (!st.ok()) {
    e->Shutdown();
    return st;
  }
  *out = std::move(e);
  return Status::Ok();
}

}  // namespace engine
}  // namespace hotpot
