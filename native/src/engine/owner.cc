#include "engine/owner.h"

#include <algorithm>
#include <cstring>

#include "common/crc32c.h"
#include "engine/lease.h"

namespace hotpot {
namespace engine {

// ---------------------------------------------------------------------------------------------------------------
// PREPARE

Status Owner::Prepare(uint32_t committer, const msg::PrepareRequest& req, uint32_t* copies,
                      std::vector<msg::Conflict>* conflicts, uint64_t sender_epoch) {
  *copies = 0;
  const uint64_t now_ms = ctx_->time->UnixMs();
  if (req.deadline_unix_ms != 0 && now_ms > req.deadline_unix_ms)
    return Status(Code::kDeadlineExceeded, "PREPARE of tx " + std::to_string(req.txid) + " arrived " +
                                               std::to_string(now_ms - req.deadline_unix_ms) +
                                               " ms after the committer's deadline: refused");
  ctx_->Fault(FaultPoint::kOwnerPrepareAfterDeadlineCheck);
  HOTPOT_RETURN_IF_ERROR(CheckLease());
  const uint64_t committer_epoch = view_->StateEpoch(committer);
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(req.dataset, &d));
  HOTPOT_RETURN_IF_ERROR(CheckGeneration(d, req.generation));
  const uint64_t size = d.store->size_bytes();
  // A range of the request must lie in the dataset, on a page this node owns (and has: not recovering).
  auto owned_page = [&](const char* what, uint64_t offset, uint64_t len, uint64_t* pg) {
    if (offset >= size || len > size - offset)
      return Status(Code::kOutOfRange, std::string(what) + " range at " + std::to_string(offset) + " beyond dataset " +
                                           std::to_string(req.dataset));
    *pg = offset / kPageSize;
    HOTPOT_RETURN_IF_ERROR(CheckServes(d, *pg));
    return view_->CheckServable(d, *pg);
  };
  std::set<uint64_t> page_set;
  for (const msg::Range& r : req.ranges) {
    if (r.old_bytes.size() != r.new_bytes.size())
      return Status(Code::kInvalidArgument,
                    "commit range at " + std::to_string(r.offset) + ": old and new bytes differ in length");
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
        return Status(Code::kInvalidArgument,
                      "commit ranges overlap at dataset offset " + std::to_string(spans[i].first));
  }
  uint32_t n = req.replicas ? req.replicas : d.info.replicas;
  if (n == 0) n = 1;
  const size_t alive = view_->AliveNodes().size();
  if (!req.ranges.empty() && n > alive)
    return Status(Code::kFailedPrecondition, "commit needs " + std::to_string(n) + " copies but only " +
                                                 std::to_string(alive) + " nodes are alive");
  const TxKey key{committer, req.txid};
  OwnerTx tx;
  tx.ds = req.dataset;
  tx.replicas = n;
  tx.ranges = req.ranges;
  tx.pages.assign(page_set.begin(), page_set.end());
  tx.versions.resize(tx.pages.size());
  tx.read_pages.assign(read_set.begin(), read_set.end());
  tx.commit_id = req.commit_id;
  {
    std::lock_guard<std::mutex> l(mu_);
    BreakExpiredLocked();
    if (txs_.count(key)) return Status(Code::kAlreadyExists, "tx " + std::to_string(req.txid) + " already prepared");
    if (settled_.count(key))
      return Status(Code::kAborted,
                    "tx " + std::to_string(req.txid) + " was aborted by its committer (it gave up waiting)");
    if (req.commit_id != 0 && settled_commits_.count({committer, req.commit_id}))
      return Status(Code::kAborted, msg::kReasonCommitSettled,
                    "tx " + std::to_string(req.txid) + ": its commit was asked about by its participants (node " +
                        std::to_string(committer) + " was declared dead); nothing prepared");
    // A chunk being handed off takes no new part: checked under the lock HandOff marks it with, so a part either
    // holds its locks before the mark (HandOff waits for it) or sees the mark.
    for (uint64_t pg : page_set) HOTPOT_RETURN_IF_ERROR(MovingLocked(d, pg));
    for (uint64_t pg : read_set) HOTPOT_RETURN_IF_ERROR(MovingLocked(d, pg));
    // A range touching a page locked by another commit is rejected (never wait holding locks).
    for (const msg::Range& r : req.ranges)
      if (locks_.count(PageKey{req.dataset, r.offset / kPageSize})) conflicts->push_back({r.offset, r.len()});
    for (const msg::ReadCheck& c : req.reads)
      if (locks_.count(PageKey{req.dataset, c.offset / kPageSize})) conflicts->push_back({c.offset, c.len});
    if (!conflicts->empty()) {
      LogLongLockLocked(req.dataset, conflicts->front().offset / kPageSize, key);
      return Status(Code::kAborted, msg::kReasonPageLocked, "page locked by commit");
    }
    // Read validation compares page versions, not bytes: bytes that changed and changed back (A-B-A) still fail,
    // because the process may have seen the intermediate state.
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
    std::vector<uint8_t> buf(kPageSize);
    uint64_t cur_page = UINT64_MAX;
    for (const msg::Range& r : (mrsw ? std::vector<msg::Range>{} : req.ranges)) {
      const uint64_t pg = r.offset / kPageSize;
      if (pg != cur_page) {
        PageMeta m;
        HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(pg, buf.data(), &m));
        cur_page = pg;
      }
      if (std::memcmp(buf.data() + r.offset % kPageSize, r.old_bytes.data(), r.len()) != 0)
        conflicts->push_back({r.offset, r.len()});
    }
    if (!conflicts->empty()) return Status(Code::kAborted, "write-write conflict with a newer commit");
    for (size_t i = 0; i < tx.pages.size(); i++) {
      uint64_t& issued = issued_[PageKey{req.dataset, tx.pages[i]}];
      tx.versions[i] = std::max({d.store->GetMeta(tx.pages[i]).version, VersionFloor(d, tx.pages[i]), issued}) + 1;
      issued = tx.versions[i];
      locks_[PageKey{req.dataset, tx.pages[i]}] = key;
    }
    for (uint64_t pg : tx.read_pages) locks_[PageKey{req.dataset, pg}] = key;
    tx.locked_at = ctx_->time->Now();
    tx.sending_copies = n > 1 && !req.ranges.empty();
    tx.committer_epoch = committer_epoch;
    tx.sender_epoch = sender_epoch;
    txs_[key] = tx;
  }
  if (req.ranges.empty()) {
    // Read-only validation: nothing to log or apply; the locks held until RELEASE make a multi-owner validation
    // see one instant of every owner.
    if (req.flags & msg::kPrepareOneShot) {
      *copies = n;
      return Finish(key, false);
    }
    return Status::Ok();
  }
  // Replicated prepare: the part is logged on N-1 other nodes before it is answered or applied, so it is durable on N
  // nodes before any of it is visible, and a node taking over this chunk after a crash has it (PartCopies).
  if (n > 1) {
    const msg::PartCopy c = CopyOf(key, tx);
    std::vector<uint32_t> holders;
    bool withdrawn = true;
    const TimePoint sent_at = ctx_->time->Now();
    Status cs = copies_->Send(c, n - 1, ctx_->NewDeadline(), &holders, &withdrawn);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->time->Now() - sent_at);
    if (ctx_->Slow(took)) {
      std::string to;
      for (uint32_t h : holders) to += (to.empty() ? "node " : ", ") + std::to_string(h);
      ctx_->LogLimited("slow copies " + std::to_string(req.dataset),
                       "engine: the prepare copies of tx " + std::to_string(req.txid) + " from node " +
                           std::to_string(committer) + " took " + std::to_string(took.count()) + " ms (made on " +
                           (to.empty() ? "no node" : to) + "): " + cs.ToString());
    }
    const bool one_shot = (req.flags & msg::kPrepareOneShot) != 0;
    bool withdraw_now = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = txs_.find(key);
      if (it == txs_.end()) {
        // Dropped meanwhile (its chunk moved away, or its committer aborted a multi-part commit, which a node taking
        // the chunk over asks it about). A one-shot part's copies would be applied by such a node: withdrawn first.
        if (!one_shot) {
          copies_->Release(key, holders);
          return Status(Code::kAborted, "tx " + std::to_string(req.txid) + " was aborted during prepare");
        }
        withdraw_now = true;
      } else {
        it->second.sending_copies = false;
        if (!cs.ok()) {
          DropTxLocked(key, &it->second, false);
          // A copy that could not be withdrawn may still be applied by a node taking the chunk over: not "nothing".
          if (!withdrawn) SettleLocked(key, false, 0, true);
          return cs;
        }
        // Its committer's ABORT came while the copies were on their way and was answered "unknown" (Owner::Abort):
        // dropped now (its copies not queued for release: withdrawn below before anything is said of it).
        if (it->second.abort_asked) {
          DropTxLocked(key, &it->second, true);
          withdraw_now = true;
        } else {
          it->second.copy_holders = holders;
        }
      }
    }
    if (withdraw_now) {
      const bool gone = copies_->ReleaseNow(key, holders);
      {
        std::lock_guard<std::mutex> l(mu_);
        SettleLocked(key, false, 0, !gone);
      }
      if (gone) return Status(Code::kAborted, "tx " + std::to_string(req.txid) + " was aborted during prepare");
      return Status(Code::kUnavailable, "tx " + std::to_string(req.txid) +
                                            " was aborted during prepare, but a copy of its prepare could not be "
                                            "withdrawn: outcome unknown");
    }
  }
  if (!(req.flags & msg::kPrepareOneShot)) {
    // A part of a multi-part commit: its redo record is durable before PREPARE answers.
    uint32_t slot = 0;
    Status st = ctx_->pool->redo().Append(RecordOf(key, tx, pool::RedoPhase::kPrepared), &slot);
    std::lock_guard<std::mutex> l(mu_);
    auto it = txs_.find(key);
    if (it == txs_.end()) {  // aborted by its committer meanwhile
      if (st.ok()) (void)ctx_->pool->redo().Free(slot);
      return Status(Code::kAborted, "tx " + std::to_string(req.txid) + " was aborted during prepare");
    }
    if (!st.ok()) {
      DropTxLocked(key, &it->second, false);
      return st;
    }
    it->second.slot = slot;
    it->second.has_slot = true;
    return Status::Ok();
  }
  // One owner decides alone: past the committer's deadline it aborts (the committer reports a timeout, so the
  // commit must not apply), before that it applies.
  if (req.deadline_unix_ms != 0 && ctx_->time->UnixMs() > req.deadline_unix_ms) {
    const bool withdrawn = DropOneShot(key);
    {
      std::lock_guard<std::mutex> l(mu_);
      SettleLocked(key, false, 0, !withdrawn);
    }
    return Status(Code::kDeadlineExceeded,
                  "commit tx " + std::to_string(req.txid) + " prepared after the committer's deadline: aborted" +
                      (withdrawn ? "" : " here, but a copy of its prepare could not be withdrawn: outcome unknown"));
  }
  // Its redo record is written once, at the commit point, already "applying": one persist instead of a prepared
  // record and then its phase change (nothing but this owner decides a one-shot part, so nothing needs to find it
  // prepared). The commit point is taken first, so an ABORT that settles the commit meanwhile hears "applying" and
  // asks again, never "nothing applied" for a part a restart would replay. Until the record is durable no page has
  // changed: if it cannot be written, the part is dropped and nothing was applied, as when a prepared record could
  // not be written.
  OwnerTx cur;
  msg::MarkedNodes marked;
  bool answered = false;
  Status ast = TakeCommitPoint(key, 0, 0, false, copies, &marked, &cur, &answered);
  if (ast.ok() && !answered) {
    uint32_t slot = 0;
    Status ls = ctx_->pool->redo().Append(RecordOf(key, cur, pool::RedoPhase::kApplying), &slot);
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = txs_.find(key);  // still there: an applying part is neither aborted nor broken
      if (!ls.ok()) {
        if (it != txs_.end()) {
          it->second.applied = false;
          it->second.applying = false;
          DropTxLocked(key, &it->second, false);
        }
        return ls;
      }
      if (it != txs_.end()) {
        it->second.slot = slot;
        it->second.has_slot = true;
      }
    }
    cur.slot = slot;
    cur.has_slot = true;
    ast = ApplyPastCommitPoint(key, cur, true, copies, &marked);
  }
  const bool applied = ast.ok();
  Status rst = Finish(key, !ast.ok());
  {
    std::lock_guard<std::mutex> l(mu_);
    // An APPLY that failed after the commit point may have changed pages here: its outcome is not "nothing".
    SettleLocked(key, applied, *copies, !applied);
  }
  if (!ast.ok()) return ast;
  return rst;
}

pool::RedoRecord Owner::RecordOf(const TxKey& key, const OwnerTx& tx, pool::RedoPhase phase) {
  pool::RedoRecord rec;
  rec.txid = key.txid;
  rec.dataset_id = tx.ds;
  rec.committer_node_id = key.committer;
  rec.phase = phase;
  for (const msg::Range& r : tx.ranges) rec.ranges.push_back(pool::RedoRange{r.offset, r.new_bytes});
  rec.page_versions = tx.versions;
  rec.commit_id = tx.commit_id;
  if (tx.commit_id != 0) rec.sender_epoch = tx.sender_epoch;  // kept across a restart: FreezeCommit
  return rec;
}

