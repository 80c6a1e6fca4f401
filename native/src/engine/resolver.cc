#include "engine/resolver.h"

#include <algorithm>

namespace hotpot {
namespace engine {
namespace {

std::string Nodes(const std::set<uint32_t>& nodes) {
  std::string out;
  for (uint32_t node : nodes) out += (out.empty() ? "node " : ", node ") + std::to_string(node);
  return out;
}

}  // namespace

void Resolver::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void Resolver::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Resolver::Loop() {
  const auto period = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds(500),
      std::max<std::chrono::milliseconds>(std::chrono::milliseconds(50),
                                          std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->opt.request_timeout) / 4));
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait_for(l, period);
    if (stop_) break;
    l.unlock();
    RunOnce();
    l.lock();
  }
}

void Resolver::RunOnce() {
  CheckLease();
  // Membership first: an outcome may need to be applied and replicated to live nodes.
  if (!view_->HasMembers() || ctx_->shut.load()) return;
  RecheckMissed();
  TellCheckCopies();
  RevalidatePending();
  RecoverChunks();
  committer_->DriveDecisions();
  ResolveInDoubt();
  CheckMarks();
  Rereplicate();
  // Releases queued without a sender thread (manual mode), and copies whose release was lost.
  copies_->Flush();
  copies_->CollectOrphans();
}

void Resolver::Rereplicate() {
  if (ctx_->shut.load()) return;
  const size_t made = owner_->Rereplicate(view_->Datasets(), view_->AliveNodes(), view_->RecoveringChunks());
  if (made > 0) ctx_->Log("engine: re-replication made " + std::to_string(made) + " page copies");
}

// ---------------------------------------------------------------------------------------------------------------
// Checking cached copies

void Resolver::QueueRevalidation(uint64_t ds, std::vector<uint64_t> pages) {
  std::lock_guard<std::mutex> l(mu_);
  revalidate_[ds] = std::move(pages);
  blocking_.insert(ds);
}

bool Resolver::Blocked(uint64_t ds) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (blocking_.count(ds)) return true;
  }
  return view_->Recovering(ds);
}

Status Resolver::WaitReady(uint64_t ds) {
  const auto deadline = ctx_->time->Now() + 2 * ctx_->opt.request_timeout;
  while (!ctx_->shut.load() && Blocked(ds)) {
    if (ctx_->time->Now() >= deadline) {
      if (view_->Recovering(ds))
        return Status(Code::kUnavailable, msg::kReasonChunkRecovering,
                      "dataset " + std::to_string(ds) + ": node " + std::to_string(ctx_->self()) +
                          " is recovering the chunks it owns from their holders (its store was replaced); retry");
      return Status(Code::kUnavailable, "dataset " + std::to_string(ds) + ": node " + std::to_string(ctx_->self()) +
                                            " is still checking its cached pages with their owners after a restart");
    }
    if (Manual()) {
      RunOnce();  // no thread does it (a deterministic test): do a round here, then look again
      ctx_->time->SleepFor(std::chrono::milliseconds(50));
    } else {
      ctx_->time->SleepFor(std::chrono::milliseconds(10));
    }
  }
  return Status::Ok();
}

void Resolver::RevalidatePending() {
  std::map<uint64_t, std::vector<uint64_t>> todo;
  std::map<uint64_t, uint64_t> gens;
  {
    std::lock_guard<std::mutex> l(mu_);
    todo = revalidate_;
    gens = generation_;
  }
  for (auto& kv : todo) {
    const uint64_t ds = kv.first;
    DatasetState d;
    if (!view_->FindDataset(ds, &d).ok()) continue;
    std::vector<uint64_t> unchecked, failed;
    const uint64_t missed_epoch = cache_->MissedEpoch(ds);  // a missed push after this keeps the mark on
    const size_t installed =
        fetcher_->RefreshFromOwners(d, kv.second, &unchecked, &failed, /*wait_unlocked=*/false, /*pass=*/true);
    if (installed > 0)
      ctx_->Log("engine: dataset " + std::to_string(ds) + ": " + std::to_string(installed) +
                " cached pages were stale after the restart and were updated from their owners");
    if (!unchecked.empty())
      ctx_->Log("engine: dataset " + std::to_string(ds) + ": " + std::to_string(unchecked.size()) +
                " cached pages have no live owner: kept unchecked (snapshot reads here wait for them)");
    {
      std::lock_guard<std::mutex> l(mu_);
      // Every cached page was queued again meanwhile (a lapsed lease): that list stands, and so does the mark.
      if (generation_[ds] != gens[ds]) continue;
    }
    // Copies nobody could check may be stale: while they exist (no live owner, or the owner did not answer; or the
    // lease is lapsed), snapshot reads on this node fail (the "unchecked" mark); plain loads still see them.
    // A chunk this node is taking over is not settled yet: its cached pages may miss commits too.
    // The lease is looked at now, not only at the start of the round: a node paused in the middle of a check must not
    // finish it, after it resumes past its lease, by clearing the mark over owned pages that failed over meanwhile.
    CheckLease();
    cache_->SetUnchecked(ds,
                         !unchecked.empty() || !failed.empty() || lease_lapsed_.load() || view_->Recovering(ds) ||
                             owner_->HandingOff(ds) || hide_snapshots_.load(),
                         missed_epoch);
    std::vector<uint64_t> left = unchecked;
    left.insert(left.end(), failed.begin(), failed.end());
    std::sort(left.begin(), left.end());
    std::lock_guard<std::mutex> l(mu_);
    if (generation_[ds] != gens[ds]) continue;
    if (left.empty()) revalidate_.erase(ds);
    else revalidate_[ds] = std::move(left);
    // Apps may open the dataset once every copy whose owner is alive was checked. Copies of a dead owner may be stale
    // (a commit while this node was down, before that owner died): the unchecked mark keeps snapshot reads here
    // failing until they are checked.
    if (failed.empty()) blocking_.erase(ds);
  }
}

