// The engine: page fetch, the MRMW commit protocol (committer and owner sides), coherence push, replica top-up,
// sessions with base images. See docs/design/engine.md and ARCHITECTURE §4-§7.
//
// Locking (never call the network while holding any of these):
//   mu_        membership, datasets (chunk maps), pending opens, sessions table.
//   cache_mu_  the node cache writes + pre-images + update sequence: every overwrite of a present page saves
//              the pre-image for open sessions in the same critical section, so BaseImage is always consistent.
//   owner_mu_  owner side: page locks, transactions, cacher sets.
// Order when nested: owner_mu_ -> cache_mu_ (mu_ is never held with another).
#include "engine/engine.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <thread>

#include "common/fd.h"
#include "engine/lease.h"
#include "engine/messages.h"
#include "engine/observe.h"
#include "engine/shim_protocol.h"
#include "engine/shim_server.h"
#include "transport/transport.h"

namespace hotpot {
namespace engine {
namespace {

using pool::kPageSize;
using pool::PageMeta;
using pool::PageState;
using transport::Clock;
using transport::Deadline;

constexpr uint32_t kPage = msg::kPage;
constexpr size_t kMergeGap = 16;  // runs of differing bytes closer than this are shipped as one range
constexpr uint8_t kPushUnknown = 2;  // SendPages: the message carrying this page failed
// The open-mark key of a dataset with cached copies no owner could check after a restart (node ids start at 1).
const std::pair<uint32_t, uint64_t> kUncheckedMark{0, 0};

struct PageKey {
  uint64_t ds;
  uint64_t page;
  bool operator<(const PageKey& o) const { return ds != o.ds ? ds < o.ds : page < o.page; }
};

struct TxKey {
  uint32_t committer;
  uint64_t txid;
  bool operator<(const TxKey& o) const { return committer != o.committer ? committer < o.committer : txid < o.txid; }
};

// An owner-side transaction: prepared (locked) pages waiting for APPLY/RELEASE/ABORT.
struct OwnerTx {
  uint64_t ds = 0;
  uint32_t replicas = 1;
  std::vector<msg::Range> ranges;
  std::vector<uint64_t> pages;     // sorted unique touched pages
  std::vector<uint64_t> versions;  // new version per page (parallel to pages)
  std::vector<uint64_t> read_pages;  // pages locked only for read validation (nothing applied to them)
  uint64_t commit_id = 0;  // multi-part commits: shared by every part (pushes are marked open until DONE)
  uint32_t slot = 0;
  bool has_slot = false;  // a read-only validation writes no redo record
  bool applied = false;
  bool applying = false;  // OwnerApply in progress: the lock breaker leaves it alone
  bool recovered = false;  // re-created from a redo record after a restart
  // Recovered from a record past PREPARE (phase applying: the owner crashed while applying or pushing): the commit
  // was decided, so the resolver applies and pushes it again without asking (cachers may have missed the push).
  bool decided = false;
  bool doubt_logged = false;
  uint32_t copies = 0;
  std::vector<uint32_t> marked;  // nodes its pushes marked open (a repeated APPLY answers them again)
  Clock::time_point locked_at;
};

// Committer side: a multi-part commit decided COMMIT whose parts are not all applied and released yet.
struct Decision {
  uint64_t ds = 0;
  std::vector<pool::RedoPart> parts;
  std::vector<bool> done;  // APPLY then RELEASE acknowledged by the part's owner
  uint64_t commit_id = 0;
  std::set<uint32_t> marked;  // nodes holding an open mark of the commit: DONE once every part is done
  uint32_t slot = 0;
  bool has_slot = false;   // durable decision record in the redo log (commits with >= 2 writing parts)
  bool driving = false;    // the resolver is re-driving it
  // The nodes a part's pushes marked are not all known (the decision was recovered after a restart, or an owner
  // completed a part without us): DONE then goes to every alive node (idempotent, and rare).
  bool done_everywhere = false;
};

uint64_t UnixMs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count());
}

struct PreImage {
  uint64_t seq;
  std::vector<uint8_t> data;
  uint64_t version = 0;  // the page version this content had (read validation compares it)
};

struct Session {
  uint64_t ds = 0;
  uint64_t sync = 0;
  PeerCred cred;  // the app's (hotpot stat lists mapped processes)
};

struct DatasetState {
  DatasetInfo info;
  pool::DatasetStore* store = nullptr;
  uint32_t chunk_size = 0;
};

std::string PageName(uint64_t ds, uint64_t page) {
  return "dataset " + std::to_string(ds) + " page " + std::to_string(page);
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineOptions& o, OpenRequestFn on_open) : opt_(o), on_open_(std::move(on_open)) {}
  ~EngineImpl() override { Shutdown(); }

  Status Init();

  // Engine
  uint16_t data_port() const override { return port_; }
  void SetNodeId(uint32_t id) override {
    node_id_.store(id);
    transport_->SetNodeId(id);
  }
  void SetMembers(uint64_t epoch, const std::vector<Member>& members) override;
  Status OpenDataset(const DatasetInfo& info) override;
  void CompleteOpen(uint64_t request_id, const Status& status, uint64_t dataset_id) override;
  EngineStats Stats() override;
  Status DumpPage(uint64_t dataset_id, uint64_t page, PageDump* out) override;
  Status ReadCommitted(uint64_t session_id, uint64_t first_page, uint32_t count, uint8_t* out) override;
  Status RefreshPages(uint64_t dataset_id, uint64_t first_page, uint64_t count) override;
  pool::StoreIdentity Store() override;
  std::vector<ChunkRef> RecoveredChunks() override;
  void SetLeaseDeadline(uint64_t unix_ms) override;
  void Shutdown() override;
  observe::Observer* observer() override { return &obs_; }
  InspectView Inspect() override;

  // ShimBackend
  Status Open(const std::string& name, const CreateOptions* create, const PeerCred& cred, OpenResult* out) override;
  Status EnsurePages(uint64_t dataset_id, uint64_t first_page, uint32_t count) override;
  uint64_t OpenSession(uint64_t dataset_id, const PeerCred& cred) override;
  void CloseSession(uint64_t session_id) override;
  void ResyncSession(uint64_t session_id) override;
  Status BaseImage(uint64_t session_id, uint64_t page, uint8_t* out4096) override;
  Status Commit(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                CommitResult* result) override;
  Status CommitWith(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                    const CommitExtras& extras, CommitResult* result) override;

 private:
  Status BaseImageVersion(uint64_t session_id, uint64_t page, uint8_t* out4096, uint64_t* version);
  // MRSW: the lease certificate must cover every written page for this committer (owner_mu_ held).
  Status CheckLeaseLocked(uint32_t committer, const DatasetState& d, const msg::PrepareRequest& req,
                          const std::vector<uint64_t>& write_pages);
  void Log(const std::string& line) {
    if (opt_.log) opt_.log(line);
  }
  uint32_t self() const { return node_id_.load(); }
  Status FindDataset(uint64_t ds, DatasetState* out);
  // The dataset an open session belongs to (NOT_FOUND for an unknown or closed session).
  Status SessionDataset(uint64_t session_id, uint64_t* ds, DatasetState* out);
  bool IsAlive(uint32_t node);
  std::vector<uint32_t> AliveNodes();
  Deadline NewDeadline() const { return transport::DeadlineIn(opt_.request_timeout); }
  // The same deadline as wall-clock unix ms, for PREPARE (owners compare it with their clocks).
  uint64_t DeadlineUnixMs() const {
    return UnixMs() + uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(opt_.request_timeout).count());
  }

  // Transport entry point.
  void Handle(const transport::Request& req, transport::Reply* reply);
  void HandleFetch(const transport::Request& req, transport::Reply* reply);

  // Owner side (also called directly when the owner is this node).
  Status OwnerPrepare(uint32_t committer, const msg::PrepareRequest& req, uint32_t* copies,
                      std::vector<msg::Conflict>* conflicts);
  // `marked` (optional) receives the nodes that now carry an open mark of the commit (multi-part commits).
  Status OwnerApply(const TxKey& key, uint32_t* copies, std::vector<uint32_t>* marked = nullptr);
  Status ApplyLocked(const TxKey& key, const OwnerTx& tx, uint32_t* copies, std::vector<uint32_t>* marked);
  Status OwnerFinish(const TxKey& key, bool abort);
  void BreakExpiredLocked();  // owner_mu_ held
  void DropTxLocked(const TxKey& key, OwnerTx* tx, bool free_slot);
  Status PushAndReplicate(const TxKey& key, const OwnerTx& tx, uint32_t* copies, std::vector<uint32_t>* marked);
  // Sends `b` (header fields and pages) to `node` as PUSH_BATCH messages of at most kBatchPages pages and about
  // kBatchBytes bytes: one message when it fits (applied there in one step). Otherwise every message is marked open
  // (key b.committer, b.commit_id) and *split is set: the caller closes the mark with DONE once all are sent.
  // accepted: per page 1 = held at the version, 0 = not held (answered), kPushUnknown = its message failed (the
  // node may or may not have applied it). Returns the first error.
  // A message answered kPushStale for some pages (that node missed a commit) is sent again with those pages whole:
  // whole(i) gives the post-commit bytes of b.pages[i].
  using WholePageFn = std::function<Status(size_t index, const std::vector<uint8_t>** page)>;
  Status SendPages(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole, std::vector<uint8_t>* accepted,
                   bool* split);
  Status SendBatch(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole, size_t first,
                   std::vector<uint8_t>* accepted);

  // Node cache (cache_mu_ taken inside).
  void SavePreImageLocked(uint64_t ds, uint64_t page, pool::DatasetStore* store);  // cache_mu_ held
  void PrunePreImagesLocked();                                                   // cache_mu_ held
  Status HandlePush(const msg::PushRequest& req, bool* applied);
  Status HandlePushBatch(const msg::PushBatch& b, std::vector<uint8_t>* accepted);
  void HandleDone(uint32_t committer, uint64_t commit_id);
  // Snapshot reads (docs/design/consistency.md): every change of node-cache content bumps the dataset's seq in
  // the same cache_mu_ section as the change; a multi-part commit's pages are marked open on a node from its
  // first change there until the committer's DONE (or 4 x the request timeout).
  Status Publication(uint64_t session_id, PublicationInfo* out) override;
  Status PublicationMemory(uint64_t session_id, int* fd) override;
  // A change of the dataset's node-cache content (cache_mu_ held for the guard's whole life): the shared word
  // shows "busy" from construction and the next seq after destruction (shimproto::PublicationWord).
  class ChangeGuard {
   public:
    ChangeGuard(EngineImpl* e, uint64_t ds) : e_(e), ds_(ds) { e_->BusyLocked(ds_); }
    ~ChangeGuard() { e_->PublishLocked(ds_); }
    ChangeGuard(const ChangeGuard&) = delete;
    ChangeGuard& operator=(const ChangeGuard&) = delete;

   private:
    EngineImpl* e_;
    uint64_t ds_;
  };
  struct PubState;
  PubState& PubLocked(uint64_t ds);      // cache_mu_ held; creates the shared word on first use
  void BusyLocked(uint64_t ds);          // cache_mu_ held
  void PublishLocked(uint64_t ds);       // cache_mu_ held: seq + 1, open count, not busy
  // Open marks whose DONE has not come for a while (a lost DONE, a crashed committer or owner, a mark from a
  // revalidation): ask the mark's key node (MARK_STATUS) and close the ones it no longer knows. A mark is never
  // closed on age alone: a half-landed commit must stay hidden from snapshot readers until it is whole.
  void CheckMarks();
  // MARK_STATUS: is the commit (or one-shot push) with this id still in progress on this node?
  bool MarkInProgress(uint64_t id);
  Status HandleReplica(const msg::ReplicaRequest& req);

  // Committer side.
  // Transport call that rides out a peer whose control plane has not yet loaded the dataset (it learns new
  // datasets from the dispatcher a moment after they are created): such a NOT_FOUND is retried until the deadline.
  Status CallPeer(uint32_t node, uint16_t type, const std::vector<uint8_t>& payload, std::vector<uint8_t>* response,
                  Deadline deadline);
  Status CallPrepare(uint32_t owner, const msg::PrepareRequest& req, uint32_t* copies,
                     std::vector<msg::Conflict>* conflicts, Deadline deadline);
  Status CallTx(uint32_t owner, uint16_t type, uint64_t txid, uint32_t* copies, Deadline deadline,
                std::vector<uint32_t>* marked = nullptr);
  // DONE of a commit to every node that carries its open mark (best effort: a mark left open is closed by
  // CheckMarks once this node says the commit is finished).
  void SendDone(uint64_t commit_id, const std::set<uint32_t>& nodes);
  // The decided commit is applied everywhere: DONE to the nodes it marked, or to every alive node when those are
  // not all known (Decision::done_everywhere).
  void SendDecisionDone(const Decision& dec);
  Status FetchRun(const DatasetState& ds, uint32_t owner, uint64_t first, uint32_t count);

  // Recovery of in-flight redo records of a dataset (after a restart).
  void RecoverRedo(uint64_t ds, uint32_t replicas, pool::DatasetStore* store);
  // Cached copies (not owned) found in the pool when a dataset is first opened may have missed commits while this
  // node was down: the resolver asks their owners for the current version and installs newer copies; apps cannot
  // open the dataset until that is done (RevalidatePending, WaitRevalidated).
  void RevalidatePending();
  Status WaitRevalidated(uint64_t ds);
  // Past the lease deadline: marks every dataset unchecked (once) before anything else changes the node cache.
  void CheckLease();
  // Queues every cached page of every dataset for a check with its owner (after a lapsed lease).
  void RevalidateAll();
  // UNAVAILABLE when `page` lies in an owned chunk this node is still recovering (its store was replaced).
  Status CheckNotRecovering(const DatasetState& d, uint64_t page);
  // Resolver: recovers owned chunks marked owner_recovering from every other member's copies (COPY_PAGES), the
  // newest copy of each page, once every member is alive (a member that is down may hold the newest copy).
  void RecoverChunks();
  void HandleCopyPages(const transport::Request& req, transport::Reply* reply);
  // Checks this node's cached (not owned) copies of `pages` (ascending) with their owners: one FETCH with the
  // revalidate flag per run of one owner's consecutive pages (served even while locked), newer copies installed in
  // one cache_mu_ step per run; a page a multi-part commit holds locked marks that commit open here (the copies may
  // show it half landed). Pages absent or owned here are skipped. *unchecked gets the pages whose owner is not
  // alive, *failed those whose owner did not answer. Returns the number of pages updated.
  // With `wait_unlocked`, a page a commit holds locked is asked for again (backoff, up to the request deadline)
  // until the commit is released, so the copy is never older than a commit in flight (MRSW acquire).
  size_t RefreshFromOwners(const DatasetState& d, const std::vector<uint64_t>& pages, std::vector<uint64_t>* unchecked,
                           std::vector<uint64_t>* failed, bool wait_unlocked = false);

  // Commit decisions (docs/design/consistency.md "Commit decision and recovery"). The committer answers OUTCOME
  // queries from in_flight_ (its running commits), decisions_ (decided, not done everywhere; durable in the redo
  // log when >= 2 parts write) and otherwise presumes abort. Owners ask about prepared parts nobody finished.
  msg::OutcomeCode OutcomeOf(uint64_t txid);
  void ResolverLoop();
  void ResolveInDoubt();  // owner role
  void DriveDecisions();  // committer role
  // APPLY then RELEASE to the part; true when the owner has applied it (now or before) and released it.
  bool FinishPart(const pool::RedoPart& part, uint32_t* copies, Status* apply_status, Decision* dec);
  // Test-only fault points (HOTPOT_FAULT_POINT=name: the process exits at once, as if killed;
  // name:pause=MS: the thread that reaches it first sleeps MS ms there, once, as if the process were paused).
  void FaultPoint(const char* name) {
    if (fault_point_ != name) return;
    if (fault_pause_ms_ > 0) {
      if (fault_fired_.exchange(true)) return;
      Log(std::string("engine: fault point ") + name + " reached: pausing " + std::to_string(fault_pause_ms_) + " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(fault_pause_ms_));
      return;
    }
    Log(std::string("engine: fault point ") + name + " reached: exiting");
    std::fflush(nullptr);
    ::_exit(86);
  }

  EngineOptions opt_;
  OpenRequestFn on_open_;
  std::unique_ptr<pool::Pool> pool_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<ShimServer> shim_;
  uint16_t port_ = 0;
  std::atomic<uint32_t> node_id_{0};
  std::atomic<bool> shut_{false};
  std::mutex shutdown_mu_;

  std::mutex mu_;
  std::condition_variable open_cv_;
  std::map<uint32_t, Member> members_;
  std::map<uint64_t, DatasetState> datasets_;
  struct PendingOpen {
    bool done = false;
    Status status;
    uint64_t dataset_id = 0;
  };
  std::map<uint64_t, PendingOpen> pending_;
  uint64_t next_request_ = 1;
  uint64_t next_session_ = 1;
  std::atomic<uint64_t> next_txid_{1};

  std::mutex cache_mu_;
  uint64_t seq_ = 0;
  std::map<uint64_t, Session> sessions_;
  std::map<PageKey, std::vector<PreImage>> preimages_;  // ascending seq
  struct PubState {
    uint64_t seq = 0;
    std::map<std::pair<uint32_t, uint64_t>, Clock::time_point> open;  // (committer, commit id) -> opened at
    // The same state in a shared page apps map read-only (memfd; absent if it could not be created).
    UniqueFd memfd;
    std::atomic<uint64_t>* word = nullptr;
    PubState() = default;
    PubState(const PubState&) = delete;
    PubState& operator=(const PubState&) = delete;
    ~PubState() {
      if (word != nullptr) ::munmap(static_cast<void*>(word), kPage);
    }
  };
  std::map<uint64_t, PubState> pub_;  // per dataset
  // Pages with a fetch in flight -> the highest version of a PUSH refused meanwhile (the fetched copy may be
  // older than a commit that happened after the owner recorded us as a cacher).
  std::map<PageKey, uint64_t> fetching_;

  std::mutex decide_mu_;
  std::map<uint64_t, msg::OutcomeCode> in_flight_;           // part txid -> state while its Commit runs
  std::map<uint64_t, std::shared_ptr<Decision>> decisions_;  // part txid -> decided, not done everywhere
  std::string fault_point_;
  long fault_pause_ms_ = 0;
  std::atomic<bool> fault_fired_{false};
  std::map<uint64_t, std::vector<uint64_t>> revalidate_;  // ds -> cached pages still to check (mu_)
  std::set<uint64_t> revalidate_blocking_;  // datasets apps cannot open yet: a copy with a live owner is unchecked (mu_)
  std::map<uint64_t, uint64_t> revalidate_gen_;  // ds -> bumped when every cached page is queued again (mu_)
  std::atomic<uint64_t> lease_until_{0};
  std::atomic<bool> lease_lapsed_{false};
  // Owned chunks whose pages this node's store lost (ChunkInfo::owner_recovering): ds -> chunks still to recover
  // (refused meanwhile), and chunks recovered here that the chunk map does not show recovered yet (mu_).
  std::map<uint64_t, std::set<uint32_t>> recovering_, recovered_;
  bool recovery_wait_logged_ = false;
  std::condition_variable revalidated_cv_;  // with mu_
  std::thread resolver_;
  std::mutex resolver_mu_;
  std::condition_variable resolver_cv_;
  bool resolver_stop_ = false;

  std::mutex owner_mu_;
  std::map<TxKey, OwnerTx> txs_;
  // Prepared parts found in the redo log at start whose dataset is not open yet: an APPLY for one of them must
  // be retried (UNAVAILABLE), not answered "not prepared" (which means "already finished").
  std::set<TxKey> unrecovered_;
  std::map<PageKey, TxKey> locks_;
  std::map<PageKey, std::set<uint32_t>> cachers_;
  // Pages whose cacher set is complete. Cacher sets live in memory only, so after a (re)start other nodes may
  // hold copies this owner does not know about: the first commit of such a page pushes to every alive node
  // (non-holders answer not-held) and from then on the recorded set is authoritative.
  std::set<PageKey> cachers_known_;
  // A committer that gave up waiting for a one-shot PREPARE sends ABORT and learns what happened (OwnerAbort):
  // ABORTs of txids not (yet) prepared leave a tombstone so a PREPARE still in flight is refused, and finished
  // one-shot commits are remembered with their copies. Both are forgotten after 10 x the request timeout (a
  // PREPARE cannot arrive that late: it carries the committer's deadline).
  struct Settled {
    bool applied = false;
    uint32_t copies = 0;
    Clock::time_point at;
  };
  std::map<TxKey, Settled> settled_;
  std::deque<TxKey> settled_order_;
  void SettleLocked(const TxKey& key, bool applied, uint32_t copies);  // owner_mu_ held
  // ABORT from a part's committer: drops a prepared part (nothing applied); says so when it is applied or applying.
  msg::AbortState OwnerAbort(const TxKey& key, uint32_t* copies);
  // A remote one-shot PREPARE that failed without an answer (timeout, lost connection): ABORT settles whether it
  // applied. DEADLINE_EXCEEDED/UNAVAILABLE saying "nothing was applied", OK with the copies when it applied, or
  // UNAVAILABLE "outcome unknown" when the owner cannot be asked.
  Status SettleOneShot(uint32_t owner, uint64_t txid, const Status& failed, uint32_t* copies);
  // MRSW fencing: the highest lease epoch that committed to each page; older holders are refused.
  std::map<PageKey, uint64_t> fence_;
  // Nodes whose copy of a page came only from a REPLICA top-up (redundant state there), for Stats.
  std::map<PageKey, std::set<uint32_t>> replica_only_;

  struct Counters {
    std::atomic<uint64_t> faults_local{0}, faults_remote{0}, fetches_served{0}, fetch_retries{0};
    std::atomic<uint64_t> commits{0}, commit_aborts{0}, conflicts{0}, coherence_pushes{0}, coherence_pages{0};
    std::atomic<uint64_t> replicas_sent{0}, replicas_received{0}, bytes_in{0}, bytes_out{0};
  } c_;

  // Observability (engine/observe.h; helpers at the end of this file).
  observe::Observer obs_;
  Status EnsurePagesUnobserved(uint64_t dataset_id, uint64_t first_page, uint32_t count);
  Status CommitUnobserved(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                          const CommitExtras& extras, CommitResult* result);
  void NoteFetch(uint64_t ds, uint32_t owner, uint64_t first, uint32_t count, uint64_t installed, uint64_t mono0,
                 uint64_t unix0);
  // Runs one owner-side step under a span (parent: the commit's trace context) and an `owner` event.
  Status Owned(const char* name, uint32_t committer, uint64_t ds, uint64_t txid, const std::function<Status()>& fn);
  void Note(observe::EventKind kind, uint32_t node, uint64_t ds, uint64_t page, uint64_t count = 0) {
    if (!obs_.events().enabled(kind)) return;
    observe::Event e;
    e.kind = kind;
    e.node = node;
    e.dataset = ds;
    e.page = page;
    e.count = count;
    obs_.Emit(e);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Lifecycle, membership, datasets

Status EngineImpl::Init() {
  pool::PoolOptions po;
  po.pool_dir = opt_.pool_dir;
  po.data_dir = opt_.data_dir;
  po.durability = opt_.durability;
  HOTPOT_RETURN_IF_ERROR(pool::Pool::Open(po, &pool_));
  if (const char* f = std::getenv("HOTPOT_FAULT_POINT")) {
    fault_point_ = f;
    const size_t colon = fault_point_.find(":pause=");
    if (colon != std::string::npos) {
      fault_pause_ms_ = std::max(1L, std::atol(fault_point_.c_str() + colon + 7));
      fault_point_.resize(colon);
    }
  }
  // Txids are never reused across restarts (an owner may still hold a prepared part of a pre-crash commit):
  // the 40-bit counter starts from the clock in microseconds.
  next_txid_.store(uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()) &
                   ((uint64_t(1) << 40) - 1));
  // Decision records are loaded before the transport listens: an OUTCOME query must never be answered
  // "aborted" (presumed) for a commit whose decision is on disk.
  for (auto& kv : pool_->redo().InFlight()) {
    if (kv.second.phase == pool::RedoPhase::kPrepared)
      unrecovered_.insert(TxKey{kv.second.committer_node_id, kv.second.txid});
    if (kv.second.phase != pool::RedoPhase::kDecided) continue;
    auto dec = std::make_shared<Decision>();
    dec->ds = kv.second.dataset_id;
    dec->parts = kv.second.parts;
    dec->done.assign(dec->parts.size(), false);
    dec->slot = kv.first;
    dec->has_slot = true;
    dec->commit_id = kv.second.txid;
    dec->done_everywhere = true;  // the nodes its parts marked before the restart are not known
    for (const pool::RedoPart& part : dec->parts) decisions_[part.txid] = dec;
    Log("engine: commit decision of tx " + std::to_string(kv.second.txid) + " (" + std::to_string(dec->parts.size()) +
        " parts) recovered: completing it");
  }

  transport::TransportOptions to;
  to.cluster_secret = opt_.cluster_secret;
  to.log = opt_.log;
  transport_ = transport::NewTcpTransport(to);
  if (!transport_) return Status(Code::kInternal, "engine: could not create the TCP transport");
  transport_->SetHandler([this](const transport::Request& req, transport::Reply* reply) { Handle(req, reply); });
  HOTPOT_RETURN_IF_ERROR(transport_->Listen(opt_.data_host, opt_.data_port, &port_));

  if (!opt_.shim_socket_path.empty()) {
    HOTPOT_RETURN_IF_ERROR(StartShimServer(opt_.shim_socket_path, this, opt_.log, &shim_));
  }
  resolver_ = std::thread([this] { ResolverLoop(); });
  return Status::Ok();
}

void EngineImpl::Shutdown() {
  std::lock_guard<std::mutex> g(shutdown_mu_);
  {
    // Wake Open() callers waiting for the control plane first: the shim server joins its threads, and one may
    // be waiting for a control plane that is itself blocked calling Shutdown.
    std::lock_guard<std::mutex> l(mu_);
    if (shut_.exchange(true)) return;
    for (auto& kv : pending_) {
      if (!kv.second.done) {
        kv.second.done = true;
        kv.second.status = Status(Code::kUnavailable, "engine shut down");
      }
    }
  }
  open_cv_.notify_all();
  revalidated_cv_.notify_all();
  {
    std::lock_guard<std::mutex> l(resolver_mu_);
    resolver_stop_ = true;
  }
  resolver_cv_.notify_all();
  if (shim_) shim_->Shutdown();
  if (transport_) transport_->Shutdown();
  if (resolver_.joinable()) resolver_.join();  // after the transport: its calls in flight fail at once
  shim_.reset();
  // transport_ stays allocated until the destructor: a caller racing with Shutdown gets UNAVAILABLE from it
  // instead of touching freed memory.
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& kv : datasets_) kv.second.store = nullptr;
  }
  pool_.reset();
}