Status Owner::CheckLeaseLocked(uint32_t committer, const DatasetState& d, const msg::PrepareRequest& req,
                               const std::vector<uint64_t>& write_pages) {
  const std::string what = "MRSW dataset " + std::to_string(req.dataset) + ": ";
  if (req.lease.empty())
    return Status(Code::kFailedPrecondition, what + "commit touches " + PageName(req.dataset, write_pages.front()) +
                                                 " which this process does not hold (acquire it first)");
  LeaseCert cert;
  HOTPOT_RETURN_IF_ERROR(DecodeLease(req.lease, ctx_->opt.cluster_secret, &cert));
  if (cert.dataset != d.info.id)
    return Status(Code::kFailedPrecondition, what + "the lease is for dataset " + std::to_string(cert.dataset));
  if (cert.holder_node != committer)
    return Status(Code::kFailedPrecondition, what + "the lease was granted to node " +
                                                 std::to_string(cert.holder_node) + ", not to committer node " +
                                                 std::to_string(committer));
  const uint64_t now_ms = ctx_->time->UnixMs();
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
      return Status(Code::kFailedPrecondition, what + PageName(req.dataset, pg) +
                                                   " was since written under fencing epoch " +
                                                   std::to_string(it->second) + " > this lease's " +
                                                   std::to_string(cert.epoch));
  }
  for (uint64_t pg : write_pages) {
    uint64_t& e = fence_[PageKey{req.dataset, pg}];
    e = std::max(e, cert.epoch);
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// APPLY, RELEASE, ABORT

Status Owner::Apply(const TxKey& key, uint32_t* copies, msg::MarkedNodes* marked, uint64_t ds, uint64_t generation,
                    bool by_participants) {
  msg::MarkedNodes unused;
  if (marked == nullptr) marked = &unused;
  OwnerTx tx;
  bool answered = false;
  HOTPOT_RETURN_IF_ERROR(TakeCommitPoint(key, ds, generation, by_participants, copies, marked, &tx, &answered));
  if (answered) return Status::Ok();
  return ApplyPastCommitPoint(key, tx, false, copies, marked);
}

Status Owner::TakeCommitPoint(const TxKey& key, uint64_t ds, uint64_t generation, bool by_participants,
                              uint32_t* copies, msg::MarkedNodes* marked, OwnerTx* out, bool* answered) {
  *answered = false;
  // Past its lease this node may have been declared dead and its chunks taken over (the new owner adopted this part
  // from its prepare copies, in doubt). Applying here — or answering "applied" for a part applied before — would let
  // the committer finish the commit and forget its decision, so the new owner would discard its adopted copy: the
  // commit half applied. The committer retries and reaches whoever owns the part's chunk then.
  HOTPOT_RETURN_IF_ERROR(CheckLease());
  {
    std::unique_lock<std::mutex> l(mu_);
    auto it = txs_.find(key);
    if (it == txs_.end() && unrecovered_.count(key))
      return Status(Code::kUnavailable, msg::kReasonTxRecovering,
                    "tx " + std::to_string(key.txid) + " is being recovered: retry");
    if (it == txs_.end()) {
      l.unlock();  // the rare path asks components below, without the lock
      // Kept only as a copy: prepared here, but its chunk failed over while this node was down or cut off. Its new
      // owner settles it (re-read the chunk map); "not prepared" would read as "applied".
      if (copies_->Holds(ctx_->self(), key))
        return Status(Code::kUnavailable, msg::kReasonNotOwner,
                      "tx " + std::to_string(key.txid) + ": its chunk has a new owner, which takes the part over");
      if (!view_->RecoveringChunks().empty())
        return Status(Code::kUnavailable, msg::kReasonTxRecovering,
                      "tx " + std::to_string(key.txid) + ": node " + std::to_string(ctx_->self()) +
                          " is taking chunks over (the part may be among them): retry");
      DatasetState d;
      if (generation != 0) {
        HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));
        HOTPOT_RETURN_IF_ERROR(CheckGeneration(d, generation));
      }
      return Status(Code::kAborted, msg::kReasonNotPrepared,
                    "tx " + std::to_string(key.txid) + " not prepared (already finished)");
    }
    if (it->second.applying)  // a retried APPLY while the first one still runs: the committer asks again
      return Status(Code::kUnavailable, msg::kReasonApplyInProgress,
                    "tx " + std::to_string(key.txid) + " apply in progress");
    if (it->second.applied && it->second.recovered) {
      // Applied before this node restarted (or at the owner whose chunk it took over): which nodes its pushes marked
      // is not known here. "Not prepared" (already applied) makes the committer send DONE, with the check flag, to
      // every alive node instead of to none (a node holding an open mark, or a copy that missed the push, would
      // otherwise keep it: simulation seed 440).
      const Status applied_before(
          Code::kAborted, msg::kReasonNotPrepared,
          "tx " + std::to_string(key.txid) + " was applied before (nodes its pushes marked not known)");
      // Applied before a restart (RelockApplied): its copies are flagged applied before the committer hears
      // "applied" and finishes the commit (see FlagCopiesApplied).
      if (!it->second.keep_copies || !it->second.told_applied.empty() || it->second.applying) return applied_before;
      it->second.applying = true;  // a second APPLY meanwhile is answered "in progress" (retried)
      const OwnerTx tx = it->second;
      l.unlock();
      FlagCopiesApplied(key, tx);
      l.lock();
      it = txs_.find(key);
      if (it != txs_.end()) it->second.applying = false;
      return applied_before;
    }
    if (it->second.applied) {  // a repeated APPLY (its answer was lost): the same answer again
      *copies = it->second.copies;
      *marked = it->second.marked;
      *answered = true;
      return Status::Ok();
    }
    if (it->second.frozen && !by_participants)
      return Status(Code::kFailedPrecondition, msg::kReasonFrozen,
                    "tx " + std::to_string(key.txid) + ": node " + std::to_string(key.committer) +
                        " was declared dead or forgotten and its participants settle the commit; its APPLY is refused");
    if (!it->second.pages.empty() && view_->Recovering(it->second.ds)) {
      // Not while this node is still taking the part's chunk over (its pages and versions are not settled yet). The
      // dataset test first keeps the common case to one lookup.
      DatasetState d;
      if (view_->FindDataset(it->second.ds, &d).ok())
        for (uint64_t pg : it->second.pages) HOTPOT_RETURN_IF_ERROR(view_->CheckServable(d, pg));
    }
    it->second.applied = true;  // the commit point: an ABORT now answers "applying", never drops it
    it->second.applying = true;
    *out = it->second;
  }
  return Status::Ok();
}

Status Owner::ApplyPastCommitPoint(const TxKey& key, const OwnerTx& tx, bool logged_applying, uint32_t* copies,
                                   msg::MarkedNodes* marked) {
  ctx_->Fault(FaultPoint::kOwnerApplyAfterCommitPoint);
  Status st = ApplyUnlocked(key, tx, logged_applying, copies, marked);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = txs_.find(key);
    if (it != txs_.end()) {
      it->second.applying = false;
      it->second.copies = *copies;
      it->second.marked = *marked;
      it->second.locked_at = ctx_->time->Now();  // the RELEASE deadline counts from the end of apply
    }
  }
  // The lease ran out while the part was applied: a takeover may not have seen it. Not "applied" (see above), and
  // not a refusal either: the bytes are written here, so no reason that tells the sender "nothing was prepared, route
  // again" (a one-shot commit re-planned on it was applied twice — chaos, a dispatcher restart: its new attempt
  // conflicted with its own first one, was reported ABORTED, and the app retried it).
  if (st.ok() && !CheckLease().ok())
    st = Status(Code::kUnavailable, "tx " + std::to_string(key.txid) + " was applied at node " +
                                        std::to_string(ctx_->self()) +
                                        " while its membership lease ran out: a node taking its chunk over may not "
                                        "have seen it, so whether it stays applied is not known here");
  return st;
}

Status Owner::ApplyUnlocked(const TxKey& key, const OwnerTx& tx, bool logged_applying, uint32_t* copies,
                            msg::MarkedNodes* marked) {
  *copies = 0;
  if (tx.pages.empty()) {  // read-only validation: nothing to apply, nothing to make durable
    *copies = tx.replicas;
    return Status::Ok();
  }
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(tx.ds, &d));
  if (!logged_applying) HOTPOT_RETURN_IF_ERROR(ctx_->pool->redo().SetPhase(tx.slot, pool::RedoPhase::kApplying));
  OwnerWrite w;
  w.ds = tx.ds;
  w.store = d.store;
  w.pages = &tx.pages;
  w.versions = &tx.versions;
  w.ranges = &tx.ranges;
  if (tx.commit_id != 0) {
    w.mark = MarkKey{key.committer, tx.commit_id};
    marked->marked.push_back(ctx_->self());
  }
  // Each page's version before this part, for the pushes (a part replayed after a crash may find itself applied
  // here already: its base is then not known, and version - 1 at worst makes a receiver check its copies).
  std::vector<uint64_t> bases(tx.pages.size());
  for (size_t i = 0; i < tx.pages.size(); i++) {
    const uint64_t before = d.store->GetMeta(tx.pages[i]).version;
    bases[i] = before < tx.versions[i] ? before : tx.versions[i] - 1;
  }
  std::vector<uint64_t> fresh;
  HOTPOT_RETURN_IF_ERROR(cache_->ApplyOwnerWrite(w, &fresh));
  PushPlan plan;
  plan.key = key;
  plan.ds = tx.ds;
  plan.commit_id = tx.commit_id;
  plan.replicas = tx.replicas;
  plan.store = d.store;
  plan.pages = &tx.pages;
  plan.versions = &tx.versions;
  plan.bases = &bases;
  plan.ranges = &tx.ranges;
  plan.suspect = [this, ds = tx.ds](uint32_t node) {
    std::lock_guard<std::mutex> l(mu_);
    return SuspectLocked(ds, node);
  };
  const std::vector<uint32_t> alive = view_->AliveNodes();
  {
    // Targets: each page's recorded cachers, or every alive node while its cacher set is not known yet. A page that
    // was absent here was never served: its (empty) cacher set is complete.
    std::lock_guard<std::mutex> l(mu_);
    for (uint64_t pg : fresh) cachers_known_.insert(PageKey{tx.ds, pg});
    for (size_t i = 0; i < tx.pages.size(); i++) {
      const PageKey k{tx.ds, tx.pages[i]};
      std::set<uint32_t> targets;
      auto it = cachers_.find(k);
      if (it != cachers_.end()) targets = it->second;
      if (!cachers_known_.count(k)) targets.insert(alive.begin(), alive.end());
      for (uint32_t node : targets)
        if (node != ctx_->self()) plan.targets[node].push_back(i);
    }
  }
  HOTPOT_RETURN_IF_ERROR(d.store->Persist(tx.pages));
  ctx_->Fault(FaultPoint::kOwnerAfterLocalApply);  // applied here, pushed nowhere yet
  PushResult res;
  HOTPOT_RETURN_IF_ERROR(replicator_->Push(plan, &res));
  marked->marked.insert(marked->marked.end(), res.marked.marked.begin(), res.marked.marked.end());
  marked->missed.insert(marked->missed.end(), res.marked.missed.begin(), res.marked.missed.end());
  {
    // Holders (pushed or replicated) are the page's cachers from now on: later commits keep them coherent. A node a
    // push failed to may hold copies that missed this part: it is told to check at its next fetch (the pages are
    // still locked, so no fetch is served before this).
    std::lock_guard<std::mutex> l(mu_);
    AddSuspectsLocked(tx.ds, res.failed);
    // A node whose push or replica failed may hold the page (at an older version, or this one): it stays (or
    // becomes) a cacher, so the next commit of the page pushes to it again and finds out.
    // It holds no confirmed copy of this version, so it does not count as one until a later push or replica is
    // answered "held".
    for (size_t i = 0; i < tx.pages.size(); i++)
      for (uint32_t node : res.unknown[i]) {
        cachers_[PageKey{tx.ds, tx.pages[i]}].insert(node);
        unconfirmed_[PageKey{tx.ds, tx.pages[i]}].insert(node);
      }
    for (size_t i = 0; i < tx.pages.size(); i++) {
      const PageKey k{tx.ds, tx.pages[i]};
      std::set<uint32_t>& cs = cachers_[k];
      for (uint32_t node : res.gone[i])
        if (!res.holders[i].count(node)) cs.erase(node);
      for (uint32_t node : res.holders[i])
        if (node != ctx_->self()) cs.insert(node);
      ConfirmLocked(k, res.holders[i]);
      ConfirmLocked(k, std::set<uint32_t>(res.gone[i].begin(), res.gone[i].end()));
      std::set<uint32_t>& ro = replica_only_[k];
      for (uint32_t node : res.gone[i]) ro.erase(node);
      ro.insert(res.replicated[i].begin(), res.replicated[i].end());
      cachers_known_.insert(k);
    }
  }
  // Short of N copies: before the answer, the prepare copies' holders learn that the part was applied (KeptCopies).
  if (res.copies < tx.replicas && tx.replicas > 1) FlagCopiesApplied(key, tx);
  // "Applied" means applied here AND pushed: a record still "applying" after a crash is applied and pushed again by
  // the restarted owner (RecoverRecords), so no cacher keeps a copy that missed it.
  HOTPOT_RETURN_IF_ERROR(ctx_->pool->redo().SetPhase(tx.slot, pool::RedoPhase::kApplied));
  // Fewer than N copies (a push failed after the commit point): applied all the same, and the answer's copy count
  // says so; re-replication copies the pages to more live nodes in the background (docs "Under-replicated commits").
  *copies = res.copies;
  return Status::Ok();
}

