#include "engine/dispatch.h"

namespace hotpot {
namespace engine {

void PeerDispatch::Handle(const transport::Request& req, transport::Reply* reply) {
  ctx_->counters.bytes_in += req.len;
  // A request that took half its caller's budget (the request timeout) or more is logged with its answer (once per
  // type and sender every 5 s): the caller may have given up, and nothing else says where its time went.
  struct SlowLog {
    Context* ctx;
    const transport::Request& req;
    const transport::Reply* reply;
    TimePoint start;
    ~SlowLog() {
      const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(ctx->time->Now() - start);
      if (!ctx->Slow(took)) return;
      const std::string type = msg::TypeName(req.type);
      ctx->LogLimited("slow " + type + " " + std::to_string(req.peer_node_id),
                      "engine: a " + type + " from node " + std::to_string(req.peer_node_id) + " took " +
                          std::to_string(took.count()) + " ms to answer: " + reply->status.ToString());
    }
  } slow{ctx_, req, reply, ctx_->time->Now()};
  const uint32_t peer = req.peer_node_id;
  observe::TraceScope trace_scope(req.trace);  // owner-side spans and nested calls carry the commit's trace
  Status st;
  uint64_t id = 0;
  switch (req.type) {
    case msg::kFetchPages: {
      msg::FetchRequest fr;
      st = msg::DecodeFetchRequest(req.data, req.len, &fr);
      if (st.ok()) {
        // A node declared dead still reads (it may be the only way its apps make progress), but its copies missed
        // every push since: see Owner::ServeFetch.
        const Status sender = view_->CheckSender(peer, req.peer_epoch);
        owner_->ServeFetch(peer, fr, reply, sender.reason() == msg::kReasonFenced ? &sender : nullptr);
        return;
      }
      break;
    }
    case msg::kPrepare:
      // Fencing: a node declared dead starts no new commit here. What it already began (APPLY, RELEASE, ABORT of
      // parts prepared before) and what only reads (FETCH_PAGES, COPY_PAGES, OUTCOME) still runs: finishing a decided
      // commit and reading current pages are what the rest of the cluster needs from it.
      st = view_->CheckSender(peer, req.peer_epoch);
      if (st.ok()) st = Prepare(peer, req, reply);
      else if (st.reason() == msg::kReasonFenced)
        ctx_->Note(observe::EventKind::kFenced, peer, 0, 0, 0, view_->StateEpoch(peer));
      break;
    case msg::kApply:
    case msg::kRelease:
    case msg::kAbort:
      st = TxMessage(peer, req, reply);
      break;
    case msg::kOutcome:
      st = msg::DecodeTxid(req.data, req.len, &id);
      if (st.ok() && (id >> 40) != ctx_->self())
        st = Status(Code::kInvalidArgument, "OUTCOME of tx " + std::to_string(id) + ": not a txid of node " +
                                                std::to_string(ctx_->self()));
      if (st.ok()) reply->payload.assign(1, static_cast<uint8_t>(committer_->OutcomeOf(id)));
      break;
    case msg::kPushBatch:
      st = PushBatch(req, reply);
      if (!st.ok()) reply->payload.clear();  // an error answer carries its message, not the flags
      break;
    case msg::kCopyPages:
      st = CopyPages(req, reply);
      break;
    case msg::kCheckCopies:
      st = msg::DecodeTxid(req.data, req.len, &id);  // the dataset id (u64)
      // Not loaded here: nothing to hide yet, and the first open checks the copies found in the pool anyway.
      if (st.ok()) cache_->Missed(id);
      break;
    case msg::kMarkStatus:
      st = msg::DecodeTxid(req.data, req.len, &id);
      if (st.ok()) reply->payload.assign(1, (committer_->InProgress(id) || owner_->HasPart(id)) ? 1 : 0);
      break;
    case msg::kPrepareCopy: {
      // A fenced owner gets no copy, so it cannot prepare (a node declared dead commits nothing more).
      msg::PartCopy c;
      st = view_->CheckSender(peer, req.peer_epoch);
      if (st.ok()) st = msg::DecodePartCopy(req.data, req.len, &c);
      // The sender's finished parts first (kCopyReleases): their slots are free for this copy.
      if (st.ok() && !c.releases.empty()) copies_->Drop(peer, c.releases);
      if (st.ok()) st = copies_->Keep(peer, c);
      break;
    }
    case msg::kReleaseCopies: {
      std::vector<std::pair<uint32_t, uint64_t>> keys;
      st = msg::DecodePartKeys(req.data, req.len, &keys);
      if (st.ok()) copies_->Drop(peer, keys);
      break;
    }
    case msg::kCommitState:
    case msg::kCommitPeek: {
      std::vector<std::pair<uint32_t, uint64_t>> keys;
      st = msg::DecodePartKeys(req.data, req.len, &keys);
      if (st.ok() && keys.size() != 1) st = Status(Code::kInvalidArgument, "COMMIT_STATE asks about one commit");
      if (st.ok() && req.type == msg::kCommitPeek) reply->payload.assign(1, owner_->CommitPartsOf(keys[0].first, keys[0].second));
      if (st.ok() && req.type == msg::kCommitState) {
        msg::CommitState state = msg::CommitState::kNone;
        st = owner_->FreezeCommit(keys[0].first, keys[0].second, &state);
        if (st.ok()) reply->payload.assign(1, static_cast<uint8_t>(state));
      }
      break;
    }
    case msg::kPartStatus: {
      std::vector<std::pair<uint32_t, uint64_t>> keys;
      st = msg::DecodePartKeys(req.data, req.len, &keys);
      if (st.ok())
        for (const auto& k : keys) {
          // Held while its part is in flight here, and while its copies are kept (applied short of N copies).
          const TxKey key{k.first, k.second};
          reply->payload.push_back(owner_->HasPart(key) || owner_->CopiesReleasing(key) ? 1 : 0);
        }
      break;
    }
    case msg::kKeepApplied: {
      msg::PartCopy c;
      st = msg::DecodePartCopy(req.data, req.len, &c);
      if (st.ok() && !(c.flags & msg::kCopyApplied))
        st = Status(Code::kInvalidArgument, "KEEP_APPLIED: the copy is not flagged applied");
      bool kept = false;
      if (st.ok()) st = owner_->KeepAppliedCopy(peer, c, &kept);
      if (st.ok()) reply->payload.assign(1, kept ? 1 : 0);
      break;
    }
    case msg::kListCopies: {
      msg::CopyQuery q;
      st = msg::DecodeCopyQuery(req.data, req.len, &q);
      if (st.ok()) {
        std::vector<msg::OwnedCopy> list = copies_->List(q.dataset, q.first_page, q.count);
        for (msg::OwnedCopy& c : owner_->OwnParts(q.dataset, q.first_page, q.count)) list.push_back(std::move(c));
        msg::EncodeCopyList(list, &reply->payload);
      }
      break;
    }
    case msg::kDone: {
      bool check = false;
      st = msg::DecodeDone(req.data, req.len, &id, &check);
      // Closed with a check: the datasets where it was open keep the "unchecked" mark until their copies are checked.
      if (st.ok() && cache_->CloseMark(MarkKey{peer, id}, check) && check && ctx_->wake_resolver)
        ctx_->wake_resolver();  // the copies are checked next
      break;
    }
    default:
      st = Status(Code::kUnimplemented, "engine: unknown message type " + std::to_string(req.type));
  }
  reply->status = st;
}

Status PeerDispatch::Prepare(uint32_t peer, const transport::Request& req, transport::Reply* reply) {
  msg::PrepareRequest pr;
  HOTPOT_RETURN_IF_ERROR(msg::DecodePrepareRequest(req.data, req.len, &pr));
  uint32_t copies = 0;
  std::vector<msg::Conflict> conflicts;
  Status st = ctx_->Owned((pr.flags & msg::kPrepareOneShot) ? "hotpot.owner.one_shot" : "hotpot.owner.prepare", peer,
                          pr.dataset, pr.txid, [&] { return owner_->Prepare(peer, pr, &copies, &conflicts, req.peer_epoch); });
  if (st.code() == Code::kAborted) msg::EncodeConflicts(conflicts, &reply->payload);
  else if (st.ok()) msg::EncodeU32(copies, &reply->payload);
  return st;
}

Status PeerDispatch::TxMessage(uint32_t peer, const transport::Request& req, transport::Reply* reply) {
  uint64_t txid = 0, ds = 0, generation = 0;
  std::vector<uint32_t> missed;
  if (req.type == msg::kRelease) HOTPOT_RETURN_IF_ERROR(msg::DecodeRelease(req.data, req.len, &txid, &missed));
  else if (req.type == msg::kApply) HOTPOT_RETURN_IF_ERROR(msg::DecodeApplyRequest(req.data, req.len, &txid, &ds, &generation));
  else HOTPOT_RETURN_IF_ERROR(msg::DecodeTxid(req.data, req.len, &txid));
  const TxKey key{peer, txid};
  if (req.type == msg::kApply) {
    ctx_->Fault(FaultPoint::kOwnerBeforeApply);
    uint32_t copies = 0;
    msg::MarkedNodes marked;
    Status st = ctx_->Owned("hotpot.owner.apply", peer, ds, txid,
                            [&] { return owner_->Apply(key, &copies, &marked, ds, generation); });
    msg::EncodeApplyReply(copies, marked, &reply->payload);
    return st;
  }
  if (req.type == msg::kAbort) {
    msg::AbortState state = msg::AbortState::kUnknown;
    uint32_t copies = 0;
    Status st = ctx_->Owned("hotpot.owner.abort", peer, 0, txid, [&] {
      state = owner_->Abort(key, &copies);
      return Status::Ok();
    });
    msg::EncodeAbortReply(state, copies, &reply->payload);
    return st;
  }
  // A frozen part is its participants' to settle: its committer's RELEASE must not drop it unapplied.
  if (owner_->FrozenPrepared(key))
    return Status(Code::kFailedPrecondition, msg::kReasonFrozen,
                  "tx " + std::to_string(txid) + ": its participants settle the commit; its RELEASE is refused");
  Status st = ctx_->Owned("hotpot.owner.release", peer, 0, txid, [&] { return owner_->Finish(key, false, &missed); });
  if (st.ok() && owner_->CopiesReleasing(key)) reply->payload.assign(1, msg::kReleaseCopiesPending);
  return st;
}

Status PeerDispatch::PushBatch(const transport::Request& req, transport::Reply* reply) {
  msg::PushBatch b;
  HOTPOT_RETURN_IF_ERROR(msg::DecodePushBatch(req.data, req.len, &b));
  // A push after the lease lapsed may land next to copies that missed others: hide them first.
  resolver_->CheckLease();
  DatasetState d;
  // Not open here yet (a node that just started, or learns of the dataset a moment late): NOT_FOUND "not loaded",
  // which the sender retries until its deadline. Answering "not held" would drop this node from the page's cacher
  // set while its pool may still hold a copy, which would then never be updated.
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(b.dataset, &d));
  for (const msg::PushPage& pg : b.pages)
    if (pg.ranges[0].offset / kPageSize >= d.store->page_count())
      return Status(Code::kOutOfRange, "push beyond " + PageName(b.dataset, pg.ranges[0].offset / kPageSize));
  std::vector<uint64_t> persist;
  HOTPOT_RETURN_IF_ERROR(cache_->ApplyPushBatch(b, d.store, &reply->payload, &persist));
  HOTPOT_RETURN_IF_ERROR(d.store->Persist(persist));
  if ((b.flags & msg::kPushReplica) && !persist.empty())
    ctx_->Note(observe::EventKind::kReplicaReceived, 0, b.dataset, persist.front(), persist.size());
  return Status::Ok();
}

Status PeerDispatch::CopyPages(const transport::Request& req, transport::Reply* reply) {
  msg::FetchRequest fr;
  HOTPOT_RETURN_IF_ERROR(msg::DecodeFetchRequest(req.data, req.len, &fr));
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(fr.dataset, &d));
  if (fr.flags != 0 || fr.first_page >= d.store->page_count() || fr.count > d.store->page_count() - fr.first_page)
    return Status(Code::kInvalidArgument, "COPY_PAGES beyond dataset " + std::to_string(fr.dataset) + " or with flags");
  std::vector<msg::FetchedPage> meta;
  std::vector<uint8_t> pages;
  HOTPOT_RETURN_IF_ERROR(cache_->CopyPages(d.store, fr.first_page, fr.count, &meta, &pages));
  msg::EncodeFetchResponse(meta, pages.data(), false, &reply->payload);
  ctx_->counters.bytes_out += reply->payload.size();
  return Status::Ok();
}

}  // namespace engine
}  // namespace hotpot
