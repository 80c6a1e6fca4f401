// The owner side of the commit protocol and of page fetches (docs/design/engine.md "Commit protocol", owner):
// PREPARE (validation, page locks, MRSW lease checks, the redo record), APPLY (the commit point, its own pages, then
// the fan-out through the Replicator), RELEASE / ABORT, serving FETCH_PAGES with its cacher sets, and the parts
// recovered from the redo log after a restart. Calls the NodeCache and the Replicator; holds its lock across a call
// only for NodeCache::InstallAbsent (a never-served page materialised where no commit can interleave), never across
// the Replicator or a peer.
#pragma once

#include <deque>
#include <map>
#include <set>
#include <vector>

#include "engine/cluster_view.h"
#include "engine/core.h"
#include "engine/messages.h"
#include "engine/node_cache.h"
#include "engine/part_copies.h"
#include "engine/rdma_pages.h"
#include "engine/replicator.h"

namespace hotpot {
namespace engine {

class Owner {
 public:
  Owner(Context* ctx, ClusterView* view, NodeCache* cache, Replicator* replicator, PartCopies* copies)
      : ctx_(ctx), view_(view), cache_(cache), replicator_(replicator), copies_(copies) {
    if (ctx->rdma != nullptr)
      rdma_pages_ = std::make_unique<RdmaPages>(ctx->rdma, [ctx](const std::string& line) { ctx->Log("engine: " + line); });
  }

  // PREPARE from `committer` (this node for a local owner). A one-shot request is applied and released too.
  // `sender_epoch`: the membership epoch the committer stamped on the request (0 = not known).
  Status Prepare(uint32_t committer, const msg::PrepareRequest& req, uint32_t* copies,
                 std::vector<msg::Conflict>* conflicts, uint64_t sender_epoch = 0);
  // APPLY: *marked (optional) receives the nodes that now carry an open mark of the commit (and the missed ones).
  // A part not known here while this node takes chunks over is retried (kReasonTxRecovering: it may be one being
  // adopted), and so is one sent by a committer routing by a newer chunk map (`generation` of dataset `ds`, 0 = not
  // stated) than this node has loaded (kReasonMapBehind), rather than answered "not prepared".
  // A frozen part (FreezeCommit) refuses it (kReasonFrozen) unless `by_participants`: the resolver applies it because
  // another participant's part of the commit is applied (the participants' rule, not the committer's decision).
  Status Apply(const TxKey& key, uint32_t* copies, msg::MarkedNodes* marked = nullptr, uint64_t ds = 0,
               uint64_t generation = 0, bool by_participants = false);
  // COMMIT_STATE: this node's parts of commit `commit_id` from `committer` (applied, decided or applying: kApplied;
  // else prepared: kPrepared, and they are frozen; else kNone). A prepared part is frozen at once (its committer's
  // APPLY refused from then on) and durably before the answer: its redo record moves to phase frozen and every holder
  // of its prepare copies marks its copy frozen (an error when one cannot be told: asked again). A later PREPARE of
  // the commit is refused (kReasonCommitSettled). A part is frozen only if this node knows its committer is gone for
  // the process that prepared it: forgotten, or declared dead at an epoch no older than the one its PREPARE was
  // stamped with; otherwise (alive here, or it rejoined before it prepared: this node or the asker is behind) the
  // answer is an error, and the question is asked again.
  Status FreezeCommit(uint32_t committer, uint64_t commit_id, msg::CommitState* out);
  // The part is here, prepared and frozen: its committer's RELEASE is refused (kReasonFrozen).
  bool FrozenPrepared(const TxKey& key);
  // COMMIT_PEEK: which kinds of parts of that commit this node holds (msg::kPeekPrepared | msg::kPeekApplied; both
  // when it holds one of each), nothing frozen.
  uint8_t CommitPartsOf(uint32_t committer, uint64_t commit_id);
  // RELEASE (or an abort the owner decides itself): unlocks and frees the redo record. Idempotent. `missed`: nodes
  // the commit's pushes (at any of its owners) may have missed; they are told to check before the pages unlock.
  Status Finish(const TxKey& key, bool abort, const std::vector<uint32_t>* missed = nullptr);
  // ABORT from the part's committer: drops a prepared part; says so when it is applied or applying.
  msg::AbortState Abort(const TxKey& key, uint32_t* copies);
  // The part's prepare copies are still being released at their holders (it was finished here a moment ago).
  bool CopiesReleasing(const TxKey& key);
  // KEEP_APPLIED from `holder`: its copy of a part of this node's, flagged applied, is kept track of again (after a
  // restart this node no longer knew it) and released once the part's pages owned here are back at N copies
  // (*kept). Not kept when none of its pages' chunks is this node's any more (the holder drops it); an error while one
  // of them is still being taken over (asked again).
  Status KeepAppliedCopy(uint32_t holder, const msg::PartCopy& copy, bool* kept);
  // FETCH_PAGES (from `peer`). `fenced` (not null) when this node knows the peer was declared dead: it missed every
  // push since, so its checks (revalidate) are refused with that status and its plain fetches carry kFetchedCheck
  // (it hides its copies from snapshot reads until checked after it rejoins, in the same step as the install).
  void ServeFetch(uint32_t peer, const msg::FetchRequest& fr, transport::Reply* reply, const Status* fenced = nullptr);
  // An owned page that was never served nor written is installed as zeros at version 0 (waits while a commit holds it
  // locked, up to the request deadline).
  Status EnsurePresent(const DatasetState& d, uint64_t page);

