#include "engine/part_copies.h"

#include <algorithm>
#include <iterator>
#include <set>

#include "engine/fan_out.h"

namespace hotpot {
namespace engine {

msg::PartCopy CopyOfRecord(const pool::RedoRecord& r) {
  msg::PartCopy c;
  c.committer = r.committer_node_id;
  c.txid = r.txid;
  c.dataset = r.dataset_id;
  c.commit_id = r.commit_id;
  c.flags = r.commit_id == 0 ? msg::kCopyOneShot : 0;
  if (r.phase == pool::RedoPhase::kCopyApplied) c.flags |= msg::kCopyApplied;
  if (r.phase == pool::RedoPhase::kCopyFrozen || r.phase == pool::RedoPhase::kFrozen) c.flags |= msg::kCopyFrozen;
  for (const pool::RedoRange& rr : r.ranges) c.ranges.push_back(msg::PushRange{rr.offset, rr.bytes});
  c.versions = r.page_versions;
  c.sender_epoch = r.sender_epoch;
  return c;
}

void PartCopies::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void PartCopies::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PartCopies::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait(l, [this] { return stop_ || !releases_.empty(); });
    if (stop_) break;
    auto batch = std::move(releases_);
    releases_.clear();
    l.unlock();
    const bool all = SendReleases(std::move(batch));
    l.lock();
    // A holder that did not answer has its releases back in the queue: they go again after a pause.
    if (!all) cv_.wait_for(l, kReleaseRetry, [this] { return stop_; });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Owner side

Status PartCopies::Send(const msg::PartCopy& c, uint32_t want, Deadline deadline, std::vector<uint32_t>* holders,
                        bool* withdrawn, const std::vector<uint32_t>* exclude) {
  holders->clear();
  if (withdrawn != nullptr) *withdrawn = true;
  if (want == 0) return Status::Ok();
  const uint32_t self = ctx_->self();
  std::vector<uint32_t> alive = view_->AliveNodes();
  if (exclude != nullptr)
    alive.erase(std::remove_if(alive.begin(), alive.end(),
                               [&](uint32_t node) {
                                 return std::find(exclude->begin(), exclude->end(), node) != exclude->end();
                               }),
                alive.end());
  std::vector<uint32_t> order;
  for (uint32_t node : alive)
    if (node > self) order.push_back(node);
  for (uint32_t node : alive)
    if (node < self) order.push_back(node);
  {
    std::lock_guard<std::mutex> l(mu_);
    const TimePoint now = ctx_->time->Now();
    std::stable_partition(order.begin(), order.end(), [&](uint32_t node) {
      auto it = failed_until_.find(node);
      return it == failed_until_.end() || it->second <= now;
    });
  }
  std::vector<uint8_t> payload;
  msg::EncodePartCopy(c, &payload);
  std::string failures;
  // Nodes that answered "redo log full": asked once more after the others (the releases that rode on the first ask
  // have freed slots there by then).
  std::vector<uint32_t> full;
  bool asked_full_again = false;
  // As many nodes at once as copies are still missing (FanOut); the ones that fail are replaced by the next nodes.
  for (size_t next = 0; next < order.size() && holders->size() < want;) {
    const TimePoint now = ctx_->time->Now();
    if (now >= deadline) {
      failures += "; no time left for node " + std::to_string(order[next]);
      break;
    }
    const size_t batch = std::min(order.size() - next, size_t(want - holders->size()));
    // Spare nodes left after these: they get half the time left, the rest is for the spares.
    const bool spare = order.size() - next - batch > 0;
    const Deadline until = spare ? now + (deadline - now) / 2 : deadline;
    std::vector<Status> answers(batch);
    std::vector<Keys> riding(batch);
    RunSteps(ctx_->fan(), batch, [&](size_t k) {
      std::vector<uint8_t> resp;
      riding[k] = TakeReleases(order[next + k]);
      if (riding[k].empty()) {
        answers[k] = peers_->CallLoaded(order[next + k], msg::kPrepareCopy, payload, &resp, until);
        return;
      }
      std::vector<uint8_t> with = payload;
      msg::AppendCopyReleases(riding[k], &with);
      answers[k] = peers_->CallLoaded(order[next + k], msg::kPrepareCopy, with, &resp, until);
    });
    std::lock_guard<std::mutex> l(mu_);
    for (size_t k = 0; k < batch; k++) {
      const uint32_t node = order[next + k];
      const Status& st = answers[k];
      // The releases that rode on it are settled with an answer; otherwise they are queued again (dropping a copy
      // twice is harmless).
      if (!st.ok() && !riding[k].empty()) {
        RequeueLocked(node, riding[k], 0);
        cv_.notify_one();
      }
      if (st.ok()) {
        SettledLocked(riding[k], 0, riding[k].size());
        holders->push_back(node);
        failed_until_.erase(node);
        ctx_->counters.prepare_copies_sent++;
      } else {
        failures += "; node " + std::to_string(node) + ": " + st.ToString();
        // Refusals for a reason of its own (a full redo log, fencing) are answers: only silence and absence count.
        if (st.code() == Code::kDeadlineExceeded || st.code() == Code::kUnavailable)
          failed_until_[node] = ctx_->time->Now() + ctx_->opt.request_timeout;
        if (st.code() == Code::kResourceExhausted) full.push_back(node);
      }
    }
    next += batch;
    if (next == order.size() && holders->size() < want && !full.empty() && !asked_full_again) {
      order.insert(order.end(), full.begin(), full.end());
      asked_full_again = true;
    }
  }
  if (holders->size() == want) return Status::Ok();
  const bool all = ReleaseNow(TxKey{c.committer, c.txid}, *holders);
  if (withdrawn != nullptr) *withdrawn = all;
  const size_t made = holders->size();
  holders->clear();
  return Status(Code::kUnavailable, "tx " + std::to_string(c.txid) + ": its prepare must be logged on " +
                                        std::to_string(want) + " other nodes but only " + std::to_string(made) +
                                        " took it" + failures);
}

PartCopies::Keys PartCopies::TakeReleases(uint32_t node) {
  Keys taken;
  std::lock_guard<std::mutex> l(mu_);
  auto it = releases_.find(node);
  if (it == releases_.end()) return taken;
  const size_t n = std::min(it->second.size(), size_t(msg::kMaxPartKeys));
  taken.assign(it->second.begin(), it->second.begin() + long(n));
  it->second.erase(it->second.begin(), it->second.begin() + long(n));
  if (it->second.empty()) releases_.erase(it);
  return taken;
}

void PartCopies::RequeueLocked(uint32_t node, const Keys& keys, size_t from) {
  Keys& q = releases_[node];
  q.insert(q.begin(), keys.begin() + long(from), keys.end());
  // Bounded: past kMaxQueuedReleases for one holder the oldest are left to the holder's own questions.
  if (q.size() > kMaxQueuedReleases) {
    const size_t drop = q.size() - kMaxQueuedReleases;
    SettledLocked(q, 0, drop);
    q.erase(q.begin(), q.begin() + long(drop));
  }
}

void PartCopies::Mark(const msg::PartCopy& c, uint32_t flag, const std::vector<uint32_t>& holders, Deadline deadline,
                      std::vector<uint32_t>* told) {
  told->clear();
  msg::PartCopy marked = c;
  marked.flags |= flag;
  std::vector<uint8_t> payload, resp;
  msg::EncodePartCopy(marked, &payload);
  for (uint32_t node : holders) {
    if (node == ctx_->self()) {
      if (Keep(ctx_->self(), marked).ok()) told->push_back(node);
      continue;
    }
    if (ctx_->time->Now() >= deadline || !view_->IsAlive(node)) continue;
    if (peers_->CallLoaded(node, msg::kPrepareCopy, payload, &resp, deadline).ok()) told->push_back(node);
  }
}

bool PartCopies::ReleaseNow(const TxKey& key, const std::vector<uint32_t>& holders) {
  std::vector<uint8_t> payload, resp;
  msg::EncodePartKeys({{key.committer, key.txid}}, &payload);
  bool all = true;
  for (uint32_t node : holders)
    all = peers_->Call(node, msg::kReleaseCopies, payload, &resp, ctx_->NewDeadline()).ok() && all;
  return all;
}

void PartCopies::Release(const TxKey& key, const std::vector<uint32_t>& holders) {
  if (holders.empty()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (uint32_t node : holders) releases_[node].push_back({key.committer, key.txid});
    releasing_[key] += uint32_t(holders.size());
  }
  cv_.notify_one();
}

bool PartCopies::Releasing(const TxKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  return releasing_.count(key) != 0;
}

void PartCopies::SettledLocked(const std::vector<std::pair<uint32_t, uint64_t>>& keys, size_t from, size_t to) {
  for (size_t i = from; i < to && i < keys.size(); i++) {
    auto it = releasing_.find(TxKey{keys[i].first, keys[i].second});
    if (it != releasing_.end() && --it->second == 0) releasing_.erase(it);
  }
}

void PartCopies::Flush() {
  std::map<uint32_t, Keys> batch;
  {
    std::lock_guard<std::mutex> l(mu_);
    batch.swap(releases_);
  }
  (void)SendReleases(std::move(batch));
}

bool PartCopies::SendReleases(std::map<uint32_t, Keys> batch) {
  std::vector<std::pair<uint32_t, Keys>> holders(std::make_move_iterator(batch.begin()),
                                                 std::make_move_iterator(batch.end()));
  std::vector<char> answered(holders.size(), 1);
  RunSteps(ctx_->fan(), holders.size(), [&](size_t h) {
    const uint32_t node = holders[h].first;
    const Keys& keys = holders[h].second;
    // A holder that is down keeps the copies until it asks about them (CollectOrphans).
    if (ctx_->shut.load() || !view_->IsAlive(node)) {
      std::lock_guard<std::mutex> l(mu_);
      SettledLocked(keys, 0, keys.size());
      return;
    }
    std::vector<uint8_t> payload, resp;
    for (size_t at = 0; at < keys.size(); at += msg::kMaxPartKeys) {
      const size_t end = std::min(keys.size(), at + msg::kMaxPartKeys);
      msg::EncodePartKeys(Keys(keys.begin() + long(at), keys.begin() + long(end)), &payload);
      Status st = peers_->Call(node, msg::kReleaseCopies, payload, &resp, ctx_->NewDeadline());
      std::lock_guard<std::mutex> l(mu_);
      if (st.ok()) {
        SettledLocked(keys, at, end);
        continue;
      }
      // Not answered: the rest goes back to the queue (a copy left behind holds a redo slot there for as long as the
      // holder waits to ask about it, and a busy owner makes thousands of copies in that time).
      answered[h] = 0;
      RequeueLocked(node, keys, at);
      if (failing_.insert(node).second) {
        ctx_->Log("engine: releasing prepare copies on node " + std::to_string(node) + ": " + st.ToString() +
                  " (retried while it is alive)");
      }
      return;
    }
    std::lock_guard<std::mutex> l(mu_);
    failing_.erase(node);
  });
  return std::all_of(answered.begin(), answered.end(), [](char a) { return a != 0; });
}

// ---------------------------------------------------------------------------------------------------------------
// Holder side

void PartCopies::Load() {
  const TimePoint now = ctx_->time->Now();
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : ctx_->pool->redo().InFlight()) {
    const pool::RedoRecord& r = kv.second;
    if (!pool::IsCopyPhase(r.phase)) continue;
    kept_[CopyKey{r.owner_node, TxKey{r.committer_node_id, r.txid}}] =
        Kept{kv.first, r.dataset_id, now, r.phase == pool::RedoPhase::kCopyApplied,
             r.phase == pool::RedoPhase::kCopyFrozen};
  }
}

Status PartCopies::Keep(uint32_t owner, const msg::PartCopy& c) {
  const CopyKey key{owner, TxKey{c.committer, c.txid}};
  const bool applied = (c.flags & msg::kCopyApplied) != 0;
  const bool frozen = !applied && (c.flags & msg::kCopyFrozen) != 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (applied || frozen)
      HOTPOT_RETURN_IF_ERROR(SetCopyPhaseLocked(key.part, applied ? pool::RedoPhase::kCopyApplied
                                                                  : pool::RedoPhase::kCopyFrozen));
    if (kept_.count(key)) return Status::Ok();
  }
  pool::RedoRecord rec;
  rec.txid = c.txid;
  rec.dataset_id = c.dataset;
  rec.committer_node_id = c.committer;
  rec.phase = applied ? pool::RedoPhase::kCopyApplied : frozen ? pool::RedoPhase::kCopyFrozen : pool::RedoPhase::kCopy;
  rec.owner_node = owner;
  rec.commit_id = c.commit_id;
  for (const msg::PushRange& r : c.ranges) rec.ranges.push_back(pool::RedoRange{r.offset, r.bytes});
  rec.page_versions = c.versions;
  rec.sender_epoch = c.sender_epoch;
  uint32_t slot = 0;
  HOTPOT_RETURN_IF_ERROR(ctx_->pool->redo().Append(rec, &slot));
  std::lock_guard<std::mutex> l(mu_);
  if (!kept_.emplace(key, Kept{slot, c.dataset, ctx_->time->Now(), applied, frozen}).second)
    (void)ctx_->pool->redo().Free(slot);
  else ctx_->counters.prepare_copies_kept++;
  return Status::Ok();
}