Status Owner::Finish(const TxKey& key, bool abort, const std::vector<uint32_t>* missed) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = txs_.find(key);
  if (it == txs_.end()) return Status::Ok();  // already finished or broken: idempotent
  // Before the pages unlock: a node that missed another part's push must not fetch these pages without a check.
  if (missed != nullptr) AddSuspectsLocked(it->second.ds, *missed);
  if (abort && it->second.applied)
    ctx_->Log("engine: ABORT of already applied tx " + std::to_string(key.txid) + ": released");
  DropTxLocked(key, &it->second, true);
  return Status::Ok();
}

bool Owner::CopiesReleasing(const TxKey& key) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (kept_copies_.count(key)) return true;
  }
  return copies_->Releasing(key);
}

Status Owner::KeepAppliedCopy(uint32_t holder, const msg::PartCopy& copy, bool* kept) {
  *kept = false;
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(copy.dataset, &d));
  // Only the pages whose chunk is still this node's: a chunk that moved on took the part's pages with it (handed off
  // with their current bytes, or taken over and settled there).
  std::set<uint64_t> pages;
  for (const msg::PushRange& r : copy.ranges) {
    const uint64_t pg = r.offset / kPageSize;
    uint32_t owner = 0;
    if (pg < d.store->page_count() && ChunkOwner(d, pg, &owner) && owner == ctx_->self()) pages.insert(pg);
  }
  if (pages.empty()) return Status::Ok();  // none of its pages are this node's now: the holder drops the copy
  for (uint64_t pg : pages) HOTPOT_RETURN_IF_ERROR(view_->CheckServable(d, pg));
  *kept = true;
  const TxKey key{copy.committer, copy.txid};
  std::lock_guard<std::mutex> l(mu_);
  if (txs_.count(key)) return Status::Ok();  // in flight here: its copies are kept while it is (PART_STATUS says so)
  const bool fresh = kept_copies_.count(key) == 0;
  KeptCopies& k = kept_copies_[key];
  if (fresh) {
    k.ds = copy.dataset;
    k.replicas = d.info.replicas ? d.info.replicas : 1;
    k.pages.assign(pages.begin(), pages.end());
    k.copy = copy;
    ctx_->Log("engine: keeping track again of node " + std::to_string(holder) + "'s applied copy of tx " +
              std::to_string(copy.txid) + " from node " + std::to_string(copy.committer) +
              " (applied short of N copies before a restart): released once its pages are back at N");
  }
  if (std::find(k.holders.begin(), k.holders.end(), holder) == k.holders.end()) k.holders.push_back(holder);
  k.told.insert(holder);
  return Status::Ok();
}

msg::AbortState Owner::Abort(const TxKey& key, uint32_t* copies) {
  *copies = 0;
  bool one_shot = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = txs_.find(key);
    if (it != txs_.end()) {
      if (it->second.applying || it->second.applied) return msg::AbortState::kApplying;
      // A one-shot writing part (its redo record is written at its commit point, so it may have none yet): its copies
      // are withdrawn before the answer says whether anything can still apply.
      one_shot = it->second.commit_id == 0 && !it->second.pages.empty();
      if (one_shot && it->second.sending_copies) {
        // Its copies are on their way, to holders not known yet: nothing can be withdrawn now. Prepare drops it and
        // withdraws them once they are made; until then whether one will be applied is not known.
        it->second.abort_asked = true;
        return msg::AbortState::kUnknown;
      }
      if (!one_shot) {
        // A multi-part commit's part: a node taking the chunk over asks the committer, which says aborted.
        DropTxLocked(key, &it->second, true);
        SettleLocked(key, false, 0);
        return msg::AbortState::kNothingApplied;
      }
    }
  }
  if (one_shot) {
    const bool withdrawn = DropOneShot(key);
    std::lock_guard<std::mutex> l(mu_);
    SettleLocked(key, false, 0, !withdrawn);
    return withdrawn ? msg::AbortState::kNothingApplied : msg::AbortState::kUnknown;
  }
  std::lock_guard<std::mutex> l(mu_);
  auto s = settled_.find(key);
  if (s != settled_.end()) {
    *copies = s->second.copies;
    if (s->second.unknown) return msg::AbortState::kUnknown;
    return s->second.applied ? msg::AbortState::kApplied : msg::AbortState::kNothingApplied;
  }
  // Not prepared (yet): a PREPARE still in flight must never apply now.
  SettleLocked(key, false, 0);
  return msg::AbortState::kNothingApplied;
}

void Owner::DropTxLocked(const TxKey& key, OwnerTx* tx, bool free_slot) {
  // The other parts held here on this dataset (their pages and read pages are sorted), listed once one is needed.
  std::vector<const std::pair<const TxKey, OwnerTx>*> others;
  bool listed = false;
  for (const std::vector<uint64_t>* v : {&tx->pages, &tx->read_pages})
    for (uint64_t pg : *v) {
      auto it = locks_.find(PageKey{tx->ds, pg});
      if (it == locks_.end() || it->second < key || key < it->second) continue;
      // Another part held here on the page keeps it locked (a takeover adopts every part it finds, and two may share
      // a page: an applied one and a later one in doubt). Unlocked with the first of them to finish, the page took a
      // new commit while the later part still waited for its committer, whose decision then applied it below that
      // commit's version, which wrote nothing (simulation seed 613 with SIM_RESTARTS_HEAVY=1: half a commit).
      if (!listed) {
        for (const auto& kv : txs_)
          if (kv.second.ds == tx->ds && (kv.first < key || key < kv.first)) others.push_back(&kv);
        listed = true;
      }
      const TxKey* next = nullptr;
      for (const auto* kv : others) {
        for (const std::vector<uint64_t>* w : {&kv->second.pages, &kv->second.read_pages})
          if (std::binary_search(w->begin(), w->end(), pg)) next = &kv->first;
        if (next != nullptr) break;
      }
      if (next != nullptr) it->second = *next;
      else locks_.erase(it);
    }
  if (free_slot && tx->has_slot) (void)ctx_->pool->redo().Free(tx->slot);
  if (tx->applied && tx->keep_copies && tx->copy_holders.empty()) tx->copy_holders = HoldersOf(*tx);
  if (tx->applied && tx->keep_copies && !tx->pages.empty() && !tx->copy_holders.empty()) {
    KeptCopies& k = kept_copies_[key];
    k.ds = tx->ds;
    k.replicas = tx->replicas;
    k.pages = tx->pages;
    k.holders = tx->copy_holders;
    k.told.insert(tx->told_applied.begin(), tx->told_applied.end());
    k.copy = CopyOf(key, *tx);
  } else {
    copies_->Release(key, tx->copy_holders);
  }
  txs_.erase(key);
}

std::vector<uint32_t> Owner::HoldersOf(const OwnerTx& tx) {
  if (!tx.copy_holders.empty()) return tx.copy_holders;
  std::vector<uint32_t> alive, down;
  view_->Peers(&alive, &down);
  alive.insert(alive.end(), down.begin(), down.end());
  std::sort(alive.begin(), alive.end());
  return alive;
}

void Owner::FlagCopiesApplied(const TxKey& key, const OwnerTx& tx) {
  const std::vector<uint32_t> holders = HoldersOf(tx);
  std::vector<uint32_t> told;
  copies_->Mark(CopyOf(key, tx), msg::kCopyApplied, holders, ctx_->NewDeadline(), &told);
  std::lock_guard<std::mutex> l(mu_);
  auto it = txs_.find(key);
  if (it == txs_.end()) return;
  it->second.keep_copies = true;
  it->second.told_applied = std::move(told);
  if (it->second.copy_holders.empty()) it->second.copy_holders = holders;
}

void Owner::LogLongLockLocked(uint64_t ds, uint64_t page, const TxKey& refused) {
  auto lk = locks_.find(PageKey{ds, page});
  if (lk == locks_.end()) return;
  auto it = txs_.find(lk->second);
  if (it == txs_.end()) return;
  const OwnerTx& tx = it->second;
  const auto held = std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->time->Now() - tx.locked_at);
  if (!ctx_->Slow(held)) return;
  const char* state = tx.applying         ? "applying"
                      : tx.applied        ? "applied, waiting for its commit to finish"
                      : tx.sending_copies ? "making its prepare copies"
                      : tx.frozen         ? "frozen, waiting for its participants to settle it"
                      : tx.decided        ? "decided before a restart, waiting to be applied again"
                      : tx.pages.empty()  ? "validating reads"
                                          : "prepared, waiting for its committer's decision";
  ctx_->LogLimited("locked " + PageName(ds, page),
                   "engine: PREPARE of tx " + std::to_string(refused.txid) + " from node " +
                       std::to_string(refused.committer) + " refused: " + PageName(ds, page) + " has been locked for " +
                       std::to_string(held.count()) + " ms by tx " + std::to_string(lk->second.txid) + " from node " +
                       std::to_string(lk->second.committer) + " (" + state +
                       (tx.recovered ? ", recovered after a restart" : "") + ")");
}

void Owner::BreakExpiredLocked() {
  if (txs_.empty()) return;
  const auto limit = ctx_->time->Now() - 4 * ctx_->opt.request_timeout;
  for (auto it = txs_.begin(); it != txs_.end();) {
    auto next = std::next(it);
    // Only a read-only validation: a writing part without its redo record yet is making its prepare copies or writing
    // the record (each bounded by a deadline), and dropping it then would leave its copies behind with "nothing
    // applied" said to its committer (simulation seed 1115 with SIM_RESTARTS_HEAVY: a one-shot part broken while its
    // copies were made was applied later by a node taking its chunk over).
    if (it->second.locked_at < limit && !it->second.applying && !it->second.has_slot && it->second.pages.empty()) {
      ctx_->Log("engine: breaking expired commit lock of tx " + std::to_string(it->first.txid) + " from node " +
                std::to_string(it->first.committer) + " (read-only validation)");
      const TxKey k = it->first;
      DropTxLocked(k, &it->second, true);
    }
    it = next;
  }
}

bool Owner::DropOneShot(const TxKey& key) {
  std::vector<uint32_t> holders;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = txs_.find(key);
    if (it == txs_.end()) return true;
    holders.swap(it->second.copy_holders);  // withdrawn here, not queued
    DropTxLocked(key, &it->second, true);
  }
  return copies_->ReleaseNow(key, holders);
}

void Owner::SettleLocked(const TxKey& key, bool applied, uint32_t copies, bool unknown) {
  const auto now = ctx_->time->Now();
  const auto limit = now - 10 * ctx_->opt.request_timeout;
  while (!settled_order_.empty()) {
    auto it = settled_.find(settled_order_.front());
    if (it != settled_.end() && it->second.at >= limit && settled_.size() < 65536) break;
    if (it != settled_.end()) settled_.erase(it);
    settled_order_.pop_front();
  }
  if (settled_.emplace(key, Settled{applied, unknown, copies, now}).second) settled_order_.push_back(key);
}

// ---------------------------------------------------------------------------------------------------------------
// Serving pages