void EngineImpl::SetMembers(uint64_t epoch, const std::vector<Member>& members) {
  std::map<uint32_t, Member> next;
  for (const Member& m : members) next[m.id] = m;
  std::map<uint32_t, Member> prev;
  {
    std::lock_guard<std::mutex> l(mu_);
    prev.swap(members_);
    members_ = next;
  }
  if (shut_.load()) return;
  for (const auto& kv : next) {
    if (kv.first == self()) continue;
    if (kv.second.alive) {
      auto it = prev.find(kv.first);
      if (it == prev.end() || !it->second.alive || it->second.data_address != kv.second.data_address)
        transport_->SetPeer(kv.first, kv.second.data_address);
    } else {
      transport_->RemovePeer(kv.first);
    }
  }
  for (const auto& kv : prev)
    if (next.count(kv.first) == 0 && kv.first != self()) transport_->RemovePeer(kv.first);
  Log("engine: membership epoch " + std::to_string(epoch) + ", " + std::to_string(members.size()) + " members");
  if (obs_.events().enabled(observe::EventKind::kMembership)) {
    observe::Event e;
    e.kind = observe::EventKind::kMembership;
    e.txid = epoch;
    e.count = members.size();
    for (const Member& m : members) e.page += m.alive ? 1 : 0;  // alive members
    obs_.Emit(e);
  }
}

bool EngineImpl::IsAlive(uint32_t node) {
  if (node == self()) return true;
  std::lock_guard<std::mutex> l(mu_);
  auto it = members_.find(node);
  return it != members_.end() && it->second.alive;
}

std::vector<uint32_t> EngineImpl::AliveNodes() {
  std::set<uint32_t> s{self()};
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : members_)
    if (kv.second.alive) s.insert(kv.first);
  return std::vector<uint32_t>(s.begin(), s.end());
}

Status EngineImpl::OpenDataset(const DatasetInfo& info) {
  if (shut_.load()) return Status(Code::kUnavailable, "engine shut down");
  if (info.size_bytes == 0 || info.size_bytes % kPageSize != 0)
    return Status(Code::kInvalidArgument, "dataset " + std::to_string(info.id) + ": size must be a positive multiple of 4096");
  uint32_t chunk = info.chunk_size_bytes ? info.chunk_size_bytes : opt_.chunk_size_bytes;
  if (chunk == 0 || chunk % kPageSize != 0)
    return Status(Code::kInvalidArgument, "dataset " + std::to_string(info.id) + ": chunk size must be a multiple of 4096");
  uint64_t nchunks = (info.size_bytes + chunk - 1) / chunk;
  for (const ChunkInfo& c : info.chunks)
    if (c.index >= nchunks)
      return Status(Code::kInvalidArgument, "dataset " + std::to_string(info.id) + ": chunk index " +
                                                std::to_string(c.index) + " beyond the dataset");
  pool::DatasetStore* store = nullptr;
  HOTPOT_RETURN_IF_ERROR(pool_->OpenDataset(info.id, info.size_bytes, &store));
  bool first_open;
  {
    std::lock_guard<std::mutex> l(mu_);
    first_open = datasets_.count(info.id) == 0;
    DatasetState& d = datasets_[info.id];
    d.info = info;
    d.info.chunk_size_bytes = chunk;
    d.store = store;
    d.chunk_size = chunk;
    std::set<uint32_t>& todo = recovering_[info.id];
    std::set<uint32_t>& done = recovered_[info.id];
    std::set<uint32_t> flagged;
    for (const ChunkInfo& c : info.chunks)
      if (c.owner == self() && c.owner_recovering) flagged.insert(c.index);
    for (auto it = done.begin(); it != done.end();) it = flagged.count(*it) ? std::next(it) : done.erase(it);
    todo.clear();
    for (uint32_t c : flagged)
      if (!done.count(c)) todo.insert(c);
    if (!todo.empty())
      Log("engine: dataset " + std::to_string(info.id) + ": " + std::to_string(todo.size()) +
          " owned chunks are not in this node's store (it was replaced): refused until recovered from their holders");
  }
  if (first_open) {
    RecoverRedo(info.id, info.replicas ? info.replicas : 1, store);
    std::vector<uint64_t> cached;
    for (uint64_t pg = 0; pg < store->page_count(); pg++) {
      PageState st = store->GetMeta(pg).state;
      if (st == PageState::kCommitted || st == PageState::kRedundant) cached.push_back(pg);
    }
    if (!cached.empty()) {
      Log("engine: dataset " + std::to_string(info.id) + ": " + std::to_string(cached.size()) +
          " cached pages from before the restart are checked with their owners before apps may open it");
      std::lock_guard<std::mutex> l(mu_);
      revalidate_[info.id] = std::move(cached);
      revalidate_blocking_.insert(info.id);
    }
  }
  return Status::Ok();
}

// Redo records left by a crash. Applied ones (applied here and pushed) are replayed onto the owner pages
// (idempotent: the bytes and versions are absolute) and freed. Prepared ones are in doubt: their pages are locked
// again and the resolver asks the committer whether the commit was decided (apply) or not (discard). Applying
// ones were decided but maybe not pushed to every cacher: their pages are locked again and the resolver applies
// and pushes them at once (to every alive node: cacher sets were lost with the crash), so no cacher keeps a copy
// that missed the commit and no fetch serves the page before that. Decision records were loaded by Init.
void EngineImpl::RecoverRedo(uint64_t ds, uint32_t replicas, pool::DatasetStore* store) {
  for (auto& kv : pool_->redo().InFlight()) {
    const pool::RedoRecord& r = kv.second;
    if (r.dataset_id != ds || r.phase == pool::RedoPhase::kDecided) continue;
    if (r.phase == pool::RedoPhase::kPrepared || r.phase == pool::RedoPhase::kApplying) {
      const bool decided = r.phase == pool::RedoPhase::kApplying;
      OwnerTx tx;
      tx.ds = ds;
      tx.replicas = replicas;
      std::set<uint64_t> pages;
      bool ok = !r.ranges.empty();
      for (const pool::RedoRange& rr : r.ranges) {
        if (rr.bytes.empty() || rr.offset / kPageSize >= store->page_count()) ok = false;
        pages.insert(rr.offset / kPageSize);
        msg::Range x;
        x.offset = rr.offset;
        x.new_bytes = rr.bytes;
        x.old_bytes.assign(rr.bytes.size(), 0);  // unused after PREPARE (apply writes new bytes only)
        tx.ranges.push_back(std::move(x));
      }
      tx.pages.assign(pages.begin(), pages.end());
      tx.versions = r.page_versions;
      if (!ok || tx.versions.size() != tx.pages.size()) {
        Log("engine: prepared tx " + std::to_string(r.txid) + " of dataset " + std::to_string(ds) +
            " is malformed: kept in the redo log, not applied");
        continue;
      }
      tx.slot = kv.first;
      tx.has_slot = true;
      tx.recovered = true;
      tx.decided = decided;
      tx.commit_id = r.commit_id;
      tx.locked_at = Clock::now();
      TxKey key{r.committer_node_id, r.txid};
      std::lock_guard<std::mutex> l(owner_mu_);
      unrecovered_.erase(key);
      if (txs_.count(key)) continue;
      for (uint64_t pg : tx.pages) locks_[PageKey{ds, pg}] = key;
      txs_[key] = std::move(tx);
      Log("engine: " + std::string(decided ? "applying" : "prepared") + " tx " + std::to_string(r.txid) + " from node " +
          std::to_string(r.committer_node_id) + " of dataset " + std::to_string(ds) +
          (decided ? " was interrupted: pages locked until it is applied and pushed again"
                   : " is in doubt: pages locked until its committer decides"));
      continue;
    }
    if (r.phase == pool::RedoPhase::kApplied) {
      std::set<uint64_t> pages;
      for (const auto& rr : r.ranges) pages.insert(rr.offset / kPageSize);
      std::vector<uint64_t> pv(pages.begin(), pages.end());
      bool ok = pv.size() == r.page_versions.size();
      // A page already at (or past) the record's version holds this commit or a newer one: replaying it would
      // roll a newer commit back (the redo log frees records without a sync). Decide per page before writing.
      std::vector<bool> replay(pv.size(), true);
      for (size_t i = 0; ok && i < pv.size(); i++) {
        if (pv[i] >= store->page_count()) {
          ok = false;
          break;
        }
        PageMeta m = store->GetMeta(pv[i]);
        replay[i] = m.state == PageState::kAbsent || m.version < r.page_versions[i];
      }
      for (const auto& rr : r.ranges) {
        if (!ok) break;
        if (rr.bytes.empty() || rr.offset / kPageSize >= store->page_count()) {
          ok = false;
          break;
        }
        size_t idx = std::lower_bound(pv.begin(), pv.end(), rr.offset / kPageSize) - pv.begin();
        if (!replay[idx]) continue;
        PageMeta m = store->GetMeta(pv[idx]);
        if (m.state == PageState::kAbsent) {
          std::vector<uint8_t> zeros(kPage, 0);
          if (!store->InstallPage(pv[idx], zeros.data(), 0, PageState::kOwned).ok()) ok = false;
        }
        if (ok && !store->WriteBytes(rr.offset, rr.bytes.data(), uint32_t(rr.bytes.size()), r.page_versions[idx]).ok())
          ok = false;
      }
      if (ok) ok = store->Persist(pv).ok();
      Log(std::string("engine: redo replay of tx ") + std::to_string(r.txid) + (ok ? " done" : " FAILED"));
      if (!ok) continue;  // keep the record for a later attempt
    }
    (void)pool_->redo().Free(kv.first);
  }
}

Status EngineImpl::FindDataset(uint64_t ds, DatasetState* out) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = datasets_.find(ds);
  if (it == datasets_.end() || it->second.store == nullptr)
    return Status(Code::kNotFound, "dataset " + std::to_string(ds) + " is not open on node " + std::to_string(self()));
  *out = it->second;
  return Status::Ok();
}

namespace {
// The chunk's owner per the chunk map; false when the map has no entry for it.
bool ChunkOwner(const DatasetState& d, uint64_t page, uint32_t* owner) {
  uint64_t chunk = page * kPageSize / d.chunk_size;
  for (const ChunkInfo& c : d.info.chunks)
    if (c.index == chunk) {
      *owner = c.owner;
      return true;
    }
  return false;
}
}  // namespace