  // Recovery after a restart (docs/design/consistency.md "Multi-owner atomicity"). Prepared parts found in the redo
  // log before their dataset is open: an APPLY for one must be retried, not answered "not prepared".
  void NoteUnrecovered(const TxKey& key);
  // The redo records of a dataset being opened: applied ones replayed (and, for a part of a multi-part commit, locked
  // again until its commit is known to be finished), prepared ones in doubt and applying ones decided (both locked
  // again until resolved).
  void RecoverRecords(uint64_t ds, uint32_t replicas, pool::DatasetStore* store);
  // Parts the resolver must look at: recovered or adopted ones (in doubt, or applied with their RELEASE sent before a
  // restart or to the old owner), parts prepared or applied longer than 4 x the request timeout, and decided ones
  // (applied without asking). Breaks expired read-only validations first.
  struct Overdue {
    TxKey key;
    bool applied;
    bool decided;
    bool one_shot;
    // Listed because its committer is alive again at this later epoch (restarted or rejoined), not for its age.
    uint64_t rejoined_at = 0;
    uint64_t commit_id = 0;  // multi-part commits: shared by every part
    bool frozen = false;     // settled by its participants only, whatever its committer says
  };
  std::vector<Overdue> OverdueParts();
  // Logs once that a part stays prepared, and why.
  void NoteStillInDoubt(const TxKey& key, const std::string& why);
  // The part's committer answered after its rejoin at `epoch`: not asked again for that rejoin (a question that got no
  // answer is repeated every round).
  void NoteAnswered(const TxKey& key, uint64_t epoch);
  // MARK_STATUS, owner role: a part with this txid (any committer) is here (a split one-shot push still running).
  bool HasPart(uint64_t txid);
  // PART_STATUS: the part is still prepared or applying here, or waits in the redo log for its dataset to open (a node
  // holding its prepare copy keeps it).
  bool HasPart(const TxKey& key);
  // After a restart with pages of `ds` in the pool: pushes this owner made before may have missed nodes it no longer
  // knows about, so every node is told to check its copies at its next fetch from here (docs/design/consistency.md
  // "Missed pushes").
  void SuspectEveryone(uint64_t ds);
  // Nodes to tell to check their copies of a dataset (CHECK_COPIES): every alive node since SuspectEveryone, and
  // nodes a push of this owner failed to (they may have missed it while a check of their copies was under way); and
  // the record of one that answered (`seq` as NotTold gave it: a node named again meanwhile is told again).
  struct Tell {
    uint64_t ds;
    uint32_t node;
    uint64_t seq;
  };
  std::vector<Tell> NotTold(const std::vector<uint32_t>& alive);
  void Told(const Tell& t);