void Owner::ServeFetch(uint32_t peer, const msg::FetchRequest& fr, transport::Reply* reply, const Status* fenced) {
  const uint32_t self = ctx_->self();
  if (fenced != nullptr && (fr.flags & msg::kFetchRevalidate)) {
    reply->status = *fenced;  // a check now would be stale at once: it rechecks once it has rejoined
    return;
  }
  DatasetState d;
  Status st = view_->FindDataset(fr.dataset, &d);
  if (!st.ok()) {
    reply->status = st;
    return;
  }
  st = CheckGeneration(d, fr.generation);
  if (st.ok()) st = CheckLease();
  if (!st.ok()) {
    reply->status = st;
    return;
  }
  if (fr.first_page >= d.store->page_count() || fr.count > d.store->page_count() - fr.first_page) {
    reply->status = Status(Code::kOutOfRange, "fetch beyond the end of dataset " + std::to_string(fr.dataset));
    return;
  }
  for (uint32_t i = 0; i < fr.count; i++) {
    st = CheckServes(d, fr.first_page + i);
    if (st.ok()) st = view_->CheckServable(d, fr.first_page + i);
    if (!st.ok()) {
      reply->status = st;
      return;
    }
  }
  const bool revalidate = (fr.flags & msg::kFetchRevalidate) != 0;
  std::vector<msg::FetchedPage> meta(fr.count);
  std::vector<uint8_t> pages(size_t(fr.count) * kPageSize);
  {
    std::lock_guard<std::mutex> l(mu_);
    BreakExpiredLocked();
    bool check = false;
    if (peer != self) {
      if (fr.flags & msg::kFetchPass) {
        Suspects& s = suspects_[fr.dataset];  // the peer is checking every cached copy now
        if (!s.untold.count(peer)) s.nodes.erase(peer);  // once told, a check it makes covers the missed pushes
        if (s.everyone) s.cleared.insert(peer);
      } else if (!revalidate) {
        check = fenced != nullptr || SuspectLocked(fr.dataset, peer);
      }
    }
    for (msg::FetchedPage& m : meta) m.flags = check ? msg::kFetchedCheck : 0;
    for (uint32_t i = 0; i < fr.count; i++) {
      st = MovingLocked(d, fr.first_page + i);
      if (!st.ok()) {
        reply->status = st;
        return;
      }
    }
    for (uint32_t i = 0; i < fr.count && !revalidate; i++) {
      if (locks_.count(PageKey{fr.dataset, fr.first_page + i})) {
        reply->status = Status(Code::kUnavailable, msg::kReasonPageLocked,
                               PageName(fr.dataset, fr.first_page + i) + ": page locked by commit");
        return;
      }
    }
    for (uint32_t i = 0; i < fr.count; i++) {
      const PageKey k{fr.dataset, fr.first_page + i};
      uint8_t* out = pages.data() + size_t(i) * kPageSize;
      PageMeta m;
      st = d.store->ReadPage(k.page, out, &m);
      if (st.ok() && m.state == PageState::kAbsent) {
        // First time this page is served: materialise it (zeros, version 0) so that after a restart an absent owner
        // page still means "nobody caches it", and start its cacher set from empty.
        bool installed = false;
        m.version = VersionFloor(d, k.page);
        // Served although locked (a revalidation): below the version the locking part will write. Its versions may
        // predate an era raise (the owner rejoined holding it in doubt), and a page materialised at the new floor would
        // be past them: its APPLY, answered OK, then wrote nothing (simulation, seed 8091: half a commit).
        auto lk = locks_.find(k);
        auto tx = lk == locks_.end() ? txs_.end() : txs_.find(lk->second);
        if (tx != txs_.end() && !tx->second.applied) {
          const auto& ps = tx->second.pages;
          const auto at = std::lower_bound(ps.begin(), ps.end(), k.page);
          if (at != ps.end() && *at == k.page) {
            const uint64_t v = tx->second.versions[size_t(at - ps.begin())];
            if (v <= m.version) m.version = v - 1;
          }
        }
        st = cache_->InstallAbsent(d.store, k.page, out, m.version, PageState::kOwned, &installed);
        if (st.ok()) cachers_known_.insert(k);
      }
      if (!st.ok()) {
        reply->status = st;
        return;
      }
      meta[i].version = m.version;  // absent owned page: zeros, at the chunk's version floor (0 unless it failed over)
      meta[i].state = uint8_t(PageState::kOwned);
      if (revalidate) {
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
      if ((fr.flags & msg::kFetchCoherent) && peer != self) {
        cachers_[k].insert(peer);
        auto ro = replica_only_.find(k);
        if (ro != replica_only_.end()) ro->second.erase(peer);
        // A copy counts toward N only once its holder has answered "held" to a push or replica: this answer may be
        // lost (the fetcher then never installs it), and counting it let kept copies of an under-replicated commit
        // go while one copy existed (simulation seed 232: a revalidation's reply was dropped, the owner released
        // the part's applied copy as "back at N", died, and the commit was lost). Re-replication confirms it.
        unconfirmed_[k].insert(peer);
      }
    }
  }
  msg::FetchLocation at;
  if ((fr.flags & msg::kFetchLocate) && rdma_pages_ != nullptr &&
      rdma_pages_->Locate(d.store, fr.first_page, fr.count, &at.region, &at.offset)) {
    // The peer READs the bytes from the page file; the checksums of what was read here under the owner's lock (no
    // commit applying) tell it whether what it reads is still this version.
    at.crc.resize(fr.count);
    for (uint32_t i = 0; i < fr.count; i++) at.crc[i] = Crc32c(pages.data() + size_t(i) * kPageSize, kPageSize);
    msg::EncodeFetchLocated(meta, at, &reply->payload);
    ctx_->counters.fetches_located += fr.count;
  } else {
    msg::EncodeFetchResponse(meta, pages.data(), revalidate, &reply->payload);
  }
  ctx_->counters.fetches_served += fr.count;
  ctx_->Note(observe::EventKind::kFetchServed, peer, fr.dataset, fr.first_page, fr.count);
  ctx_->counters.bytes_out += reply->payload.size();
}

bool Owner::SuspectLocked(uint64_t ds, uint32_t node) const {
  auto it = suspects_.find(ds);
  if (it == suspects_.end()) return false;
  return it->second.nodes.count(node) != 0 || (it->second.everyone && it->second.cleared.count(node) == 0);
}

void Owner::AddSuspectsLocked(uint64_t ds, const std::vector<uint32_t>& nodes) {
  if (nodes.empty()) return;
  Suspects& s = suspects_[ds];
  for (uint32_t node : nodes) {
    if (node == ctx_->self()) continue;
    s.nodes.insert(node);
    s.cleared.erase(node);
    s.untold[node] = ++s.raised;
  }
  if (ctx_->wake_resolver) ctx_->wake_resolver();  // tells them (CHECK_COPIES) on its thread
}

void Owner::SuspectEveryone(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  Suspects& s = suspects_[ds];
  s.everyone = true;
  s.cleared.clear();
  s.told.clear();
}

std::vector<Owner::Tell> Owner::NotTold(const std::vector<uint32_t>& alive) {
  std::vector<Tell> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : suspects_) {
    for (uint32_t node : alive) {
      if (node == ctx_->self()) continue;
      auto u = kv.second.untold.find(node);
      if (u != kv.second.untold.end()) out.push_back(Tell{kv.first, node, u->second});
      else if (kv.second.everyone && kv.second.told.count(node) == 0) out.push_back(Tell{kv.first, node, 0});
    }
  }
  return out;
}

void Owner::Told(const Tell& t) {
  std::lock_guard<std::mutex> l(mu_);
  Suspects& s = suspects_[t.ds];
  if (s.everyone) s.told.insert(t.node);
  auto u = s.untold.find(t.node);
  if (u != s.untold.end() && u->second == t.seq) s.untold.erase(u);
}

Status Owner::EnsurePresent(const DatasetState& d, uint64_t page) {
  HOTPOT_RETURN_IF_ERROR(CheckLease());
  HOTPOT_RETURN_IF_ERROR(view_->CheckServable(d, page));
  const PageKey k{d.info.id, page};
  Backoff backoff(ctx_->time, std::chrono::microseconds(200), std::chrono::microseconds(6400), ctx_->NewDeadline());
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      BreakExpiredLocked();
      if (!locks_.count(k)) {
        // Owned and never written: zeros at version 0. Under the owner lock so a commit applying it cannot interleave.
        std::vector<uint8_t> zeros(kPageSize, 0);
        bool installed = false;
        HOTPOT_RETURN_IF_ERROR(
            cache_->InstallAbsent(d.store, page, zeros.data(), VersionFloor(d, page), PageState::kOwned, &installed));
        if (installed) cachers_known_.insert(k);
        return Status::Ok();
      }
    }
    if (!backoff.Wait())
      return Status(Code::kUnavailable, msg::kReasonPageLocked, PageName(d.info.id, page) + " locked by a commit");
    ctx_->counters.fetch_retries++;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Recovery

void Owner::NoteUnrecovered(const TxKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  unrecovered_.insert(key);
}

void Owner::RecoverRecords(uint64_t ds, uint32_t replicas, pool::DatasetStore* store) {
  DatasetState d;
  const bool mapped = view_->FindDataset(ds, &d).ok();
  for (auto& kv : ctx_->pool->redo().InFlight()) {
    const pool::RedoRecord& r = kv.second;
    // Decision records are the committer's; prepare copies are other owners' parts (PartCopies).
    if (r.dataset_id != ds || r.phase == pool::RedoPhase::kDecided || pool::IsCopyPhase(r.phase)) continue;
    // A part prepared, applying or applied here whose chunk another node owns now (it failed over while this node was
    // down): the new owner settled it from its prepare copies. Applying (or replaying) it here would change a chunk this
    // node no longer owns — a replay installed never-held pages as owned ones, which pushes then skip and checks never
    // fix — so it is not applied (a handoff leaves no part in flight, so this is never one of those).
    if (mapped &&
        (r.phase == pool::RedoPhase::kPrepared || r.phase == pool::RedoPhase::kApplying ||
         r.phase == pool::RedoPhase::kApplied || r.phase == pool::RedoPhase::kFrozen) &&
        !r.ranges.empty()) {
      uint32_t owner = 0;
      if (ChunkOwner(d, r.ranges.front().offset / kPageSize, &owner) && owner != ctx_->self()) {
        // Kept as a prepare copy of this node's until the new owner has settled it (it lists the copies of every
        // member when it takes the chunk over; PartCopies::CollectOrphans drops it after that).
        Status st = copies_->Keep(ctx_->self(), CopyOfRecord(r));
        const char* phase = r.phase == pool::RedoPhase::kApplying  ? "applying"
                            : r.phase == pool::RedoPhase::kApplied ? "applied"
                            : r.phase == pool::RedoPhase::kFrozen  ? "frozen"
                                                                   : "prepared";
        ctx_->Log("engine: " + std::string(phase) + " tx " +
                  std::to_string(r.txid) + " from node " + std::to_string(r.committer_node_id) + " of dataset " +
                  std::to_string(ds) + " is in a chunk node " + std::to_string(owner) +
                  " owns now (it takes the chunk over): " +
                  (st.ok() ? "kept here as its prepare copy, not applied" : "could not be kept: " + st.ToString()));
        if (!st.ok()) continue;
        {
          std::lock_guard<std::mutex> l(mu_);
          unrecovered_.erase(TxKey{r.committer_node_id, r.txid});
        }
        (void)ctx_->pool->redo().Free(kv.first);
        continue;
      }
    }
    if (r.phase == pool::RedoPhase::kPrepared || r.phase == pool::RedoPhase::kApplying ||
        r.phase == pool::RedoPhase::kFrozen) {
      const bool decided = r.phase == pool::RedoPhase::kApplying;
      bool ok = !r.ranges.empty();
      for (const pool::RedoRange& rr : r.ranges)
        if (rr.bytes.empty() || rr.offset / kPageSize >= store->page_count()) ok = false;
      OwnerTx tx = RecoveredTx(ds, replicas, kv.first, r);
      if (!ok || tx.versions.size() != tx.pages.size()) {
        ctx_->Log("engine: prepared tx " + std::to_string(r.txid) + " of dataset " + std::to_string(ds) +
                  " is malformed: kept in the redo log, not applied");
        continue;
      }
      tx.decided = decided;
      // Frozen before the restart (its copies too, or the answer that made it count was never sent): still frozen.
      tx.frozen = tx.frozen_durable = tx.record_frozen = r.phase == pool::RedoPhase::kFrozen;
      const TxKey key{r.committer_node_id, r.txid};
      std::lock_guard<std::mutex> l(mu_);
      unrecovered_.erase(key);
      if (txs_.count(key)) continue;
      for (uint64_t pg : tx.pages) locks_[PageKey{ds, pg}] = key;
      txs_[key] = std::move(tx);
      ctx_->Log("engine: " + std::string(decided ? "applying" : tx.frozen ? "frozen" : "prepared") + " tx " +
                std::to_string(r.txid) + " from node " + std::to_string(r.committer_node_id) + " of dataset " +
                std::to_string(ds) +
                (decided     ? " was interrupted: pages locked until it is applied and pushed again"
                 : tx.frozen ? " is in doubt: pages locked until its participants settle it"
                             : " is in doubt: pages locked until its committer decides"));
      continue;
    }
    if (r.phase == pool::RedoPhase::kApplied) {
      std::set<uint64_t> pages;
      for (const auto& rr : r.ranges) pages.insert(rr.offset / kPageSize);
      std::vector<uint64_t> pv(pages.begin(), pages.end());
      bool ok = pv.size() == r.page_versions.size();
      // A page already at (or past) the record's version holds this commit or a newer one: replaying it would roll
      // a newer commit back (the redo log frees records without a sync). Decide per page before writing.
      std::vector<bool> replay(pv.size(), true);
      bool superseded = false;  // a page is past the record's version: a later commit wrote it, so this part was released
      for (size_t i = 0; ok && i < pv.size(); i++) {
        if (pv[i] >= store->page_count()) {
          ok = false;
          break;
        }
        const PageMeta m = store->GetMeta(pv[i]);
        replay[i] = m.state == PageState::kAbsent || m.version < r.page_versions[i];
        superseded |= m.state != PageState::kAbsent && m.version > r.page_versions[i];
      }
      // A part of a multi-part commit is applied here but maybe not released: its RELEASE comes only once every part
      // of the commit is applied, and until then its pages stay locked (showing them would show half the commit).
      // Locked again, as applied, until its committer (or, once it is forgotten, the other participants) says the
      // commit is finished — before its bytes are written: a fetch served between the two showed them unlocked.
      // A record whose pages a later commit wrote was released (the log frees without a sync).
      const bool relocked = ok && r.commit_id != 0 && !superseded && RelockApplied(ds, replicas, kv.first, r);
      for (const auto& rr : r.ranges) {
        if (!ok) break;
        if (rr.bytes.empty() || rr.offset / kPageSize >= store->page_count()) {
          ok = false;
          break;
        }
        const size_t idx = size_t(std::lower_bound(pv.begin(), pv.end(), rr.offset / kPageSize) - pv.begin());
        if (!replay[idx]) continue;
        if (store->GetMeta(pv[idx]).state == PageState::kAbsent) {
          std::vector<uint8_t> zeros(kPageSize, 0);
          if (!store->InstallPage(pv[idx], zeros.data(), 0, PageState::kOwned).ok()) ok = false;
        }
        if (ok && !store->WriteBytes(rr.offset, rr.bytes.data(), uint32_t(rr.bytes.size()), r.page_versions[idx]).ok())
          ok = false;
      }
      if (ok) ok = store->Persist(pv).ok();
      ctx_->Log(std::string("engine: redo replay of tx ") + std::to_string(r.txid) + (ok ? " done" : " FAILED"));
      ctx_->Fault(FaultPoint::kOwnerReplayAfterBytes);
      if (!ok) {
        // Keep the record for a later attempt; not "applied" meanwhile (its APPLY is answered "being recovered").
        if (relocked) UndoRelock(TxKey{r.committer_node_id, r.txid});
        continue;
      }
      if (relocked) continue;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      unrecovered_.erase(TxKey{r.committer_node_id, r.txid});
    }
    (void)ctx_->pool->redo().Free(kv.first);
  }
}