void EngineImpl::CompleteOpen(uint64_t request_id, const Status& status, uint64_t dataset_id) {
  {
    std::lock_guard<std::mutex> l(mu_);
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
    std::lock_guard<std::mutex> l(mu_);
    if (shut_.load()) return Status(Code::kUnavailable, "engine shut down");
    rid = next_request_++;
    pending_[rid] = PendingOpen{};
  }
  on_open_(rid, name, create, cred);
  uint64_t ds_id = 0;
  {
    std::unique_lock<std::mutex> l(mu_);
    bool done = open_cv_.wait_for(l, std::chrono::seconds(15), [&] { return pending_[rid].done; });
    PendingOpen p = pending_[rid];
    pending_.erase(rid);
    if (!done) return Status(Code::kDeadlineExceeded, "open of dataset '" + name + "': control plane did not answer in 15 s");
    if (!p.status.ok()) return p.status;
    ds_id = p.dataset_id;
  }
  HOTPOT_RETURN_IF_ERROR(WaitRevalidated(ds_id));
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(FindDataset(ds_id, &d));
  out->dataset_id = ds_id;
  out->size_bytes = d.info.size_bytes;
  out->mode = d.info.mode;
  out->replicas = d.info.replicas;
  out->chunk_size_bytes = d.chunk_size;
  out->page_fd = d.store->page_fd();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions and pre-images

uint64_t EngineImpl::OpenSession(uint64_t dataset_id, const PeerCred& cred) {
  std::lock_guard<std::mutex> l(cache_mu_);
  uint64_t id = next_session_++;
  sessions_[id] = Session{dataset_id, seq_, cred};
  return id;
}

void EngineImpl::CloseSession(uint64_t session_id) {
  std::lock_guard<std::mutex> l(cache_mu_);
  sessions_.erase(session_id);
  PrunePreImagesLocked();
}

void EngineImpl::ResyncSession(uint64_t session_id) {
  std::lock_guard<std::mutex> l(cache_mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  it->second.sync = seq_;
  PrunePreImagesLocked();
}

// Called before overwriting a present page: bumps the update sequence, and keeps the current content if some
// session's base image of this page is the current content (no kept pre-image newer than its sync point).
void EngineImpl::SavePreImageLocked(uint64_t ds, uint64_t page, pool::DatasetStore* store) {
  uint64_t seq = ++seq_;
  PageKey k{ds, page};
  auto it = preimages_.find(k);
  uint64_t newest = (it == preimages_.end() || it->second.empty()) ? 0 : it->second.back().seq;
  bool needed = false;
  for (const auto& kv : sessions_)
    if (kv.second.ds == ds && kv.second.sync >= newest) {
      needed = true;
      break;
    }
  if (!needed) return;
  PreImage pi{seq, std::vector<uint8_t>(kPage), 0};
  PageMeta m;
  if (!store->ReadPage(page, pi.data.data(), &m).ok()) std::fill(pi.data.begin(), pi.data.end(), 0);
  else pi.version = m.version;
  preimages_[k].push_back(std::move(pi));
}

// A pre-image with seq s is kept while some session's sync point lies in [previous kept seq, s): it is then that
// session's base image.
void EngineImpl::PrunePreImagesLocked() {
  for (auto it = preimages_.begin(); it != preimages_.end();) {
    std::vector<PreImage>& v = it->second;
    std::vector<PreImage> keep;
    uint64_t prev = 0;
    bool first = true;
    for (PreImage& pi : v) {
      bool needed = false;
      for (const auto& kv : sessions_) {
        if (kv.second.ds != it->first.ds) continue;
        if (kv.second.sync < pi.seq && (first || kv.second.sync >= prev)) {
          needed = true;
          break;
        }
      }
      prev = pi.seq;
      first = false;
      if (needed) keep.push_back(std::move(pi));
    }
    if (keep.empty()) {
      it = preimages_.erase(it);
    } else {
      v.swap(keep);
      ++it;
    }
  }
}

Status EngineImpl::SessionDataset(uint64_t session_id, uint64_t* ds, DatasetState* out) {
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return Status(Code::kNotFound, "session " + std::to_string(session_id) + " not open");
    *ds = it->second.ds;
  }
  return FindDataset(*ds, out);
}

Status EngineImpl::BaseImage(uint64_t session_id, uint64_t page, uint8_t* out4096) {
  uint64_t version = 0;
  return BaseImageVersion(session_id, page, out4096, &version);
}

Status EngineImpl::BaseImageVersion(uint64_t session_id, uint64_t page, uint8_t* out4096, uint64_t* version) {
  uint64_t ds;
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &ds, &d));
  if (page >= d.store->page_count())
    return Status(Code::kOutOfRange, PageName(ds, page) + " beyond the dataset end");
  std::lock_guard<std::mutex> l(cache_mu_);
  auto sit = sessions_.find(session_id);
  if (sit == sessions_.end()) return Status(Code::kNotFound, "session " + std::to_string(session_id) + " closed");
  auto it = preimages_.find(PageKey{ds, page});
  if (it != preimages_.end()) {
    for (const PreImage& pi : it->second)
      if (pi.seq > sit->second.sync) {
        std::memcpy(out4096, pi.data.data(), kPage);
        *version = pi.version;
        return Status::Ok();
      }
  }
  PageMeta m;
  HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(page, out4096, &m));
  *version = m.version;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Page fetch (fault service)

Status EngineImpl::EnsurePagesUnobserved(uint64_t dataset_id, uint64_t first_page, uint32_t count) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(FindDataset(dataset_id, &d));
  if (count == 0 || first_page >= d.store->page_count() || count > d.store->page_count() - first_page)
    return Status(Code::kOutOfRange, "pages " + std::to_string(first_page) + "+" + std::to_string(count) +
                                         " beyond dataset " + std::to_string(dataset_id));
  const uint64_t end = first_page + count;
  const uint32_t me = self();
  uint64_t p = first_page;
  while (p < end) {
    if (d.store->GetMeta(p).state != PageState::kAbsent) {
      c_.faults_local++;
      p++;
      continue;
    }
    uint32_t owner = 0;
    if (!ChunkOwner(d, p, &owner))
      return Status(Code::kFailedPrecondition, PageName(dataset_id, p) + ": chunk has no owner in the chunk map");
    if (owner == me) {
      HOTPOT_RETURN_IF_ERROR(CheckNotRecovering(d, p));
      // Owned and never written: zeros at version 0. Under owner_mu_ so a commit applying it cannot interleave.
      Deadline dl = NewDeadline();
      for (int attempt = 0;; attempt++) {
        bool locked;
        {
          std::lock_guard<std::mutex> l(owner_mu_);
          BreakExpiredLocked();
          locked = locks_.count(PageKey{dataset_id, p}) != 0;
          if (!locked && d.store->GetMeta(p).state == PageState::kAbsent) {
            std::vector<uint8_t> zeros(kPage, 0);
            std::lock_guard<std::mutex> cl(cache_mu_);
            HOTPOT_RETURN_IF_ERROR(d.store->InstallPage(p, zeros.data(), 0, PageState::kOwned));
            cachers_known_.insert(PageKey{dataset_id, p});
          }
        }
        if (!locked) break;
        if (Clock::now() >= dl) return Status(Code::kUnavailable, PageName(dataset_id, p) + " locked by a commit");
        c_.fetch_retries++;
        std::this_thread::sleep_for(std::chrono::microseconds(200 << std::min(attempt, 5)));
      }
      c_.faults_local++;
      p++;
      continue;
    }
    // A run of absent pages with the same owner, at most 64.
    uint64_t q = p + 1;
    while (q < end && q - p < msg::kMaxFetchPages && d.store->GetMeta(q).state == PageState::kAbsent) {
      uint32_t o2 = 0;
      if (!ChunkOwner(d, q, &o2) || o2 != owner) break;
      q++;
    }
    HOTPOT_RETURN_IF_ERROR(FetchRun(d, owner, p, uint32_t(q - p)));
    p = q;
  }
  return Status::Ok();
}

Status EngineImpl::FetchRun(const DatasetState& d, uint32_t owner, uint64_t first, uint32_t count) {
  const uint64_t ds = d.info.id;
  if (!IsAlive(owner))
    return Status(Code::kUnavailable, "owner node " + std::to_string(owner) + " of " + PageName(ds, first) +
                                          " is not alive");
  const uint64_t mono0 = observe::MonoNowNs(), unix0 = observe::UnixNowNs();
  msg::FetchRequest fr{ds, first, count, msg::kFetchCoherent};
  std::vector<uint8_t> payload, resp;
  msg::EncodeFetchRequest(fr, &payload);
  Deadline dl = NewDeadline();
  bool saw_locked = false;
  const std::string locked_msg = "fetch of " + PageName(ds, first) + " from owner node " + std::to_string(owner) +
                                 ": still locked by a commit at the deadline";
  for (int attempt = 0;; attempt++) {
    {
      std::lock_guard<std::mutex> l(cache_mu_);
      for (uint32_t i = 0; i < count; i++) fetching_[PageKey{ds, first + i}] = 0;
    }
    Status st = CallPeer(owner, msg::kFetchPages, payload, &resp, dl);
    std::vector<uint8_t> refused(count, 0);
    std::vector<uint64_t> refused_version(count, 0);
    {
      std::lock_guard<std::mutex> l(cache_mu_);
      for (uint32_t i = 0; i < count; i++) {
        auto it = fetching_.find(PageKey{ds, first + i});
        if (it != fetching_.end()) {
          refused_version[i] = it->second;
          fetching_.erase(it);
        }
      }
    }
    if (st.ok()) {
      std::vector<msg::FetchedPage> meta;
      const uint8_t* pages = nullptr;
      HOTPOT_RETURN_IF_ERROR(msg::DecodeFetchResponse(resp.data(), resp.size(), count, false, &meta, &pages));
      c_.bytes_in += resp.size();
      bool stale = false;
      std::vector<uint64_t> installed;
      {
        std::lock_guard<std::mutex> l(cache_mu_);
        for (uint32_t i = 0; i < count; i++) {
          uint64_t pg = first + i;
          // A push of a newer version was refused while this fetch was in flight: the copy is stale, refetch.
          if (refused_version[i] > meta[i].version) {
            stale = true;
            continue;
          }
          PageMeta cur = d.store->GetMeta(pg);
          if (cur.state != PageState::kAbsent && cur.version >= meta[i].version) continue;
          if (cur.state != PageState::kAbsent) SavePreImageLocked(ds, pg, d.store);
          HOTPOT_RETURN_IF_ERROR(d.store->InstallPage(pg, pages + size_t(i) * kPage, meta[i].version,
                                                      PageState::kCommitted));
          installed.push_back(pg);
        }
      }
      c_.faults_remote += installed.size();
      NoteFetch(ds, owner, first, count, installed.size(), mono0, unix0);
      if (!installed.empty()) HOTPOT_RETURN_IF_ERROR(d.store->Persist(installed));
      if (!stale) return Status::Ok();
      // Retry only the pages still absent.
      bool any_absent = false;
      for (uint32_t i = 0; i < count; i++)
        if (d.store->GetMeta(first + i).state == PageState::kAbsent) any_absent = true;
      if (!any_absent) return Status::Ok();
    } else if (st.code() == Code::kUnavailable && st.message().find("locked") != std::string::npos) {
      saw_locked = true;  // fall through to backoff
    } else if (saw_locked && st.code() == Code::kDeadlineExceeded) {
      return Status(Code::kUnavailable, locked_msg);  // the retry budget ran out while the page stayed locked
    } else if (st.code() == Code::kUnavailable) {
      return Status(Code::kUnavailable, "fetch of " + PageName(ds, first) + " from owner node " +
                                            std::to_string(owner) + ": " + st.message());
    } else {
      return Status(st.code(), "fetch of " + PageName(ds, first) + " from owner node " + std::to_string(owner) +
                                   ": " + st.message());
    }
    auto backoff = std::chrono::microseconds(200 << std::min(attempt, 6));
    // Leave the last retry some time to complete instead of sending it with a nearly expired deadline.
    if (Clock::now() + 2 * backoff >= dl) return Status(Code::kUnavailable, locked_msg);
    c_.fetch_retries++;
    std::this_thread::sleep_for(backoff);
  }
}

void EngineImpl::HandleFetch(const transport::Request& req, transport::Reply* reply) {
  msg::FetchRequest fr;
  Status st = msg::DecodeFetchRequest(req.data, req.len, &fr);
  if (!st.ok()) {
    reply->status = st;
    return;
  }
  DatasetState d;
  st = FindDataset(fr.dataset, &d);
  if (!st.ok()) {
    reply->status = st;
    return;
  }
  if (fr.first_page >= d.store->page_count() || fr.count > d.store->page_count() - fr.first_page) {
    reply->status = Status(Code::kOutOfRange, "fetch beyond the end of dataset " + std::to_string(fr.dataset));
    return;
  }
  for (uint32_t i = 0; i < fr.count; i++) {
    uint32_t owner = 0;
    if (!ChunkOwner(d, fr.first_page + i, &owner) || owner != self()) {
      reply->status = Status(Code::kFailedPrecondition, "node " + std::to_string(self()) + " does not own " +
                                                            PageName(fr.dataset, fr.first_page + i));
      return;
    }
    st = CheckNotRecovering(d, fr.first_page + i);
    if (!st.ok()) {
      reply->status = st;
      return;
    }
  }
  std::vector<msg::FetchedPage> meta(fr.count);
  std::vector<uint8_t> pages(size_t(fr.count) * kPage);
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    BreakExpiredLocked();
    for (uint32_t i = 0; i < fr.count && !(fr.flags & msg::kFetchRevalidate); i++) {
      if (locks_.count(PageKey{fr.dataset, fr.first_page + i})) {
        reply->status = Status(Code::kUnavailable, PageName(fr.dataset, fr.first_page + i) + ": page locked by commit");
        return;
      }
    }
    for (uint32_t i = 0; i < fr.count; i++) {
      const PageKey k{fr.dataset, fr.first_page + i};
      PageMeta m;
      st = d.store->ReadPage(fr.first_page + i, pages.data() + size_t(i) * kPage, &m);
      if (st.ok() && m.state == PageState::kAbsent) {
        // First time this page is served: materialise it (zeros, version 0) so that after a restart an absent
        // owner page still means "nobody caches it", and start its cacher set from empty.
        std::lock_guard<std::mutex> cl(cache_mu_);
        if (d.store->GetMeta(k.page).state == PageState::kAbsent)
          st = d.store->InstallPage(k.page, pages.data() + size_t(i) * kPage, 0, PageState::kOwned);
        if (st.ok()) cachers_known_.insert(k);
      }
      if (!st.ok()) {
        reply->status = st;
        return;
      }
      meta[i].version = m.version;  // absent owned page: zeros, version 0
      meta[i].state = uint8_t(PageState::kOwned);
      if (fr.flags & msg::kFetchRevalidate) {
        // Served although locked: say which multi-part commit holds it, so the requester keeps that commit marked
        // open (its copy of this page may show the commit here before or after its other parts land there).
        auto lk = locks_.find(k);
        auto tx = lk == locks_.end() ? txs_.end() : txs_.find(lk->second);
        if (tx != txs_.end() && tx->second.commit_id != 0 &&
            std::binary_search(tx->second.pages.begin(), tx->second.pages.end(), k.page)) {
          meta[i].open_committer = lk->second.committer;
          meta[i].open_commit = tx->second.commit_id;
        }
      }
      if ((fr.flags & msg::kFetchCoherent) && req.peer_node_id != self()) {
        cachers_[PageKey{fr.dataset, fr.first_page + i}].insert(req.peer_node_id);
        auto ro = replica_only_.find(PageKey{fr.dataset, fr.first_page + i});
        if (ro != replica_only_.end()) ro->second.erase(req.peer_node_id);
      }
    }
  }
  msg::EncodeFetchResponse(meta, pages.data(), (fr.flags & msg::kFetchRevalidate) != 0, &reply->payload);
  c_.fetches_served += fr.count;
  Note(observe::EventKind::kFetchServed, req.peer_node_id, fr.dataset, fr.first_page, fr.count);
  c_.bytes_out += reply->payload.size();
}

// ---------------------------------------------------------------------------------------------------------------
// Owner side

void EngineImpl::DropTxLocked(const TxKey& key, OwnerTx* tx, bool free_slot) {
  for (const std::vector<uint64_t>* v : {&tx->pages, &tx->read_pages})
    for (uint64_t pg : *v) {
      auto it = locks_.find(PageKey{tx->ds, pg});
      if (it != locks_.end() && !(it->second < key) && !(key < it->second)) locks_.erase(it);
    }
  if (free_slot && tx->has_slot) (void)pool_->redo().Free(tx->slot);
  txs_.erase(key);
}

// A committer that died between PREPARE and RELEASE must not leave pages locked forever: after 4 x the request
// timeout the lock of a read-only validation is broken (released). A part that writes is never released here:
// prepared, it may belong to a decided commit; applied, releasing it before the commit's other parts are applied
// would let a fetch serve this part alone. The resolver asks its committer about both (ResolveInDoubt).
void EngineImpl::BreakExpiredLocked() {
  if (txs_.empty()) return;
  auto limit = Clock::now() - 4 * opt_.request_timeout;
  for (auto it = txs_.begin(); it != txs_.end();) {
    auto next = std::next(it);
    if (it->second.locked_at < limit && !it->second.applying && !it->second.has_slot) {
      Log("engine: breaking expired commit lock of tx " + std::to_string(it->first.txid) + " from node " +
          std::to_string(it->first.committer) + " (read-only validation)");
      TxKey k = it->first;
      DropTxLocked(k, &it->second, true);
    }
    it = next;
  }
}

Status EngineImpl::OwnerPrepare(uint32_t committer, const msg::PrepareRequest& req, uint32_t* copies,
                                std::vector<msg::Conflict>* conflicts) {
  *copies = 0;
  if (req.deadline_unix_ms != 0 && UnixMs() > req.deadline_unix_ms)
    return Status(Code::kDeadlineExceeded, "PREPARE of tx " + std::to_string(req.txid) + " arrived " +
                                               std::to_string(UnixMs() - req.deadline_unix_ms) +
                                               " ms after the committer's deadline: refused");
  FaultPoint("owner.prepare.after-deadline-check");
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(FindDataset(req.dataset, &d));
  const uint64_t size = d.store->size_bytes();
  // A range of the request must lie in the dataset, on a page this node owns.
  auto owned_page = [&](const char* what, uint64_t offset, uint64_t len, uint64_t* pg) {
    if (offset >= size || len > size - offset)
      return Status(Code::kOutOfRange, std::string(what) + " range at " + std::to_string(offset) +
                                           " beyond dataset " + std::to_string(req.dataset));
    uint32_t owner = 0;
    *pg = offset / kPageSize;
    if (!ChunkOwner(d, *pg, &owner) || owner != self())
      return Status(Code::kFailedPrecondition, "node " + std::to_string(self()) + " does not own " +
                                                   PageName(req.dataset, *pg));
    return CheckNotRecovering(d, *pg);
  };
  std::set<uint64_t> page_set;
  for (const msg::Range& r : req.ranges) {
    if (r.old_bytes.size() != r.new_bytes.size())
      return Status(Code::kInvalidArgument, "commit range at " + std::to_string(r.offset) +
                                                ": old and new bytes differ in length");
    uint64_t pg = 0;
    HOTPOT_RETURN_IF_ERROR(owned_page("commit", r.offset, r.len(), &pg));
    page_set.insert(pg);
  }
  std::set<uint64_t> read_set;  // pages only read (not written) by this tx
  for (const msg::ReadCheck& c : req.reads) {
    uint64_t pg = 0;
    HOTPOT_RETURN_IF_ERROR(owned_page("read", c.offset, c.len, &pg));
    if (!page_set.count(pg)) read_set.insert(pg);
  }
  {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (const msg::Range& r : req.ranges) spans.push_back({r.offset, r.offset + r.len()});
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); i++)
      if (spans[i].first < spans[i - 1].second)
        return Status(Code::kInvalidArgument, "commit ranges overlap at dataset offset " + std::to_string(spans[i].first));
  }
  uint32_t n = req.replicas ? req.replicas : d.info.replicas;
  if (n == 0) n = 1;
  size_t alive = AliveNodes().size();
  if (!req.ranges.empty() && n > alive)
    return Status(Code::kFailedPrecondition, "commit needs " + std::to_string(n) + " copies but only " +
                                                 std::to_string(alive) + " nodes are alive");
  TxKey key{committer, req.txid};
  OwnerTx tx;
  tx.ds = req.dataset;
  tx.replicas = n;
  tx.ranges = req.ranges;
  tx.pages.assign(page_set.begin(), page_set.end());
  tx.versions.resize(tx.pages.size());
  tx.read_pages.assign(read_set.begin(), read_set.end());
  tx.commit_id = req.commit_id;
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    BreakExpiredLocked();
    if (txs_.count(key)) return Status(Code::kAlreadyExists, "tx " + std::to_string(req.txid) + " already prepared");
    if (settled_.count(key))
      return Status(Code::kAborted, "tx " + std::to_string(req.txid) + " was aborted by its committer (it gave up waiting)");
    // A range touching a page locked by another commit is rejected (never wait holding locks).
    for (const msg::Range& r : req.ranges)
      if (locks_.count(PageKey{req.dataset, r.offset / kPageSize})) conflicts->push_back({r.offset, r.len()});
    for (const msg::ReadCheck& c : req.reads)
      if (locks_.count(PageKey{req.dataset, c.offset / kPageSize})) conflicts->push_back({c.offset, c.len});
    if (!conflicts->empty()) return Status(Code::kAborted, "page locked by commit");
    // Read validation compares page versions, not bytes: bytes that changed and changed back (A-B-A) still
    // fail, because the process may have seen the intermediate state.
    bool stale_base = false;  // a written page's base version (MRSW commits send them) is not the current one
    for (const msg::ReadCheck& c : req.reads)
      if (d.store->GetMeta(c.offset / kPageSize).version != c.version) {
        conflicts->push_back({c.offset, c.len});
        stale_base = stale_base || page_set.count(c.offset / kPageSize) != 0;
      }
    if (stale_base)
      return Status(Code::kAborted, "a written page changed since the committer's base version (its copy was stale): "
                                    "roll back and redo the change");
    if (!conflicts->empty()) return Status(Code::kAborted, "read range changed since the process last synced");
    const bool mrsw = d.info.mode == Mode::kMrsw;
    if (mrsw && !req.ranges.empty()) HOTPOT_RETURN_IF_ERROR(CheckLeaseLocked(committer, d, req, tx.pages));
    // Byte-granular check: every written byte's old value must be its current committed value, whatever the new
    // value is. Accepting a byte that "already holds the new value" would let a read-modify-write based on stale
    // bytes pass when another commit wrote the same result (two increments of v both writing v+1: one is lost).
    // MRSW needs none: the lease makes the committer the only writer, and its base versions were checked above.
    std::vector<uint8_t> buf(kPage);
    uint64_t cur_page = UINT64_MAX;
    for (const msg::Range& r : (mrsw ? std::vector<msg::Range>{} : req.ranges)) {
      uint64_t pg = r.offset / kPageSize;
      if (pg != cur_page) {
        PageMeta m;
        HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(pg, buf.data(), &m));
        cur_page = pg;
      }
      const uint8_t* cur = buf.data() + r.offset % kPageSize;
      if (std::memcmp(cur, r.old_bytes.data(), r.len()) != 0) conflicts->push_back({r.offset, r.len()});
    }
    if (!conflicts->empty()) return Status(Code::kAborted, "write-write conflict with a newer commit");
    for (size_t i = 0; i < tx.pages.size(); i++) {
      tx.versions[i] = d.store->GetMeta(tx.pages[i]).version + 1;
      locks_[PageKey{req.dataset, tx.pages[i]}] = key;
    }
    for (uint64_t pg : tx.read_pages) locks_[PageKey{req.dataset, pg}] = key;
    tx.locked_at = Clock::now();
    txs_[key] = tx;
  }
  if (req.ranges.empty()) {
    // Read-only validation: nothing to log or apply; the locks held until RELEASE make a multi-owner
    // validation see one instant of every owner.
    if (req.flags & msg::kPrepareOneShot) {
      *copies = n;
      return OwnerFinish(key, false);
    }
    return Status::Ok();
  }
  // The redo record is durable before PREPARE answers.
  pool::RedoRecord rec;
  rec.txid = req.txid;
  rec.dataset_id = req.dataset;
  rec.committer_node_id = committer;
  rec.phase = pool::RedoPhase::kPrepared;
  for (const msg::Range& r : req.ranges) rec.ranges.push_back(pool::RedoRange{r.offset, r.new_bytes});
  rec.page_versions = tx.versions;
  rec.commit_id = req.commit_id;
  uint32_t slot = 0;
  Status st = pool_->redo().Append(rec, &slot);
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    auto it = txs_.find(key);
    if (it == txs_.end()) {  // broken meanwhile (cannot normally happen this fast)
      if (st.ok()) (void)pool_->redo().Free(slot);
      return Status(Code::kAborted, "commit lock expired during prepare");
    }
    if (!st.ok()) {
      DropTxLocked(key, &it->second, false);
      return st;
    }
    it->second.slot = slot;
    it->second.has_slot = true;
  }
  if (req.flags & msg::kPrepareOneShot) {
    // One owner decides alone: past the committer's deadline it aborts (the committer reports a timeout, so the
    // commit must not apply), before that it applies.
    if (req.deadline_unix_ms != 0 && UnixMs() > req.deadline_unix_ms) {
      (void)OwnerFinish(key, true);
      return Status(Code::kDeadlineExceeded, "commit tx " + std::to_string(req.txid) +
                                                 " prepared after the committer's deadline: aborted");
    }
    Status ast = OwnerApply(key, copies);
    const bool applied = ast.ok() || ast.message().find("commit applied on the owner") != std::string::npos;
    Status rst = OwnerFinish(key, !ast.ok());
    {
      std::lock_guard<std::mutex> l(owner_mu_);
      SettleLocked(key, applied, *copies);
    }
    if (!ast.ok()) return ast;
    return rst;
  }
  return Status::Ok();
}