  // Background re-replication (docs/design/consistency.md "Re-replication"), one round: scans up to kScanPerRound owned
  // pages from each dataset's cursor for committed pages (version > 0, not locked) whose live holders (this owner
  // included; nodes not alive do not count) are fewer than N, and sends whole-page replicas to more alive nodes
  // (ascending id), at most kReplicasPerRound page copies per round. A holder is recorded only if the page did not
  // change while its replica was in flight; otherwise the current page is sent again (twice at most), then the node
  // is recorded and told to check its copies. Its only state is a cursor per dataset: a restarted owner starts again.
  // `recovering`: chunks this node must recover first (skipped). Returns the page copies made.
  static constexpr size_t kScanPerRound = 4096;
  static constexpr size_t kReplicasPerRound = 512;
  size_t Rereplicate(const std::vector<DatasetState>& datasets, const std::vector<uint32_t>& alive,
                     const std::vector<ChunkRef>& recovering);
  // The scan also keeps, per dataset, whole passes over its pages: a pass that found every owned written page at N
  // live holders (none locked, none in a chunk still recovering) makes the dataset replicated through the
  // membership epoch the pass started at. The minimum over `datasets` with N >= 2 (Engine::ReplicatedThrough).
  uint64_t ReplicatedThrough(const std::vector<DatasetState>& datasets);

  // Taking over chunks (failover, or recovery of this node's replaced store; docs/design/availability.md "Failover"),
  // after their newest page copies are installed here: settles the parts that were in flight at the previous owner,
  // from their prepare copies (`parts`, gathered from every alive member). A part a page already shows (some page
  // holds its version or newer: its owner passed the commit point) is completed on the pages still one version behind;
  // a multi-part commit's part nobody shows is adopted in doubt (pages locked, its own redo record and prepare copies,
  // its committer asked); a one-shot part nobody shows is dropped (its owner decided alone and never applied it
  // anywhere a live node can see). Then every owned page of `spans` below its chunk's version floor is raised to it.
  // `spans`: [first, end) page ranges of the chunks taken over. Parts with a page outside them are left alone.
  // Refused (kReasonLeaseLapsed) past this node's lease: it may no longer be the owner the map names.
  struct TakeoverResult {
    size_t completed = 0, adopted = 0, dropped = 0, raised = 0;
  };
  Status SettleTakeover(const DatasetState& d, const std::vector<std::pair<uint64_t, uint64_t>>& spans,
                        const std::map<TxKey, msg::OwnedCopy>& parts, TakeoverResult* out);

  // LIST_COPIES, owner side: this node's own writing parts (prepared or applying) with a page in [first, first +
  // count) of `ds`, as prepare copies of its own. A node declared dead while it was alive (cut off from the
  // dispatcher) still has them, and the node taking its chunks over needs them like any other copy.
  std::vector<msg::OwnedCopy> OwnParts(uint64_t ds, uint64_t first, uint64_t count);

  // `node` lost every copy it held (it rejoined with a replaced store): it is no holder of any page any more.
  void ForgetHolder(uint32_t node);

