#include "engine/committer.h"

#include <algorithm>

#include "engine/fan_out.h"
#include "engine/lease.h"

namespace hotpot {
namespace engine {

namespace {
constexpr size_t kMaxReadPages = size_t(1) << 20;
bool Applied(const Status& st) { return st.ok(); }
bool AllTrue(const std::vector<bool>& v) { return std::all_of(v.begin(), v.end(), [](bool b) { return b; }); }
}  // namespace

void Committer::Recover() {
  // Txids are never reused across restarts (an owner may still hold a prepared part of a pre-crash commit): the
  // 40-bit counter starts from the clock in microseconds.
  next_txid_.store((ctx_->time->UnixMs() * 1000) & ((uint64_t(1) << 40) - 1));
  std::lock_guard<std::mutex> l(mu_);
  for (auto& kv : ctx_->pool->redo().InFlight()) {
    if (kv.second.phase != pool::RedoPhase::kDecided) continue;
    auto dec = std::make_shared<Decision>();
    dec->ds = kv.second.dataset_id;
    dec->parts = kv.second.parts;
    dec->applied.assign(dec->parts.size(), false);
    dec->done.assign(dec->parts.size(), false);
    dec->short_copies.assign(dec->parts.size(), true);  // not known: waits for each owner's copies to be released
    dec->slot = kv.first;
    dec->has_slot = true;
    dec->commit_id = kv.second.txid;
    dec->done_everywhere = true;  // the nodes its parts marked before the restart are not known
    for (const pool::RedoPart& part : dec->parts) decisions_[part.txid] = dec;
    ctx_->Log("engine: commit decision of tx " + std::to_string(kv.second.txid) + " (" +
              std::to_string(dec->parts.size()) + " parts) recovered: completing it");
  }
}

Status Committer::CheckLeaseFloor(const std::vector<uint8_t>& lease) const {
  const uint64_t floor = ctx_->mrsw_lease_floor.load();
  if (floor == 0) return Status::Ok();
  LeaseCert cert;
  HOTPOT_RETURN_IF_ERROR(DecodeLease(lease, ctx_->opt.cluster_secret, &cert));
  if (cert.epoch >= floor) return Status::Ok();
  return Status(Code::kFailedPrecondition,
                "the MRSW lease (fencing epoch " + std::to_string(cert.epoch) + ") ended when node " +
                    std::to_string(ctx_->self()) +
                    " was declared dead or restarted (leases below epoch " + std::to_string(floor) +
                    " are void): acquire again");
}

uint64_t Committer::NewTxid() {
  return (uint64_t(ctx_->self()) << 40) | (next_txid_.fetch_add(1) & ((uint64_t(1) << 40) - 1));
}

Status Committer::Commit(uint64_t session, const std::vector<DirtyPage>& pages, uint32_t replicas,
                         const CommitExtras& extras, CommitResult* result) {
  *result = CommitResult{};
  uint64_t ds = 0;
  HOTPOT_RETURN_IF_ERROR(cache_->SessionDataset(session, &ds));
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));
  uint32_t n = replicas ? replicas : d.info.replicas;
  if (n == 0) n = 1;
  if (!extras.lease.empty()) HOTPOT_RETURN_IF_ERROR(CheckLeaseFloor(extras.lease));
  // A chunk being handed off, or moved since this node's chunk map was loaded, is refused by the node asked
  // (kReasonNotOwner / kReasonChunkMoving) with nothing prepared anywhere: plan again on the current map and retry,
  // within one request timeout or the owner wait (below), whichever is longer (as Fetcher::EnsurePages): a new owner
  // found after waiting may still be loading the map that names it.
  Backoff rerouting(ctx_->time, std::chrono::milliseconds(5), std::chrono::milliseconds(100),
                    ctx_->time->Now() + std::max<std::chrono::nanoseconds>(ctx_->opt.request_timeout,
                                                                           ctx_->opt.owner_wait),
                    false);
  // An owner that is not alive, could not be reached (its PREPARE never left: killed a moment ago and not declared
  // dead yet, restarting) or is taking its chunk over (kReasonChunkRecovering) has prepared nothing: the commit waits
  // for it — or for the owner the chunk map names next, once the failover is published — within the owner wait
  // (EngineOptions::owner_wait), as a page fault does (Fetcher::EnsurePages), planning again on the current map each
  // time. With several owners the attempt's other parts were aborted first (MultiPart decided abort: presumed for
  // any it could not reach), so a new attempt, with new txids, can apply nothing of it. At least 1.5 s: an owner the
  // membership shows not alive may have handed the chunk off just before it left (the chunk map that says so can
  // arrive after the membership change). Before, a commit failed at once and the app retried; a PREPARE that never
  // left was even settled like a lost one (OneShot), answered "outcome unknown" seconds later.
  Backoff wait_owner(ctx_->time, std::chrono::milliseconds(5), std::chrono::milliseconds(200),
                     ctx_->time->Now() + std::max<std::chrono::milliseconds>(ctx_->opt.owner_wait,
                                                                             std::chrono::milliseconds(1500)),
                     false);
  Status st;
  for (bool again = false;; again = true) {
    *result = CommitResult{};
    result->pages = pages.size();
    std::vector<plan::Part> parts;
    if (again) HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));  // a retry routes by the map loaded since
    HOTPOT_RETURN_IF_ERROR(Plan(session, d, pages, extras, &parts, result));
    if (parts.empty()) {
      cache_->ResyncSession(session);
      result->copies = n;
      result->replicas = n;
      return Status::Ok();
    }
    observe::StartPhase("hotpot.commit.route");
    uint32_t dead_owner = 0;
    for (const plan::Part& part : parts)
      if (!view_->IsAlive(part.owner)) dead_owner = part.owner;
    if (dead_owner != 0) {
      if (wait_owner.Wait()) continue;
      ctx_->counters.commit_aborts++;
      return Status(Code::kUnavailable, "commit to dataset " + std::to_string(ds) + ": owner node " +
                                            std::to_string(dead_owner) + " is not alive");
    }
    for (plan::Part& part : parts) {
      if (!part.req.ranges.empty()) part.req.lease = extras.lease;
      part.req.txid = NewTxid();
      part.req.dataset = ds;
      part.req.replicas = n;
      part.req.generation = d.info.generation;
      part.req.flags = parts.size() == 1 ? msg::kPrepareOneShot : 0;
    }
    if (parts.size() > 1)
      for (plan::Part& part : parts) part.req.commit_id = parts[0].req.txid;
    st = parts.size() == 1 ? OneShot(&parts[0], result) : MultiPart(d, &parts, n, result);
    if (msg::Rerouted(st.reason()) && rerouting.Wait()) continue;
    // kReasonChunkRecovering of a one-shot part from another node comes back only with "nothing was applied"
    // (SettleOneShot asked: the owner may refuse at its commit point too, after its prepare copies were made); from
    // this node's own owner it may come either way, so that is not retried. A part of several refused it at PREPARE,
    // before any decision.
    const bool owner_away =
        st.reason() == transport::kReasonNotSent ||
        (st.reason() == msg::kReasonChunkRecovering && (parts.size() > 1 || parts[0].owner != ctx_->self()));
    if (owner_away && wait_owner.Wait()) continue;
    break;
  }
  if (!st.ok()) {
    ctx_->counters.commit_aborts++;
    if (st.code() == Code::kAborted) {
      ctx_->counters.conflicts += result->conflicts.size();
      RefreshConflicts(d, *result);
    }
    return st;
  }
  ctx_->counters.commits++;
  result->replicas = n;
  if (result->copies < n) {
    // Applied and visible, short of copies (a push failed after the commit point): a typed outcome, not an error;
    // the owners' re-replication tops the pages up to N in the background.
    result->under_replicated = true;
    ctx_->counters.commits_under_replicated++;
  }
  cache_->ResyncSession(session);
  return Status::Ok();
}