Status EngineImpl::CheckLeaseLocked(uint32_t committer, const DatasetState& d, const msg::PrepareRequest& req,
                                    const std::vector<uint64_t>& write_pages) {
  const std::string what = "MRSW dataset " + std::to_string(req.dataset) + ": ";
  if (req.lease.empty())
    return Status(Code::kFailedPrecondition, what + "commit touches " + PageName(req.dataset, write_pages.front()) +
                                                 " which this process does not hold (acquire it first)");
  LeaseCert cert;
  HOTPOT_RETURN_IF_ERROR(DecodeLease(req.lease, opt_.cluster_secret, &cert));
  if (cert.dataset != d.info.id)
    return Status(Code::kFailedPrecondition, what + "the lease is for dataset " + std::to_string(cert.dataset));
  if (cert.holder_node != committer)
    return Status(Code::kFailedPrecondition, what + "the lease was granted to node " +
                                                 std::to_string(cert.holder_node) + ", not to committer node " +
                                                 std::to_string(committer));
  const uint64_t now_ms = UnixMs();
  if (cert.expiry_unix_ms <= now_ms)
    return Status(Code::kFailedPrecondition, what + "the lease (fencing epoch " + std::to_string(cert.epoch) +
                                                 ") expired " + std::to_string(now_ms - cert.expiry_unix_ms) +
                                                 " ms ago: acquire again");
  for (uint64_t pg : write_pages) {
    if (!cert.Covers(pg))
      return Status(Code::kFailedPrecondition, what + "commit touches " + PageName(req.dataset, pg) +
                                                   " which this process does not hold (acquire it first)");
    auto it = fence_.find(PageKey{req.dataset, pg});
    if (it != fence_.end() && it->second > cert.epoch)
      return Status(Code::kFailedPrecondition, what + PageName(req.dataset, pg) + " was since written under fencing epoch " +
                                                   std::to_string(it->second) + " > this lease's " +
                                                   std::to_string(cert.epoch));
  }
  for (uint64_t pg : write_pages) {
    uint64_t& e = fence_[PageKey{req.dataset, pg}];
    e = std::max(e, cert.epoch);
  }
  return Status::Ok();
}

Status EngineImpl::OwnerApply(const TxKey& key, uint32_t* copies, std::vector<uint32_t>* marked) {
  std::vector<uint32_t> unused;
  if (marked == nullptr) marked = &unused;
  OwnerTx tx;
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    auto it = txs_.find(key);
    if (it == txs_.end() && unrecovered_.count(key))
      return Status(Code::kUnavailable, "tx " + std::to_string(key.txid) + " is being recovered: retry");
    if (it == txs_.end())
      return Status(Code::kAborted, "tx " + std::to_string(key.txid) + " not prepared (already finished)");
    if (it->second.applying)  // a retried APPLY while the first one still runs: the committer asks again
      return Status(Code::kUnavailable, "tx " + std::to_string(key.txid) + " apply in progress");
    if (it->second.applied) {
      *copies = it->second.copies;
      *marked = it->second.marked;
      return Status::Ok();
    }
    it->second.applied = true;  // the commit point: an ABORT now answers "applying", never drops it
    it->second.applying = true;
    tx = it->second;
  }
  FaultPoint("owner.apply.after-commit-point");
  Status st = ApplyLocked(key, tx, copies, marked);
  std::lock_guard<std::mutex> l(owner_mu_);
  auto it = txs_.find(key);
  if (it != txs_.end()) {
    it->second.applying = false;
    it->second.copies = *copies;
    it->second.marked = *marked;
    it->second.locked_at = Clock::now();  // the RELEASE deadline counts from the end of apply
  }
  return st;
}

// Applies a prepared tx whose pages this owner has locked (owner_mu_ NOT held).
Status EngineImpl::ApplyLocked(const TxKey& key, const OwnerTx& tx, uint32_t* copies, std::vector<uint32_t>* marked) {
  *copies = 0;
  if (tx.pages.empty()) {  // read-only validation: nothing to apply, nothing to make durable
    *copies = tx.replicas;
    return Status::Ok();
  }
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(FindDataset(tx.ds, &d));
  HOTPOT_RETURN_IF_ERROR(pool_->redo().SetPhase(tx.slot, pool::RedoPhase::kApplying));
  std::vector<PageKey> fresh;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    ChangeGuard change(this, tx.ds);
    if (tx.commit_id != 0) {
      PubLocked(tx.ds).open.emplace(std::make_pair(key.committer, tx.commit_id), Clock::now());
      marked->push_back(self());
    }
    std::vector<uint8_t> zeros(kPage, 0);
    for (size_t i = 0; i < tx.pages.size(); i++) {
      PageMeta m = d.store->GetMeta(tx.pages[i]);
      if (m.state == PageState::kAbsent) {
        // Never served nor written: nobody caches it, so its (empty) cacher set is complete.
        HOTPOT_RETURN_IF_ERROR(d.store->InstallPage(tx.pages[i], zeros.data(), 0, PageState::kOwned));
        fresh.push_back(PageKey{tx.ds, tx.pages[i]});
      } else {
        SavePreImageLocked(tx.ds, tx.pages[i], d.store);
        if (m.state != PageState::kOwned) HOTPOT_RETURN_IF_ERROR(d.store->SetState(tx.pages[i], PageState::kOwned));
      }
    }
    for (const msg::Range& r : tx.ranges) {
      size_t idx = std::lower_bound(tx.pages.begin(), tx.pages.end(), r.offset / kPageSize) - tx.pages.begin();
      HOTPOT_RETURN_IF_ERROR(d.store->WriteBytes(r.offset, r.new_bytes.data(), r.len(), tx.versions[idx]));
    }
  }
  if (!fresh.empty()) {
    std::lock_guard<std::mutex> l(owner_mu_);  // lock order: never owner_mu_ inside cache_mu_
    cachers_known_.insert(fresh.begin(), fresh.end());
  }
  HOTPOT_RETURN_IF_ERROR(d.store->Persist(tx.pages));
  FaultPoint("owner.after-local-apply");  // applied here, pushed nowhere yet
  uint32_t n = 0;
  HOTPOT_RETURN_IF_ERROR(PushAndReplicate(key, tx, &n, marked));
  // "Applied" means applied here AND pushed: a record still "applying" after a crash is applied and pushed again
  // by the restarted owner (RecoverRedo), so no cacher keeps a copy that missed it.
  HOTPOT_RETURN_IF_ERROR(pool_->redo().SetPhase(tx.slot, pool::RedoPhase::kApplied));
  *copies = n;
  if (n < tx.replicas)
    return Status(Code::kUnavailable, "commit applied on the owner but only " + std::to_string(n) + " of " +
                                          std::to_string(tx.replicas) + " copies could be made");
  return Status::Ok();
}

// Coherence push of the new bytes to every node caching a page, then whole-page replica top-up until every page
// is held by N distinct nodes. Each receiver gets ONE batch with all of its pages of this part (one round trip per
// node, applied there in one step). Returns the minimum number of holders over the pages (owner included).
Status EngineImpl::PushAndReplicate(const TxKey& key, const OwnerTx& tx, uint32_t* copies,
                                    std::vector<uint32_t>* marked) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(FindDataset(tx.ds, &d));
  const std::vector<uint32_t> alive = AliveNodes();
  const size_t n = tx.pages.size();
  const bool open = tx.commit_id != 0;
  std::vector<std::set<uint32_t>> holders(n, std::set<uint32_t>{self()});
  std::vector<std::vector<uint32_t>> gone(n), replicated(n);
  std::vector<std::vector<msg::PushRange>> ranges(n);
  for (const msg::Range& r : tx.ranges) {
    size_t idx = std::lower_bound(tx.pages.begin(), tx.pages.end(), r.offset / kPageSize) - tx.pages.begin();
    ranges[idx].push_back(msg::PushRange{r.offset, r.new_bytes});
  }
  // Targets: each page's recorded cachers, or every alive node while its cacher set is not known yet.
  std::map<uint32_t, std::vector<size_t>> by_node;
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    for (size_t i = 0; i < n; i++) {
      PageKey k{tx.ds, tx.pages[i]};
      std::set<uint32_t> targets;
      auto it = cachers_.find(k);
      if (it != cachers_.end()) targets = it->second;
      if (!cachers_known_.count(k)) targets.insert(alive.begin(), alive.end());
      for (uint32_t node : targets)
        if (node != self()) by_node[node].push_back(i);
    }
  }
  // A multi-part commit's pushes carry its open mark (the committer sends DONE). A one-shot commit's pushes to a
  // node are one step when they fit one message; when they do not, they are marked open under this owner's own
  // key (self, txid) and this owner sends DONE after the last one.
  // Post-commit bytes of a page (this owner holds it locked, so it cannot change): for replicas and for nodes that
  // answered a push "stale".
  std::vector<std::vector<uint8_t>> page_data(n);
  const WholePageFn whole = [&](size_t i, const std::vector<uint8_t>** page) {
    if (page_data[i].empty()) {
      page_data[i].resize(kPage);
      PageMeta m;
      HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(tx.pages[i], page_data[i].data(), &m));
    }
    *page = &page_data[i];
    return Status::Ok();
  };
  msg::PushBatch b;
  b.committer = open ? key.committer : self();
  b.flags = open ? msg::kPushOpen : 0;
  b.commit_id = open ? tx.commit_id : key.txid;
  b.dataset = tx.ds;
  std::vector<uint8_t> accepted;
  std::set<uint32_t> self_marked;
  bool split = false;
  for (const auto& kv : by_node) {
    const uint32_t node = kv.first;
    if (!IsAlive(node)) continue;  // stays a cacher: its copy is fixed by the first push after it returns
    b.pages.clear();
    for (size_t i : kv.second) b.pages.push_back(msg::PushPage{tx.versions[i], ranges[i]});
    if (open) marked->push_back(node);  // it may have applied the batch even if the answer is lost
    const WholePageFn whole_of_node = [&](size_t j, const std::vector<uint8_t>** page) { return whole(kv.second[j], page); };
    Status st = SendPages(node, b, whole_of_node, &accepted, &split);
    if (split && !open) self_marked.insert(node);
    c_.coherence_pushes++;
    Note(observe::EventKind::kCoherencePush, node, tx.ds, tx.pages[kv.second.front()], kv.second.size());
    for (size_t j = 0; j < kv.second.size(); j++) {
      const size_t i = kv.second[j];
      if (accepted[j] == msg::kPushHeld) {
        holders[i].insert(node);
        c_.coherence_pages++;
      } else if (accepted[j] == msg::kPushNotHeld) {
        gone[i].push_back(node);  // answered "not held": no longer a cacher
      }
      // A failed message leaves the node a cacher: the next commit's push fixes or drops its copy by version.
    }
    if (!st.ok()) Log("engine: push of " + std::to_string(kv.second.size()) + " pages of dataset " + std::to_string(tx.ds) +
                      " to node " + std::to_string(node) + ": " + st.ToString());
  }
  // Top-up: whole post-commit pages to more alive nodes (node-id order, ones without a copy) until N holders;
  // each round sends one batch per node, a node that fails is not tried again for that page.
  std::vector<std::set<uint32_t>> tried(n);
  b.flags |= msg::kPushReplica;
  for (;;) {
    std::map<uint32_t, std::vector<size_t>> plan;
    for (size_t i = 0; i < n; i++) {
      size_t need = holders[i].size() < tx.replicas ? tx.replicas - holders[i].size() : 0;
      for (uint32_t node : alive) {
        if (need == 0) break;
        if (holders[i].count(node) || tried[i].count(node)) continue;
        tried[i].insert(node);
        plan[node].push_back(i);
        need--;
      }
    }
    if (plan.empty()) break;
    for (const auto& kv : plan) {
      const uint32_t node = kv.first;
      b.pages.clear();
      for (size_t i : kv.second) {
        const std::vector<uint8_t>* page = nullptr;
        HOTPOT_RETURN_IF_ERROR(whole(i, &page));
        b.pages.push_back(msg::PushPage{tx.versions[i], {msg::PushRange{tx.pages[i] * kPageSize, *page}}});
      }
      if (open) marked->push_back(node);
      const WholePageFn whole_of_node = [&](size_t j, const std::vector<uint8_t>** page) { return whole(kv.second[j], page); };
      Status st = SendPages(node, b, whole_of_node, &accepted, &split);
      if (split && !open) self_marked.insert(node);
      for (size_t j = 0; j < kv.second.size(); j++) {
        const size_t i = kv.second[j];
        if (accepted[j] == msg::kPushHeld) {
          holders[i].insert(node);
          replicated[i].push_back(node);
          c_.replicas_sent++;
        }
      }
      if (st.ok()) Note(observe::EventKind::kReplicaSent, node, tx.ds, tx.pages[kv.second.front()], kv.second.size());
      else Log("engine: replica of " + std::to_string(kv.second.size()) + " pages of dataset " + std::to_string(tx.ds) +
               " to node " + std::to_string(node) + ": " + st.ToString());
    }
  }
  {
    // Holders (pushed or replicated) are the page's cachers from now on: later commits keep them coherent.
    std::lock_guard<std::mutex> l(owner_mu_);
    for (size_t i = 0; i < n; i++) {
      PageKey k{tx.ds, tx.pages[i]};
      std::set<uint32_t>& cs = cachers_[k];
      for (uint32_t node : gone[i])
        if (!holders[i].count(node)) cs.erase(node);
      for (uint32_t node : holders[i])
        if (node != self()) cs.insert(node);
      std::set<uint32_t>& ro = replica_only_[k];
      for (uint32_t node : gone[i]) ro.erase(node);
      ro.insert(replicated[i].begin(), replicated[i].end());
      cachers_known_.insert(k);
    }
  }
  if (!self_marked.empty()) SendDone(key.txid, self_marked);
  uint32_t min_copies = UINT32_MAX;
  for (size_t i = 0; i < n; i++) min_copies = std::min(min_copies, uint32_t(holders[i].size()));
  *copies = min_copies == UINT32_MAX ? 1 : min_copies;
  return Status::Ok();
}

Status EngineImpl::SendPages(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole,
                             std::vector<uint8_t>* accepted, bool* split) {
  constexpr size_t kBatchPages = 1024;
  constexpr size_t kBatchBytes = 8u << 20;
  // Message boundaries: [start, end) page ranges.
  std::vector<std::pair<size_t, size_t>> cuts;
  size_t start = 0, bytes = 0;
  for (size_t i = 0; i < b.pages.size(); i++) {
    size_t sz = 12;
    for (const msg::PushRange& r : b.pages[i].ranges) sz += 12 + r.bytes.size();
    if (i > start && (i - start >= kBatchPages || bytes + sz > kBatchBytes)) {
      cuts.push_back({start, i});
      start = i;
      bytes = 0;
    }
    bytes += sz;
  }
  cuts.push_back({start, b.pages.size()});
  *split = cuts.size() > 1;
  if (!*split) {
    Status st = SendBatch(node, b, whole, 0, accepted);
    if (!st.ok()) accepted->assign(b.pages.size(), kPushUnknown);
    return st;
  }
  accepted->assign(b.pages.size(), kPushUnknown);
  Status first;
  msg::PushBatch part;
  part.committer = b.committer;
  part.flags = b.flags | msg::kPushOpen;
  part.commit_id = b.commit_id;
  part.dataset = b.dataset;
  std::vector<uint8_t> got;
  for (const auto& cut : cuts) {
    part.pages.assign(b.pages.begin() + long(cut.first), b.pages.begin() + long(cut.second));
    Status st = SendBatch(node, part, whole, cut.first, &got);
    if (st.ok()) std::copy(got.begin(), got.end(), accepted->begin() + long(cut.first));
    else if (first.ok()) first = st;
  }
  return first;
}