  // Handoff of an owned chunk to `target` (docs/design/availability.md "Handoff"): from now on PREPARE and FETCH of
  // the chunk are refused (kReasonChunkMoving, retried by the sender); waits until no commit holds a page of it, then
  // sends every written page, whole and at its version, to `target`, which must answer "held" for each. On success
  // the chunk stays refused: the caller moves it at the dispatcher, loads the new chunk map (which demotes this
  // node's pages) and calls EndHandOff; on failure nothing changed and the chunk is served again.
  Status HandOff(const DatasetState& d, uint32_t chunk, uint32_t target, Deadline deadline, size_t* pages_sent);
  void EndHandOff(const ChunkRef& ref);
  // A chunk of the dataset is being handed off from this node: from the copy on, its new owner may commit to it and
  // its pushes to this node's pages (still owned here) are dropped, so the dataset's unchecked mark stays up.
  bool HandingOff(uint64_t ds);
  // The chunk is no longer owned here: forgets its cacher sets, MRSW fences and re-replication state.
  void ForgetChunk(uint64_t ds, uint64_t first, uint64_t count);
  // The chunk map being loaded moves the chunk away from this node: from now on PREPARE and FETCH of it are refused
  // (kReasonNotOwner, the sender re-reads its map) until GainChunk, whatever map a request was routed by. The map
  // reaches the engine's view only after the pages are demoted and the handoff has ended, and a PREPARE that read the
  // old map before was accepted in between: applied to this node's demoted copy, acknowledged, and lost at the new
  // owner (chaos with frequent planned restarts: a counter increment on the same read as the one before it, a bank
  // total off by one transfer for good).
  void LoseChunk(const ChunkRef& ref);
  void GainChunk(const ChunkRef& ref);
  // The page's chunk is owned here per the chunk map (kReasonNotOwner otherwise: the sender re-reads its map and
  // retries).
  Status CheckServes(const DatasetState& d, uint64_t page);
  // The sender routed by a newer generation of the dataset's chunk map than this node has loaded: this node may no
  // longer own the chunk (kReasonMapBehind; the sender retries).
  Status CheckGeneration(const DatasetState& d, uint64_t sender_generation);
  // Self-fencing: past this node's membership lease it does not serve as owner (kReasonLeaseLapsed; the sender
  // re-reads its map and retries). The dispatcher declares a node dead only after its lease, measured from the
  // heartbeat it last received, so the node has stopped before another takes its chunks over.
  Status CheckLease();

  size_t LockedPages();
  // Stats of an owned chunk: committed and redundant holders among the `alive` nodes, the holders that are not alive,
  // the fewest live holders (owner included) of a page, and whether that is below `wanted` (N) for a page that holds a
  // commit (version > 0; a never-written page is zeros anywhere: nothing to copy).
  void ChunkHolders(const DatasetState& d, uint64_t first, uint64_t count, const std::set<uint32_t>& alive,
                    uint32_t wanted, ChunkStat* out);