Status Committer::Plan(uint64_t session, const DatasetState& d, const std::vector<DirtyPage>& pages,
                       const CommitExtras& extras, std::vector<plan::Part>* parts, CommitResult* result) {
  const uint64_t ds = d.info.id;
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  std::map<uint64_t, uint64_t> mrsw_bases;  // MRSW: written page -> its base version
  std::vector<uint8_t> base(kPageSize);
  for (const DirtyPage& dp : pages) {
    if (dp.data.size() != kPageSize)
      return Status(Code::kInvalidArgument, "dirty page " + std::to_string(dp.page) + " is not 4096 bytes");
    if (dp.page >= d.store->page_count())
      return Status(Code::kOutOfRange, "dirty " + PageName(ds, dp.page) + " beyond the dataset end");
    uint32_t owner = 0;
    if (!ChunkOwner(d, dp.page, &owner))
      return Status(Code::kFailedPrecondition, PageName(ds, dp.page) + ": chunk has no owner in the chunk map");
    uint64_t base_version = 0;
    HOTPOT_RETURN_IF_ERROR(cache_->BaseImage(session, d, dp.page, base.data(), &base_version));
    // MRSW commits skip the owner's byte check, so the owner compares the base version of every written page with
    // its own instead: a holder whose node missed a commit (a stale copy) is refused, never silently overwriting it.
    if (d.info.mode == Mode::kMrsw) mrsw_bases[dp.page] = base_version;
    for (msg::Range& r : plan::DiffPage(dp.page, base.data(), dp.data.data(), kPageSize)) {
      result->ranges++;
      result->bytes += r.len();
      by_owner[owner].push_back(std::move(r));
    }
  }
  // Read validation: each read range, split at page boundaries, is checked against the version of the page's base
  // image (what the process saw since its sync point).
  std::map<uint32_t, std::vector<msg::ReadCheck>> reads_by_owner;
  size_t nreads = 0;
  for (const ReadRange& rr : extras.reads) {
    if (rr.len == 0 || rr.offset >= d.info.size_bytes || rr.len > d.info.size_bytes - rr.offset)
      return Status(Code::kOutOfRange, "read range " + std::to_string(rr.offset) + "+" + std::to_string(rr.len) +
                                           " is outside dataset " + std::to_string(ds));
    for (const plan::ReadPiece& piece : plan::SplitAtPages(rr.offset, rr.len, kPageSize)) {
      if (++nreads > kMaxReadPages)
        return Status(Code::kInvalidArgument, "more than 1048576 read pages in one commit");
      uint32_t owner = 0;
      if (!ChunkOwner(d, piece.page, &owner))
        return Status(Code::kFailedPrecondition, PageName(ds, piece.page) + ": chunk has no owner in the chunk map");
      // A page the process never touched has no base yet: fetch it (its base is then the current version).
      if (d.store->GetMeta(piece.page).state == PageState::kAbsent)
        HOTPOT_RETURN_IF_ERROR(fetcher_->EnsurePages(ds, piece.page, 1));
      uint64_t version = 0;
      HOTPOT_RETURN_IF_ERROR(cache_->BaseImage(session, d, piece.page, base.data(), &version));
      reads_by_owner[owner].push_back(msg::ReadCheck{piece.offset, piece.len, version});
    }
  }
  if (by_owner.empty() && reads_by_owner.empty()) return Status::Ok();
  *parts = plan::GroupParts(std::move(by_owner), reads_by_owner, mrsw_bases, kPageSize);
  return Status::Ok();
}