Status EngineImpl::SendBatch(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole, size_t first,
                             std::vector<uint8_t>* accepted) {
  std::vector<uint8_t> payload;
  msg::EncodePushBatch(b, &payload);
  c_.bytes_out += payload.size();
  Status st = CallPeer(node, msg::kPushBatch, payload, accepted, NewDeadline());
  if (st.ok() && accepted->size() != b.pages.size())
    st = Status(Code::kInternal, "PUSH_BATCH answer of " + std::to_string(accepted->size()) + " bytes for " +
                                     std::to_string(b.pages.size()) + " pages");
  if (!st.ok() || std::find(accepted->begin(), accepted->end(), msg::kPushStale) == accepted->end()) return st;
  // The node holds some pages at an older version (it missed a commit) and applied nothing: once more, with those
  // pages whole. A whole page is installed over any older copy, so this cannot answer stale again.
  msg::PushBatch again = b;
  for (size_t i = 0; i < b.pages.size(); i++) {
    if ((*accepted)[i] != msg::kPushStale) continue;
    const std::vector<uint8_t>* page = nullptr;
    HOTPOT_RETURN_IF_ERROR(whole(first + i, &page));
    const uint64_t pg = b.pages[i].ranges[0].offset / kPageSize;
    again.pages[i].ranges = {msg::PushRange{pg * kPageSize, *page}};
  }
  msg::EncodePushBatch(again, &payload);
  c_.bytes_out += payload.size();
  st = CallPeer(node, msg::kPushBatch, payload, accepted, NewDeadline());
  if (st.ok() && accepted->size() != b.pages.size())
    st = Status(Code::kInternal, "PUSH_BATCH answer of " + std::to_string(accepted->size()) + " bytes for " +
                                     std::to_string(b.pages.size()) + " pages");
  if (st.ok())
    for (uint8_t& a : *accepted)
      if (a == msg::kPushStale) a = msg::kPushNotHeld;
  return st;
}

Status EngineImpl::OwnerFinish(const TxKey& key, bool abort) {
  std::lock_guard<std::mutex> l(owner_mu_);
  auto it = txs_.find(key);
  if (it == txs_.end()) return Status::Ok();  // already finished or broken: idempotent
  if (abort && it->second.applied) Log("engine: ABORT of already applied tx " + std::to_string(key.txid) + ": released");
  DropTxLocked(key, &it->second, true);
  return Status::Ok();
}

void EngineImpl::SettleLocked(const TxKey& key, bool applied, uint32_t copies) {
  const auto now = Clock::now();
  const auto limit = now - 10 * opt_.request_timeout;
  while (!settled_order_.empty()) {
    auto it = settled_.find(settled_order_.front());
    if (it != settled_.end() && it->second.at >= limit && settled_.size() < 65536) break;
    if (it != settled_.end()) settled_.erase(it);
    settled_order_.pop_front();
  }
  if (settled_.emplace(key, Settled{applied, copies, now}).second) settled_order_.push_back(key);
}

msg::AbortState EngineImpl::OwnerAbort(const TxKey& key, uint32_t* copies) {
  *copies = 0;
  std::lock_guard<std::mutex> l(owner_mu_);
  auto it = txs_.find(key);
  if (it != txs_.end()) {
    if (it->second.applying || it->second.applied) return msg::AbortState::kApplying;
    DropTxLocked(key, &it->second, true);
    SettleLocked(key, false, 0);
    return msg::AbortState::kNothingApplied;
  }
  auto s = settled_.find(key);
  if (s != settled_.end()) {
    *copies = s->second.copies;
    return s->second.applied ? msg::AbortState::kApplied : msg::AbortState::kNothingApplied;
  }
  // Not prepared (yet): a PREPARE still in flight must never apply now.
  SettleLocked(key, false, 0);
  return msg::AbortState::kNothingApplied;
}

Status EngineImpl::SettleOneShot(uint32_t owner, uint64_t txid, const Status& failed, uint32_t* copies) {
  const std::string where = "commit to node " + std::to_string(owner) + ": " + failed.message();
  const auto budget_end = Clock::now() + 3 * opt_.request_timeout;
  for (int attempt = 0;; attempt++) {
    std::vector<uint8_t> payload, resp;
    msg::EncodeTxid(txid, &payload);
    Status st = IsAlive(owner) ? transport_->Call(owner, msg::kAbort, payload.data(), payload.size(), &resp, NewDeadline())
                               : Status(Code::kUnavailable, "it is not alive");
    msg::AbortState state = msg::AbortState::kUnknown;
    if (st.ok()) st = msg::DecodeAbortReply(resp.data(), resp.size(), &state, copies);
    // An owner that is alive but slow (paused, overloaded) is asked again until the budget ends.
    const bool retry = !st.ok() && IsAlive(owner) && Clock::now() < budget_end;
    if (!retry && (!st.ok() || state == msg::AbortState::kUnknown))
      return Status(Code::kUnavailable, where + "; outcome unknown: node " + std::to_string(owner) +
                                            " did not answer the ABORT that settles it (" +
                                            (st.ok() ? "an older node" : st.message()) + "), so it may have applied");
    if (retry) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 << std::min(attempt, 6)));
      continue;
    }
    if (state == msg::AbortState::kNothingApplied) return Status(failed.code(), where + "; nothing was applied");
    if (state == msg::AbortState::kApplied) return Status::Ok();
    // Applying: it passed its commit point before the ABORT; wait for its copies.
    if (Clock::now() >= budget_end)
      return Status(Code::kUnavailable, where + "; it was applied at node " + std::to_string(owner) +
                                            " after the deadline and its copies are still being made");
    std::this_thread::sleep_for(std::chrono::milliseconds(2 << std::min(attempt, 7)));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Commit decisions and in-doubt parts (docs/design/consistency.md "Commit decision and recovery")

Status EngineImpl::WaitRevalidated(uint64_t ds) {
  std::unique_lock<std::mutex> l(mu_);
  auto recovering = [&] {
    auto it = recovering_.find(ds);
    return it != recovering_.end() && !it->second.empty();
  };
  const bool done = revalidated_cv_.wait_for(l, 2 * opt_.request_timeout, [&] {
    return shut_.load() || (revalidate_blocking_.count(ds) == 0 && !recovering());
  });
  if (!done && recovering())
    return Status(Code::kUnavailable, "dataset " + std::to_string(ds) + ": node " + std::to_string(self()) +
                                          " is recovering the chunks it owns from their holders (its store was "
                                          "replaced); retry");
  if (!done)
    return Status(Code::kUnavailable, "dataset " + std::to_string(ds) + ": node " + std::to_string(self()) +
                                          " is still checking its cached pages with their owners after a restart");
  return Status::Ok();
}

void EngineImpl::SetLeaseDeadline(uint64_t unix_ms) {
  lease_until_.store(unix_ms);
  if (unix_ms == 0 || UnixMs() >= unix_ms || !lease_lapsed_.load()) return;
  // A valid lease again after a lapse: check every cached copy, then the unchecked marks go (RevalidatePending).
  lease_lapsed_.store(false);
  Log("engine: membership lease valid again: checking every cached page with its owner");
  RevalidateAll();
  resolver_cv_.notify_all();
}

void EngineImpl::CheckLease() {
  const uint64_t until = lease_until_.load();
  if (until == 0 || lease_lapsed_.load() || UnixMs() <= until) return;
  if (lease_lapsed_.exchange(true)) return;
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : datasets_) ids.push_back(kv.first);
  }
  Log("engine: membership lease lapsed: cached copies may have missed commits; snapshot reads wait until they are "
      "checked");
  std::lock_guard<std::mutex> l(cache_mu_);
  for (uint64_t ds : ids) {
    PubState& p = PubLocked(ds);
    if (p.open.count(kUncheckedMark)) continue;
    ChangeGuard change(this, ds);
    p.open.emplace(kUncheckedMark, Clock::now());
  }
}

void EngineImpl::RevalidateAll() {
  std::vector<DatasetState> all;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : datasets_)
      if (kv.second.store != nullptr) all.push_back(kv.second);
  }
  for (const DatasetState& d : all) {
    std::vector<uint64_t> cached;
    for (uint64_t pg = 0; pg < d.store->page_count(); pg++) {
      const PageState st = d.store->GetMeta(pg).state;
      if (st == PageState::kCommitted || st == PageState::kRedundant) cached.push_back(pg);
    }
    std::lock_guard<std::mutex> l(mu_);
    revalidate_[d.info.id] = std::move(cached);  // an empty list still takes a pass: it clears the mark
    revalidate_gen_[d.info.id]++;
  }
}

Status EngineImpl::CheckNotRecovering(const DatasetState& d, uint64_t page) {
  const uint32_t chunk = uint32_t(page * kPageSize / d.chunk_size);
  std::lock_guard<std::mutex> l(mu_);
  auto it = recovering_.find(d.info.id);
  if (it == recovering_.end() || !it->second.count(chunk)) return Status::Ok();
  return Status(Code::kUnavailable, "node " + std::to_string(self()) + " is recovering chunk " + std::to_string(chunk) +
                                        " of dataset " + std::to_string(d.info.id) +
                                        " from the nodes holding copies (its store was replaced): retry");
}

void EngineImpl::RecoverChunks() {
  std::vector<ChunkRef> todo;
  std::vector<uint32_t> peers;
  std::vector<uint32_t> down;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : recovering_)
      for (uint32_t c : kv.second) todo.push_back(ChunkRef{kv.first, c});
    if (todo.empty()) return;
    for (const auto& kv : members_) {
      if (kv.first == self()) continue;
      (kv.second.alive ? peers : down).push_back(kv.first);
    }
  }
  if (!down.empty()) {
    // A member that is down may hold the newest copy of a page: recovering without it could go back in time.
    if (!recovery_wait_logged_)
      Log("engine: recovery of " + std::to_string(todo.size()) + " chunks waits until every member is alive (node " +
          std::to_string(down.front()) + " is not)");
    recovery_wait_logged_ = true;
    return;
  }
  recovery_wait_logged_ = false;
  for (const ChunkRef& ref : todo) {
    if (shut_.load()) return;
    DatasetState d;
    if (!FindDataset(ref.dataset_id, &d).ok()) continue;
    const uint64_t per_chunk = d.chunk_size / kPageSize;
    const uint64_t first = uint64_t(ref.chunk) * per_chunk;
    const uint64_t end = std::min<uint64_t>(d.store->page_count(), first + per_chunk);
    bool ok = true;
    uint64_t installed = 0;
    for (uint64_t run = first; run < end && ok; run += msg::kMaxFetchPages) {
      const uint32_t count = uint32_t(std::min<uint64_t>(msg::kMaxFetchPages, end - run));
      // The newest copy of each page among every node (this node's own included, for an older store).
      std::vector<int> from(count, -1);  // index into answers, or -1: this node's own copy (or none)
      std::vector<uint64_t> best(count, 0);
      std::vector<bool> have(count, false);
      for (uint32_t k = 0; k < count; k++) {
        const PageMeta m = d.store->GetMeta(run + k);
        if (m.state != PageState::kAbsent) {
          have[k] = true;
          best[k] = m.version;
        }
      }
      std::vector<std::vector<uint8_t>> answers(peers.size());
      std::vector<std::vector<msg::FetchedPage>> metas(peers.size());
      std::vector<const uint8_t*> datas(peers.size(), nullptr);
      std::vector<uint8_t> payload;
      msg::EncodeFetchRequest(msg::FetchRequest{ref.dataset_id, run, count, 0}, &payload);
      for (size_t i = 0; i < peers.size() && ok; i++) {
        Status st = CallPeer(peers[i], msg::kCopyPages, payload, &answers[i], NewDeadline());
        if (st.ok()) st = msg::DecodeFetchResponse(answers[i].data(), answers[i].size(), count, false, &metas[i], &datas[i]);
        if (!st.ok()) {
          Log("engine: recovery of chunk " + std::to_string(ref.chunk) + " of dataset " + std::to_string(ref.dataset_id) +
              ": node " + std::to_string(peers[i]) + " did not give its copies (" + st.ToString() + "): retrying");
          ok = false;
          break;
        }
        for (uint32_t k = 0; k < count; k++)
          if (metas[i][k].state != uint8_t(PageState::kAbsent) && (!have[k] || metas[i][k].version > best[k])) {
            have[k] = true;
            best[k] = metas[i][k].version;
            from[k] = int(i);
          }
      }
      if (!ok) break;
      std::vector<uint64_t> persist;
      {
        std::lock_guard<std::mutex> l(cache_mu_);
        ChangeGuard change(this, ref.dataset_id);
        for (uint32_t k = 0; k < count; k++) {
          if (!have[k]) continue;  // nobody holds it: never written (zeros at version 0 when first served)
          const uint64_t pg = run + k;
          if (d.store->GetMeta(pg).state != PageState::kAbsent) SavePreImageLocked(ref.dataset_id, pg, d.store);
          if (from[k] >= 0) {
            const size_t i = size_t(from[k]);
            ok = d.store->InstallPage(pg, datas[i] + size_t(k) * kPage, best[k], PageState::kOwned).ok();
            installed++;
          } else {
            ok = d.store->SetState(pg, PageState::kOwned).ok();
          }
          if (!ok) break;
          persist.push_back(pg);
        }
      }
      if (ok) ok = d.store->Persist(persist).ok();
    }
    if (!ok) continue;
    {
      std::lock_guard<std::mutex> l(mu_);
      recovering_[ref.dataset_id].erase(ref.chunk);
      recovered_[ref.dataset_id].insert(ref.chunk);
    }
    revalidated_cv_.notify_all();
    Log("engine: chunk " + std::to_string(ref.chunk) + " of dataset " + std::to_string(ref.dataset_id) + " recovered: " +
        std::to_string(installed) + " pages from " + std::to_string(peers.size()) + " other nodes" +
        (d.info.replicas <= 1 ? " (N=1: a page whose only copy was in the lost store is lost)" : ""));
  }
}

std::vector<ChunkRef> EngineImpl::RecoveredChunks() {
  std::vector<ChunkRef> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : recovered_)
    for (uint32_t c : kv.second) out.push_back(ChunkRef{kv.first, c});
  return out;
}

pool::StoreIdentity EngineImpl::Store() {
  if (shut_.load() || !pool_) return pool::StoreIdentity{};
  return pool_->identity();
}

void EngineImpl::HandleCopyPages(const transport::Request& req, transport::Reply* reply) {
  msg::FetchRequest fr;
  Status st = msg::DecodeFetchRequest(req.data, req.len, &fr);
  DatasetState d;
  if (st.ok()) st = FindDataset(fr.dataset, &d);
  if (st.ok() && (fr.flags != 0 || fr.first_page >= d.store->page_count() ||
                  fr.count > d.store->page_count() - fr.first_page))
    st = Status(Code::kInvalidArgument, "COPY_PAGES beyond dataset " + std::to_string(fr.dataset) + " or with flags");
  if (!st.ok()) {
    reply->status = st;
    return;
  }
  std::vector<msg::FetchedPage> meta(fr.count);
  std::vector<uint8_t> pages(size_t(fr.count) * kPage);
  {
    std::lock_guard<std::mutex> l(cache_mu_);  // every content change happens under it: page and version agree
    for (uint32_t i = 0; i < fr.count; i++) {
      PageMeta m;
      st = d.store->ReadPage(fr.first_page + i, pages.data() + size_t(i) * kPage, &m);
      if (!st.ok()) {
        reply->status = st;
        return;
      }
      meta[i].version = m.version;
      meta[i].state = uint8_t(m.state);
    }
  }
  msg::EncodeFetchResponse(meta, pages.data(), false, &reply->payload);
  c_.bytes_out += reply->payload.size();
}

void EngineImpl::RevalidatePending() {
  std::map<uint64_t, std::vector<uint64_t>> todo;
  std::map<uint64_t, uint64_t> gens;
  {
    std::lock_guard<std::mutex> l(mu_);
    todo = revalidate_;
    gens = revalidate_gen_;
  }
  for (auto& kv : todo) {
    const uint64_t ds = kv.first;
    DatasetState d;
    if (!FindDataset(ds, &d).ok()) continue;
    std::vector<uint64_t> unchecked, failed;
    const size_t installed = RefreshFromOwners(d, kv.second, &unchecked, &failed);
    if (installed > 0)
      Log("engine: dataset " + std::to_string(ds) + ": " + std::to_string(installed) +
          " cached pages were stale after the restart and were updated from their owners");
    if (!unchecked.empty())
      Log("engine: dataset " + std::to_string(ds) + ": " + std::to_string(unchecked.size()) +
          " cached pages have no live owner: kept unchecked (snapshot reads here wait for them)");
    {
      std::lock_guard<std::mutex> l(mu_);
      // Every cached page was queued again meanwhile (a lapsed lease): that list stands, and so does the mark.
      if (revalidate_gen_[ds] != gens[ds]) continue;
    }
    {
      // Copies nobody could check may be stale: while they exist (or the lease is lapsed), snapshot reads on this
      // node fail (an "unchecked" mark, key {0, 0}); plain loads still see them.
      std::lock_guard<std::mutex> l(cache_mu_);
      PubState& p = PubLocked(ds);
      const bool marked = p.open.count(kUncheckedMark) != 0;
      const bool want = !unchecked.empty() || lease_lapsed_.load();
      if (want != marked) {
        ChangeGuard change(this, ds);
        if (marked) p.open.erase(kUncheckedMark);
        else p.open.emplace(kUncheckedMark, Clock::now());
      }
    }
    std::vector<uint64_t> left = unchecked;
    left.insert(left.end(), failed.begin(), failed.end());
    std::sort(left.begin(), left.end());
    std::lock_guard<std::mutex> l(mu_);
    if (revalidate_gen_[ds] != gens[ds]) continue;
    if (left.empty()) revalidate_.erase(ds);
    else revalidate_[ds] = std::move(left);
    // Apps may open the dataset once every copy whose owner is alive was checked. Copies of a dead owner may be
    // stale (a commit while this node was down, before that owner died): the unchecked mark above keeps snapshot
    // reads here failing until they are checked.
    if (failed.empty()) revalidate_blocking_.erase(ds);
    revalidated_cv_.notify_all();
  }
}

Status EngineImpl::RefreshPages(uint64_t dataset_id, uint64_t first_page, uint64_t count) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(FindDataset(dataset_id, &d));
  if (count == 0 || first_page >= d.store->page_count() || count > d.store->page_count() - first_page)
    return Status(Code::kOutOfRange, "pages " + std::to_string(first_page) + "+" + std::to_string(count) +
                                         " beyond dataset " + std::to_string(dataset_id));
  std::vector<uint64_t> pages;
  for (uint64_t pg = first_page; pg < first_page + count; pg++) {
    const PageState st = d.store->GetMeta(pg).state;
    if (st == PageState::kCommitted || st == PageState::kRedundant) pages.push_back(pg);
  }
  std::vector<uint64_t> unchecked, failed;
  RefreshFromOwners(d, pages, &unchecked, &failed, /*wait_unlocked=*/true);
  unchecked.insert(unchecked.end(), failed.begin(), failed.end());
  if (unchecked.empty()) return Status::Ok();
  std::sort(unchecked.begin(), unchecked.end());
  return Status(Code::kUnavailable, std::to_string(unchecked.size()) + " cached pages of dataset " +
                                        std::to_string(dataset_id) + " (first: page " + std::to_string(unchecked[0]) +
                                        ") could not be checked with their owner: it is down or did not answer");
}