 private:
  // An owner-side transaction: prepared (locked) pages waiting for APPLY/RELEASE/ABORT.
  struct OwnerTx {
    uint64_t ds = 0;
    uint32_t replicas = 1;
    std::vector<msg::Range> ranges;
    std::vector<uint64_t> pages;       // sorted unique touched pages
    std::vector<uint64_t> versions;    // new version per page (parallel to pages)
    std::vector<uint64_t> read_pages;  // pages locked only for read validation (nothing applied to them)
    uint64_t commit_id = 0;  // multi-part commits: shared by every part (pushes are marked open until DONE)
    uint32_t slot = 0;
    bool has_slot = false;  // a read-only validation writes no redo record
    bool applied = false;
    bool applying = false;   // Apply in progress: the lock breaker leaves it alone
    bool sending_copies = false;  // PREPARE is making its prepare copies (their holders are not known yet)
    bool abort_asked = false;     // a one-shot part's ABORT came meanwhile: dropped once the copies are made
    bool recovered = false;  // re-created from a redo record after a restart
    // Recovered from a record past PREPARE (phase applying: the owner crashed while applying or pushing): the commit
    // was decided, so the resolver applies and pushes it again without asking (cachers may have missed the push).
    bool decided = false;
    bool doubt_logged = false;
    // Its committer was forgotten or declared dead and a participant asked about the commit (COMMIT_STATE): an APPLY
    // or RELEASE from the committer is refused from then on, and the resolver settles it by the participants' rule
    // only (applied at one of them: applied; else aborted). Durable (redo phase frozen, copies flagged frozen) once
    // frozen_durable; record_frozen once its own redo record says so).
    bool frozen = false;
    bool frozen_durable = false;
    bool record_frozen = false;
    // The committer's membership state epoch when it prepared: once it is alive at a later one it restarted (or
    // rejoined), and the part is asked about at once instead of after 4 x the request timeout.
    uint64_t committer_epoch = 0;
    // The membership epoch its committer stamped on the PREPARE (0 = not known: sent by a node that does not stamp,
    // or recovered from a record written before the stamp was kept). Kept in its redo record and its prepare copies,
    // so a part re-created after a restart or adopted in a takeover has it too. A declaration of the committer's death
    // at an older epoch concerns an earlier process, which rejoined before it prepared this part (FreezeCommit).
    uint64_t sender_epoch = 0;
    uint32_t copies = 0;
    msg::MarkedNodes marked;  // nodes its pushes marked open (a repeated APPLY answers them again)
    // Nodes holding its prepare copy (released when the part is dropped); empty for a part re-created from its redo
    // record, which does not name them (HoldersOf: every other member may hold one).
    std::vector<uint32_t> copy_holders;
    // Applied here (live, or from a recovered record) with fewer than N confirmed copies: its prepare copies are kept
    // when it finishes (KeptCopies), told_applied those told so.
    bool keep_copies = false;
    std::vector<uint32_t> told_applied;
    TimePoint locked_at;
  };
  // An applied part that finished with fewer than N confirmed copies of its pages (a push failed after the commit
  // point). Its prepare copies, the only other trace of its bytes, are kept (marked applied at their holders) until
  // re-replication has every page of it back at N copies — or its chunk left this node — instead of being released
  // when it finishes: a node taking the chunk over after this one died completes the part from them (simulation seed
  // 4965: a one-shot commit lost).
  struct KeptCopies {
    uint64_t ds = 0;
    uint32_t replicas = 1;
    std::vector<uint64_t> pages;
    std::vector<uint32_t> holders;
    std::set<uint32_t> told;  // holders that keep it marked applied
    msg::PartCopy copy;
  };
  // Releases the kept copies of parts whose pages are back at N copies (or whose chunk left this node) and marks the
  // others applied at holders not told yet. Called after each re-replication round; mu_ NOT held.
  void SettleKeptCopies(const std::vector<DatasetState>& datasets, const std::set<uint32_t>& live,
                        const std::set<std::pair<uint64_t, uint32_t>>& recovering);
  struct Settled {
    bool applied = false;
    // Not applied here, but prepare copies of it may remain on nodes that could not be told to drop them: a node
    // taking the chunk over may still apply it, so the outcome is unknown, never "nothing applied".
    bool unknown = false;
    uint32_t copies = 0;
    TimePoint at;
  };
  // A one-shot part this owner decided not to apply: dropped, and its prepare copies withdrawn before anyone is told
  // "nothing applied" (a node taking the chunk over applies a one-shot part whose copy it finds and no page shows
  // finished). Returns whether every copy was withdrawn. mu_ NOT held.
  bool DropOneShot(const TxKey& key);
  // Sets tx->ranges and tx->pages from a part's {offset, bytes} ranges (redo record or prepare copy).
  template <typename R>
  static void SetRanges(const std::vector<R>& ranges, OwnerTx* tx);
  // A part re-created from its redo record in `slot` (recovered, locked from now; its phase is the caller's to set).
  OwnerTx RecoveredTx(uint64_t ds, uint32_t replicas, uint32_t slot, const pool::RedoRecord& r);
  // An applied redo record of a multi-part commit found at a restart, its pages replayed: the part is locked again as
  // applied and recovered. False when the part is already known (the record is then freed). mu_ NOT held.
  bool RelockApplied(uint64_t ds, uint32_t replicas, uint32_t slot, const pool::RedoRecord& r);
  // Takes a relocked part back to "being recovered" (its replay failed after it was locked).
  void UndoRelock(const TxKey& key);