// A part's ranges (from a redo record or a prepare copy: {offset, bytes} each) as the owner holds them, and its pages.
template <typename R>
void Owner::SetRanges(const std::vector<R>& ranges, OwnerTx* tx) {
  std::set<uint64_t> pages;
  for (const R& r : ranges) {
    pages.insert(r.offset / kPageSize);
    msg::Range x;
    x.offset = r.offset;
    x.new_bytes = r.bytes;
    x.old_bytes.assign(r.bytes.size(), 0);  // unused after PREPARE (apply writes new bytes only)
    tx->ranges.push_back(std::move(x));
  }
  tx->pages.assign(pages.begin(), pages.end());
}

Owner::OwnerTx Owner::RecoveredTx(uint64_t ds, uint32_t replicas, uint32_t slot, const pool::RedoRecord& r) {
  OwnerTx tx;
  tx.ds = ds;
  tx.replicas = replicas;
  SetRanges(r.ranges, &tx);
  tx.versions = r.page_versions;
  tx.slot = slot;
  tx.has_slot = true;
  tx.recovered = true;
  tx.commit_id = r.commit_id;
  tx.sender_epoch = r.sender_epoch;
  tx.locked_at = ctx_->time->Now();
  return tx;
}

bool Owner::RelockApplied(uint64_t ds, uint32_t replicas, uint32_t slot, const pool::RedoRecord& r) {
  OwnerTx tx = RecoveredTx(ds, replicas, slot, r);
  tx.applied = true;
  // How many copies its pages reached before the restart is not known (its pushes may have failed: the bytes only
  // here): treated as short of copies, so its copies are flagged applied and kept until its pages are back at N.
  tx.keep_copies = replicas > 1;
  const TxKey key{r.committer_node_id, r.txid};
  std::lock_guard<std::mutex> l(mu_);
  unrecovered_.erase(key);
  if (txs_.count(key)) return false;
  for (uint64_t pg : tx.pages) locks_[PageKey{ds, pg}] = key;
  txs_[key] = std::move(tx);
  cache_->MarkOpen(ds, MarkKey{r.committer_node_id, r.commit_id});  // its other parts may not be applied yet
  ctx_->Log("engine: applied tx " + std::to_string(r.txid) + " from node " + std::to_string(r.committer_node_id) +
            " of dataset " + std::to_string(ds) + " was not released before the restart: pages locked until its " +
            "commit is known to be finished");
  return true;
}

void Owner::UndoRelock(const TxKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = txs_.find(key);
  if (it == txs_.end()) return;
  for (uint64_t pg : it->second.pages) {
    auto lk = locks_.find(PageKey{it->second.ds, pg});
    if (lk != locks_.end() && !(lk->second < key) && !(key < lk->second)) locks_.erase(lk);
  }
  txs_.erase(it);
  unrecovered_.insert(key);
}

std::vector<Owner::Overdue> Owner::OverdueParts() {
  std::vector<Overdue> out;
  const std::map<uint32_t, uint64_t> alive_since = view_->AliveSince();
  std::lock_guard<std::mutex> l(mu_);
  BreakExpiredLocked();
  const auto limit = ctx_->time->Now() - 4 * ctx_->opt.request_timeout;
  for (auto& kv : txs_) {
    OwnerTx& tx = kv.second;
    if (tx.applying || !tx.has_slot) continue;
    // The committer came back (restarted or rejoined) since it prepared: it can say now what became of the part
    // (a restarted committer presumes abort for what it never decided). Asked until it answers, once per rejoin.
    auto since = alive_since.find(kv.first.committer);
    const uint64_t rejoined_at = since != alive_since.end() && since->second > tx.committer_epoch ? since->second : 0;
    // A multi-part part whose committer is down: its participants may settle what they can among themselves at once
    // (Resolver::ResolveInDoubt, "a dead committer").
    const bool committer_down = kv.first.committer != ctx_->self() && since == alive_since.end() && tx.commit_id != 0;
    // A frozen part is settled by its participants only, whatever its committer says (it may be alive again).
    const bool frozen = tx.frozen && !tx.applied;
    if (rejoined_at != 0 || tx.recovered || tx.locked_at < limit || committer_down || frozen)
      out.push_back(Overdue{kv.first, tx.applied, tx.decided, tx.commit_id == 0, rejoined_at, tx.commit_id, frozen});
  }
  return out;
}

void Owner::NoteAnswered(const TxKey& key, uint64_t epoch) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = txs_.find(key);
  if (it != txs_.end()) it->second.committer_epoch = std::max(it->second.committer_epoch, epoch);
}

void Owner::NoteStillInDoubt(const TxKey& key, const std::string& why) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = txs_.find(key);
  if (it == txs_.end() || it->second.doubt_logged) return;
  it->second.doubt_logged = true;
  ctx_->Log("engine: tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
            " stays prepared with its pages locked: " + (why.empty() ? "its commit is still running" : why));
}

uint8_t Owner::CommitPartsOf(uint32_t committer, uint64_t commit_id) {
  std::lock_guard<std::mutex> l(mu_);
  uint8_t held = 0;
  for (const auto& kv : txs_) {
    const OwnerTx& tx = kv.second;
    if (kv.first.committer != committer || tx.commit_id != commit_id || commit_id == 0) continue;
    held |= tx.applied || tx.applying || tx.decided ? msg::kPeekApplied : msg::kPeekPrepared;
  }
  return held;
}

Status Owner::FreezeCommit(uint32_t committer, uint64_t commit_id, msg::CommitState* out) {
  *out = msg::CommitState::kNone;
  if (commit_id == 0) return Status::Ok();
  std::vector<std::pair<TxKey, OwnerTx>> tell;  // frozen parts whose prepare copies are not marked yet
  bool incomplete = false;
  // Whether the committer is gone for good here, or since when it is down (its death's epoch; 0: alive here).
  const bool forgotten = view_->IsForgotten(committer);
  const uint64_t dead_at = !forgotten && !view_->IsAlive(committer) ? view_->StateEpoch(committer) : 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    const TimePoint now = ctx_->time->Now();
    const TimePoint limit = now - 10 * ctx_->opt.request_timeout;
    for (auto it = settled_commits_.begin(); it != settled_commits_.end();)
      it = it->second < limit ? settled_commits_.erase(it) : std::next(it);
    settled_commits_[{committer, commit_id}] = now;
    for (auto& kv : txs_) {
      OwnerTx& tx = kv.second;
      if (kv.first.committer != committer || tx.commit_id != commit_id) continue;
      if (tx.applied || tx.applying || tx.decided) {
        *out = msg::CommitState::kApplied;
        return Status::Ok();
      }
      // Frozen only once its committer's death is known here to concern the process that prepared it: a committer
      // alive here, or one that rejoined before it sent the PREPARE (stamped with an epoch past its declared death),
      // may still apply it and tell its app "committed" from an answer "not prepared" (docs/design/availability.md
      // "A dead committer").
      if (!tx.frozen && !forgotten && (dead_at == 0 || (tx.sender_epoch != 0 && tx.sender_epoch > dead_at)))
        return Status(Code::kUnavailable,
                      "node " + std::to_string(ctx_->self()) + " does not know node " + std::to_string(committer) +
                          " dead since before it prepared tx " + std::to_string(kv.first.txid) +
                          " (its view or the asker's is behind): ask again");
      tx.frozen = true;  // from now on its committer's APPLY is refused
      *out = msg::CommitState::kPrepared;
      if (tx.frozen_durable || tx.pages.empty()) continue;  // a read-only validation applies nothing
      if (!tx.has_slot) {  // its PREPARE is still logging it: asked again
        incomplete = true;
        continue;
      }
      // Under mu_, so no APPLY (of the participants' rule) moves the record on meanwhile: a record left "frozen" over
      // an applied part would be recovered prepared. Rare (a dead committer's commit), one small write.
      if (!tx.record_frozen) {
        HOTPOT_RETURN_IF_ERROR(ctx_->pool->redo().SetPhase(tx.slot, pool::RedoPhase::kFrozen));
        tx.record_frozen = true;  // asked again (a holder was down): only the copies are told again
      }
      if (tx.replicas > 1) tell.push_back({kv.first, tx});
      else tx.frozen_durable = true;
    }
  }
  for (const auto& [key, tx] : tell) {
    const std::vector<uint32_t> holders = HoldersOf(tx);
    msg::PartCopy frozen = CopyOf(key, tx);
    frozen.flags |= msg::kCopyFrozen;
    std::vector<uint32_t> told, extra;
    copies_->Mark(frozen, 0, holders, ctx_->NewDeadline(), &told);
    // Durable once N nodes know the part frozen: this one (its record) and N - 1 others holding a frozen copy. A
    // takeover goes on with at most N - 1 members down, so it always hears one of them, and it adopts a part frozen
    // if any copy says so. A holder that cannot be told (down: often the dead committer itself, which held a copy of
    // its participant's part) is stood in for by a frozen copy on another alive node, instead of holding the commit
    // back until it returns. Its own unfrozen copy, back later, is outvoted that way and released with the part.
    const size_t need = tx.replicas - 1;
    const size_t others =
        size_t(std::count_if(told.begin(), told.end(), [&](uint32_t n) { return n != ctx_->self(); }));
    if (others < need &&
        !copies_->Send(frozen, uint32_t(need - others), ctx_->NewDeadline(), &extra, nullptr, &holders).ok()) {
      incomplete = true;
      continue;
    }
    if (!extra.empty()) {
      std::string untold, in;
      for (uint32_t n : holders)
        if (std::find(told.begin(), told.end(), n) == told.end())
          untold += (untold.empty() ? "" : ",") + std::to_string(n);
      for (uint32_t n : extra) in += (in.empty() ? "" : ",") + std::to_string(n);
      ctx_->Log("engine: tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
                " frozen: " +
                (untold.empty() ? "fewer than N - 1 other nodes held its prepare copy (prepared with fewer alive)"
                                : "its prepare copy at node(s) " + untold + " could not be told (down)") +
                "; a frozen copy at node(s) " + in + " stands in");
    }
    std::lock_guard<std::mutex> l(mu_);
    auto it = txs_.find(key);
    if (it == txs_.end()) {  // settled meanwhile: its new copies go too
      if (!extra.empty()) copies_->Release(key, extra);
      continue;
    }
    // Released with the part's other copies. (A part re-created from its record has none listed: HoldersOf then
    // names every member, these included.)
    if (!it->second.copy_holders.empty())
      it->second.copy_holders.insert(it->second.copy_holders.end(), extra.begin(), extra.end());
    it->second.frozen_durable = true;
  }
  if (incomplete)
    return Status(Code::kUnavailable, "node " + std::to_string(ctx_->self()) + " froze its parts of commit " +
                                          std::to_string(commit_id) + " from node " + std::to_string(committer) +
                                          " but could not yet make that durable on N nodes (too few alive to hold a "
                                          "frozen copy): ask again");
  return Status::Ok();
}

bool Owner::FrozenPrepared(const TxKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = txs_.find(key);
  return it != txs_.end() && it->second.frozen && !it->second.applied && !it->second.applying;
}

bool Owner::HasPart(uint64_t txid) {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : txs_)
    if (kv.first.txid == txid) return true;
  return false;
}