Status PartCopies::NoteApplied(const TxKey& part) {
  std::lock_guard<std::mutex> l(mu_);
  return SetCopyPhaseLocked(part, pool::RedoPhase::kCopyApplied);
}

Status PartCopies::SetCopyPhaseLocked(const TxKey& part, pool::RedoPhase phase) {
  const bool frozen = phase == pool::RedoPhase::kCopyFrozen;
  for (auto& kv : kept_) {
    // Applied is final; frozen only ever moves to applied (the participants' rule applied the part).
    if (kv.first.part.committer != part.committer || kv.first.part.txid != part.txid || kv.second.applied ||
        (frozen && kv.second.frozen))
      continue;
    // Under mu_: a concurrent Drop must not free the slot in between (one byte, rare path).
    HOTPOT_RETURN_IF_ERROR(ctx_->pool->redo().SetPhase(kv.second.slot, phase));
    (frozen ? kv.second.frozen : kv.second.applied) = true;
  }
  return Status::Ok();
}

void PartCopies::Drop(uint32_t owner, const std::vector<std::pair<uint32_t, uint64_t>>& keys) {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& k : keys) {
    auto it = kept_.find(CopyKey{owner, TxKey{k.first, k.second}});
    if (it == kept_.end()) continue;
    (void)ctx_->pool->redo().Free(it->second.slot);
    kept_.erase(it);
  }
}