  // The part as a PREPARE_COPY body.
  static msg::PartCopy CopyOf(const TxKey& key, const OwnerTx& tx);
  // MRSW: the lease certificate must cover every written page for this committer (mu_ held).
  Status CheckLeaseLocked(uint32_t committer, const DatasetState& d, const msg::PrepareRequest& req,
                          const std::vector<uint64_t>& write_pages);
  // APPLY up to its commit point (checks, then the part marked applied and applying under mu_): *answered when a
  // repeated APPLY was answered from what the first one recorded (nothing to apply).
  Status TakeCommitPoint(const TxKey& key, uint64_t ds, uint64_t generation, bool from_committer, uint32_t* copies,
                         msg::MarkedNodes* marked, OwnerTx* out, bool* answered);
  // APPLY from its commit point on: ApplyUnlocked, then the part's record in txs_ and the lease checked again.
  // logged_applying: the part's redo record was written in phase applying (a one-shot part), no phase change.
  Status ApplyPastCommitPoint(const TxKey& key, const OwnerTx& tx, bool logged_applying, uint32_t* copies,
                              msg::MarkedNodes* marked);
  // Applies a part whose pages this owner holds locked (mu_ NOT held): its own pages, then the fan-out.
  Status ApplyUnlocked(const TxKey& key, const OwnerTx& tx, bool logged_applying, uint32_t* copies,
                       msg::MarkedNodes* marked);
  static pool::RedoRecord RecordOf(const TxKey& key, const OwnerTx& tx, pool::RedoPhase phase);
  void DropTxLocked(const TxKey& key, OwnerTx* tx, bool free_slot);
  // The nodes that may hold the part's prepare copies: its copy_holders, or, when those are not known (a part
  // re-created from its redo record), every other member.
  std::vector<uint32_t> HoldersOf(const OwnerTx& tx);
  // The part was applied here short of N copies (or before a restart, its copies unknown): before its committer
  // hears "applied" and may finish and forget the commit, its copies are flagged applied (MarkApplied) and kept when
  // it finishes (KeptCopies), so a node taking the chunk over completes it from them instead of adopting it in
  // doubt and hearing "not committed" from that committer (simulation seed 9587: a part discarded while the other
  // part of its commit showed). Every mechanism that applies a part goes through here: a live APPLY, a part
  // recovered from its redo record and applied from its committer's recovered decision, a part replayed applied at
  // a restart (RelockApplied). The copies carry the part's own versions (those its redo record or PREPARE gave it;
  // a part adopted applied in a takeover is never applied again). mu_ NOT held.
  void FlagCopiesApplied(const TxKey& key, const OwnerTx& tx);
  // A PREPARE refused because `page` is locked: the lock's part and what it waits for are logged once it has held the
  // page for half the request timeout (once per page every 5 s). mu_ held.
  void LogLongLockLocked(uint64_t ds, uint64_t page, const TxKey& refused);
  // A committer that died between PREPARE and RELEASE must not leave pages locked forever: after 4 x the request
  // timeout the lock of a read-only validation is broken. A part that writes is never released here (the resolver
  // asks its committer).
  void BreakExpiredLocked();
  // Remembers a one-shot part's outcome, or an ABORT of a txid not (yet) prepared, for 10 x the request timeout.
  void SettleLocked(const TxKey& key, bool applied, uint32_t copies, bool unknown = false);
  // Nodes that may hold copies missing a push (of this owner, or of a commit this owner took part in). A plain fetch
  // from one is answered kFetchedCheck until it checks all its cached copies (a FETCH with kFetchPass).
  struct Suspects {
    bool everyone = false;       // since a restart: every node not yet in `cleared`
    std::set<uint32_t> nodes;    // named by a failed push (here or at another owner of the same commit)
    std::set<uint32_t> cleared;  // checked since `everyone` was set
    std::set<uint32_t> told;     // answered CHECK_COPIES since `everyone` was set
    // Named by a failed push and not told yet (CHECK_COPIES), with the count of `raised` when last named. A pass fetch
    // does not clear these: it may belong to a check the node began before the push failed, which checked the page
    // too early (seen: a node paused past a push, then a fetch of another page of that commit showed half of it).
    std::map<uint32_t, uint64_t> untold;
    uint64_t raised = 0;
  };
  bool SuspectLocked(uint64_t ds, uint32_t node) const;
  // The page's chunk is being handed off (kReasonChunkMoving: the sender retries on the new map), or moved away by a
  // map being loaded (kReasonNotOwner). mu_ held.
  Status MovingLocked(const DatasetState& d, uint64_t page) const;
  // Copy counting: a cacher whose last push or replica of a page failed holds no confirmed copy of its current
  // version (it stays a cacher, so pushes keep reaching it) until a push or replica is answered "held" again.
  void ConfirmLocked(const PageKey& k, const std::set<uint32_t>& nodes);
  bool CountsAsCopyLocked(const PageKey& k, uint32_t node) const;
  void AddSuspectsLocked(uint64_t ds, const std::vector<uint32_t>& nodes);