Status Owner::SettleTakeover(const DatasetState& d, const std::vector<std::pair<uint64_t, uint64_t>>& spans,
                             const std::map<TxKey, msg::OwnedCopy>& parts, TakeoverResult* out) {
  *out = TakeoverResult{};
  HOTPOT_RETURN_IF_ERROR(CheckLease());  // the lease may have run out while the copies were gathered
  const uint64_t ds = d.info.id;
  auto inside = [&](uint64_t pg) {
    for (const auto& s : spans)
      if (pg >= s.first && pg < s.second) return true;
    return false;
  };
  auto name = [&](const TxKey& k) {
    return "tx " + std::to_string(k.txid) + " from node " + std::to_string(k.committer);
  };
  // Parts this node holds from now on, locked: undecided ones (their committer decides) and applied ones of
  // multi-part commits (their other parts may not be applied everywhere yet: locked until the committer's RELEASE).
  struct Adopted {
    TxKey key;
    const msg::PartCopy* copy;
    bool applied;
  };
  std::vector<Adopted> adopt;
  // The highest version any copy gives each page: at the old owner a part could be prepared on a page only after the
  // previous part on it finished, so a copy below that on a common page finished before the later part began.
  std::map<uint64_t, uint64_t> newest;
  for (const auto& kv : parts) {
    std::set<uint64_t> ps;  // the part's pages, ascending: parallel to its versions
    for (const msg::PushRange& r : kv.second.copy.ranges) ps.insert(r.offset / kPageSize);
    size_t i = 0;
    for (uint64_t pg : ps)
      if (i < kv.second.copy.versions.size()) {
        newest[pg] = std::max(newest[pg], kv.second.copy.versions[i]);
        i++;
      }
  }
  // Oldest first: parts on common pages are completed in the order their owner prepared them.
  std::vector<const std::pair<const TxKey, msg::OwnedCopy>*> order;
  for (const auto& kv : parts) order.push_back(&kv);
  auto top = [](const msg::PartCopy& c) { return c.versions.empty() ? 0 : *std::max_element(c.versions.begin(), c.versions.end()); };
  std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) { return top(a->second.copy) < top(b->second.copy); });
  for (const auto* kvp : order) {
    const auto& kv = *kvp;
    const msg::PartCopy& c = kv.second.copy;
    std::set<uint64_t> ps;
    for (const msg::PushRange& r : c.ranges) ps.insert(r.offset / kPageSize);
    const std::vector<uint64_t> pages(ps.begin(), ps.end());
    bool ok = pages.size() == c.versions.size() && c.dataset == ds;
    for (uint64_t pg : pages) ok = ok && pg < d.store->page_count() && inside(pg);
    if (!ok) {
      ctx_->Log("engine: takeover of dataset " + std::to_string(ds) + ": the prepare copy of " + name(kv.first) +
                " reaches outside the chunks taken over (or is malformed): left alone");
      continue;
    }
    if (HasPart(kv.first)) continue;  // this node has the part itself
    // A version is given to one part only (issued_, era floors), so a page at exactly the part's version shows that
    // its owner applied it; a page a commit wrote past it shows the part finished long ago (its copy's release was
    // lost). A page at a bare era floor was only raised by a takeover, which says nothing of this part: a part held in
    // doubt through that takeover keeps its older version in copies the holder of the part never refreshed (it died
    // first), and reading the raise as "finished" dropped an undecided part (simulation, seed 1210).
    // A later part's copy past it, though, shows only that this part finished first — not that its pages live on: a
    // part its owner applied short of N copies keeps its copies, marked applied, until its pages are back at N, and
    // a one-shot part's copy outlives it only if it was applied or its outcome is unknown (DropOneShot). Those are
    // completed in order, the pages already past them left alone (simulation seed 4965: dropped for a later part's
    // copy, an acknowledged commit was lost with its owner).
    const bool applied_there = (c.flags & msg::kCopyApplied) != 0;
    const bool one_shot = c.commit_id == 0;
    bool shown = applied_there, past = false;
    for (size_t i = 0; i < pages.size(); i++) {
      const uint64_t v = d.store->GetMeta(pages[i]).version;
      const bool bare_floor = (v & ((uint64_t(1) << kEraShift) - 1)) == 0;
      shown = shown || v == c.versions[i];
      past = past || (v > c.versions[i] && !bare_floor) || (!one_shot && newest[pages[i]] > c.versions[i]);
    }
    // A page a later commit wrote past it still drops an unflagged part: it may have finished without applying (a
    // one-shot copy that could not be withdrawn), and completing its other pages would show half of it (seed 2378).
    if (past && !shown) {
      out->dropped++;
      ctx_->Log("engine: takeover of dataset " + std::to_string(ds) + ": " + name(kv.first) +
                " finished before (a page, or a later part's copy, is past its version; its copy outlived its release): "
                "dropped");
      continue;
    }
    if (!shown && c.commit_id != 0) {
      adopt.push_back({kv.first, &c, false});  // its committer decides
      continue;
    }
    // Shown by a page, or a one-shot part nobody shows: its owner decided alone, and never told its committer
    // "nothing applied" while a copy of it remained (Owner::DropOneShot), so the part either was applied (its copies
    // were lost, or pushed to nodes now down) or its outcome is unknown to the committer: applying it is right.
    // Its owner passed the commit point: complete the pages still below the part's version (zeros when nobody holds
    // them). Versions may skip (an aborted part's is never reused), so "below" is the version this part was based on:
    // with fewer than N members down the newest copy of every acknowledged commit is here.
    std::vector<uint64_t> wp, wv;
    std::vector<msg::Range> wr;
    for (size_t i = 0; i < pages.size(); i++) {
      const PageMeta m = d.store->GetMeta(pages[i]);
      if (m.state != PageState::kAbsent && m.version >= c.versions[i]) continue;
      wp.push_back(pages[i]);
      wv.push_back(c.versions[i]);
    }
    for (const msg::PushRange& r : c.ranges)
      if (std::binary_search(wp.begin(), wp.end(), r.offset / kPageSize)) {
        msg::Range x;
        x.offset = r.offset;
        x.new_bytes = r.bytes;
        x.old_bytes.assign(r.bytes.size(), 0);
        wr.push_back(std::move(x));
      }
    if (!wp.empty()) {
      OwnerWrite w;
      w.ds = ds;
      w.store = d.store;
      w.pages = &wp;
      w.versions = &wv;
      w.ranges = &wr;
      std::vector<uint64_t> fresh;
      HOTPOT_RETURN_IF_ERROR(cache_->ApplyOwnerWrite(w, &fresh));
      HOTPOT_RETURN_IF_ERROR(d.store->Persist(wp));
    }
    if (c.commit_id != 0) adopt.push_back({kv.first, &c, true});
    HOTPOT_RETURN_IF_ERROR(copies_->NoteApplied(kv.first));  // an older owner's copy held here says so too
    out->completed++;
    ctx_->Log("engine: takeover of dataset " + std::to_string(ds) + ": " + name(kv.first) + " of node " +
              std::to_string(kv.second.owner) + (shown ? " was applied there" : " (one-shot) was decided there") +
              ": completed on " + std::to_string(wp.size()) + " of its " + std::to_string(pages.size()) + " pages");
  }
  // Versions written before the takeover (even ones that survive only on a node that is down now) are older than
  // every version from here on: a copy of one is replaced wherever it shows up (docs "Failover").
  std::vector<uint64_t> raised;
  for (const auto& s : spans)
    for (uint64_t pg = s.first; pg < s.second; pg++) {
      const uint64_t floor = VersionFloor(d, pg);
      if (floor == 0) continue;
      bool did = false;
      HOTPOT_RETURN_IF_ERROR(cache_->RaiseVersion(d.store, ds, pg, floor, &did));
      if (did) raised.push_back(pg);
    }
  if (!raised.empty()) HOTPOT_RETURN_IF_ERROR(d.store->Persist(raised));
  out->raised = raised.size();
  {
    // Parts this node already holds in these chunks (recovered from its redo log after it restarted while taking
    // them over) get versions above the raised ones before anything applies them.
    std::lock_guard<std::mutex> l(mu_);
    for (auto& kv : txs_) {
      OwnerTx& tx = kv.second;
      // Only undecided ones: a decided part is applied again at its own versions, which never rolls a newer page back
      // (NodeCache::ApplyOwnerWrite leaves a page past them alone).
      if (tx.ds != ds || tx.applied || tx.applying || tx.decided) continue;
      bool in = false;
      for (uint64_t pg : tx.pages) in = in || inside(pg);
      if (!in) continue;
      for (size_t i = 0; i < tx.pages.size(); i++) {
        uint64_t& issued = issued_[PageKey{ds, tx.pages[i]}];
        const uint64_t cur = std::max(d.store->GetMeta(tx.pages[i]).version, VersionFloor(d, tx.pages[i]));
        if (tx.versions[i] > cur) continue;
        tx.versions[i] = std::max(cur, issued) + 1;
        issued = tx.versions[i];
      }
    }
  }
  // Parts nobody shows, of multi-part commits: their committer decides (asked at once, like a part recovered after
  // a restart). Locked here with versions above the current ones.
  const uint32_t n = std::max<uint32_t>(1, d.info.replicas);
  for (const Adopted& a : adopt) {
    const msg::PartCopy& c = *a.copy;
    OwnerTx tx;
    tx.ds = ds;
    tx.replicas = n;
    SetRanges(c.ranges, &tx);
    {
      std::lock_guard<std::mutex> l(mu_);
      for (size_t i = 0; i < tx.pages.size(); i++) {
        uint64_t& issued = issued_[PageKey{ds, tx.pages[i]}];
        const uint64_t cur = std::max(d.store->GetMeta(tx.pages[i]).version, VersionFloor(d, tx.pages[i]));
        // Applied: its own versions (the pages are at or past them now: a re-apply after a restart writes nothing).
        // Not the ones the pages have now: its copy, made below, would then claim bytes at versions that later
        // commits' bytes may have reached first, and a node taking the chunk over from this one would write the
        // part's old bytes over them (simulation, seed 477: a counter rolled back).
        tx.versions.push_back(a.applied ? c.versions[i] : std::max(cur, issued) + 1);
        issued = std::max(issued, tx.versions.back());
      }
    }
    tx.commit_id = c.commit_id;
    tx.recovered = true;
    // Applied, not "decided": its committer is asked whether it still drives the commit (a part whose copy outlived
    // its release belongs to a commit finished long ago: released once the committer no longer knows it).
    tx.applied = a.applied;
    // Frozen at the previous owner (a participant asked about the commit after its committer was declared dead): so
    // here too, before anything can apply it; its new copies below carry the flag.
    tx.frozen = tx.frozen_durable = tx.record_frozen = !a.applied && (c.flags & msg::kCopyFrozen) != 0;
    tx.sender_epoch = c.sender_epoch;  // its new record and copies keep the stamp
    tx.locked_at = ctx_->time->Now();
    const pool::RedoPhase phase =
        a.applied ? pool::RedoPhase::kApplying : tx.frozen ? pool::RedoPhase::kFrozen : pool::RedoPhase::kPrepared;
    HOTPOT_RETURN_IF_ERROR(ctx_->pool->redo().Append(RecordOf(TxKey{c.committer, c.txid}, tx, phase), &tx.slot));
    tx.has_slot = true;
    if (n > 1) {
      // Its copies under this node as owner, so a later takeover (this node dying too) still finds it.
      msg::PartCopy mine = c;
      mine.versions = tx.versions;
      if (a.applied) mine.flags = (mine.flags | msg::kCopyApplied) & ~msg::kCopyFrozen;  // at its own versions: completed, never asked about, by a node
                                                       // taking the chunk over from this one
      Status cs = copies_->Send(mine, n - 1, ctx_->NewDeadline(), &tx.copy_holders);
      // Fewer nodes alive than N - 1 besides this one (a takeover goes on with up to N - 1 members down): on as many
      // as there are, not on none — the holders of the old owner's copies drop them once this node holds the chunk,
      // and a second takeover after this node died found the part nowhere (simulation, seed 3833: half a commit).
      const size_t others = view_->AliveNodes().size() - 1;
      if (!cs.ok() && others > 0 && others < n - 1)
        cs = copies_->Send(mine, uint32_t(others), ctx_->NewDeadline(), &tx.copy_holders);
      if (!cs.ok()) ctx_->Log("engine: takeover: adopted " + name(a.key) + " has fewer prepare copies: " + cs.ToString());
    }
    std::lock_guard<std::mutex> l(mu_);
    if (txs_.count(a.key)) {
      (void)ctx_->pool->redo().Free(tx.slot);
      copies_->Release(a.key, tx.copy_holders);
      continue;
    }
    for (uint64_t pg : tx.pages) {
      // A page another part held here locks stays that part's (DropTxLocked passes it on when that part finishes).
      auto held = locks_.find(PageKey{ds, pg});
      if (held == locks_.end() || !txs_.count(held->second)) locks_[PageKey{ds, pg}] = a.key;
    }
    const bool tx_frozen = tx.frozen;
    txs_[a.key] = std::move(tx);
    cache_->MarkOpen(ds, MarkKey{c.committer, c.commit_id});  // its other parts may be applied elsewhere already
    if (!a.applied) out->adopted++;
    ctx_->Log("engine: takeover of dataset " + std::to_string(ds) + ": " + name(a.key) +
              (a.applied   ? " was applied at the previous owner: pages locked until its committer releases it"
               : tx_frozen ? " was prepared and frozen at the previous owner: pages locked until its participants "
                             "settle it"
                           : " was prepared at the previous owner and is in doubt: pages locked until its committer "
                             "decides"));
  }
  return Status::Ok();
}

Status Owner::CheckLease() {
  const uint64_t until = ctx_->lease_until_ms.load();
  if (until == 0) return Status::Ok();
  const uint64_t now = ctx_->time->UnixMs();
  if (now <= until) return Status::Ok();
  return Status(Code::kUnavailable, msg::kReasonLeaseLapsed,
                "node " + std::to_string(ctx_->self()) + " could not renew its membership lease (it ran out " +
                    std::to_string(now - until) +
                    " ms ago): it serves as owner again once it renews it; its chunks may have another owner by then");
}

msg::PartCopy Owner::CopyOf(const TxKey& key, const OwnerTx& tx) {
  msg::PartCopy c;
  c.committer = key.committer;
  c.txid = key.txid;
  c.dataset = tx.ds;
  c.commit_id = tx.commit_id;
  c.flags = tx.commit_id == 0 ? msg::kCopyOneShot : 0;
  // An applied part's copy says so wherever it goes (kept when its chunk moves away, reported to a takeover): read
  // as undecided where its pages sit at a bare era floor, it was adopted in doubt, and its committer's decision, still
  // driven after a restart, applied it again over later commits (simulation seed 2716 with SIM_RESTARTS_HEAVY=1: an
  // acknowledged counter went back two increments).
  if (tx.applied) c.flags |= msg::kCopyApplied;
  else if (tx.frozen) c.flags |= msg::kCopyFrozen;  // adopted frozen by a node taking the chunk over
  for (const msg::Range& r : tx.ranges) c.ranges.push_back(msg::PushRange{r.offset, r.new_bytes});
  c.versions = tx.versions;
  c.sender_epoch = tx.sender_epoch;
  return c;
}