size_t EngineImpl::RefreshFromOwners(const DatasetState& d, const std::vector<uint64_t>& pages,
                                     std::vector<uint64_t>* unchecked, std::vector<uint64_t>* failed,
                                     bool wait_unlocked) {
  const uint64_t ds = d.info.id;
  size_t total = 0;
  auto cached = [&](uint64_t pg) {
    const PageState st = d.store->GetMeta(pg).state;
    return st == PageState::kCommitted || st == PageState::kRedundant;
  };
  for (size_t i = 0; i < pages.size() && !shut_.load();) {
    uint32_t owner = 0;
    if (pages[i] >= d.store->page_count() || !cached(pages[i]) || !ChunkOwner(d, pages[i], &owner) ||
        owner == self()) {
      i++;  // absent, owned here, or unknown: nothing to compare with
      continue;
    }
    // A run of consecutive cached pages of one owner, at most one FETCH message.
    size_t j = i + 1;
    uint32_t o2 = 0;
    while (j < pages.size() && j - i < msg::kMaxFetchPages && pages[j] == pages[j - 1] + 1 &&
           pages[j] < d.store->page_count() && cached(pages[j]) && ChunkOwner(d, pages[j], &o2) && o2 == owner)
      j++;
    const uint32_t count = uint32_t(j - i);
    if (!IsAlive(owner)) {
      // Nobody can commit to these pages while their owner is down, and nobody else can say whether our copy is
      // current: keep it (it may be the last copy) and check it once the owner is back.
      unchecked->insert(unchecked->end(), pages.begin() + long(i), pages.begin() + long(j));
      i = j;
      continue;
    }
    std::vector<uint8_t> payload, resp;
    const bool revalidate = !wait_unlocked;
    msg::FetchRequest fr{ds, pages[i], count, msg::kFetchCoherent | (revalidate ? msg::kFetchRevalidate : 0u)};
    msg::EncodeFetchRequest(fr, &payload);
    const Deadline dl = NewDeadline();
    Status st;
    for (int attempt = 0;; attempt++) {
      st = CallPeer(owner, msg::kFetchPages, payload, &resp, dl);
      if (revalidate || st.code() != Code::kUnavailable || st.message().find("locked") == std::string::npos) break;
      const auto backoff = std::chrono::microseconds(200 << std::min(attempt, 8));
      if (Clock::now() + 2 * backoff >= dl) break;
      std::this_thread::sleep_for(backoff);
    }
    std::vector<msg::FetchedPage> meta;
    const uint8_t* data = nullptr;
    if (st.ok()) st = msg::DecodeFetchResponse(resp.data(), resp.size(), count, revalidate, &meta, &data);
    if (!st.ok()) {
      failed->insert(failed->end(), pages.begin() + long(i), pages.begin() + long(j));
      i = j;
      continue;
    }
    std::vector<uint64_t> installed;
    {
      std::lock_guard<std::mutex> l(cache_mu_);
      bool change = false;
      for (uint32_t k = 0; k < count && !change; k++) {
        const PageMeta m = d.store->GetMeta(pages[i] + k);
        change = meta[k].open_commit != 0 ||
                 ((m.state == PageState::kCommitted || m.state == PageState::kRedundant) && m.version < meta[k].version);
      }
      if (change) {
        // One step for the run (snapshot readers see all of it or none), the marks in the same step.
        ChangeGuard guard(this, ds);
        PubState& pub = PubLocked(ds);
        for (uint32_t k = 0; k < count; k++) {
          if (meta[k].open_commit != 0)
            pub.open.emplace(std::make_pair(meta[k].open_committer, meta[k].open_commit), Clock::now());
          const uint64_t pg = pages[i] + k;
          const PageMeta m = d.store->GetMeta(pg);
          if ((m.state != PageState::kCommitted && m.state != PageState::kRedundant) || m.version >= meta[k].version)
            continue;
          SavePreImageLocked(ds, pg, d.store);
          if (d.store->InstallPage(pg, data + size_t(k) * kPage, meta[k].version, m.state).ok()) installed.push_back(pg);
        }
      }
    }
    if (!installed.empty()) (void)d.store->Persist(installed);
    total += installed.size();
    i = j;
  }
  return total;
}

msg::OutcomeCode EngineImpl::OutcomeOf(uint64_t txid) {
  std::lock_guard<std::mutex> l(decide_mu_);
  auto it = in_flight_.find(txid);
  if (it != in_flight_.end()) return it->second;
  if (decisions_.count(txid)) return msg::OutcomeCode::kCommitted;
  // Not running and no decision: the commit aborted, or it was decided and every part was applied and released
  // (then no owner still holds a prepared part to ask about). Presumed abort.
  return msg::OutcomeCode::kAborted;
}

void EngineImpl::ResolverLoop() {
  const auto period = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds(500),
      std::max<std::chrono::milliseconds>(std::chrono::milliseconds(50),
                                          std::chrono::duration_cast<std::chrono::milliseconds>(opt_.request_timeout) / 4));
  std::unique_lock<std::mutex> l(resolver_mu_);
  while (!resolver_stop_) {
    resolver_cv_.wait_for(l, period);
    if (resolver_stop_) break;
    l.unlock();
    CheckLease();
    // Membership first: the outcome may need to be applied and replicated to live nodes.
    bool ready;
    {
      std::lock_guard<std::mutex> g(mu_);
      ready = self() != 0 && !members_.empty();
    }
    if (ready && !shut_.load()) {
      RevalidatePending();
      RecoverChunks();
      DriveDecisions();
      ResolveInDoubt();
      CheckMarks();
    }
    l.lock();
  }
}

bool EngineImpl::FinishPart(const pool::RedoPart& part, uint32_t* copies, Status* apply_status, Decision* dec) {
  std::vector<uint32_t> m;
  *apply_status = CallTx(part.node, msg::kApply, part.txid, copies, NewDeadline(), &m);
  dec->marked.insert(m.begin(), m.end());
  // ABORTED "not prepared": its owner completed the part without us (the nodes its pushes marked are unknown).
  if (apply_status->code() == Code::kAborted) dec->done_everywhere = true;
  const bool applied = apply_status->ok() || apply_status->code() == Code::kAborted ||
                       apply_status->message().find("commit applied on the owner") != std::string::npos;
  if (!applied) return false;
  uint32_t ignored = 0;
  return CallTx(part.node, msg::kRelease, part.txid, &ignored, NewDeadline()).ok();
}

// Committer role: decided commits whose parts are not all applied and released (an owner was down, or this node
// restarted with decision records) are re-driven until every part is done, then the decision record is freed.
void EngineImpl::DriveDecisions() {
  std::vector<std::shared_ptr<Decision>> todo;
  {
    std::lock_guard<std::mutex> l(decide_mu_);
    for (auto& kv : decisions_)  // several txids map to one decision: `driving` takes each once
      if (!kv.second->driving) {
        kv.second->driving = true;
        todo.push_back(kv.second);
      }
  }
  for (const std::shared_ptr<Decision>& dec : todo) {
    for (size_t i = 0; i < dec->parts.size(); i++) {
      if (dec->done[i] || shut_.load()) continue;
      const pool::RedoPart& part = dec->parts[i];
      if (part.node != self() && !IsAlive(part.node)) continue;
      uint32_t copies = 0;
      Status st;
      dec->done[i] = FinishPart(part, &copies, &st, dec.get());
      if (dec->done[i]) Log("engine: decided tx " + std::to_string(part.txid) + " completed at node " + std::to_string(part.node));
    }
    const bool all_done = std::all_of(dec->done.begin(), dec->done.end(), [](bool b) { return b; });
    if (all_done) SendDecisionDone(*dec);
    {
      std::lock_guard<std::mutex> l(decide_mu_);
      dec->driving = false;
      if (all_done)
        for (const pool::RedoPart& part : dec->parts) decisions_.erase(part.txid);
    }
    if (all_done && dec->has_slot) (void)pool_->redo().Free(dec->slot);
  }
}

// Owner role. A prepared writing part that nobody applied or aborted (recovered after a restart, or older than 4 x
// the request timeout) is resolved by asking its committer: committed -> apply (and release a one-shot part; a part
// of a multi-part commit stays locked until its committer's RELEASE, which comes after every part is applied);
// aborted -> drop; pending or committer unreachable -> keep the part prepared and its pages locked, ask again later.
// A part recovered "applying" was decided: it is applied (and pushed) again without asking. An applied part whose
// RELEASE has not come for 4 x the request timeout is released once its committer no longer knows the commit.
void EngineImpl::ResolveInDoubt() {
  struct Todo {
    TxKey key;
    bool applied;  // applied, waiting for RELEASE
    bool decided;
    bool one_shot;
  };
  std::vector<Todo> todo;
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    BreakExpiredLocked();
    const auto limit = Clock::now() - 4 * opt_.request_timeout;
    for (const auto& kv : txs_) {
      const OwnerTx& tx = kv.second;
      if (tx.applying || !tx.has_slot) continue;
      if (tx.applied ? tx.locked_at < limit : (tx.recovered || tx.locked_at < limit))
        todo.push_back(Todo{kv.first, tx.applied, tx.decided, tx.commit_id == 0});
    }
  }
  for (const Todo& t : todo) {
    if (shut_.load()) return;
    const TxKey& key = t.key;
    msg::OutcomeCode outcome = msg::OutcomeCode::kPending;
    std::string why;
    if (t.decided) {
      outcome = msg::OutcomeCode::kCommitted;
    } else if (key.committer == self()) {
      outcome = OutcomeOf(key.txid);
    } else if (!IsAlive(key.committer)) {
      why = "its committer, node " + std::to_string(key.committer) + ", is not alive";
    } else {
      std::vector<uint8_t> payload, resp;
      msg::EncodeTxid(key.txid, &payload);
      Status st = transport_->Call(key.committer, msg::kOutcome, payload.data(), payload.size(), &resp, NewDeadline());
      if (st.ok() && resp.size() == 1 && resp[0] <= static_cast<uint8_t>(msg::OutcomeCode::kAborted))
        outcome = static_cast<msg::OutcomeCode>(resp[0]);
      else
        why = "asking node " + std::to_string(key.committer) + ": " + (st.ok() ? "bad answer" : st.ToString());
    }
    if (t.applied) {
      // Applied, RELEASE overdue: the committer still driving the commit (committed or pending) releases it;
      // one that no longer knows it (finished, or restarted without a decision) lost our RELEASE.
      if (outcome == msg::OutcomeCode::kAborted) {
        (void)OwnerFinish(key, false);
        Log("engine: applied tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
            " is finished at its committer: released");
      }
      continue;
    }
    if (outcome == msg::OutcomeCode::kCommitted) {
      uint32_t copies = 0;
      Status st = OwnerApply(key, &copies);
      const bool applied = st.ok() || st.message().find("commit applied on the owner") != std::string::npos;
      if (applied && t.one_shot) (void)OwnerFinish(key, false);
      Log("engine: " + std::string(t.decided ? "interrupted" : "in-doubt") + " tx " + std::to_string(key.txid) +
          " from node " + std::to_string(key.committer) + " was committed: " +
          (applied ? (t.one_shot ? "applied and pushed" : "applied and pushed, locked until its committer releases it")
                   : "apply failed, retrying: " + st.ToString()));
    } else if (outcome == msg::OutcomeCode::kAborted) {
      (void)OwnerFinish(key, true);
      Log("engine: in-doubt tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
          " was not committed: discarded");
    } else {
      std::lock_guard<std::mutex> l(owner_mu_);
      auto it = txs_.find(key);
      if (it != txs_.end() && !it->second.doubt_logged) {
        it->second.doubt_logged = true;
        Log("engine: tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
            " stays prepared with its pages locked: " + (why.empty() ? "its commit is still running" : why));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cache side: coherence push and replica receivers

// One commit part's pages for this node, applied in one cache_mu_ section (snapshot readers see all or none). A
// copy older than the entry's version - 1 missed a commit and cannot take a delta: then nothing of the batch is
// applied, those pages answer kPushStale and the sender sends the batch again with them as whole pages. (Dropping
// such a copy instead would punch a hole under apps that mapped it: a later access would need the daemon.)
Status EngineImpl::HandlePushBatch(const msg::PushBatch& b, std::vector<uint8_t>* accepted) {
  accepted->assign(b.pages.size(), msg::kPushNotHeld);
  const bool replica = (b.flags & msg::kPushReplica) != 0;
  DatasetState d;
  // Not open here yet (a node that just started, or learns of the dataset a moment late): NOT_FOUND "not open",
  // which the sender retries until its deadline. Answering "not held" would drop this node from the page's cacher
  // set while its pool may still hold a copy, which would then never be updated.
  HOTPOT_RETURN_IF_ERROR(FindDataset(b.dataset, &d));
  for (const msg::PushPage& pg : b.pages)
    if (pg.ranges[0].offset / kPageSize >= d.store->page_count())
      return Status(Code::kOutOfRange, "push beyond " + PageName(b.dataset, pg.ranges[0].offset / kPageSize));
  auto whole = [](const msg::PushPage& pp) {
    return pp.ranges.size() == 1 && pp.ranges[0].bytes.size() == kPage && pp.ranges[0].offset % kPage == 0;
  };
  CheckLease();  // a push after the lease lapsed may land next to copies that missed others: hide them first
  std::vector<uint64_t> persist;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    // First decide every page without changing anything (all or nothing).
    enum class Act { kSkip, kInstall, kDelta };
    std::vector<Act> act(b.pages.size(), Act::kSkip);
    bool stale = false;
    for (size_t i = 0; i < b.pages.size(); i++) {
      const msg::PushPage& pp = b.pages[i];
      const uint64_t pg = pp.ranges[0].offset / kPageSize;
      const PageMeta m = d.store->GetMeta(pg);
      if (m.state == PageState::kOwned) continue;  // the owner's copy is never pushed to
      if (m.state == PageState::kAbsent) {
        if (replica) {
          act[i] = Act::kInstall;
          (*accepted)[i] = msg::kPushHeld;
          continue;
        }
        // Not held. A fetch in flight may install a copy older than this commit: it must refetch.
        auto f = fetching_.find(PageKey{b.dataset, pg});
        if (f != fetching_.end()) f->second = std::max(f->second, pp.version);
        continue;
      }
      (*accepted)[i] = msg::kPushHeld;
      if (m.version >= pp.version) continue;  // this version or a newer one is here already (a repeated push)
      if (replica || whole(pp)) {
        act[i] = Act::kInstall;
      } else if (m.version + 1 == pp.version) {
        act[i] = Act::kDelta;
      } else {
        (*accepted)[i] = msg::kPushStale;
        stale = true;
      }
    }
    if (stale) {
      for (uint8_t& a : *accepted)
        if (a == msg::kPushHeld) a = msg::kPushNotHeld;  // nothing applied: the sender asks again
      return Status::Ok();
    }
    ChangeGuard change(this, b.dataset);
    if (b.flags & msg::kPushOpen) PubLocked(b.dataset).open.emplace(std::make_pair(b.committer, b.commit_id), Clock::now());
    for (size_t i = 0; i < b.pages.size(); i++) {
      if (act[i] == Act::kSkip) continue;
      const msg::PushPage& pp = b.pages[i];
      const uint64_t pg = pp.ranges[0].offset / kPageSize;
      const PageMeta m = d.store->GetMeta(pg);
      if (m.state != PageState::kAbsent) SavePreImageLocked(b.dataset, pg, d.store);
      if (act[i] == Act::kInstall) {
        // A replica keeps a committed copy committed; a new one is redundant (held for durability only).
        const PageState st = m.state == PageState::kAbsent ? PageState::kRedundant : m.state;
        HOTPOT_RETURN_IF_ERROR(d.store->InstallPage(pg, pp.ranges[0].bytes.data(), pp.version, st));
        if (replica) c_.replicas_received++;
      } else {
        for (const msg::PushRange& r : pp.ranges)
          HOTPOT_RETURN_IF_ERROR(d.store->WriteBytes(r.offset, r.bytes.data(), uint32_t(r.bytes.size()), pp.version));
      }
      persist.push_back(pg);
    }
  }
  HOTPOT_RETURN_IF_ERROR(d.store->Persist(persist));
  if (replica && !persist.empty()) Note(observe::EventKind::kReplicaReceived, 0, b.dataset, persist.front(), persist.size());
  return Status::Ok();
}

// Single-page PUSH and REPLICA (older peers): one-page batches.
Status EngineImpl::HandlePush(const msg::PushRequest& req, bool* applied) {
  msg::PushBatch b;
  b.dataset = req.dataset;
  b.pages.push_back(msg::PushPage{req.version, req.ranges});
  std::vector<uint8_t> accepted;
  Status st = HandlePushBatch(b, &accepted);
  *applied = st.ok() && accepted[0] == 1;
  return st;
}

Status EngineImpl::HandleReplica(const msg::ReplicaRequest& req) {
  msg::PushBatch b;
  b.dataset = req.dataset;
  b.flags = msg::kPushReplica;
  b.pages.push_back(msg::PushPage{req.version, {msg::PushRange{req.page * kPageSize, req.data}}});
  std::vector<uint8_t> accepted;
  HOTPOT_RETURN_IF_ERROR(HandlePushBatch(b, &accepted));
  if (accepted[0] != 1)
    return Status(Code::kFailedPrecondition, "node " + std::to_string(self()) + " owns " + PageName(req.dataset, req.page));
  return Status::Ok();
}

void EngineImpl::HandleDone(uint32_t committer, uint64_t commit_id) {
  std::lock_guard<std::mutex> l(cache_mu_);
  for (auto& kv : pub_)
    if (kv.second.open.erase(std::make_pair(committer, commit_id))) PublishLocked(kv.first);
}

EngineImpl::PubState& EngineImpl::PubLocked(uint64_t ds) {
  PubState& p = pub_[ds];
  if (p.word == nullptr && !p.memfd.valid()) {
    UniqueFd fd(::memfd_create(("hotpot-pub-" + std::to_string(ds)).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    void* m = MAP_FAILED;
    if (fd.valid() && ::ftruncate(fd.get(), kPage) == 0 &&
        ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0)
      m = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (m == MAP_FAILED) {
      Log("engine: no shared publication word for dataset " + std::to_string(ds) + " (" + std::strerror(errno) +
          "): snapshot reads ask the daemon");
    } else {
      p.word = new (m) std::atomic<uint64_t>(shimproto::PublicationWord(p.seq, p.open.size(), false));
      p.memfd = std::move(fd);
    }
  }
  return p;
}

void EngineImpl::BusyLocked(uint64_t ds) {
  PubState& p = PubLocked(ds);
  if (p.word != nullptr) p.word->store(shimproto::PublicationWord(p.seq, p.open.size(), true), std::memory_order_release);
}

void EngineImpl::PublishLocked(uint64_t ds) {
  PubState& p = PubLocked(ds);
  p.seq++;
  if (p.word != nullptr) p.word->store(shimproto::PublicationWord(p.seq, p.open.size(), false), std::memory_order_release);
}

Status EngineImpl::PublicationMemory(uint64_t session_id, int* fd) {
  uint64_t ds;
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &ds, &d));
  std::lock_guard<std::mutex> l(cache_mu_);
  PubState& p = PubLocked(ds);
  if (p.word == nullptr) return Status(Code::kUnavailable, "no shared publication word on this node");
  *fd = p.memfd.get();
  return Status::Ok();
}

void EngineImpl::CheckMarks() {
  // Marks are asked about once they are older than this: DONE normally follows a commit's last APPLY at once.
  const auto age = std::min<Clock::duration>(std::chrono::seconds(1), opt_.request_timeout);
  std::set<std::pair<uint32_t, uint64_t>> ask;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    const auto limit = Clock::now() - age;
    for (const auto& kv : pub_)
      for (const auto& m : kv.second.open)
        if (m.first != kUncheckedMark && m.second < limit) ask.insert(m.first);
  }
  std::set<std::pair<uint32_t, uint64_t>> finished;
  for (const auto& key : ask) {
    if (shut_.load()) return;
    bool in_progress = true;
    if (key.first == self()) {
      in_progress = MarkInProgress(key.second);
    } else if (IsAlive(key.first)) {
      std::vector<uint8_t> payload, resp;
      msg::EncodeTxid(key.second, &payload);
      Status st = transport_->Call(key.first, msg::kMarkStatus, payload.data(), payload.size(), &resp, NewDeadline());
      if (st.ok() && resp.size() == 1) in_progress = resp[0] != 0;
    }
    // A key node that is down or does not answer may still finish the commit: the mark stays.
    if (!in_progress) finished.insert(key);
  }
  if (finished.empty()) return;
  std::lock_guard<std::mutex> l(cache_mu_);
  for (auto& kv : pub_) {
    bool closed = false;
    for (const auto& key : finished)
      if (kv.second.open.erase(key)) {
        closed = true;
        Log("engine: open mark of commit " + std::to_string(key.second) + " from node " + std::to_string(key.first) +
            " on dataset " + std::to_string(kv.first) + " closed: that node says it is finished (its DONE was lost)");
      }
    if (closed) PublishLocked(kv.first);
  }
}

bool EngineImpl::MarkInProgress(uint64_t id) {
  {
    std::lock_guard<std::mutex> l(decide_mu_);
    if (in_flight_.count(id) || decisions_.count(id)) return true;
  }
  // An owner's own key: a one-shot part whose pushes did not fit one message is being applied.
  std::lock_guard<std::mutex> l(owner_mu_);
  for (const auto& kv : txs_)
    if (kv.first.txid == id) return true;
  return false;
}

void EngineImpl::SendDecisionDone(const Decision& dec) {
  if (dec.commit_id == 0) return;
  if (!dec.done_everywhere) {
    SendDone(dec.commit_id, dec.marked);
    return;
  }
  const std::vector<uint32_t> alive = AliveNodes();
  SendDone(dec.commit_id, std::set<uint32_t>(alive.begin(), alive.end()));
}

Status EngineImpl::ReadCommitted(uint64_t session_id, uint64_t first_page, uint32_t count, uint8_t* out) {
  uint64_t ds;
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &ds, &d));
  if (count == 0 || first_page >= d.store->page_count() || count > d.store->page_count() - first_page)
    return Status(Code::kOutOfRange, "pages " + std::to_string(first_page) + "+" + std::to_string(count) +
                                         " beyond dataset " + std::to_string(ds));
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  auto wait = std::chrono::microseconds(50);
  for (;;) {
    HOTPOT_RETURN_IF_ERROR(EnsurePages(ds, first_page, count));
    {
      // Every change of node-cache content happens under cache_mu_, so the copy is one instant of this node;
      // with no open commit that instant shows every commit whole (fetches of pages in flight wait for RELEASE).
      std::lock_guard<std::mutex> l(cache_mu_);
      bool ready = PubLocked(ds).open.empty();
      for (uint32_t i = 0; ready && i < count; i++)
        ready = d.store->GetMeta(first_page + i).state != PageState::kAbsent;  // a stale copy dropped meanwhile
      if (ready) {
        for (uint32_t i = 0; i < count; i++)
          HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(first_page + i, out + size_t(i) * kPage, nullptr));
        return Status::Ok();
      }
    }
    if (Clock::now() >= deadline)
      return Status(Code::kUnavailable, "dataset " + std::to_string(ds) + ": a commit stays open on node " +
                                            std::to_string(self()) + ", no consistent read within 2 s");
    std::this_thread::sleep_for(wait);
    wait = std::min<std::chrono::microseconds>(wait * 2, std::chrono::milliseconds(2));
  }
}