Status Committer::OneShot(plan::Part* part, CommitResult* result) {
  // One owner: prepare + apply + release in one round trip.
  observe::StartPhase("hotpot.commit.one_shot");
  std::vector<msg::Conflict> conflicts;
  uint32_t copies = 0;
  // The owner aborts instead of applying if it gets to apply after we stopped waiting.
  part->req.deadline_unix_ms = ctx_->DeadlineUnixMs();
  Status st = CallPrepare(part->owner, part->req, &copies, &conflicts);
  // Never sent (no connection to the owner could be made: killed, restarting, cut off), or refused because this node
  // is fenced (declared dead) or routed by another map: the owner prepared nothing, there is nothing to settle. Before,
  // a PREPARE that never left was settled like a lost one — ABORT asked until the owner was declared dead — and the
  // commit failed seconds later with "outcome unknown".
  if (st.reason() == transport::kReasonNotSent)
    return Status(st.code(), st.reason(),
                  "commit to node " + std::to_string(part->owner) + ": " + st.message() +
                      "; the PREPARE was never sent, so nothing was applied");
  const bool refused =
      st.reason() == msg::kReasonFenced || st.reason() == msg::kReasonEpochAhead || msg::Rerouted(st.reason());
  if (!st.ok() && st.code() != Code::kAborted && part->owner != ctx_->self() && !refused) {
    // Without a conflict answer (a timeout, a lost connection, or an error answer) the owner may have prepared, even
    // applied. ABORT settles it, so an error from commit() says whether anything was applied, and DEADLINE_EXCEEDED
    // always means nothing was (docs/design/consistency.md "Timeouts").
    st = SettleOneShot(part->owner, part->req.txid, st, &copies);
  }
  for (const auto& c : conflicts) result->conflicts.push_back({c.offset, c.len});
  if (st.ok()) result->copies = copies;
  return st;
}