void Resolver::QueueAll(const DatasetState& d) {
  std::vector<uint64_t> cached;
  for (const auto& [pg, m] : d.store->WrittenPages(0, d.store->page_count())) {
    if (m.state == PageState::kCommitted || m.state == PageState::kRedundant) cached.push_back(pg);
  }
  std::lock_guard<std::mutex> l(mu_);
  revalidate_[d.info.id] = std::move(cached);  // an empty list still takes a pass: it clears the mark
  generation_[d.info.id]++;
}

void Resolver::RevalidateAll() {
  for (const DatasetState& d : view_->Datasets()) QueueAll(d);
}

void Resolver::TellCheckCopies() {
  for (const Owner::Tell& t : owner_->NotTold(view_->AliveNodes())) {
    if (ctx_->shut.load()) return;
    TellOne(t, ctx_->NewDeadline());
  }
}

std::vector<uint32_t> Resolver::TellCheckCopiesNow(uint64_t ds, Deadline until) {
  std::vector<uint32_t> untold;
  for (const Owner::Tell& t : owner_->NotTold(view_->AliveNodes())) {
    if (t.ds != ds) continue;
    const Deadline by = std::min(until, ctx_->NewDeadline());
    if (ctx_->shut.load() || ctx_->time->Now() >= by || !TellOne(t, by)) untold.push_back(t.node);
  }
  return untold;
}

bool Resolver::TellOne(const Owner::Tell& t, Deadline by) {
  std::vector<uint8_t> payload, resp;
  msg::EncodeTxid(t.ds, &payload);
  if (!peers_->Call(t.node, msg::kCheckCopies, payload, &resp, by).ok()) return false;
  owner_->Told(t);
  return true;
}

void Resolver::RecheckMissed() {
  for (uint64_t ds : cache_->TakeRechecks()) {
    DatasetState d;
    if (view_->FindDataset(ds, &d).ok()) QueueAll(d);
  }
}

void Resolver::SetLeaseDeadline(uint64_t unix_ms) {
  if (lease_ended_.load()) return;
  const uint64_t before = lease_until_.exchange(unix_ms);
  if (before != 0 && ctx_->time->UnixMs() > before) ctx_->lease_lapses++;  // renewed only after it ran out
  ctx_->lease_until_ms.store(unix_ms);
  if (unix_ms == 0 || ctx_->time->UnixMs() >= unix_ms || !lease_lapsed_.load()) return;
  // A valid lease again after a lapse: check every cached copy, then the unchecked marks go (RevalidatePending).
  lease_lapsed_.store(false);
  ctx_->Log("engine: membership lease valid again: checking every cached page with its owner");
  RevalidateAll();
  Wake();
}

void Resolver::EndLease() {
  lease_ended_.store(true);
  // Deadline 1 (long past), not 0 (which means "no lease" and fences nothing).
  lease_until_.store(1);
  ctx_->lease_until_ms.store(1);
  CheckLease();
  Wake();
}

void Resolver::HideSnapshots() {
  hide_snapshots_.store(true);
  for (const DatasetState& d : view_->Datasets()) cache_->SetUnchecked(d.info.id, true);
}

void Resolver::CheckLease() {
  const uint64_t until = lease_until_.load();
  if (until == 0 || lease_lapsed_.load() || ctx_->time->UnixMs() <= until) return;
  if (lease_lapsed_.exchange(true)) return;
  ctx_->lease_lapses++;
  ctx_->Log(lease_ended_.load()
                ? "engine: leaving the cluster: cached copies miss commits from now on; snapshot reads here fail"
                : "engine: membership lease lapsed: cached copies may have missed commits; snapshot reads wait until "
                  "they are checked");
  for (const DatasetState& d : view_->Datasets()) cache_->SetUnchecked(d.info.id, true);
}

// ---------------------------------------------------------------------------------------------------------------
// Recovering a replaced store's chunks