Status EngineImpl::Publication(uint64_t session_id, PublicationInfo* out) {
  uint64_t ds;
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &ds, &d));
  std::lock_guard<std::mutex> l(cache_mu_);
  const PubState& p = PubLocked(ds);
  out->seq = p.seq;
  out->open_commits = uint32_t(p.open.size());
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Transport handler

void EngineImpl::Handle(const transport::Request& req, transport::Reply* reply) {
  c_.bytes_in += req.len;
  const uint32_t peer = req.peer_node_id;
  observe::TraceScope trace_scope(req.trace);  // owner-side spans and nested calls carry the commit's trace
  switch (req.type) {
    case msg::kFetchPages:
      HandleFetch(req, reply);
      return;
    case msg::kPrepare: {
      msg::PrepareRequest pr;
      Status st = msg::DecodePrepareRequest(req.data, req.len, &pr);
      if (!st.ok()) {
        reply->status = st;
        return;
      }
      uint32_t copies = 0;
      std::vector<msg::Conflict> conflicts;
      st = Owned((pr.flags & msg::kPrepareOneShot) ? "hotpot.owner.one_shot" : "hotpot.owner.prepare", peer,
                 pr.dataset, pr.txid, [&] { return OwnerPrepare(peer, pr, &copies, &conflicts); });
      if (st.code() == Code::kAborted) msg::EncodeConflicts(conflicts, &reply->payload);
      else if (st.ok()) msg::EncodeU32(copies, &reply->payload);
      reply->status = st;
      return;
    }
    case msg::kApply:
    case msg::kRelease:
    case msg::kAbort: {
      uint64_t txid = 0;
      Status st = msg::DecodeTxid(req.data, req.len, &txid);
      if (!st.ok()) {
        reply->status = st;
        return;
      }
      TxKey key{peer, txid};
      if (req.type == msg::kApply) {
        FaultPoint("owner.before-apply");
        uint32_t copies = 0;
        std::vector<uint32_t> marked;
        st = Owned("hotpot.owner.apply", peer, 0, txid, [&] { return OwnerApply(key, &copies, &marked); });
        msg::EncodeApplyReply(copies, marked, &reply->payload);
      } else if (req.type == msg::kAbort) {
        msg::AbortState state = msg::AbortState::kUnknown;
        uint32_t copies = 0;
        st = Owned("hotpot.owner.abort", peer, 0, txid, [&] {
          state = OwnerAbort(key, &copies);
          return Status::Ok();
        });
        msg::EncodeAbortReply(state, copies, &reply->payload);
      } else {
        st = Owned("hotpot.owner.release", peer, 0, txid, [&] { return OwnerFinish(key, false); });
      }
      reply->status = st;
      return;
    }
    case msg::kOutcome: {
      uint64_t txid = 0;
      Status st = msg::DecodeTxid(req.data, req.len, &txid);
      if (st.ok() && (txid >> 40) != self())
        st = Status(Code::kInvalidArgument, "OUTCOME of tx " + std::to_string(txid) + ": not a txid of node " +
                                                std::to_string(self()));
      if (st.ok()) reply->payload.assign(1, static_cast<uint8_t>(OutcomeOf(txid)));
      reply->status = st;
      return;
    }
    case msg::kPushBatch: {
      msg::PushBatch b;
      Status st = msg::DecodePushBatch(req.data, req.len, &b);
      if (st.ok()) st = HandlePushBatch(b, &reply->payload);
      if (!st.ok()) reply->payload.clear();  // an error answer carries its message, not the flags
      reply->status = st;
      return;
    }
    case msg::kCopyPages:
      HandleCopyPages(req, reply);
      return;
    case msg::kMarkStatus: {
      uint64_t id = 0;
      Status st = msg::DecodeTxid(req.data, req.len, &id);
      if (st.ok()) reply->payload.assign(1, MarkInProgress(id) ? 1 : 0);
      reply->status = st;
      return;
    }
    case msg::kDone: {
      uint64_t commit_id = 0;
      Status st = msg::DecodeTxid(req.data, req.len, &commit_id);
      if (st.ok()) HandleDone(peer, commit_id);
      reply->status = st;
      return;
    }
    case msg::kPush: {
      msg::PushRequest pr;
      Status st = msg::DecodePushRequest(req.data, req.len, &pr);
      bool applied = false;
      if (st.ok()) st = HandlePush(pr, &applied);
      reply->status = st;
      reply->payload.assign(1, applied ? 1 : 0);
      return;
    }
    case msg::kReplica: {
      msg::ReplicaRequest rr;
      Status st = msg::DecodeReplicaRequest(req.data, req.len, &rr);
      if (st.ok()) st = HandleReplica(rr);
      reply->status = st;
      return;
    }
    default:
      reply->status = Status(Code::kUnimplemented, "engine: unknown message type " + std::to_string(req.type));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Committer side

namespace {
bool DatasetNotLoaded(const Status& st) {
  return st.code() == Code::kNotFound && st.message().find("is not open on node") != std::string::npos;
}
}  // namespace

Status EngineImpl::CallPeer(uint32_t node, uint16_t type, const std::vector<uint8_t>& payload,
                            std::vector<uint8_t>* response, Deadline deadline) {
  for (int attempt = 0;; attempt++) {
    Status st = transport_->Call(node, type, payload.data(), payload.size(), response, deadline, observe::CurrentTrace());
    if (!DatasetNotLoaded(st)) return st;
    auto backoff = std::chrono::microseconds(500 << std::min(attempt, 6));
    if (Clock::now() + 2 * backoff >= deadline) return st;
    std::this_thread::sleep_for(backoff);
  }
}

Status EngineImpl::CallPrepare(uint32_t owner, const msg::PrepareRequest& req, uint32_t* copies,
                               std::vector<msg::Conflict>* conflicts, Deadline deadline) {
  if (owner == self())
    return Owned((req.flags & msg::kPrepareOneShot) ? "hotpot.owner.one_shot" : "hotpot.owner.prepare", self(),
                 req.dataset, req.txid, [&] { return OwnerPrepare(self(), req, copies, conflicts); });
  if (!IsAlive(owner)) return Status(Code::kUnavailable, "owner node " + std::to_string(owner) + " is not alive");
  std::vector<uint8_t> payload, resp;
  msg::EncodePrepareRequest(req, &payload);
  if (payload.size() > wire::kMaxPayload)
    return Status(Code::kResourceExhausted, "commit to node " + std::to_string(owner) + " exceeds the 16 MiB message limit");
  c_.bytes_out += payload.size();
  Status st = CallPeer(owner, msg::kPrepare, payload, &resp, deadline);
  if (st.code() == Code::kAborted) {
    if (!msg::DecodeConflicts(resp.data(), resp.size(), conflicts).ok()) conflicts->clear();
    return st;
  }
  if (!st.ok()) return Status(st.code(), "PREPARE at node " + std::to_string(owner) + ": " + st.message());
  return msg::DecodeU32(resp.data(), resp.size(), copies);
}

Status EngineImpl::CallTx(uint32_t owner, uint16_t type, uint64_t txid, uint32_t* copies, Deadline deadline,
                          std::vector<uint32_t>* marked) {
  std::vector<uint32_t> unused;
  if (marked == nullptr) marked = &unused;
  if (owner == self()) {
    TxKey key{self(), txid};
    if (type == msg::kApply)
      return Owned("hotpot.owner.apply", self(), 0, txid, [&] { return OwnerApply(key, copies, marked); });
    return Owned(type == msg::kAbort ? "hotpot.owner.abort" : "hotpot.owner.release", self(), 0, txid,
                 [&] { return OwnerFinish(key, type == msg::kAbort); });
  }
  if (!IsAlive(owner)) return Status(Code::kUnavailable, "owner node " + std::to_string(owner) + " is not alive");
  std::vector<uint8_t> payload, resp;
  msg::EncodeTxid(txid, &payload);
  Status st = transport_->Call(owner, type, payload.data(), payload.size(), &resp, deadline, observe::CurrentTrace());
  if (!st.ok()) return Status(st.code(), "commit message " + std::to_string(type) + " to node " + std::to_string(owner) + ": " + st.message());
  if (type == msg::kApply) return msg::DecodeApplyReply(resp.data(), resp.size(), copies, marked);
  return Status::Ok();
}

void EngineImpl::SendDone(uint64_t commit_id, const std::set<uint32_t>& nodes) {
  std::vector<uint8_t> payload, resp;
  msg::EncodeTxid(commit_id, &payload);
  for (uint32_t node : nodes) {
    if (node == self()) {
      HandleDone(self(), commit_id);
      continue;
    }
    if (!IsAlive(node)) continue;
    Status st = transport_->Call(node, msg::kDone, payload.data(), payload.size(), &resp, NewDeadline(),
                                 observe::CurrentTrace());
    if (!st.ok()) Log("engine: DONE of commit " + std::to_string(commit_id) + " to node " + std::to_string(node) + ": " + st.ToString());
  }
}

Status EngineImpl::Commit(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                          CommitResult* result) {
  return CommitWith(session_id, pages, replicas, CommitExtras{}, result);
}

Status EngineImpl::CommitUnobserved(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                                    const CommitExtras& extras, CommitResult* result) {
  *result = CommitResult{};
  uint64_t ds;
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(SessionDataset(session_id, &ds, &d));
  uint32_t n = replicas ? replicas : d.info.replicas;
  if (n == 0) n = 1;
  result->pages = pages.size();

  // 1. Diff against base images -> ranges grouped by owner.
  std::map<uint32_t, msg::PrepareRequest> by_owner;
  std::map<uint64_t, uint64_t> mrsw_bases;  // MRSW: written page -> its base version
  std::vector<uint8_t> base(kPage);
  for (const DirtyPage& dp : pages) {
    if (dp.data.size() != kPage)
      return Status(Code::kInvalidArgument, "dirty page " + std::to_string(dp.page) + " is not 4096 bytes");
    if (dp.page >= d.store->page_count())
      return Status(Code::kOutOfRange, "dirty " + PageName(ds, dp.page) + " beyond the dataset end");
    uint32_t owner = 0;
    if (!ChunkOwner(d, dp.page, &owner))
      return Status(Code::kFailedPrecondition, PageName(ds, dp.page) + ": chunk has no owner in the chunk map");
    uint64_t base_version = 0;
    HOTPOT_RETURN_IF_ERROR(BaseImageVersion(session_id, dp.page, base.data(), &base_version));
    // MRSW commits skip the owner's byte check, so the owner compares the base version of every written page with
    // its own instead: a holder whose node missed a commit (a stale copy) is refused, never silently overwriting it.
    if (d.info.mode == Mode::kMrsw) mrsw_bases[dp.page] = base_version;
    size_t i = 0;
    while (i < kPage) {
      if (base[i] == dp.data[i]) {
        i++;
        continue;
      }
      size_t start = i, end = i + 1;  // [start, end) differing run, extended over short equal gaps
      size_t j = end;
      while (j < kPage) {
        if (base[j] != dp.data[j]) {
          end = ++j;
        } else if (j - end + 1 >= kMergeGap) {
          break;
        } else {
          j++;
        }
      }
      msg::Range r;
      r.offset = dp.page * kPageSize + start;
      r.old_bytes.assign(base.begin() + start, base.begin() + end);
      r.new_bytes.assign(dp.data.begin() + start, dp.data.begin() + end);
      result->ranges++;
      result->bytes += end - start;
      by_owner[owner].ranges.push_back(std::move(r));
      i = end;
    }
  }
  // Read validation: each read range, split at page boundaries, is checked against the version of the page's
  // base image (what the process saw since its sync point).
  std::map<uint32_t, std::vector<msg::ReadCheck>> reads_by_owner;
  size_t nreads = 0;
  for (const ReadRange& rr : extras.reads) {
    if (rr.len == 0 || rr.offset >= d.info.size_bytes || rr.len > d.info.size_bytes - rr.offset)
      return Status(Code::kOutOfRange, "read range " + std::to_string(rr.offset) + "+" + std::to_string(rr.len) +
                                           " is outside dataset " + std::to_string(ds));
    for (uint64_t off = rr.offset, end = rr.offset + rr.len; off < end;) {
      uint64_t pg = off / kPageSize;
      uint64_t stop = std::min<uint64_t>(end, (pg + 1) * kPageSize);
      if (++nreads > (1u << 20)) return Status(Code::kInvalidArgument, "more than 1048576 read pages in one commit");
      uint32_t owner = 0;
      if (!ChunkOwner(d, pg, &owner))
        return Status(Code::kFailedPrecondition, PageName(ds, pg) + ": chunk has no owner in the chunk map");
      // A page the process never touched has no base yet: fetch it (its base is then the current version).
      if (d.store->GetMeta(pg).state == PageState::kAbsent) HOTPOT_RETURN_IF_ERROR(EnsurePages(ds, pg, 1));
      uint64_t version = 0;
      HOTPOT_RETURN_IF_ERROR(BaseImageVersion(session_id, pg, base.data(), &version));
      reads_by_owner[owner].push_back(msg::ReadCheck{off, uint32_t(stop - off), version});
      off = stop;
    }
  }
  for (auto& kv : reads_by_owner) by_owner[kv.first];  // owners with reads only get a (read-only) PREPARE
  if (by_owner.empty()) {
    ResyncSession(session_id);
    result->copies = n;
    return Status::Ok();
  }
  observe::StartPhase("hotpot.commit.route");
  // Parts: one PREPARE per owner, split further when its encoded ranges would exceed kMaxPartBytes (a frame
  // carries at most 16 MiB and a redo slot 16 MiB of range bytes). Each part has its own txid; parts are
  // prepared in (owner node id, part) order.
  struct Part {
    uint32_t owner;
    msg::PrepareRequest req;
  };
  constexpr size_t kMaxPartBytes = 8u << 20;
  std::vector<Part> parts;
  for (auto& kv : by_owner) {
    if (!IsAlive(kv.first)) {
      c_.commit_aborts++;
      return Status(Code::kUnavailable, "commit to dataset " + std::to_string(ds) + ": owner node " +
                                            std::to_string(kv.first) + " is not alive");
    }
    if (kv.second.ranges.empty()) parts.push_back(Part{kv.first, msg::PrepareRequest{}});
    size_t bytes = 0;
    for (msg::Range& r : kv.second.ranges) {
      size_t sz = 12 + 2 * size_t(r.len());
      if (parts.empty() || parts.back().owner != kv.first || bytes + sz > kMaxPartBytes) {
        parts.push_back(Part{kv.first, msg::PrepareRequest{}});
        bytes = 0;
      }
      parts.back().req.ranges.push_back(std::move(r));
      bytes += sz;
    }
  }
  // A read check rides on the part that writes its page (a check on another part of the same owner would lock the
  // page against its own write), else on the owner's first part; MRSW base checks likewise. The lease rides on
  // every part that writes.
  std::map<uint64_t, size_t> writer_part;  // page -> index of the part writing it
  for (size_t i = 0; i < parts.size(); i++)
    for (const msg::Range& r : parts[i].req.ranges) writer_part.emplace(r.offset / kPageSize, i);
  auto part_for = [&](uint32_t owner, uint64_t page) -> Part& {
    auto w = writer_part.find(page);
    if (w != writer_part.end()) return parts[w->second];
    for (Part& part : parts)
      if (part.owner == owner) return part;
    return parts.front();  // unreachable: every owner with checks has a part
  };
  for (auto& kv : reads_by_owner)
    for (const msg::ReadCheck& c : kv.second) part_for(kv.first, c.offset / kPageSize).req.reads.push_back(c);
  for (const auto& kv : mrsw_bases)
    parts[writer_part.at(kv.first)].req.reads.push_back(
        msg::ReadCheck{kv.first * kPageSize, uint32_t(kPageSize), kv.second});
  for (Part& part : parts) {
    if (!part.req.ranges.empty()) part.req.lease = extras.lease;
    part.req.txid = (uint64_t(self()) << 40) | (next_txid_.fetch_add(1) & ((uint64_t(1) << 40) - 1));
    part.req.dataset = ds;
    part.req.replicas = n;
    part.req.flags = parts.size() == 1 ? msg::kPrepareOneShot : 0;
  }
  if (parts.size() > 1)
    for (Part& part : parts) part.req.commit_id = parts[0].req.txid;
  // Every remote call gets its own request_timeout (a commit of many parts may take longer than one timeout).
  auto fail = [&](const Status& st) {
    c_.commit_aborts++;
    if (st.code() == Code::kAborted) {
      c_.conflicts += result->conflicts.size();
      // A conflict may come from this node's copy having missed a commit (its owner crashed before pushing, or a
      // push failed): then a rollback would show the same stale bytes and the retry would conflict again. Check
      // the conflicting pages cached here with their owners so the retry starts from the newest committed bytes.
      std::set<uint64_t> pages;
      for (const ConflictRange& cr : result->conflicts)
        if (pages.size() < 1024) pages.insert(cr.offset / kPageSize);
      std::vector<uint64_t> unchecked, failed;
      RefreshFromOwners(d, std::vector<uint64_t>(pages.begin(), pages.end()), &unchecked, &failed);
    }
    return st;
  };

  if (parts.size() == 1) {
    // 2a. One owner: prepare + apply + release in one round trip.
    observe::StartPhase("hotpot.commit.one_shot");
    Part& part = parts[0];
    std::vector<msg::Conflict> conflicts;
    uint32_t copies = 0;
    // The owner aborts instead of applying if it gets to apply after we stopped waiting.
    part.req.deadline_unix_ms = DeadlineUnixMs();
    Status st = CallPrepare(part.owner, part.req, &copies, &conflicts, NewDeadline());
    if (!st.ok() && st.code() != Code::kAborted && part.owner != self()) {
      // Without a conflict answer (a timeout, a lost connection, or an error answer) the owner may have prepared,
      // even applied. ABORT settles it, so an error from commit() says whether anything was applied, and
      // DEADLINE_EXCEEDED always means nothing was (docs/design/consistency.md "Timeouts").
      st = SettleOneShot(part.owner, part.req.txid, st, &copies);
      if (st.ok() && copies < n)
        st = Status(Code::kUnavailable, "commit applied on the owner but only " + std::to_string(copies) + " of " +
                                            std::to_string(n) + " copies could be made");
    }
    if (!st.ok()) {
      for (const auto& c : conflicts) result->conflicts.push_back({c.offset, c.len});
      return fail(st);
    }
    result->copies = copies;
  } else {
    // 2b. Several owners (or parts): PREPARE all, decide, APPLY all, then RELEASE all.
    {
      // Registered before any PREPARE leaves: an owner asking about a part meanwhile hears "pending".
      std::lock_guard<std::mutex> l(decide_mu_);
      for (const Part& part : parts) in_flight_[part.req.txid] = msg::OutcomeCode::kPending;
    }
    auto settle = [&](msg::OutcomeCode outcome) {
      std::lock_guard<std::mutex> l(decide_mu_);
      for (const Part& part : parts) in_flight_[part.req.txid] = outcome;
    };
    auto forget = [&] {
      std::lock_guard<std::mutex> l(decide_mu_);
      for (const Part& part : parts) in_flight_.erase(part.req.txid);
    };
    observe::StartPhase("hotpot.commit.prepare");
    std::vector<const Part*> prepared;
    Status first_error;
    for (Part& part : parts) {
      std::vector<msg::Conflict> conflicts;
      uint32_t ignored = 0;
      // The owner refuses this PREPARE if it arrives after we stop waiting for it (nothing then applies).
      part.req.deadline_unix_ms = DeadlineUnixMs();
      Status st = CallPrepare(part.owner, part.req, &ignored, &conflicts, NewDeadline());
      if (st.ok()) {
        prepared.push_back(&part);
        continue;
      }
      for (const auto& c : conflicts) result->conflicts.push_back({c.offset, c.len});
      if (st.code() != Code::kAborted) prepared.push_back(&part);  // may have prepared before timing out
      if (first_error.ok()) first_error = st;
      if (st.code() != Code::kAborted) break;  // on ABORTED keep going only to report every conflict
    }
    auto abort_all = [&](const Status& why) {
      settle(msg::OutcomeCode::kAborted);  // an owner asking now hears "aborted", never "pending"
      for (const Part* part : prepared) {
        uint32_t ignored = 0;
        (void)CallTx(part->owner, msg::kAbort, part->req.txid, &ignored, NewDeadline());
      }
      forget();
      return fail(why);
    };
    if (!first_error.ok()) return abort_all(first_error);
    FaultPoint("commit.before-decision");
    // Every part is prepared: the decision is COMMIT and is never taken back. With two or more writing parts it is
    // made durable first (one redo record here): an owner that restarts, or whose part nobody finishes, asks us and
    // applies. With one writing part (others only validate reads) presumed abort is safe: no other part applies.
    auto dec = std::make_shared<Decision>();
    dec->ds = ds;
    size_t writers = 0;
    for (const Part& part : parts) {
      dec->parts.push_back(pool::RedoPart{part.owner, part.req.txid});
      if (!part.req.ranges.empty()) writers++;
    }
    dec->done.assign(parts.size(), false);
    dec->commit_id = parts[0].req.txid;
    if (writers >= 2) {
      observe::StartPhase("hotpot.commit.decide");
      pool::RedoRecord rec;
      rec.txid = parts[0].req.txid;
      rec.dataset_id = ds;
      rec.committer_node_id = self();
      rec.phase = pool::RedoPhase::kDecided;
      rec.parts = dec->parts;
      Status st = pool_->redo().Append(rec, &dec->slot);
      if (!st.ok()) return abort_all(Status(st.code(), "commit decision could not be recorded: " + st.message()));
      dec->has_slot = true;
    }
    settle(msg::OutcomeCode::kCommitted);
    FaultPoint("commit.after-decision");
    observe::StartPhase("hotpot.commit.apply");
    // APPLY cannot fail for validation reasons after PREPARE; a lost message or a busy owner is retried until the
    // owner answers, is declared dead, or 3 x the request timeout passes. A part left unapplied stays prepared and
    // locked at its owner (never released by us): the resolver here re-drives it and the owner asks us, so it is
    // applied when its owner is reachable again.
    uint32_t min_copies = UINT32_MAX;
    Status apply_error;
    std::vector<bool> applied(parts.size(), false);
    const auto budget_end = Clock::now() + 3 * opt_.request_timeout;
    for (size_t i = 0; i < parts.size(); i++) {
      const Part& part = parts[i];
      uint32_t copies = 0;
      Status st;
      for (int attempt = 0;; attempt++) {
        std::vector<uint32_t> marked;
        st = CallTx(part.owner, msg::kApply, part.req.txid, &copies, NewDeadline(), &marked);
        dec->marked.insert(marked.begin(), marked.end());
        if (st.ok()) break;
        // The owner applied but could not make N copies: applied all the same; reported after applying the rest.
        if (st.message().find("commit applied on the owner") != std::string::npos) break;
        // No such part at the owner: it already asked us and applied it (owners drop a writing part only when
        // its committer says aborted), or it was a read-only validation whose lock expired.
        if (st.code() == Code::kAborted) break;
        if (!IsAlive(part.owner) || Clock::now() >= budget_end) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2 << std::min(attempt, 6)));
      }
      const bool done_elsewhere = st.code() == Code::kAborted;
      applied[i] = st.ok() || done_elsewhere || st.message().find("commit applied on the owner") != std::string::npos;
      if (!applied[i]) {
        Log("engine: APPLY of tx " + std::to_string(part.req.txid) + " at node " + std::to_string(part.owner) +
            " failed after the commit decision (completed when the node answers): " + st.ToString());
        if (apply_error.ok())
          apply_error = Status(Code::kUnavailable, "commit is decided but its part at node " + std::to_string(part.owner) +
                                                       " is not applied yet (" + st.message() +
                                                       "); it is applied when that node is reachable again");
        copies = 0;
      } else if (!st.ok() && !done_elsewhere && apply_error.ok()) {
        apply_error = st;
      }
      if (done_elsewhere) {
        copies = n;  // its owner completed it (and counted its copies) without us
        dec->done_everywhere = true;
      }
      min_copies = std::min(min_copies, copies);
      if (i == 0 && applied[i]) FaultPoint("commit.after-first-apply");
    }
    observe::StartPhase("hotpot.commit.release");
    // Every part applied: each node that got part of the commit may now show it (DONE closes its open mark)
    // before any page lock is released. Parts still missing keep the marks (until DriveDecisions or expiry).
    if (std::all_of(applied.begin(), applied.end(), [](bool b) { return b; })) {
      SendDecisionDone(*dec);
      dec->marked.clear();
      dec->done_everywhere = false;
    }
    for (size_t i = 0; i < parts.size(); i++) {
      if (!applied[i]) continue;  // an unapplied part must stay prepared: releasing it would discard it
      uint32_t ignored = 0;
      dec->done[i] = CallTx(parts[i].owner, msg::kRelease, parts[i].req.txid, &ignored, NewDeadline()).ok();
    }
    const bool all_done = std::all_of(dec->done.begin(), dec->done.end(), [](bool b) { return b; });
    {
      std::lock_guard<std::mutex> l(decide_mu_);
      for (const Part& part : parts) {
        in_flight_.erase(part.req.txid);
        if (!all_done) decisions_[part.req.txid] = dec;  // the resolver finishes it
      }
    }
    if (all_done && dec->has_slot) (void)pool_->redo().Free(dec->slot);
    if (!all_done) resolver_cv_.notify_all();
    if (!apply_error.ok()) return fail(apply_error);
    result->copies = min_copies;
  }
  c_.commits++;
  ResyncSession(session_id);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Introspection

EngineStats EngineImpl::Stats() {
  EngineStats s;
  s.node_id = self();
  s.data_port = port_;
  EngineCounters& k = s.counters;
  k.faults_local = c_.faults_local;
  k.faults_remote = c_.faults_remote;
  k.fetches_served = c_.fetches_served;
  k.fetch_retries = c_.fetch_retries;
  k.commits = c_.commits;
  k.commit_aborts = c_.commit_aborts;
  k.conflicts = c_.conflicts;
  k.coherence_pushes = c_.coherence_pushes;
  k.coherence_pages = c_.coherence_pages;
  k.replicas_sent = c_.replicas_sent;
  k.replicas_received = c_.replicas_received;
  k.bytes_in = c_.bytes_in;
  k.bytes_out = c_.bytes_out;
  if (shut_.load()) return s;
  s.pool = pool_->Stats();
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    s.open_sessions = sessions_.size();
  }
  {
    std::lock_guard<std::mutex> l(owner_mu_);
    BreakExpiredLocked();
    s.locked_pages = locks_.size();
  }
  std::vector<DatasetState> ds;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : datasets_) ds.push_back(kv.second);
  }
  for (const DatasetState& d : ds) {
    if (!d.store) continue;
    uint64_t pages_per_chunk = d.chunk_size / kPageSize;
    uint64_t total = d.store->page_count();
    for (uint64_t first = 0, chunk = 0; first < total; first += pages_per_chunk, chunk++) {
      ChunkStat cs;
      cs.dataset_id = d.info.id;
      cs.chunk = uint32_t(chunk);
      uint32_t owner = 0;
      cs.owned = ChunkOwner(d, first, &owner) && owner == self();
      cs.owner = owner;
      if (cs.owned) {
        std::lock_guard<std::mutex> l(owner_mu_);
        std::set<uint32_t> committed, redundant;
        uint32_t min_copies = UINT32_MAX;
        auto lo = cachers_.lower_bound(PageKey{d.info.id, first});
        auto hi = cachers_.lower_bound(PageKey{d.info.id, first + pages_per_chunk});
        for (auto it = lo; it != hi; ++it) {
          auto ro = replica_only_.find(it->first);
          for (uint32_t node : it->second) {
            if (ro != replica_only_.end() && ro->second.count(node)) redundant.insert(node);
            else committed.insert(node);
          }
          min_copies = std::min(min_copies, uint32_t(1 + it->second.size()));
        }
        for (uint32_t node : committed) redundant.erase(node);
        cs.committed_holders.assign(committed.begin(), committed.end());
        cs.redundant_holders.assign(redundant.begin(), redundant.end());
        cs.replica_count = min_copies == UINT32_MAX ? 1 : min_copies;
      }
      for (uint64_t p = first; p < std::min(total, first + pages_per_chunk); p++) {
        switch (d.store->GetMeta(p).state) {
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
  Status found = FindDataset(dataset_id, &d);
  if (!found.ok()) {
    // Not loaded by the control plane (yet): the pool may still hold it from before a restart.
    if (shut_.load() || !pool_ || (d.store = pool_->FindDataset(dataset_id)) == nullptr) return found;
  }
  if (page >= d.store->page_count()) return Status(Code::kOutOfRange, PageName(dataset_id, page) + " beyond the dataset end");
  out->data.assign(kPage, 0);
  PageMeta m;
  HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(page, out->data.data(), &m));
  out->state = m.state;
  out->version = m.version;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Observability: fault/fetch/commit latency, events, span records (engine/observe.h)

Status EngineImpl::EnsurePages(uint64_t dataset_id, uint64_t first_page, uint32_t count) {
  const uint64_t mono0 = observe::MonoNowNs();
  const uint64_t runs0 = observe::ThreadFetchRuns();
  Status st = EnsurePagesUnobserved(dataset_id, first_page, count);
  const uint64_t ns = observe::MonoNowNs() - mono0;
  obs_.fault_latency().Add(ns);
  // Remote runs were recorded by NoteFetch; a fault served without any is a local one.
  if (observe::ThreadFetchRuns() == runs0 && obs_.events().enabled(observe::EventKind::kFaultLocal)) {
    observe::Event e;
    e.kind = observe::EventKind::kFaultLocal;
    e.node = self();
    e.dataset = dataset_id;
    e.page = first_page;
    e.count = count;
    e.latency_ns = ns;
    e.status = st.code();
    obs_.Emit(e);
  }
  return st;
}

void EngineImpl::NoteFetch(uint64_t ds, uint32_t owner, uint64_t first, uint32_t count, uint64_t installed,
                           uint64_t mono0, uint64_t unix0) {
  const uint64_t ns = observe::MonoNowNs() - mono0;
  observe::ThreadFetchRuns()++;
  obs_.fetch_latency().Add(ns);
  if (obs_.events().enabled(observe::EventKind::kFaultRemote)) {
    observe::Event e;
    e.kind = observe::EventKind::kFaultRemote;
    e.node = owner;
    e.dataset = ds;
    e.page = first;
    e.count = installed;
    e.latency_ns = ns;
    obs_.Emit(e);
  }
  if (obs_.SampleFault()) {
    // A sampled remote fault is a root span of its own trace (faults carry no app context).
    observe::SpanRecord r;
    r.name = "hotpot.fault.remote";
    observe::NewTraceId(r.trace_id);
    observe::NewSpanId(r.span_id);
    r.start_unix_ns = unix0;
    r.end_unix_ns = unix0 + ns;
    r.int_attrs = {{"hotpot.dataset", int64_t(ds)},
                   {"hotpot.page", int64_t(first)},
                   {"hotpot.pages", int64_t(count)},
                   {"hotpot.owner", int64_t(owner)},
                   {"hotpot.node", int64_t(self())},
                   {"hotpot.latency_us", int64_t(ns / 1000)}};
    obs_.AddSpan(std::move(r));
  }
}

Status EngineImpl::Owned(const char* name, uint32_t committer, uint64_t ds, uint64_t txid,
                         const std::function<Status()>& fn) {
  const uint64_t mono0 = observe::MonoNowNs();
  observe::SpanTimer span(&obs_, name, observe::CurrentTrace());
  Status st = fn();
  const uint64_t ns = observe::MonoNowNs() - mono0;
  if (span.active()) {
    span.Attr("hotpot.node", int64_t(self()));
    span.Attr("hotpot.committer", int64_t(committer));
    span.Attr("hotpot.txid", int64_t(txid));
    if (ds != 0) span.Attr("hotpot.dataset", int64_t(ds));
    span.Attr("hotpot.outcome", std::string(CodeName(st.code())));
  }
  span.End(st.code());
  if (obs_.events().enabled(observe::EventKind::kOwnerHandled)) {
    observe::Event e;
    e.kind = observe::EventKind::kOwnerHandled;
    e.node = committer;
    e.dataset = ds;
    e.txid = txid;
    e.latency_ns = ns;
    e.status = st.code();
    const char* step = std::strrchr(name, '.');
    std::snprintf(e.detail, sizeof e.detail, "%s", step ? step + 1 : name);
    obs_.Emit(e);
  }
  return st;
}

Status EngineImpl::CommitWith(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                              const CommitExtras& extras, CommitResult* result) {
  const uint64_t mono0 = observe::MonoNowNs();
  // The app's context (set by the shim server from the frame header) is the parent of this node's commit span;
  // the owners' spans are children of the latter. With tracing off here, the app's context still travels on.
  const wire::TraceContext* app = observe::CurrentTrace();
  observe::SpanTimer span(&obs_, "hotpot.node.commit", app);
  observe::TraceScope scope(span.active() ? span.context() : (app ? *app : wire::TraceContext{}));
  uint64_t ds = 0;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) ds = it->second.ds;
  }
  if (obs_.events().enabled(observe::EventKind::kCommitStart)) {
    observe::Event e;
    e.kind = observe::EventKind::kCommitStart;
    e.node = self();
    e.dataset = ds;
    e.count = pages.size();
    obs_.Emit(e);
  }
  Status st;
  {
    observe::CommitPhases phases(&obs_, span.active() ? span.context() : wire::TraceContext{});
    phases.Start("hotpot.commit.diff");
    st = CommitUnobserved(session_id, pages, replicas, extras, result);
  }
  const uint64_t ns = observe::MonoNowNs() - mono0;
  obs_.commit_latency().Add(ns);
  if (span.active()) {
    span.Attr("hotpot.node", int64_t(self()));
    span.Attr("hotpot.dataset", int64_t(ds));
    span.Attr("hotpot.pages", int64_t(result->pages));
    span.Attr("hotpot.ranges", int64_t(result->ranges));
    span.Attr("hotpot.bytes", int64_t(result->bytes));
    span.Attr("hotpot.copies", int64_t(result->copies));
    span.Attr("hotpot.conflicts", int64_t(result->conflicts.size()));
    span.Attr("hotpot.outcome", std::string(CodeName(st.code())));
  }
  span.End(st.code());
  observe::Event e;
  e.node = self();
  e.dataset = ds;
  e.latency_ns = ns;
  e.status = st.code();
  e.count = result->ranges;
  e.page = result->pages;
  e.kind = observe::EventKind::kCommitEnd;
  std::snprintf(e.detail, sizeof e.detail, "copies=%u", result->copies);
  obs_.Emit(e);
  if (!st.ok()) {
    e.kind = observe::EventKind::kAbort;
    std::snprintf(e.detail, sizeof e.detail, "%s", CodeName(st.code()));
    obs_.Emit(e);
    for (size_t i = 0; i < result->conflicts.size() && i < 16; i++) {
      observe::Event c = e;
      c.kind = observe::EventKind::kConflict;
      c.page = result->conflicts[i].offset / kPageSize;
      c.count = result->conflicts[i].len;
      std::snprintf(c.detail, sizeof c.detail, "offset=%llu", (unsigned long long)result->conflicts[i].offset);
      obs_.Emit(c);
    }
  }
  return st;
}

InspectView EngineImpl::Inspect() {
  InspectView v;
  if (shut_.load() || !pool_) return v;
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
      default: r.phase = "free"; break;
    }
    r.ranges = kv.second.ranges.size();
    for (const auto& rr : kv.second.ranges) r.bytes += rr.bytes.size();
    v.redo.push_back(r);
  }
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    for (const auto& kv : sessions_) {
      SessionView sv;
      sv.session_id = kv.first;
      sv.dataset_id = kv.second.ds;
      sv.cred = kv.second.cred;
      v.sessions.push_back(sv);
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  for (SessionView& sv : v.sessions) {
    auto it = datasets_.find(sv.dataset_id);
    if (it != datasets_.end()) sv.dataset_name = it->second.info.name;
  }
  return v;
}

}  // namespace

Status Engine::Start(const EngineOptions& options, OpenRequestFn on_open, std::unique_ptr<Engine>* out) {
  if (options.pool_dir.empty()) return Status(Code::kInvalidArgument, "engine: pool_dir is required");
  if (options.request_timeout.count() <= 0) return Status(Code::kInvalidArgument, "engine: request_timeout must be > 0");
  auto e = std::make_unique<EngineImpl>(options, std::move(on_open));
  Status st = e->Init();
  if (!st.ok()) {
    e->Shutdown();
    return st;
  }
  *out = std::move(e);
  return Status::Ok();
}

}  // namespace engine
}  // namespace hotpot