Status Committer::MultiPart(const DatasetState& d, std::vector<plan::Part>* parts, uint32_t n, CommitResult* result) {
  // Several owners (or parts): PREPARE all, decide, APPLY all, then RELEASE all.
  auto set_outcome = [&](msg::OutcomeCode outcome) {
    std::lock_guard<std::mutex> l(mu_);
    for (const plan::Part& part : *parts) in_flight_[part.req.txid] = outcome;
  };
  // Registered before any PREPARE leaves: an owner asking about a part meanwhile hears "pending".
  set_outcome(msg::OutcomeCode::kPending);
  // Before any PREPARE leaves: its participants may settle the commit without us only once we were declared dead.
  const uint64_t lapses = ctx_->lease_lapses.load();
  observe::StartPhase("hotpot.commit.prepare");
  // Every PREPARE at once (FanOut): the parts are independent until the decision, and a commit over k owners then
  // waits about one PREPARE instead of k.
  struct Prepared {
    Status st;
    std::vector<msg::Conflict> conflicts;
  };
  std::vector<Prepared> answers(parts->size());
  // The owner refuses a PREPARE that arrives after we stop waiting for it (nothing then applies).
  for (plan::Part& part : *parts) part.req.deadline_unix_ms = ctx_->DeadlineUnixMs();
  RunSteps(ctx_->fan(), parts->size(), [&](size_t i) {
    uint32_t ignored = 0;
    answers[i].st = CallPrepare((*parts)[i].owner, (*parts)[i].req, &ignored, &answers[i].conflicts);
  });
  std::vector<const plan::Part*> prepared;
  Status first_error;
  for (size_t i = 0; i < parts->size(); i++) {
    const Status& st = answers[i].st;
    if (st.ok()) {
      prepared.push_back(&(*parts)[i]);
      continue;
    }
    for (const auto& c : answers[i].conflicts) result->conflicts.push_back({c.offset, c.len});
    // May have prepared before timing out; a refusal of a fenced node, or a PREPARE never sent, prepared nothing.
    if (st.code() != Code::kAborted && st.reason() != msg::kReasonFenced && st.reason() != msg::kReasonEpochAhead &&
        !msg::Rerouted(st.reason()) && st.reason() != transport::kReasonNotSent)
      prepared.push_back(&(*parts)[i]);
    if (first_error.ok()) first_error = st;  // in part order, as when they were sent one after another
  }
  auto abort_all = [&](const Status& why) {
    set_outcome(msg::OutcomeCode::kAborted);  // an owner asking now hears "aborted", never "pending"
    for (const plan::Part* part : prepared) {
      uint32_t ignored = 0;
      (void)CallTx(part->owner, msg::kAbort, part->req.txid, &ignored);
    }
    std::lock_guard<std::mutex> l(mu_);
    for (const plan::Part& part : *parts) in_flight_.erase(part.req.txid);
    return why;
  };
  if (first_error.reason() == transport::kReasonNotSent)
    first_error = Status(first_error.code(), first_error.reason(),
                         "commit over " + std::to_string(parts->size()) + " parts: " + first_error.message() +
                             "; that PREPARE was never sent, the others were aborted: nothing was applied");
  if (!first_error.ok()) return abort_all(first_error);
  ctx_->Fault(FaultPoint::kCommitBeforeDecision);
  // Every part is prepared: the decision is COMMIT and is never taken back. With two or more writing parts it is made
  // durable first (one redo record here): an owner that restarts, or whose part nobody finishes, asks us and applies.
  // With one writing part (others only validate reads) presumed abort is safe: no other part applies.
  auto dec = std::make_shared<Decision>();
  dec->ds = d.info.id;
  dec->lease_lapses = lapses;
  size_t writers = 0;
  for (const plan::Part& part : *parts) {
    // The part's first page: should its chunk fail over, the resolver finds the new owner through the chunk map.
    const uint64_t first = !part.req.ranges.empty() ? part.req.ranges.front().offset
                                                    : (part.req.reads.empty() ? 0 : part.req.reads.front().offset);
    dec->parts.push_back(pool::RedoPart{part.owner, part.req.txid, uint32_t(first / kPageSize + 1)});
    if (!part.req.ranges.empty()) writers++;
  }
  dec->applied.assign(parts->size(), false);
  dec->done.assign(parts->size(), false);
  dec->short_copies.assign(parts->size(), false);
  dec->commit_id = (*parts)[0].req.txid;
  if (writers >= 2) {
    observe::StartPhase("hotpot.commit.decide");
    pool::RedoRecord rec;
    rec.txid = dec->commit_id;
    rec.dataset_id = d.info.id;
    rec.committer_node_id = ctx_->self();
    rec.phase = pool::RedoPhase::kDecided;
    rec.parts = dec->parts;
    Status st = ctx_->pool->redo().Append(rec, &dec->slot);
    if (!st.ok()) return abort_all(st.Prefixed("commit decision could not be recorded: "));
    dec->has_slot = true;
  }
  set_outcome(msg::OutcomeCode::kCommitted);
  ctx_->Fault(FaultPoint::kCommitAfterDecision);
  Status st = ApplyAll(*parts, n, dec.get(), result);
  const bool all_done = AllTrue(dec->done);
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const plan::Part& part : *parts) {
      in_flight_.erase(part.req.txid);
      if (!all_done) decisions_[part.req.txid] = dec;  // the resolver finishes it
    }
  }
  if (all_done && dec->has_slot) (void)ctx_->pool->redo().Free(dec->slot);
  if (!all_done && ctx_->wake_resolver) ctx_->wake_resolver();
  return st;
}