void Resolver::RecoverChunks() {
  const std::vector<ChunkRef> todo = view_->RecoveringChunks();
  if (todo.empty()) return;
  // Self-fencing: past its lease this node may have been declared dead and the chunks given to another node, which
  // settles their in-flight parts; settling them here too could settle a part both ways. Taken over once renewed.
  Status lease = owner_->CheckLease();
  if (!lease.ok()) {
    if (!recovery_wait_logged_)
      ctx_->Log("engine: taking over " + std::to_string(todo.size()) + " chunks waits: " + lease.message());
    recovery_wait_logged_ = true;
    return;
  }
  std::vector<uint32_t> peers, down;
  view_->Peers(&peers, &down);
  std::set<uint32_t> silent;  // members that did not answer this round, whichever dataset asked
  // The chunks of one dataset are taken over together: a part in flight at the previous owner may span several.
  std::map<uint64_t, std::vector<uint32_t>> by_ds;
  for (const ChunkRef& ref : todo) by_ds[ref.dataset_id].push_back(ref.chunk);
  for (const auto& kv : by_ds) {
    if (ctx_->shut.load()) return;
    DatasetState d;
    if (!view_->FindDataset(kv.first, &d).ok()) continue;
    // Until the chunks are settled here this node's copies of their pages may miss commits (the previous owner's
    // pushes, parts in flight): snapshot reads wait (the "unchecked" mark; a check of every copy clears it after).
    cache_->SetUnchecked(kv.first, true);
    // Every acknowledged commit is on N nodes and every part in flight has its prepare on N nodes: with fewer than N
    // members without their copies a live one holds each. A member without its copies is one that is down, this node
    // recovering the chunks it owned before its store was made anew, or a live member whose store was replaced after
    // the chunks' previous owner last found their pages at N live copies (its copies went with its store). With N or
    // more, a page no live member holds may have had its copies on them: while one of them is down (it may come back
    // with them) the recovery waits; with none down they are gone, and every page no member holds is reported lost
    // (it may have been written) — never taken for never written and served as zeros.
    const uint32_t n = std::max<uint32_t>(1, d.info.replicas);
    const bool self_replaced = OwnedBeforeItsStore(kv.first, kv.second);
    std::vector<uint32_t> owners;
    if (self_replaced) owners.push_back(ctx_->self());
    for (uint32_t chunk : kv.second) {
      const uint32_t was = view_->TakenFrom(ChunkRef{kv.first, chunk});
      if (was != 0 && std::find(owners.begin(), owners.end(), was) == owners.end()) owners.push_back(was);
    }
    const std::vector<uint32_t> replaced = view_->ReplacedSinceReported(owners);
    Sources from;
    from.peers = peers;
    from.down = down.size();
    from.without.insert(replaced.begin(), replaced.end());
    if (self_replaced) from.without.insert(ctx_->self());
    const size_t without = from.without.size();
    from.n = n;
    from.silent = silent;
    // Only in a failover: every chunk taken from a member now down. A previous owner that is alive (a handoff cut
    // short, a restart) knows what no copy holder does, and is asked until it answers.
    from.failover = !self_replaced && !owners.empty();
    for (uint32_t was : owners) from.failover = from.failover && std::count(down.begin(), down.end(), was) != 0;
    for (uint32_t chunk : kv.second) from.failover = from.failover && view_->TakenFrom(ChunkRef{kv.first, chunk}) != 0;
    if (!down.empty() && down.size() + without >= n) {
      if (!recovery_wait_logged_)
        ctx_->Log("engine: taking over " + std::to_string(kv.second.size()) + " chunks of dataset " +
                  std::to_string(kv.first) + " waits: " + std::to_string(down.size()) + " members are down (node " +
                  std::to_string(down.front()) + ")" +
                  (self_replaced ? " and this node's store is new (it holds none of their pages)" : "") +
                  (replaced.empty() ? std::string()
                                    : " and " + std::to_string(replaced.size()) + " live members' stores were " +
                                          "replaced since their pages were last at N copies (node " +
                                          std::to_string(replaced.front()) + ")") +
                  ", N = " + std::to_string(n));
      recovery_wait_logged_ = true;
      continue;
    }
    const bool unheld_lost = without >= n;
    if (unheld_lost && n >= 2) {
      std::string who = self_replaced ? "this node" : "";
      for (uint32_t node : replaced) who += (who.empty() ? "node " : ", node ") + std::to_string(node);
      ctx_->Log("engine: taking over " + std::to_string(kv.second.size()) + " chunks of dataset " +
                std::to_string(kv.first) + ": " + std::to_string(without) + " members lost their stores (" + who +
                ") since their pages were last at N = " + std::to_string(n) +
                " copies: every page no member holds is reported lost");
    }
    const uint64_t mono0 = observe::MonoNowNs();
    const uint64_t per_chunk = d.chunk_size / kPageSize;
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    std::map<uint32_t, std::vector<PageSpan>> lost;
    uint64_t installed = 0;
    bool ok = true;
    for (uint32_t chunk : kv.second) {
      const uint64_t first = uint64_t(chunk) * per_chunk;
      const uint64_t end = std::min<uint64_t>(d.store->page_count(), first + per_chunk);
      if (!RecoverPages(d, chunk, first, end, &from, unheld_lost, &installed, &lost[chunk])) {
        ok = false;
        break;
      }
      spans.push_back({first, end});
    }
    std::map<TxKey, msg::OwnedCopy> parts;
    if (ok) ok = GatherCopies(d, spans, &from, &parts);
    silent.insert(from.silent.begin(), from.silent.end());
    if (!ok) continue;  // retried next round
    recovery_wait_logged_ = false;
    Owner::TakeoverResult tr;
    Status st = owner_->SettleTakeover(d, spans, parts, &tr);
    if (!st.ok()) {
      ctx_->Log("engine: taking over chunks of dataset " + std::to_string(kv.first) + ": " + st.ToString() +
                " (retrying)");
      continue;
    }
    // Pushes of the previous owner may have reached some nodes and not others: every node checks its copies of the
    // dataset with their owners before its snapshot reads succeed again (CHECK_COPIES), this one too.
    owner_->SuspectEveryone(kv.first);
    QueueAll(d);
    const uint64_t ms = (observe::MonoNowNs() - mono0) / 1000000;
    std::string from_nodes;
    for (uint32_t chunk : kv.second) {
      const uint32_t was = view_->TakenFrom(ChunkRef{kv.first, chunk});
      NoteLost(d, chunk, lost[chunk]);
      view_->MarkRecovered(ChunkRef{kv.first, chunk}, std::move(lost[chunk]));
      ctx_->Note(observe::EventKind::kChunkOwned, was, kv.first, uint64_t(chunk) * per_chunk, per_chunk, ms);
      from_nodes += (from_nodes.empty() ? " (chunk " : ", chunk ") + std::to_string(chunk) + " from node " +
                    (was ? std::to_string(was) : std::string("?"));
    }
    if (!from_nodes.empty()) from_nodes += ")";
    ctx_->counters.chunks_taken_over += kv.second.size();
    ctx_->Log("engine: took over " + std::to_string(kv.second.size()) + " chunks of dataset " +
              std::to_string(kv.first) + from_nodes + " in " + std::to_string(ms) + " ms: " + std::to_string(installed) +
              " pages from " + std::to_string(peers.size() - from.silent.size()) + " other nodes" +
              (from.silent.empty() ? std::string() : " (without " + Nodes(from.silent) + ": no answer)") +
              "; in-flight parts: " +
              std::to_string(tr.completed) + " completed, " + std::to_string(tr.adopted) + " in doubt, " +
              std::to_string(tr.dropped) + " dropped; " + std::to_string(tr.raised) + " page versions raised");
  }
}