void PartCopies::CollectOrphans() {
  const TimePoint limit = ctx_->time->Now() - 4 * ctx_->opt.request_timeout;
  std::map<uint32_t, std::vector<std::pair<uint32_t, uint64_t>>> ask;
  std::vector<std::pair<uint32_t, TxKey>> old;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : kept_)
      if (kv.second.at < limit) old.push_back({kv.second.slot, kv.first.part});
  }
  if (old.empty()) return;
  // Where each old copy's part lies now: a chunk still owned by the copy's owner (ask it), a chunk another node owns
  // and holds (it took the chunk over and settled the part: the copy is done), or one being taken over (keep it).
  std::map<uint32_t, pool::RedoRecord> records;
  for (auto& kv : ctx_->pool->redo().InFlight())
    if (pool::IsCopyPhase(kv.second.phase)) records.emplace(kv.first, std::move(kv.second));
  std::map<uint32_t, std::vector<std::pair<uint32_t, uint64_t>>> done;
  std::map<CopyKey, uint32_t> slot_of;  // the copies asked about: their redo slots
  for (const auto& o : old) {
    auto rec = records.find(o.first);
    if (rec == records.end() || rec->second.ranges.empty()) continue;
    const pool::RedoRecord& r = rec->second;
    DatasetState d;
    const ChunkInfo* c = nullptr;
    if (view_->FindDataset(r.dataset_id, &d).ok()) c = ChunkEntry(d, r.ranges.front().offset / kPageSize);
    // A copy of this node's own part (kept when its chunk failed over while it was down), or of a part whose chunk
    // another node owns now: done once that chunk's owner holds it (not recovering any more).
    if (c != nullptr && (c->owner != r.owner_node || r.owner_node == ctx_->self())) {
      if (!c->owner_recovering) done[r.owner_node].push_back({o.second.committer, o.second.txid});
      continue;
    }
    // The copy's owner owns the chunk again but is still taking it over (the chunk went away and came back): it holds
    // the part at most as a copy of its own, so it would answer "not held", and it gathers this copy to settle the
    // part. Kept until it has (simulation seed 9967: a decided part's copies were all dropped this way, and the next
    // owner applied half of the commit).
    if (c != nullptr && c->owner_recovering) continue;
    ask[r.owner_node].push_back({o.second.committer, o.second.txid});
    slot_of[CopyKey{r.owner_node, o.second}] = o.first;
  }
  for (const auto& kv : done) {
    Drop(kv.first, kv.second);
    ctx_->Log("engine: dropped " + std::to_string(kv.second.size()) + " prepare copies of node " +
              std::to_string(kv.first) + ": their chunk has another owner now, which settled them");
  }
  std::vector<uint8_t> payload, resp;
  for (auto& kv : ask) {
    if (ctx_->shut.load()) return;
    if (!view_->IsAlive(kv.first)) continue;
    if (kv.second.size() > msg::kMaxPartKeys) kv.second.resize(msg::kMaxPartKeys);
    msg::EncodePartKeys(kv.second, &payload);
    Status st = peers_->Call(kv.first, msg::kPartStatus, payload, &resp, ctx_->NewDeadline());
    if (!st.ok() || resp.size() != kv.second.size()) continue;  // asked again next round
    std::vector<std::pair<uint32_t, uint64_t>> finished;
    for (size_t i = 0; i < resp.size(); i++) {
      if (resp[i] != 0) continue;
      // A copy flagged applied (the part was applied short of N page copies) may be the part's only trace but the
      // owner's page: an owner that restarted no longer knows it keeps it and says "not held". It is told to keep
      // track of it again and releases it once the pages are back at N; dropped here, the commit was lost when that
      // owner died before re-replication (docs/design/availability.md "Under-replicated commits").
      auto slot = slot_of.find(CopyKey{kv.first, TxKey{kv.second[i].first, kv.second[i].second}});
      auto rec = slot == slot_of.end() ? records.end() : records.find(slot->second);
      if (rec != records.end() && rec->second.phase == pool::RedoPhase::kCopyApplied) {
        std::vector<uint8_t> body, kept;
        msg::EncodePartCopy(CopyOfRecord(rec->second), &body);
        const Status kst = peers_->Call(kv.first, msg::kKeepApplied, body, &kept, ctx_->NewDeadline());
        if (kst.ok() && kept.size() == 1 && kept[0] == 0) {
          finished.push_back(kv.second[i]);  // none of its pages is that node's now
          continue;
        }
        if (!kst.ok())  // asked again next round
          ctx_->Log("engine: node " + std::to_string(kv.first) + " did not take back its applied copy of tx " +
                    std::to_string(kv.second[i].second) + ": " + kst.ToString());
        continue;
      }
      finished.push_back(kv.second[i]);
    }
    if (finished.empty()) continue;
    Drop(kv.first, finished);
    ctx_->Log("engine: dropped " + std::to_string(finished.size()) + " prepare copies that node " +
              std::to_string(kv.first) + " no longer has (their release was lost)");
  }
}