Status Committer::ApplyAll(const std::vector<plan::Part>& parts, uint32_t n, Decision* dec, CommitResult* result) {
  observe::StartPhase("hotpot.commit.apply");
  // APPLY cannot fail for validation reasons after PREPARE; a lost message or a busy owner is retried until the owner
  // answers, is declared dead, or 3 x the request timeout passes. A part left unapplied stays prepared and locked at
  // its owner (never released by us): the resolver here re-drives it and the owner asks us, so it is applied when its
  // owner is reachable again.
  uint32_t min_copies = UINT32_MAX;
  Status apply_error;
  std::vector<bool> applied(parts.size(), false);
  const Deadline budget_end = ctx_->time->Now() + 3 * ctx_->opt.request_timeout;
  // Every APPLY at once (FanOut), as the PREPAREs: the decision is durable, so any subset of parts applied is one the
  // resolver completes.
  struct Answer {
    Status st;
    uint32_t copies = 0;
    std::vector<msg::MarkedNodes> marked;  // of every attempt
  };
  std::vector<Answer> answers(parts.size());
  RunSteps(ctx_->fan(), parts.size(), [&](size_t i) {
    const plan::Part& part = parts[i];
    Answer& a = answers[i];
    Backoff backoff(ctx_->time, std::chrono::milliseconds(2), std::chrono::milliseconds(128), budget_end, false);
    for (;;) {
      a.marked.emplace_back();
      a.st = CallTx(part.owner, msg::kApply, part.req.txid, &a.copies, &a.marked.back());
      // Applied (maybe short of copies: reported after applying the rest), or no such part at the owner: it already
      // asked us and applied it (owners drop a writing part only when its committer says aborted).
      if (Applied(a.st) || a.st.reason() == msg::kReasonNotPrepared) break;
      // Frozen: its participants settle the commit (this node was declared dead meanwhile); asking again is useless.
      if (a.st.reason() == msg::kReasonFrozen) break;
      if (!view_->IsAlive(part.owner) || !backoff.Wait()) break;
    }
    // With a fault point armed the steps run one after another (Context::fan), so the others are not applied yet.
    if (i == 0 && Applied(a.st)) ctx_->Fault(FaultPoint::kCommitAfterFirstApply);
  });
  for (size_t i = 0; i < parts.size(); i++) {
    const plan::Part& part = parts[i];
    for (const msg::MarkedNodes& m : answers[i].marked) dec->Add(m);
    uint32_t copies = answers[i].copies;
    const Status& st = answers[i].st;
    const bool done_elsewhere = st.reason() == msg::kReasonNotPrepared;
    applied[i] = Applied(st) || done_elsewhere;
    if (!applied[i]) {
      ctx_->Log("engine: APPLY of tx " + std::to_string(part.req.txid) + " at node " + std::to_string(part.owner) +
                " failed after the commit decision (completed when the node answers): " + st.ToString());
      if (apply_error.ok())
        apply_error = Status(Code::kUnavailable,
                             "commit is decided but its part at node " + std::to_string(part.owner) +
                                 " is not applied yet (" + st.message() +
                                 "); it is applied when that node is reachable again, unless this node is declared "
                                 "dead first: then its participants settle it, applied at every part or at none");
      copies = 0;
    } else if (!st.ok() && !done_elsewhere && apply_error.ok()) {
      apply_error = st;
    }
    if (done_elsewhere) {
      copies = n;  // its owner completed it (and counted its copies) without us
      dec->done_everywhere = true;
    }
    if (applied[i] && !part.req.ranges.empty() && copies < n) dec->short_copies[i] = true;
    min_copies = std::min(min_copies, copies);
  }
  observe::StartPhase("hotpot.commit.release");
  // Every part applied: each node that got part of the commit may now show it (DONE closes its open mark) before any
  // page lock is released. Parts still missing keep every part locked and the marks open (until DriveDecisions).
  dec->applied = applied;
  if (AllTrue(applied)) ReleaseAll(dec);
  // Declared dead since the commit began (the lease ran out), its participants may have frozen the commit and aborted
  // it without us: "not prepared" then means applied or aborted, and a frozen part's fate is theirs to tell. Never
  // answered as success (docs/design/availability.md "A dead committer").
  bool frozen = false, not_prepared = false;
  for (const Answer& a : answers) {
    frozen = frozen || a.st.reason() == msg::kReasonFrozen;
    not_prepared = not_prepared || a.st.reason() == msg::kReasonNotPrepared;
  }
  if (frozen || (not_prepared && ctx_->LeaseLapsedSince(dec->lease_lapses)))
    return Status(Code::kUnavailable,
                  "outcome unknown: this node's membership lease ran out during the commit and its participants settle "
                  "it without it (applied at every part or at none)");
  if (!apply_error.ok()) return apply_error;
  result->copies = min_copies;
  return Status::Ok();
}