bool Resolver::OwnedBeforeItsStore(uint64_t ds, const std::vector<uint32_t>& chunks) {
  if (!ctx_->store_created) return false;
  // Owned by this node before (or by a node unknown: the first chunk map this process loaded): the pages were in the
  // store this one replaced. A chunk this process saw taken from another node may have been refilled here since.
  for (uint32_t chunk : chunks) {
    const uint32_t was = view_->TakenFrom(ChunkRef{ds, chunk});
    if (was == 0 || was == ctx_->self()) return true;
  }
  return false;
}

void Resolver::NoteLost(const DatasetState& d, uint32_t chunk, const std::vector<PageSpan>& lost) {
  if (lost.empty()) return;
  uint64_t pages = 0;
  std::string list;
  for (size_t i = 0; i < lost.size(); i++) {
    pages += lost[i].count;
    ctx_->Note(observe::EventKind::kPagesLost, 0, d.info.id, lost[i].first, lost[i].count);
    if (i < 16)
      list += (i ? ", " : "") + std::to_string(lost[i].first) +
              (lost[i].count > 1 ? ".." + std::to_string(lost[i].first + lost[i].count - 1) : std::string());
    else if (i == 16)
      list += ", ... (" + std::to_string(lost.size()) + " ranges)";
  }
  ctx_->counters.pages_lost += pages;
  ctx_->Log("engine: LOST " + std::to_string(pages) + " pages of dataset " + std::to_string(d.info.id) + " (\"" +
            d.info.name + "\") in chunk " + std::to_string(chunk) +
            ": no node holds a copy of them (N = " + std::to_string(d.info.replicas) +
            ", the store that held them was lost): pages " + list +
            ". Reads and commits of them fail with DATA_LOSS, never zeros; `hotpot forget-lost` accepts the loss");
}

size_t Resolver::Sources::Away() const {
  size_t away = down + without.size();
  for (uint32_t node : silent) away += without.count(node) ? 0 : 1;
  return away;
}

Deadline Resolver::Sources::CallDeadline(const Context& ctx, uint32_t peer) const {
  const bool could_go_on = failover && Away() + (without.count(peer) != 0 ? 0 : 1) < n;
  if (!could_go_on) return ctx.NewDeadline();
  // A quarter of the request timeout, at least 100 ms and at most 1 s: a member that answers takes milliseconds.
  const auto shorter = std::clamp<std::chrono::nanoseconds>(ctx.opt.request_timeout / 4, std::chrono::milliseconds(100),
                                                            std::chrono::seconds(1));
  return ctx.time->Now() + std::min<std::chrono::nanoseconds>(shorter, ctx.opt.request_timeout);
}