std::vector<msg::OwnedCopy> Owner::OwnParts(uint64_t ds, uint64_t first, uint64_t count) {
  std::vector<msg::OwnedCopy> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : txs_) {
    const OwnerTx& tx = kv.second;
    if (tx.ds != ds || !tx.has_slot || tx.pages.empty()) continue;
    bool in = false;
    for (uint64_t pg : tx.pages) in = in || (pg >= first && pg - first < count);
    if (!in) continue;
    out.push_back(msg::OwnedCopy{ctx_->self(), CopyOf(kv.first, tx)});
  }
  return out;
}

bool Owner::HasPart(const TxKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  return txs_.count(key) != 0 || unrecovered_.count(key) != 0;
}

bool Owner::AddReplicaPageLocked(const DatasetState& d, uint64_t pg, ReplicaJob* job) {
  if (locks_.count(PageKey{d.info.id, pg})) return false;
  std::vector<uint8_t> data(kPageSize);
  PageMeta m;
  if (!d.store->ReadPage(pg, data.data(), &m).ok() || m.state != PageState::kOwned || m.version == 0) return false;
  job->pages.push_back(pg);
  job->versions.push_back(m.version);
  job->data.push_back(std::move(data));
  return true;
}

size_t Owner::Rereplicate(const std::vector<DatasetState>& datasets, const std::vector<uint32_t>& alive,
                          const std::vector<ChunkRef>& recovering) {
  const uint32_t self = ctx_->self();
  const std::set<uint32_t> live(alive.begin(), alive.end());
  std::set<std::pair<uint64_t, uint32_t>> skip;
  for (const ChunkRef& r : recovering) skip.insert({r.dataset_id, r.chunk});
  std::vector<ReplicaJob> jobs;
  size_t budget = kReplicasPerRound;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const DatasetState& d : datasets) {
      const uint32_t n = d.info.replicas;
      if (n < 2 || d.store == nullptr || budget == 0) continue;
      const uint64_t ds = d.info.id, total = d.store->page_count();
      if (total == 0) continue;
      uint64_t& cursor = rereplicate_cursor_[ds];
      ScanPass& pass = pass_[ds];
      const uint64_t per_chunk = std::max<uint64_t>(1, d.chunk_size / kPageSize);
      auto close_pass = [&] {
        if (pass.scanned < total) return;
        if (pass.full) replicated_through_[ds] = pass.epoch;
        pass.scanned = 0;
      };
      std::map<uint32_t, size_t> job_of;  // node -> index in jobs (this dataset)
      // Up to kScanPerRound pages looked at, each at most once a round (a page listed twice is refused).
      uint64_t covered = 0;
      for (size_t looked = 0; looked < kScanPerRound && covered < total && budget > 0; looked++) {
        close_pass();
        if (pass.scanned == 0) pass = ScanPass{ctx_->members_epoch.load(), 0, true};
        const uint64_t pg = cursor++ % total;
        pass.scanned++;
        covered++;
        uint32_t owner = 0;
        if (!ChunkOwner(d, pg, &owner) || owner != self) {  // another node's chunk: the rest of it in one step
          const uint64_t rest = std::min({std::min<uint64_t>(total, (pg / per_chunk + 1) * per_chunk) - pg - 1,
                                          total - pass.scanned, total - covered});
          cursor += rest;
          pass.scanned += rest;
          covered += rest;
          continue;
        }
        if (skip.count({ds, ChunkOf(d, pg)})) {
          pass.full = false;  // still recovering: its copies are not known yet
          continue;
        }
        const PageMeta m = d.store->GetMeta(pg);
        const PageKey k{ds, pg};
        if (m.state != PageState::kOwned || m.version == 0) continue;
        if (locks_.count(k)) {
          pass.full = false;  // a commit in flight: its copies are being made
          continue;
        }
        std::set<uint32_t> holders{self};
        auto it = cachers_.find(k);
        if (it != cachers_.end())
          for (uint32_t node : it->second)
            if (live.count(node) && CountsAsCopyLocked(k, node)) holders.insert(node);
        if (holders.size() >= n) continue;
        pass.full = false;
        size_t need = n - holders.size();
        for (uint32_t node : alive) {
          if (need == 0 || budget == 0) break;
          if (holders.count(node)) continue;
          auto j = job_of.find(node);
          if (j == job_of.end() || jobs[j->second].pages.size() >= Replicator::kMaxReplicaPages) {
            ReplicaJob job;
            job.ds = ds;
            job.node = node;
            job.check = SuspectLocked(ds, node);
            jobs.push_back(std::move(job));
            j = job_of.insert_or_assign(node, jobs.size() - 1).first;
          }
          if (!AddReplicaPageLocked(d, pg, &jobs[j->second])) break;
          need--;
          budget--;
        }
      }
      close_pass();
      cursor %= total;
    }
  }
  SettleKeptCopies(datasets, live, skip);
  size_t made = 0;
  for (ReplicaJob& job : jobs) {
    DatasetState d;
    for (const DatasetState& x : datasets)
      if (x.info.id == job.ds) d = x;
    for (int attempt = 0; attempt < 3 && !job.pages.empty(); attempt++) {
      std::vector<uint8_t> accepted;
      Status st = replicator_->SendReplicas(job.node, job.ds, job.check, job.pages, job.versions, job.data, &accepted);
      if (!st.ok()) accepted.assign(job.pages.size(), 0xFF);  // unknown: it may have installed some
      const size_t held = size_t(std::count(accepted.begin(), accepted.end(), msg::kPushHeld));
      made += held;
      if (held > 0) ctx_->Note(observe::EventKind::kRereplicated, job.node, job.ds, job.pages.front(), held);
      const std::vector<uint64_t> again = RecordReplicas(d, job, accepted, attempt == 2);
      if (!st.ok()) {
        ctx_->LogLimited("re-replication " + std::to_string(job.node),
                         "engine: re-replication of " + std::to_string(job.pages.size()) + " pages of dataset " +
                             std::to_string(job.ds) + " to node " + std::to_string(job.node) + ": " + st.ToString());
        break;
      }
      ReplicaJob next;
      next.ds = job.ds;
      next.node = job.node;
      next.check = job.check;
      {
        std::lock_guard<std::mutex> l(mu_);
        for (uint64_t pg : again)
          if (!AddReplicaPageLocked(d, pg, &next)) AddSuspectsLocked(job.ds, {job.node});  // locked by a commit now
      }
      job = std::move(next);
    }
  }
  return made;
}

void Owner::SettleKeptCopies(const std::vector<DatasetState>& datasets, const std::set<uint32_t>& live,
                             const std::set<std::pair<uint64_t, uint32_t>>& recovering) {
  const uint32_t self = ctx_->self();
  struct Mark {
    TxKey key;
    msg::PartCopy copy;
    std::vector<uint32_t> to;
  };
  std::vector<Mark> marks;
  std::vector<std::pair<TxKey, std::vector<uint32_t>>> release;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = kept_copies_.begin(); it != kept_copies_.end();) {
      const KeptCopies& k = it->second;
      const DatasetState* d = nullptr;
      for (const DatasetState& x : datasets)
        if (x.info.id == k.ds) d = &x;
      // Back at N: every page of the part owned here has N live confirmed copies (this node's included; a confirmed
      // cacher holds the current version, which includes the part). A page whose chunk left this node (handed off,
      // taken over) is its new owner's: the holders drop those copies once it settled them (CollectOrphans).
      bool back = true;
      for (uint64_t pg : k.pages) {
        if (d == nullptr || d->store == nullptr) break;  // the dataset is gone: nothing to keep
        uint32_t owner = 0;
        if (!ChunkOwner(*d, pg, &owner) || owner != self) continue;
        if (recovering.count({k.ds, ChunkOf(*d, pg)})) {
          back = false;
          break;
        }
        const PageKey pk{k.ds, pg};
        size_t n = 1;
        auto c = cachers_.find(pk);
        if (c != cachers_.end())
          for (uint32_t node : c->second) n += live.count(node) && CountsAsCopyLocked(pk, node) ? 1 : 0;
        if (n < k.replicas) {
          back = false;
          break;
        }
      }
      if (back) {
        release.push_back({it->first, k.holders});
        it = kept_copies_.erase(it);
        continue;
      }
      Mark m{it->first, k.copy, {}};
      for (uint32_t node : k.holders)
        if (!k.told.count(node) && live.count(node)) m.to.push_back(node);
      if (!m.to.empty()) marks.push_back(std::move(m));
      ++it;
    }
  }
  for (const auto& r : release) copies_->Release(r.first, r.second);
  for (const Mark& m : marks) {
    std::vector<uint32_t> told;
    copies_->Mark(m.copy, msg::kCopyApplied, m.to, ctx_->NewDeadline(), &told);
    std::lock_guard<std::mutex> l(mu_);
    auto it = kept_copies_.find(m.key);
    if (it != kept_copies_.end()) it->second.told.insert(told.begin(), told.end());
  }
}

std::vector<uint64_t> Owner::RecordReplicas(const DatasetState& d, const ReplicaJob& job,
                                            const std::vector<uint8_t>& accepted, bool last_try) {
  std::vector<uint64_t> again;
  std::lock_guard<std::mutex> l(mu_);
  for (size_t i = 0; i < job.pages.size() && i < accepted.size(); i++) {
    const PageKey k{job.ds, job.pages[i]};
    if (accepted[i] == msg::kPushNotHeld) continue;  // refused (it holds the page as owner, or does not load it)
    // Held, or unknown (its message failed: it may have installed the replica): a cacher from now on, so every later
    // commit of the page pushes to it.
    std::set<uint32_t>& cs = cachers_[k];
    const bool was_cacher = cs.count(job.node) != 0;
    cs.insert(job.node);
    if (!was_cacher) replica_only_[k].insert(job.node);
    if (accepted[i] != msg::kPushHeld) {
      unconfirmed_[k].insert(job.node);
      continue;
    }
    // A commit that changed the page while the replica was in flight may have computed its push targets before the
    // node was a cacher: the node may hold the older version. Send the current page again; after the last try the
    // node is told to check its copies instead.
    if (locks_.count(k) || d.store->GetMeta(job.pages[i]).version != job.versions[i]) {
      if (last_try) AddSuspectsLocked(job.ds, {job.node});
      else again.push_back(job.pages[i]);
    } else {
      ConfirmLocked(k, {job.node});
    }
  }
  return again;
}

uint64_t Owner::ReplicatedThrough(const std::vector<DatasetState>& datasets) {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t through = UINT64_MAX;
  for (const DatasetState& d : datasets) {
    if (d.info.replicas < 2 || d.store == nullptr) continue;
    auto it = replicated_through_.find(d.info.id);
    through = std::min<uint64_t>(through, it == replicated_through_.end() ? 0 : it->second);
  }
  return through == UINT64_MAX ? ctx_->members_epoch.load() : through;
}

void Owner::ForgetHolder(uint32_t node) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& kv : cachers_) kv.second.erase(node);
  for (auto& kv : replica_only_) kv.second.erase(node);
  for (auto& kv : unconfirmed_) kv.second.erase(node);
}

void Owner::ConfirmLocked(const PageKey& k, const std::set<uint32_t>& nodes) {
  auto it = unconfirmed_.find(k);
  if (it == unconfirmed_.end()) return;
  for (uint32_t node : nodes) it->second.erase(node);
  if (it->second.empty()) unconfirmed_.erase(it);
}

bool Owner::CountsAsCopyLocked(const PageKey& k, uint32_t node) const {
  auto it = unconfirmed_.find(k);
  return it == unconfirmed_.end() || it->second.count(node) == 0;
}

size_t Owner::LockedPages() {
  std::lock_guard<std::mutex> l(mu_);
  BreakExpiredLocked();
  return locks_.size();
}

void Owner::ChunkHolders(const DatasetState& d, uint64_t first, uint64_t count, const std::set<uint32_t>& alive,
                         uint32_t wanted, ChunkStat* out) {
  const uint64_t ds = d.info.id;
  std::lock_guard<std::mutex> l(mu_);
  std::set<uint32_t> committed, redundant, down;
  uint32_t min_copies = UINT32_MAX, min_written = UINT32_MAX;
  // Every page that is written here or has a recorded holder counts: a written page nobody else holds (a chunk just
  // taken over, whose copies re-replication has not made yet) has one copy, the owner's. Counting only pages with
  // holders showed such a chunk as fully replicated once half of it was copied.
  static const std::set<uint32_t> kNoHolders;
  auto count_page = [&](uint64_t page, const std::set<uint32_t>& holders) {
    const PageKey key{ds, page};
    auto ro = replica_only_.find(key);
    uint32_t live = 1;  // the owner
    for (uint32_t node : holders) {
      if (!alive.count(node)) {
        down.insert(node);  // a copy on a node declared dead is no copy until it is back and checked
        continue;
      }
      if (!CountsAsCopyLocked(key, node)) continue;  // its last push or replica failed: no confirmed copy
      live++;
      if (ro != replica_only_.end() && ro->second.count(node)) redundant.insert(node);
      else committed.insert(node);
    }
    min_copies = std::min(min_copies, live);
    if (d.store != nullptr && d.store->GetMeta(page).version > 0) min_written = std::min(min_written, live);
  };
  auto it = cachers_.lower_bound(PageKey{ds, first});
  const auto hi = cachers_.lower_bound(PageKey{ds, first + count});
  if (d.store == nullptr) {
    for (; it != hi; ++it) count_page(it->first.page, it->second);
  } else {
    // The pages with holders and the pages written here, merged in page order (untouched pages count for nothing).
    const uint64_t end = std::min<uint64_t>(first + count, d.store->page_count());
    const std::vector<std::pair<uint64_t, PageMeta>> written = d.store->WrittenPages(first, end);
    auto w = written.begin();
    while (true) {
      while (w != written.end() && w->second.version == 0) ++w;
      const bool more_held = it != hi && it->first.page < end;
      if (!more_held && w == written.end()) break;
      if (more_held && (w == written.end() || it->first.page <= w->first)) {
        if (w != written.end() && w->first == it->first.page) ++w;
        count_page(it->first.page, it->second);
        ++it;
      } else {
        count_page(w->first, kNoHolders);
        ++w;
      }
    }
  }
  for (uint32_t node : committed) redundant.erase(node);
  out->committed_holders.assign(committed.begin(), committed.end());
  out->redundant_holders.assign(redundant.begin(), redundant.end());
  out->down_holders.assign(down.begin(), down.end());
  out->replica_count = min_copies == UINT32_MAX ? 1 : min_copies;
  out->replicas_wanted = wanted;
  out->under_replicated = min_written != UINT32_MAX && min_written < wanted;
}