void Committer::RefreshConflicts(const DatasetState& d, const CommitResult& result) {
  std::set<uint64_t> pages;
  for (const ConflictRange& cr : result.conflicts)
    if (pages.size() < 1024) pages.insert(cr.offset / kPageSize);
  std::vector<uint64_t> unchecked, failed;
  fetcher_->RefreshFromOwners(d, std::vector<uint64_t>(pages.begin(), pages.end()), &unchecked, &failed);
}

Status Committer::CallPrepare(uint32_t owner, const msg::PrepareRequest& req, uint32_t* copies,
                              std::vector<msg::Conflict>* conflicts) {
  const char* span = (req.flags & msg::kPrepareOneShot) ? "hotpot.owner.one_shot" : "hotpot.owner.prepare";
  if (owner == ctx_->self())
    return ctx_->Owned(span, owner, req.dataset, req.txid, [&] { return owner_->Prepare(owner, req, copies, conflicts); });
  if (!view_->IsAlive(owner)) return Status(Code::kUnavailable, "owner node " + std::to_string(owner) + " is not alive");
  std::vector<uint8_t> payload, resp;
  msg::EncodePrepareRequest(req, &payload);
  if (payload.size() > wire::kMaxPayload)
    return Status(Code::kResourceExhausted,
                  "commit to node " + std::to_string(owner) + " exceeds the 16 MiB message limit");
  ctx_->counters.bytes_out += payload.size();
  Status st = peers_->CallLoaded(owner, msg::kPrepare, payload, &resp, ctx_->NewDeadline());
  if (st.code() == Code::kAborted) {
    if (!msg::DecodeConflicts(resp.data(), resp.size(), conflicts).ok()) conflicts->clear();
    return st;
  }
  if (!st.ok()) return st.Prefixed("PREPARE at node " + std::to_string(owner) + ": ");
  return msg::DecodeU32(resp.data(), resp.size(), copies);
}

Status Committer::CallTx(uint32_t owner, uint16_t type, uint64_t txid, uint32_t* copies, msg::MarkedNodes* marked,
                         uint64_t ds, uint64_t generation) {
  msg::MarkedNodes unused;
  if (marked == nullptr) marked = &unused;
  if (owner == ctx_->self()) {
    const TxKey key{owner, txid};
    if (type == msg::kApply)
      return ctx_->Owned("hotpot.owner.apply", owner, ds, txid,
                         [&] { return owner_->Apply(key, copies, marked, ds, generation); });
    if (type == msg::kAbort) {
      return ctx_->Owned("hotpot.owner.abort", owner, 0, txid, [&] {
        (void)owner_->Abort(key, copies);
        return Status::Ok();
      });
    }
    return Status(Code::kInternal, "CallTx: RELEASE goes through Release");
  }
  if (!view_->IsAlive(owner)) return Status(Code::kUnavailable, "owner node " + std::to_string(owner) + " is not alive");
  std::vector<uint8_t> payload, resp;
  if (type == msg::kApply) msg::EncodeApplyRequest(txid, ds, generation, &payload);
  else msg::EncodeTxid(txid, &payload);
  Status st = peers_->Call(owner, type, payload, &resp, ctx_->NewDeadline());
  // An APPLY error (short of copies) still carries the marked nodes: they need their DONE.
  if (type == msg::kApply && !resp.empty()) {
    Status dst = msg::DecodeApplyReply(resp.data(), resp.size(), copies, marked);
    if (st.ok()) return dst;
  }
  if (!st.ok()) return st.Prefixed("commit message " + std::to_string(type) + " to node " + std::to_string(owner) + ": ");
  return Status::Ok();
}