std::vector<msg::OwnedCopy> PartCopies::List(uint64_t ds, uint64_t first, uint64_t count) {
  std::set<uint32_t> slots;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& kv : kept_)
      if (kv.second.dataset == ds) slots.insert(kv.second.slot);
  }
  std::vector<msg::OwnedCopy> out;
  if (slots.empty()) return out;
  for (const auto& kv : ctx_->pool->redo().InFlight()) {
    const pool::RedoRecord& r = kv.second;
    if (!slots.count(kv.first) || !pool::IsCopyPhase(r.phase) || r.dataset_id != ds) continue;
    bool in = false;
    for (const pool::RedoRange& rr : r.ranges) in = in || (rr.offset / kPageSize >= first && rr.offset / kPageSize - first < count);
    if (!in) continue;
    out.push_back(msg::OwnedCopy{r.owner_node, CopyOfRecord(r)});
  }
  return out;
}

bool PartCopies::Holds(uint32_t owner, const TxKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  return kept_.count(CopyKey{owner, key}) != 0;
}

size_t PartCopies::Held() {
  std::lock_guard<std::mutex> l(mu_);
  return kept_.size();
}

std::vector<TxKey> PartCopies::HeldFor(uint32_t owner) {
  std::vector<TxKey> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : kept_)
    if (kv.first.owner == owner) out.push_back(kv.first.part);
  return out;
}

}  // namespace engine
}  // namespace hotpot