// ---------------------------------------------------------------------------------------------------------------
// Handoff (docs/design/availability.md "Handoff")

Status Owner::CheckServes(const DatasetState& d, uint64_t page) {
  const uint32_t self = ctx_->self();
  uint32_t owner = 0;
  if (!ChunkOwner(d, page, &owner) || owner != self)
    return Status(Code::kUnavailable, msg::kReasonNotOwner,
                  "node " + std::to_string(self) + " does not own " + PageName(d.info.id, page) +
                      (owner ? " (its chunk map names node " + std::to_string(owner) + "): retry there" : ""));
  return Status::Ok();
}

Status Owner::CheckGeneration(const DatasetState& d, uint64_t sender_generation) {
  if (sender_generation <= d.info.generation) return Status::Ok();
  return Status(Code::kUnavailable, msg::kReasonMapBehind,
                "node " + std::to_string(ctx_->self()) + " has generation " + std::to_string(d.info.generation) +
                    " of the chunk map of dataset " + std::to_string(d.info.id) + ", the sender routed by generation " +
                    std::to_string(sender_generation) + ": retry once it has loaded it");
}

Status Owner::MovingLocked(const DatasetState& d, uint64_t page) const {
  if (moving_.empty() && lost_.empty()) return Status::Ok();
  const uint32_t self = ctx_->self();
  const ChunkRef ref{d.info.id, ChunkOf(d, page)};
  if (lost_.count(ref))
    return Status(Code::kUnavailable, msg::kReasonNotOwner,
                  "chunk " + std::to_string(ref.chunk) + " of dataset " + std::to_string(ref.dataset_id) +
                      " has moved away from node " + std::to_string(self) + ": retry on the new chunk map");
  auto it = moving_.find(ref);
  if (it == moving_.end()) return Status::Ok();
  return Status(Code::kUnavailable, msg::kReasonChunkMoving,
                "chunk " + std::to_string(it->chunk) + " of dataset " + std::to_string(it->dataset_id) +
                    " is being handed off by node " + std::to_string(self) + ": retry");
}

Status Owner::HandOff(const DatasetState& d, uint32_t chunk, uint32_t target, Deadline deadline, size_t* pages_sent) {
  *pages_sent = 0;
  const uint64_t ds = d.info.id;
  const uint64_t per_chunk = d.chunk_size / kPageSize;
  const uint64_t first = uint64_t(chunk) * per_chunk;
  if (d.store == nullptr || first >= d.store->page_count())
    return Status(Code::kOutOfRange, "dataset " + std::to_string(ds) + " has no chunk " + std::to_string(chunk));
  const uint64_t end = std::min<uint64_t>(first + per_chunk, d.store->page_count());
  uint32_t owner = 0;
  if (!ChunkOwner(d, first, &owner) || owner != ctx_->self())
    return Status(Code::kFailedPrecondition, "node " + std::to_string(ctx_->self()) + " does not own chunk " +
                                                 std::to_string(chunk) + " of dataset " + std::to_string(ds));
  HOTPOT_RETURN_IF_ERROR(view_->CheckServable(d, first));
  if (target == ctx_->self() || !view_->IsAlive(target))
    return Status(Code::kFailedPrecondition, "handoff target node " + std::to_string(target) + " is not alive");
  const ChunkRef ref{ds, chunk};
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!moving_.insert(ref).second)
      return Status(Code::kAlreadyExists, "chunk " + std::to_string(chunk) + " of dataset " + std::to_string(ds) +
                                              " is already being handed off");
  }
  // From here no PREPARE and no FETCH of the chunk is accepted; the parts already prepared finish (their committers
  // drive them), so wait until none holds a page of the chunk.
  auto fail = [&](const Status& st) {
    EndHandOff(ref);
    return st;
  };
  Backoff backoff(ctx_->time, std::chrono::milliseconds(1), std::chrono::milliseconds(50), deadline, false);
  for (;;) {
    bool busy = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      BreakExpiredLocked();
      auto it = locks_.lower_bound(PageKey{ds, first});
      busy = it != locks_.end() && it->first.ds == ds && it->first.page < end;
    }
    if (!busy) break;
    if (!backoff.Wait())
      return fail(Status(Code::kDeadlineExceeded, "chunk " + std::to_string(chunk) + " of dataset " +
                                                      std::to_string(ds) + ": a commit still holds its pages"));
  }
  // Every written page, whole and at its version, to the target (it installs each over an older copy and keeps a
  // copy at that version or newer: it must answer "held" for all). No commit can change them now.
  std::vector<uint64_t> pages, versions;
  std::vector<std::vector<uint8_t>> data;
  for (uint64_t pg = first; pg < end; pg++) {
    const PageMeta m = d.store->GetMeta(pg);
    // Never served from here: nobody can hold a copy. A page served as zeros (version 0) goes too: the target must
    // not take it for a page nobody holds, whose pushes go to no one (simulation with handoffs, seed 113).
    if (m.state == PageState::kAbsent) continue;
    std::vector<uint8_t> bytes(kPageSize);
    PageMeta rm;
    Status st = d.store->ReadPage(pg, bytes.data(), &rm);
    if (!st.ok()) return fail(st);
    pages.push_back(pg);
    versions.push_back(rm.version);
    data.push_back(std::move(bytes));
  }
  // Sends pages [idx...] to `node`, 256 per message; every one must be held there.
  auto send = [&](uint32_t node, const std::vector<size_t>& idx) -> Status {
    for (size_t at = 0; at < idx.size(); at += Replicator::kMaxReplicaPages) {
      if (ctx_->time->Now() > deadline) return Status(Code::kDeadlineExceeded, "out of time");
      std::vector<uint64_t> bp, bv;
      std::vector<std::vector<uint8_t>> bd;
      for (size_t k = at; k < idx.size() && k < at + Replicator::kMaxReplicaPages; k++) {
        bp.push_back(pages[idx[k]]);
        bv.push_back(versions[idx[k]]);
        bd.push_back(data[idx[k]]);
      }
      // A node that missed a push of this dataset from here is told to check its copies, as re-replication does: a
      // current page installed next to its stale ones showed half of a commit (simulation seed 433 with frequent
      // planned restarts: a failed handoff's top-up reached the node, and the owner then restarted and forgot).
      bool check = false;
      {
        std::lock_guard<std::mutex> l(mu_);
        check = SuspectLocked(ds, node);
      }
      std::vector<uint8_t> accepted;
      const Status sent = replicator_->SendReplicas(node, ds, check, bp, bv, bd, &accepted);
      {
        // The node may hold these pages now (all of them if it answered): if the handoff is abandoned, later commits
        // must push to it like to any cacher, and only an answered "held" counts as a copy.
        std::lock_guard<std::mutex> l(mu_);
        for (size_t k = 0; k < bp.size(); k++) {
          const PageKey key{ds, bp[k]};
          cachers_[key].insert(node);
          if (!sent.ok() || k >= accepted.size() || accepted[k] != msg::kPushHeld) unconfirmed_[key].insert(node);
        }
      }
      HOTPOT_RETURN_IF_ERROR(sent);
      for (size_t k = 0; k < bp.size(); k++)
        if (k >= accepted.size() || accepted[k] != msg::kPushHeld)
          return Status(Code::kUnavailable, "node " + std::to_string(node) + " did not take " + PageName(ds, bp[k]));
    }
    return Status::Ok();
  };
  std::vector<size_t> all(pages.size());
  for (size_t i = 0; i < all.size(); i++) all[i] = i;
  Status st = send(target, all);
  if (!st.ok()) return fail(st.Prefixed("handoff of chunk " + std::to_string(chunk) + " to node " +
                                        std::to_string(target) + ": "));
  *pages_sent = pages.size();
  // The target holds the chunk and may own it before this node hears so: its commits then push to pages still owned
  // here, and an owned page takes no push. Snapshot reads here wait until this node's copies are checked once the
  // handoff has ended (EndHandOff; the resolver keeps the mark while it runs). Before, a snapshot read on a node
  // stopping with SIGTERM summed a stale page of a chunk being handed off next to current ones (chaos).
  cache_->Missed(ds);
  // Copies without this node (it is about to stop): the target plus the live holders recorded here; below N, more
  // live nodes get a replica now, so the chunk keeps N copies once this node has left.
  const uint32_t n = d.info.replicas;
  std::map<uint32_t, std::vector<size_t>> topup;
  if (n >= 2) {
    const std::vector<uint32_t> alive = view_->AliveNodes();
    const std::set<uint32_t> live(alive.begin(), alive.end());
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < pages.size(); i++) {
      const PageKey k{ds, pages[i]};
      std::set<uint32_t> holders{target};
      auto it = cachers_.find(k);
      if (it != cachers_.end())
        for (uint32_t node : it->second)
          if (node != ctx_->self() && live.count(node) && CountsAsCopyLocked(k, node)) holders.insert(node);
      for (uint32_t node : alive) {
        if (holders.size() >= n) break;
        if (node == ctx_->self() || holders.count(node)) continue;
        holders.insert(node);
        topup[node].push_back(i);
      }
    }
  }
  for (const auto& kv : topup) {
    st = send(kv.first, kv.second);
    if (!st.ok()) return fail(st.Prefixed("handoff of chunk " + std::to_string(chunk) + ", copies to node " +
                                          std::to_string(kv.first) + ": "));
    *pages_sent += kv.second.size();
  }
  return Status::Ok();  // still refusing: the caller moves the chunk at the dispatcher, then EndHandOff
}

void Owner::EndHandOff(const ChunkRef& ref) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (moving_.erase(ref) == 0) return;
  }
  // Moved or served here again: the copies are checked (with the new owner, or not at all for pages owned here) and
  // the mark HandOff put up goes once no other chunk of the dataset is moving.
  cache_->Missed(ref.dataset_id);
}

void Owner::LoseChunk(const ChunkRef& ref) {
  std::lock_guard<std::mutex> l(mu_);
  lost_.insert(ref);
}

void Owner::GainChunk(const ChunkRef& ref) {
  std::lock_guard<std::mutex> l(mu_);
  lost_.erase(ref);
}

bool Owner::HandingOff(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  for (const ChunkRef& r : moving_)
    if (r.dataset_id == ds) return true;
  return false;
}

void Owner::ForgetChunk(uint64_t ds, uint64_t first, uint64_t count) {
  // Parts still prepared here in the chunk (it failed over while this node was alive but cut off): the new owner
  // settles them from their prepare copies; this node keeps each as a copy of its own until then and applies none.
  std::vector<std::pair<TxKey, OwnerTx>> moved;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : txs_) {
      bool in = false;
      for (uint64_t pg : kv.second.pages) in = in || (pg >= first && pg - first < count);
      for (uint64_t pg : kv.second.read_pages) in = in || (pg >= first && pg - first < count);
      if (kv.second.ds == ds && in) moved.push_back(kv);
    }
  }
  for (auto& m : moved) {
    const OwnerTx& tx = m.second;
    if (tx.has_slot && !tx.pages.empty()) {
      Status st = copies_->Keep(ctx_->self(), CopyOf(m.first, tx));
      ctx_->Log("engine: tx " + std::to_string(m.first.txid) + " from node " + std::to_string(m.first.committer) +
                " was prepared here in a chunk another node owns now: " +
                (st.ok() ? "kept as a prepare copy for it" : "could not be kept: " + st.ToString()));
    }
    std::lock_guard<std::mutex> l(mu_);
    auto it = txs_.find(m.first);
    if (it != txs_.end()) DropTxLocked(m.first, &it->second, true);
  }
  std::lock_guard<std::mutex> l(mu_);
  const PageKey lo{ds, first}, hi{ds, first + count};
  auto erase_range = [&](auto& m) { m.erase(m.lower_bound(lo), m.lower_bound(hi)); };
  erase_range(cachers_);
  erase_range(replica_only_);
  erase_range(unconfirmed_);
  erase_range(fence_);
  erase_range(issued_);
  cachers_known_.erase(cachers_known_.lower_bound(lo), cachers_known_.lower_bound(hi));
}

}  // namespace engine
}  // namespace hotpot