Status Committer::Release(uint32_t owner, uint64_t txid, const Decision& dec, bool* copies_pending) {
  *copies_pending = false;
  // The nodes any part's push missed (all alive nodes when the decision's marks are not known): every owner tells
  // them to check their copies when they fetch these pages (docs/design/consistency.md "Missed pushes").
  std::set<uint32_t> nodes = dec.missed;
  if (dec.done_everywhere)
    for (uint32_t node : view_->AliveNodes()) nodes.insert(node);
  const std::vector<uint32_t> missed(nodes.begin(), nodes.end());
  if (owner == ctx_->self()) {
    const TxKey key{owner, txid};
    Status st =
        ctx_->Owned("hotpot.owner.release", owner, 0, txid, [&] { return owner_->Finish(key, false, &missed); });
    *copies_pending = st.ok() && owner_->CopiesReleasing(key);
    return st;
  }
  if (!view_->IsAlive(owner)) return Status(Code::kUnavailable, "owner node " + std::to_string(owner) + " is not alive");
  std::vector<uint8_t> payload, resp;
  msg::EncodeRelease(txid, missed, &payload);
  Status st = peers_->Call(owner, msg::kRelease, payload, &resp, ctx_->NewDeadline());
  if (!st.ok()) return st.Prefixed("RELEASE to node " + std::to_string(owner) + ": ");
  *copies_pending = resp.size() == 1 && resp[0] == msg::kReleaseCopiesPending;
  return Status::Ok();
}

Status Committer::SettleOneShot(uint32_t owner, uint64_t txid, const Status& failed, uint32_t* copies) {
  const std::string where = "commit to node " + std::to_string(owner) + ": " + failed.message();
  const Deadline budget_end = ctx_->time->Now() + 3 * ctx_->opt.request_timeout;
  Backoff backoff(ctx_->time, std::chrono::milliseconds(2), std::chrono::milliseconds(256), budget_end, false);
  for (;;) {
    std::vector<uint8_t> payload, resp;
    msg::EncodeTxid(txid, &payload);
    Status st = view_->IsAlive(owner) ? peers_->Call(owner, msg::kAbort, payload, &resp, ctx_->NewDeadline())
                                      : Status(Code::kUnavailable, "it is not alive");
    msg::AbortState state = msg::AbortState::kUnknown;
    if (st.ok()) st = msg::DecodeAbortReply(resp.data(), resp.size(), &state, copies);
    if (st.ok() && state == msg::AbortState::kNothingApplied)  // the failure's reason stays (the commit may retry)
      return Status(failed.code(), failed.reason(), where + "; nothing was applied");
    if (st.ok() && state == msg::AbortState::kApplied) return Status::Ok();
    // Applying (it passed its commit point before the ABORT: wait for its copies), or an owner that is alive but slow
    // (paused, overloaded): ask again until the budget ends.
    const bool retry = (st.ok() && state == msg::AbortState::kApplying) || (!st.ok() && view_->IsAlive(owner));
    if (retry && backoff.Wait()) continue;
    if (st.ok() && state == msg::AbortState::kApplying)
      return Status(Code::kUnavailable, where + "; it was applied at node " + std::to_string(owner) +
                                            " after the deadline and its copies are still being made");
    if (st.ok())  // kUnknown: applied while its lease ran out, or a prepare copy could not be withdrawn
      return Status(Code::kUnavailable, where + "; outcome unknown: node " + std::to_string(owner) +
                                            " cannot tell whether it stays applied, so it may have applied");
    return Status(Code::kUnavailable, where + "; outcome unknown: node " + std::to_string(owner) +
                                          " did not answer the ABORT that settles it (" + st.message() +
                                          "), so it may have applied");
  }
}

msg::OutcomeCode Committer::OutcomeOf(uint64_t txid) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = in_flight_.find(txid);
  if (it != in_flight_.end()) return it->second;
  if (decisions_.count(txid)) return msg::OutcomeCode::kCommitted;
  // Not running and no decision: the commit aborted, or it was decided and every part was applied and released (then
  // no owner still holds a prepared part to ask about). Presumed abort.
  return msg::OutcomeCode::kAborted;
}

bool Committer::InProgress(uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  return in_flight_.count(id) != 0 || decisions_.count(id) != 0;
}

size_t Committer::PendingDecisions() {
  std::lock_guard<std::mutex> l(mu_);
  std::set<const Decision*> distinct;
  for (const auto& kv : decisions_) distinct.insert(kv.second.get());
  return distinct.size();
}

bool Committer::ApplyPart(const pool::RedoPart& part, Decision* dec, uint64_t generation) {
  msg::MarkedNodes m;
  uint32_t copies = 0;
  const Status st = CallTx(part.node, msg::kApply, part.txid, &copies, &m, dec->ds, generation);
  dec->Add(m);
  // "Not prepared": its owner completed the part without us (the nodes its pushes marked are unknown).
  if (st.reason() == msg::kReasonNotPrepared) dec->done_everywhere = true;
  return Applied(st) || st.reason() == msg::kReasonNotPrepared;
}