bool Resolver::Sources::GoOnWithout(uint32_t peer) {
  silent.insert(peer);
  return failover && Away() < n;
}

Resolver::Sources::Asked Resolver::Sources::Ask(Context* ctx, uint32_t peer,
                                                const std::function<Status(Deadline)>& call, const std::string& what,
                                                const char* failed) {
  if (silent.count(peer)) return GoOnWithout(peer) ? Asked::kGoOn : Asked::kRetry;
  const Status st = call(CallDeadline(*ctx, peer));
  if (st.ok()) return Asked::kAnswered;
  const bool go_on = GoOnWithout(peer);
  ctx->LogLimited("recover-silent-" + std::to_string(peer),
                  what + ": node " + std::to_string(peer) + " " + failed + " (" + st.ToString() + "): " +
                      (go_on ? "going on without it (" : "retrying (") + std::to_string(Away()) +
                      " members away, N = " + std::to_string(n) + ")");
  return go_on ? Asked::kGoOn : Asked::kRetry;
}

bool Resolver::RecoverPages(const DatasetState& d, uint32_t chunk, uint64_t first, uint64_t end, Sources* from,
                            bool unheld_lost, uint64_t* installed, std::vector<PageSpan>* lost) {
  const std::vector<uint32_t>& peers = from->peers;
  // A page no node holds was never written — every commit reaches N nodes, and fewer than N members lost their
  // copies — unless N or more did (`unheld_lost`: with N = 1 its one copy was in the replaced store) or it was lost
  // before (the map says so: it stays lost).
  const std::vector<PageSpan> was_lost = view_->MapLost(ChunkRef{d.info.id, chunk});
  const bool lost_if_unheld = unheld_lost || d.info.replicas <= 1;
  lost->clear();
  for (uint64_t run = first; run < end; run += msg::kMaxFetchPages) {
    const uint32_t count = uint32_t(std::min<uint64_t>(msg::kMaxFetchPages, end - run));
    // The newest copy of each page among every node (this node's own included, for an older store).
    RecoveredRun r;
    r.first = run;
    r.have.assign(count, false);
    r.version.assign(count, 0);
    r.data.assign(count, nullptr);
    for (uint32_t k = 0; k < count; k++) {
      const PageMeta m = d.store->GetMeta(run + k);
      if (m.state != PageState::kAbsent) {
        r.have[k] = true;
        r.version[k] = m.version;
      }
    }
    std::vector<std::vector<uint8_t>> answers(peers.size());
    std::vector<uint8_t> payload;
    msg::EncodeFetchRequest(msg::FetchRequest{d.info.id, run, count, 0}, &payload);
    const std::string what = "engine: recovery of chunk " + std::to_string(chunk) + " of dataset " +
                             std::to_string(d.info.id);
    for (size_t i = 0; i < peers.size(); i++) {
      std::vector<msg::FetchedPage> meta;
      const uint8_t* data = nullptr;
      const Sources::Asked asked = from->Ask(
          ctx_, peers[i],
          [&](Deadline deadline) {
            Status st = peers_->CallLoaded(peers[i], msg::kCopyPages, payload, &answers[i], deadline);
            if (st.ok())
              st = msg::DecodeFetchResponse(answers[i].data(), answers[i].size(), count, false, &meta, &data);
            return st;
          },
          what, "did not give its copies");
      if (asked == Sources::Asked::kRetry) return false;
      if (asked == Sources::Asked::kGoOn) continue;
      for (uint32_t k = 0; k < count; k++)
        if (meta[k].state != uint8_t(PageState::kAbsent) && (!r.have[k] || meta[k].version > r.version[k])) {
          r.have[k] = true;
          r.version[k] = meta[k].version;
          r.data[k] = data + size_t(k) * kPageSize;
        }
    }
    std::vector<uint64_t> persist;
    if (!cache_->InstallRecovered(d, r, &persist, installed).ok() || !d.store->Persist(persist).ok()) return false;
    for (uint32_t k = 0; k < count; k++) {
      const uint64_t pg = run + k;
      if (r.have[k] || !(lost_if_unheld || InSpans(was_lost, pg))) continue;
      if (!lost->empty() && lost->back().first + lost->back().count == pg) lost->back().count++;
      else lost->push_back(PageSpan{pg, 1});
    }
  }
  return true;
}