  Context* ctx_;
  ClusterView* view_;
  NodeCache* cache_;
  Replicator* replicator_;
  PartCopies* copies_;
  std::unique_ptr<RdmaPages> rdma_pages_;  // transport rdma: page-file windows peers READ (FETCH with kFetchLocate)
  std::mutex mu_;
  std::map<TxKey, OwnerTx> txs_;
  std::map<TxKey, KeptCopies> kept_copies_;
  std::set<TxKey> unrecovered_;
  std::map<PageKey, TxKey> locks_;
  std::map<PageKey, std::set<uint32_t>> cachers_;
  // Pages whose cacher set is complete. Cacher sets live in memory only, so after a (re)start other nodes may hold
  // copies this owner does not know about: the first commit of such a page pushes to every alive node (non-holders
  // answer not-held) and from then on the recorded set is authoritative.
  std::set<PageKey> cachers_known_;
  // A committer that gave up waiting for a one-shot PREPARE sends ABORT and learns what happened (Abort): ABORTs of
  // txids not (yet) prepared leave a tombstone so a PREPARE still in flight is refused, and finished one-shot
  // commits are remembered with their copies. Both are forgotten after 10 x the request timeout (a PREPARE cannot
  // arrive that late: it carries the committer's deadline).
  std::map<TxKey, Settled> settled_;
  std::deque<TxKey> settled_order_;
  // Multi-part commits asked about by their participants (COMMIT_STATE), {committer, commit id} → when: a PREPARE of
  // one arriving later (sent before its committer was declared dead, delayed) is refused, for 10 x the request
  // timeout (a PREPARE cannot arrive later: it carries its committer's deadline).
  std::map<std::pair<uint32_t, uint64_t>, TimePoint> settled_commits_;
  // MRSW fencing: the highest lease epoch that committed to each page; older holders are refused.
  std::map<PageKey, uint64_t> fence_;
  // Nodes whose copy of a page came only from a replica top-up (redundant state there), for Stats.
  std::map<PageKey, std::set<uint32_t>> replica_only_;
  std::map<PageKey, std::set<uint32_t>> unconfirmed_;
  std::set<ChunkRef> moving_;  // chunks being handed off: PREPARE and FETCH refused
  std::set<ChunkRef> lost_;    // chunks moved away from this node (LoseChunk): PREPARE and FETCH refused
  // The highest version a PREPARE gave each page in this process: a part that is aborted leaves its version unused,
  // and no later part reuses it, so a page at exactly a part's version shows that part and no other (a prepare copy
  // whose release was lost can never be mistaken for a later commit's). Across restarts and owners the chunk's era
  // floor does the same (the dispatcher raises it when the owner rejoins, hands off or fails over).
  std::map<PageKey, uint64_t> issued_;
  std::map<uint64_t, Suspects> suspects_;  // ds -> nodes told to check their copies
  std::map<uint64_t, uint64_t> rereplicate_cursor_;  // ds -> next page the re-replication scan looks at
  struct ScanPass {
    uint64_t epoch = 0;    // ctx members_epoch when the pass started
    uint64_t scanned = 0;  // pages looked at (0: a pass starts at the next page)
    bool full = true;      // every owned written page so far had N live holders
  };
  std::map<uint64_t, ScanPass> pass_;                 // ds -> the scan's current pass
  std::map<uint64_t, uint64_t> replicated_through_;  // ds -> epoch of the last pass that found every page at N

  // Re-replication: one node's share of a round (pages of one dataset with their current versions and bytes).
  struct ReplicaJob {
    uint64_t ds = 0;
    uint32_t node = 0;
    bool check = false;
    std::vector<uint64_t> pages, versions;
    std::vector<std::vector<uint8_t>> data;
  };
  // Adds page `pg` of `d` to `job` with its current bytes (mu_ held); false if it is locked, changed or unreadable.
  bool AddReplicaPageLocked(const DatasetState& d, uint64_t pg, ReplicaJob* job);
  // Records what `job.node` answered (mu_ NOT held); returns the pages to send again (changed meanwhile).
  std::vector<uint64_t> RecordReplicas(const DatasetState& d, const ReplicaJob& job,
                                       const std::vector<uint8_t>& accepted, bool last_try);
};

}  // namespace engine
}  // namespace hotpot