bool Committer::ReleaseAll(Decision* dec) {
  if (!dec->done_sent) {
    SendDecisionDone(*dec);
    dec->done_sent = true;
    // `missed` stays for the RELEASEs (retried by DriveDecisions if need be); unknown marks: every alive node.
    dec->marked.clear();
    if (dec->done_everywhere)
      for (uint32_t node : view_->AliveNodes()) dec->missed.insert(node);
    dec->done_everywhere = false;
  }
  // Every RELEASE at once (after every DONE: no lock goes before each node may show the commit).
  std::vector<char> done(dec->parts.size(), 0);
  RunSteps(ctx_->fan(), dec->parts.size(), [&](size_t i) {
    if (dec->done[i]) return;
    bool pending = false;
    const bool released = Release(dec->parts[i].node, dec->parts[i].txid, *dec, &pending).ok();
    done[i] = released && !(pending && dec->short_copies[i]);
  });
  for (size_t i = 0; i < dec->parts.size(); i++)
    if (done[i]) dec->done[i] = true;
  return AllTrue(dec->done);
}

void Committer::DriveDecisions() {
  std::vector<std::shared_ptr<Decision>> todo;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& kv : decisions_)  // several txids map to one decision: `driving` takes each once
      if (!kv.second->driving) {
        kv.second->driving = true;
        todo.push_back(kv.second);
      }
  }
  for (const std::shared_ptr<Decision>& dec : todo) {
    for (size_t i = 0; i < dec->parts.size(); i++) {
      // A part applied but not released yet is looked at too: its chunk may have moved since (its RELEASE goes to the
      // new owner, which adopted it: the old owner is down or no longer has it).
      if (dec->done[i] || ctx_->shut.load()) continue;
      pool::RedoPart& part = dec->parts[i];
      uint64_t generation = 0;
      // If the part's chunk has another owner now (it failed over), that node took the part over from its prepare
      // copies and is the one to apply and release it; the old owner no longer has it (it must not be asked: "not
      // prepared" from it would read as "applied").
      DatasetState d;
      uint32_t now_owner = 0;
      if (part.page_plus1 != 0) {
        // Not before the chunk map is loaded (a committer that just restarted): the part's first owner may have lost
        // the chunk meanwhile and no longer hold the part, and its "not prepared" would read as "applied" — the
        // decision would be forgotten while the new owner still holds the part in doubt, and its OUTCOME ("aborted",
        // presumed) would discard it (chaos, long run: a transfer half applied for good).
        if (!view_->FindDataset(dec->ds, &d).ok()) continue;
        // The generation routed by, always: an owner whose map is older answers "retry", not "not prepared".
        generation = d.info.generation;
      }
      if (part.page_plus1 != 0 && ChunkOwner(d, part.page_plus1 - 1, &now_owner) && now_owner != part.node) {
        ctx_->Log("engine: decided tx " + std::to_string(part.txid) + ": its part moved from node " +
                  std::to_string(part.node) + " to node " + std::to_string(now_owner) + " with its chunk");
        part.node = now_owner;
        // The old owner may have applied the part and pushed it to some holders before it died: which ones is lost
        // with it (the new owner answers with its own pushes only). A node holding an open mark of this commit may
        // thus hold a copy that missed the part: DONE tells every alive node to check its copies. (Chaos with
        // failover: the DONE closed a cacher's mark without the check while its copy of the dead owner's page was
        // stale, and a snapshot read there summed half a transfer.)
        dec->done_everywhere = true;
        dec->applied[i] = false;  // applied again there (an APPLY of a part it holds applied is answered "applied")
      }
      if (dec->applied[i]) continue;
      if (part.node != ctx_->self() && !view_->IsAlive(part.node)) continue;
      dec->applied[i] = ApplyPart(part, dec.get(), generation);
      dec->short_copies[i] = true;  // its copies are not known: its RELEASE waits for its prepare copies to go
      if (dec->applied[i])
        ctx_->Log("engine: decided tx " + std::to_string(part.txid) + " applied at node " + std::to_string(part.node));
    }
    if (AllTrue(dec->applied) && !ctx_->shut.load()) ReleaseAll(dec.get());
    const bool all_done = AllTrue(dec->done);
    {
      std::lock_guard<std::mutex> l(mu_);
      dec->driving = false;
      if (all_done)
        for (const pool::RedoPart& part : dec->parts) decisions_.erase(part.txid);
    }
    if (all_done && dec->has_slot) (void)ctx_->pool->redo().Free(dec->slot);
  }
}

void Committer::SendDecisionDone(const Decision& dec) {
  if (dec.commit_id == 0) return;
  if (!dec.done_everywhere) {
    replicator_->SendDone(dec.commit_id, dec.marked, dec.missed);
    return;
  }
  const std::vector<uint32_t> alive = view_->AliveNodes();
  const std::set<uint32_t> all(alive.begin(), alive.end());
  replicator_->SendDone(dec.commit_id, all, all);
}

}  // namespace engine
}  // namespace hotpot