bool Resolver::GatherCopies(const DatasetState& d, const std::vector<std::pair<uint64_t, uint64_t>>& spans,
                            Sources* from, std::map<TxKey, msg::OwnedCopy>* parts) {
  // One copy per part: a part adopted by a node that took its chunk over before got versions above the ones its
  // first owner gave it, and the copies made then are the current ones.
  auto top = [](const msg::PartCopy& c) {
    return c.versions.empty() ? 0 : *std::max_element(c.versions.begin(), c.versions.end());
  };
  auto add = [&](std::vector<msg::OwnedCopy> list) {
    for (msg::OwnedCopy& c : list) {
      auto [it, fresh] = parts->emplace(TxKey{c.copy.committer, c.copy.txid}, c);
      if (fresh) continue;
      if (top(c.copy) > top(it->second.copy)) {
        it->second = std::move(c);
      } else if (top(c.copy) == top(it->second.copy)) {
        // The same versions: "applied" is a fact about the part, whichever holder says so (its owner told some
        // holders, not all). A copy at other versions is another owner's: an in-doubt part adopted in a takeover gets
        // new versions, and the newer copy is the one that counts.
        // "Frozen" likewise: one holder told is enough for the part to stay settled by its participants.
        it->second.copy.flags |= c.copy.flags & (msg::kCopyApplied | msg::kCopyFrozen);
      }
    }
  };
  for (const auto& s : spans) {
    add(copies_->List(d.info.id, s.first, s.second - s.first));
    std::vector<uint8_t> payload, resp;
    msg::EncodeCopyQuery(msg::CopyQuery{d.info.id, s.first, uint32_t(s.second - s.first)}, &payload);
    for (uint32_t peer : from->peers) {
      std::vector<msg::OwnedCopy> list;
      const Sources::Asked asked = from->Ask(
          ctx_, peer,
          [&](Deadline deadline) {
            Status st = peers_->Call(peer, msg::kListCopies, payload, &resp, deadline);
            if (st.ok()) st = msg::DecodeCopyList(resp.data(), resp.size(), &list);
            return st;
          },
          "engine: taking over chunks of dataset " + std::to_string(d.info.id), "did not list its prepare copies");
      if (asked == Sources::Asked::kRetry) return false;
      if (asked == Sources::Asked::kAnswered) add(std::move(list));
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// In-doubt parts and orphaned marks

void Resolver::ResolveInDoubt() {
  DownOwnership down_ownership;
  for (const Owner::Overdue& t : owner_->OverdueParts()) {
    if (ctx_->shut.load()) return;
    const TxKey& key = t.key;
    msg::OutcomeCode outcome = msg::OutcomeCode::kPending;
    std::string why;
    bool by_participants = false;  // settled by the participants' rule: a frozen part may be applied
    // Decided (recovered "applying"): applied without asking. Once applied, its RELEASE may never come (its committer
    // finished the commit meanwhile, or forgot it in a restart): asked like any applied part.
    if (t.decided && !t.applied) {
      outcome = msg::OutcomeCode::kCommitted;
    } else if (!t.one_shot && view_->IsForgotten(key.committer)) {
      // Its committer never answers again: the participants settle the commit among themselves. Applied anywhere →
      // applied everywhere; prepared everywhere (no APPLY got through, and the question froze every part) → aborted.
      OrphanView o;
      if (!AskParticipants(t, true, &o, &why)) {
        owner_->NoteStillInDoubt(key, why);
        continue;
      }
      if (t.applied) {
        // Applied here: released once no participant still holds its part prepared (they apply it, seeing ours).
        if (!o.prepared_elsewhere) {
          (void)owner_->Finish(key, false);
          ctx_->Log("engine: applied tx " + std::to_string(key.txid) + " of forgotten node " +
                    std::to_string(key.committer) + " is applied at every participant: released");
        }
        continue;
      }
      outcome = o.applied_somewhere ? msg::OutcomeCode::kCommitted : msg::OutcomeCode::kAborted;
      by_participants = true;
      ctx_->Log("engine: tx " + std::to_string(key.txid) + " of forgotten node " + std::to_string(key.committer) +
                (o.applied_somewhere ? ": applied at another participant, so applied here"
                                     : ": applied at no participant, so aborted everywhere"));
    } else if (!t.one_shot && (t.frozen || (key.committer != ctx_->self() && !view_->IsAlive(key.committer)))) {
      why = t.frozen ? "it is frozen (its committer, node " + std::to_string(key.committer) +
                           ", was declared dead): its participants settle it"
                     : "its committer, node " + std::to_string(key.committer) + ", is not alive";
      // A dead committer (it may return), or a part frozen since: settled by its participants, once every node that
      // is down owns no chunk and none is being taken over (every part of the commit is then at an alive owner). An
      // applied part shows the decision was COMMIT: a prepared part is applied once another participant has applied
      // its part, and an applied one released once no participant holds one prepared (every part applied: none can
      // show half of it). A commit applied nowhere is frozen at every participant (COMMIT_STATE: its committer's
      // APPLY refused from then on, durably), then aborted. This ends the wait of snapshot reads and commits on pages
      // of a commit whose committer died with it (chaos: up to 10 s with it applied somewhere, until the committer
      // returned — for good if it never did).
      OrphanView o;
      bool held = false;
      std::string peek;
      if (DownNodesOwnNothing(&down_ownership, &peek) &&
          PeekParticipants(key.committer, t.commit_id, &o, &held, &peek)) {
        if (t.applied && !o.prepared_elsewhere) {
          (void)owner_->Finish(key, false);
          ctx_->Log("engine: applied tx " + std::to_string(key.txid) + " of node " + std::to_string(key.committer) +
                    " (down) is applied at every participant: released");
          continue;
        }
        if (!t.applied && !o.applied_somewhere && !AskParticipants(t, false, &o, &peek)) {
          why += "; " + peek;
        } else if (!t.applied) {
          outcome = o.applied_somewhere ? msg::OutcomeCode::kCommitted : msg::OutcomeCode::kAborted;
          by_participants = true;
          why.clear();
          ctx_->Log("engine: tx " + std::to_string(key.txid) + " of node " + std::to_string(key.committer) +
                    (t.frozen ? " (frozen)" : " (down)") +
                    (o.applied_somewhere ? " is applied at another participant, so it was committed: applied here"
                                         : " is applied at no participant (each froze its part): aborted everywhere"));
        }
      } else if (!peek.empty()) {
        why += "; " + peek;
      }
    } else if (key.committer == ctx_->self()) {
      outcome = committer_->OutcomeOf(key.txid);
    } else {
      std::vector<uint8_t> payload, resp;
      msg::EncodeTxid(key.txid, &payload);
      Status st = peers_->Call(key.committer, msg::kOutcome, payload, &resp, ctx_->NewDeadline());
      if (st.ok() && resp.size() == 1 && resp[0] <= static_cast<uint8_t>(msg::OutcomeCode::kAborted))
        outcome = static_cast<msg::OutcomeCode>(resp[0]);
      else
        why = "asking node " + std::to_string(key.committer) + ": " + (st.ok() ? "bad answer" : st.ToString());
    }
    if (t.rejoined_at != 0 && why.empty()) owner_->NoteAnswered(key, t.rejoined_at);
    if (t.applied) {
      // Applied, RELEASE overdue: the committer still driving the commit (committed or pending) releases it; one that
      // no longer knows it (finished, or restarted without a decision) lost our RELEASE.
      if (outcome == msg::OutcomeCode::kAborted) {
        (void)owner_->Finish(key, false);
        ctx_->Log("engine: applied tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
                  " is finished at its committer: released");
      }
      continue;
    }
    if (outcome == msg::OutcomeCode::kCommitted) {
      uint32_t copies = 0;
      Status st = owner_->Apply(key, &copies, nullptr, 0, 0, by_participants);
      const bool applied = st.ok();
      if (applied && t.one_shot) (void)owner_->Finish(key, false);
      ctx_->Log("engine: " + std::string(t.decided ? "interrupted" : "in-doubt") + " tx " + std::to_string(key.txid) +
                " from node " + std::to_string(key.committer) + " was committed: " +
                (applied ? (t.one_shot ? "applied and pushed"
                                       : "applied and pushed, locked until its committer releases it")
                         : "apply failed, retrying: " + st.ToString()));
    } else if (outcome == msg::OutcomeCode::kAborted) {
      (void)owner_->Finish(key, true);
      ctx_->Log("engine: in-doubt tx " + std::to_string(key.txid) + " from node " + std::to_string(key.committer) +
                " was not committed: discarded");
    } else {
      owner_->NoteStillInDoubt(key, why);
    }
  }
}

bool Resolver::AskParticipants(const Owner::Overdue& t, bool every_member, OrphanView* out, std::string* why) {
  std::vector<uint32_t> alive, down;
  view_->Peers(&alive, &down);
  const std::string who = "its committer, node " + std::to_string(t.key.committer) +
                          (every_member ? ", was forgotten" : ", is down or its part frozen");
  if (every_member && !down.empty()) {
    // A member that is down may hold a part of the commit, applied: nothing can be concluded until it answers.
    *why = who + "; waiting for node " + std::to_string(down.front()) + " (down) to say what it holds of the commit";
    return false;
  }
  *out = OrphanView{};
  msg::CommitState mine = msg::CommitState::kNone;
  Status own = owner_->FreezeCommit(t.key.committer, t.commit_id, &mine);
  if (!own.ok()) {
    *why = who + "; freezing this node's part: " + own.ToString();
    return false;
  }
  out->applied_somewhere = mine == msg::CommitState::kApplied;
  std::vector<uint8_t> payload;
  msg::EncodePartKeys({{t.key.committer, t.commit_id}}, &payload);
  for (uint32_t node : alive) {
    if (node == ctx_->self()) continue;
    std::vector<uint8_t> resp;
    Status st = peers_->Call(node, msg::kCommitState, payload, &resp, ctx_->NewDeadline());
    if (!st.ok() || resp.size() != 1 || resp[0] > static_cast<uint8_t>(msg::CommitState::kApplied)) {
      *why = who + "; asking node " + std::to_string(node) + " what it holds: " + (st.ok() ? "bad answer" : st.ToString());
      return false;
    }
    const auto s = static_cast<msg::CommitState>(resp[0]);
    out->applied_somewhere |= s == msg::CommitState::kApplied;
    out->prepared_elsewhere |= s == msg::CommitState::kPrepared;
  }
  return true;
}

bool Resolver::DownNodesOwnNothing(DownOwnership* memo, std::string* why) {
  std::vector<uint32_t> alive, down;
  view_->Peers(&alive, &down);
  if (!memo->known || memo->down != down) {
    memo->known = true;
    memo->down = down;
    memo->nothing = true;
    memo->why.clear();
    const std::set<uint32_t> gone(down.begin(), down.end());
    for (const DatasetState& d : view_->Datasets()) {
      for (const ChunkInfo& c : d.info.chunks) {
        if (c.owner_recovering) {
          memo->why = "chunk " + std::to_string(c.index) + " of dataset " + std::to_string(d.info.id) +
                      " is being taken over";
        } else if (gone.count(c.owner)) {
          memo->why = "node " + std::to_string(c.owner) + " (down) still owns chunk " + std::to_string(c.index) +
                      " of dataset " + std::to_string(d.info.id);
        } else {
          continue;
        }
        memo->nothing = false;
        break;
      }
      if (!memo->nothing) break;
    }
  }
  if (!memo->nothing) *why = memo->why;
  return memo->nothing;
}

bool Resolver::PeekParticipants(uint32_t committer, uint64_t commit_id, OrphanView* out, bool* held_anywhere,
                                std::string* why) {
  std::vector<uint32_t> alive, down;
  view_->Peers(&alive, &down);
  *out = OrphanView{};
  // This node's parts count like any participant's: it may hold a prepared part of the commit beside the applied one
  // being looked at (another chunk of it).
  const uint8_t mine = owner_->CommitPartsOf(committer, commit_id);
  *held_anywhere = mine != 0;
  out->applied_somewhere = (mine & msg::kPeekApplied) != 0;
  out->prepared_elsewhere = (mine & msg::kPeekPrepared) != 0;
  std::vector<uint8_t> payload;
  msg::EncodePartKeys({{committer, commit_id}}, &payload);
  for (uint32_t node : alive) {
    if (node == ctx_->self()) continue;
    std::vector<uint8_t> resp;
    Status st = peers_->Call(node, msg::kCommitPeek, payload, &resp, ctx_->NewDeadline());
    if (!st.ok() || resp.size() != 1 || (resp[0] & ~(msg::kPeekPrepared | msg::kPeekApplied)) != 0) {
      *why = "asking node " + std::to_string(node) + " what it holds of the commit: " +
             (st.ok() ? "bad answer" : st.ToString());
      return false;
    }
    *held_anywhere = *held_anywhere || resp[0] != 0;
    out->applied_somewhere |= (resp[0] & msg::kPeekApplied) != 0;
    out->prepared_elsewhere |= (resp[0] & msg::kPeekPrepared) != 0;
  }
  return true;
}

void Resolver::CheckMarks() {
  // Marks are asked about once they are older than this: DONE normally follows a commit's last APPLY at once.
  const auto age = std::min<std::chrono::nanoseconds>(std::chrono::seconds(1), ctx_->opt.request_timeout);
  const std::set<MarkKey> ask = cache_->MarksOpenedBefore(ctx_->time->Now() - age);
  std::set<MarkKey> finished;
  DownOwnership down_ownership;
  for (const MarkKey& key : ask) {
    if (ctx_->shut.load()) return;
    bool in_progress = true;
    if (key.first == ctx_->self()) {
      in_progress = committer_->InProgress(key.second) || owner_->HasPart(key.second);
    } else if (view_->IsAlive(key.first)) {
      std::vector<uint8_t> payload, resp;
      msg::EncodeTxid(key.second, &payload);
      Status st = peers_->Call(key.first, msg::kMarkStatus, payload, &resp, ctx_->NewDeadline());
      if (st.ok() && resp.size() == 1) in_progress = resp[0] != 0;
    } else {
      // Its committer is down. Once every part of the commit is released at its owner (applied everywhere, then
      // released without it: ResolveInDoubt) no participant holds any: the mark closes (its copies are checked next,
      // as for a lost DONE). A part still held anywhere, or a down node still owning chunks, keeps it.
      OrphanView o;
      bool held = true;
      std::string why;
      if (DownNodesOwnNothing(&down_ownership, &why) && PeekParticipants(key.first, key.second, &o, &held, &why) &&
          !held) {
        in_progress = false;
        ctx_->Log("engine: open mark of commit " + std::to_string(key.second) + " from node " +
                  std::to_string(key.first) + " (down) closed: no participant holds a part of it; cached copies are "
                  "checked next");
      }
    }
    // A key node that is down or does not answer may still finish the commit: the mark stays.
    if (!in_progress) finished.insert(key);
  }
  if (!finished.empty()) cache_->CloseFinished(finished);
}

}  // namespace engine
}  // namespace hotpot
