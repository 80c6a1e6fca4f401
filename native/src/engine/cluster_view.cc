#include "engine/cluster_view.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <utility>

#include "engine/messages.h"

namespace hotpot {
namespace engine {

std::map<uint32_t, Member> ClusterView::SetMembers(const std::vector<Member>& members) {
  std::map<uint32_t, Member> next;
  for (const Member& m : members) next[m.id] = m;
  std::lock_guard<std::mutex> l(mu_);
  next.swap(members_);
  return next;
}

bool ClusterView::IsAlive(uint32_t node) {
  if (node == ctx_->self()) return true;
  std::lock_guard<std::mutex> l(mu_);
  auto it = members_.find(node);
  return it != members_.end() && it->second.alive;
}

std::vector<uint32_t> ClusterView::AliveNodes() {
  std::set<uint32_t> s{ctx_->self()};
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : members_)
    if (kv.second.alive) s.insert(kv.first);
  return std::vector<uint32_t>(s.begin(), s.end());
}

void ClusterView::Peers(std::vector<uint32_t>* alive, std::vector<uint32_t>* down) {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : members_) {
    if (kv.first == ctx_->self()) continue;
    (kv.second.alive ? alive : down)->push_back(kv.first);
  }
}

std::map<uint32_t, uint64_t> ClusterView::AliveSince() {
  std::map<uint32_t, uint64_t> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : members_)
    if (kv.second.alive && kv.first != ctx_->self()) out[kv.first] = kv.second.state_epoch;
  return out;
}

uint64_t ClusterView::StateEpoch(uint32_t node) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = members_.find(node);
  return it == members_.end() ? 0 : it->second.state_epoch;
}

std::vector<uint32_t> ClusterView::ReplacedSinceReported(const std::vector<uint32_t>& owners) {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t through = UINT64_MAX;
  for (uint32_t o : owners) {
    auto it = members_.find(o);
    through = std::min<uint64_t>(through, it == members_.end() ? 0 : it->second.replicated_through_epoch);
  }
  std::vector<uint32_t> out;
  for (const auto& kv : members_) {
    if (kv.first == ctx_->self() || !kv.second.alive || kv.second.store_replaced_epoch <= through) continue;
    if (std::find(owners.begin(), owners.end(), kv.first) == owners.end()) out.push_back(kv.first);
  }
  return out;
}

Status ClusterView::CheckSender(uint32_t peer, uint64_t peer_epoch) {
  if (peer == ctx_->self()) return Status::Ok();
  std::lock_guard<std::mutex> l(mu_);
  auto it = members_.find(peer);
  if (it == members_.end() || it->second.alive) return Status::Ok();
  const uint64_t declared = it->second.state_epoch;
  if (peer_epoch > declared)
    return Status(Code::kUnavailable, msg::kReasonEpochAhead,
                  "node " + std::to_string(ctx_->self()) + " has not yet seen node " + std::to_string(peer) +
                      " rejoin (it sent epoch " + std::to_string(peer_epoch) + ", this node knows it left or died at " +
                      std::to_string(declared) + "); retry");
  return Status(Code::kUnavailable, msg::kReasonFenced,
                "node " + std::to_string(peer) + " was declared dead at membership epoch " + std::to_string(declared) +
                    " (it sent epoch " + std::to_string(peer_epoch) +
                    "): it is fenced until it rejoins the cluster and rechecks its copies");
}

bool ClusterView::IsForgotten(uint32_t node) {
  if (node == ctx_->self() || node == 0) return false;
  std::lock_guard<std::mutex> l(mu_);
  if (members_.empty() || members_.count(node) != 0) return false;
  return members_.rbegin()->first > node || ctx_->self() > node;
}

bool ClusterView::HasMembers() {
  std::lock_guard<std::mutex> l(mu_);
  return ctx_->self() != 0 && !members_.empty();
}

bool ClusterView::PutDataset(const DatasetInfo& info, uint32_t chunk_size, pool::DatasetStore* store) {
  std::lock_guard<std::mutex> l(mu_);
  const bool first = datasets_.count(info.id) == 0;
  DatasetState& d = datasets_[info.id];
  std::map<uint32_t, uint32_t> owner_before;
  if (!first)
    for (const ChunkInfo& c : std::as_const(d.info.chunks)) owner_before[c.index] = c.owner;
  d.info = info;
  d.info.chunk_size_bytes = chunk_size;
  d.store = store;
  d.chunk_size = chunk_size;
  std::set<uint32_t>& todo = recovering_[info.id];
  std::set<uint32_t>& done = recovered_[info.id];
  std::set<uint32_t> flagged;
  for (const ChunkInfo& c : info.chunks)
    if (c.owner == ctx_->self() && c.owner_recovering) flagged.insert(c.index);
  for (auto it = done.begin(); it != done.end();) it = flagged.count(*it) ? std::next(it) : done.erase(it);
  std::map<uint32_t, std::vector<PageSpan>>& lost = recovered_lost_[info.id];
  for (auto it = lost.begin(); it != lost.end();) it = done.count(it->first) ? std::next(it) : lost.erase(it);
  todo.clear();
  for (uint32_t c : flagged)
    if (!done.count(c)) todo.insert(c);
  std::map<uint32_t, uint32_t>& from = taken_from_[info.id];
  for (auto it = from.begin(); it != from.end();) it = todo.count(it->first) ? std::next(it) : from.erase(it);
  for (uint32_t c : todo)
    if (!from.count(c)) from[c] = owner_before.count(c) ? owner_before[c] : 0;
  if (!todo.empty())
    ctx_->Log("engine: dataset " + std::to_string(info.id) + ": " + std::to_string(todo.size()) +
              " owned chunks are not in this node's store yet (taken over, or its store was replaced): refused until "
              "recovered from their holders");
  return first;
}

Status ClusterView::FindDataset(uint64_t ds, DatasetState* out) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = datasets_.find(ds);
  if (it == datasets_.end() || it->second.store == nullptr)
    return Status(Code::kNotFound, msg::kReasonDatasetNotLoaded,
                  "dataset " + std::to_string(ds) + " is not open on node " + std::to_string(ctx_->self()));
  *out = it->second;
  return Status::Ok();
}

std::vector<DatasetState> ClusterView::Datasets() {
  std::vector<DatasetState> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : datasets_)
    if (kv.second.store != nullptr) out.push_back(kv.second);
  return out;
}

std::string ClusterView::DatasetName(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = datasets_.find(ds);
  return it == datasets_.end() ? std::string() : it->second.info.name;
}

void ClusterView::DetachStores() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& kv : datasets_) kv.second.store = nullptr;
}

Status ClusterView::CheckServable(const DatasetState& d, uint64_t page) {
  const uint32_t chunk = ChunkOf(d, page);
  std::lock_guard<std::mutex> l(mu_);
  auto it = recovering_.find(d.info.id);
  if (it != recovering_.end() && it->second.count(chunk))
    return Status(Code::kUnavailable, msg::kReasonChunkRecovering,
                  "node " + std::to_string(ctx_->self()) + " is recovering chunk " + std::to_string(chunk) +
                      " of dataset " + std::to_string(d.info.id) +
                      " from the nodes holding copies (it took the chunk over, or its store was replaced): retry");
  // Lost pages: the ones this node found while recovering the chunk until the map shows it recovered, then the map's.
  const std::vector<PageSpan>* lost = nullptr;
  auto rl = recovered_lost_.find(d.info.id);
  if (rl != recovered_lost_.end()) {
    auto c = rl->second.find(chunk);
    if (c != rl->second.end()) lost = &c->second;
  }
  if (lost == nullptr) {
    auto ds = datasets_.find(d.info.id);
    if (ds != datasets_.end() && chunk < ds->second.info.chunks.size()) lost = &std::as_const(ds->second.info.chunks)[chunk].lost;
  }
  if (lost == nullptr || !InSpans(*lost, page)) return Status::Ok();
  return Status(Code::kDataLoss, msg::kReasonPageLost,
                "page " + std::to_string(page) + " of dataset " + std::to_string(d.info.id) +
                    " is lost: no node held a copy of it when its owner (node " + std::to_string(ctx_->self()) +
                    ") recovered chunk " + std::to_string(chunk) +
                    " (`hotpot stat` lists lost pages; `hotpot forget-lost` accepts the loss, then it reads as zeros)");
}

std::vector<PageSpan> ClusterView::MapLost(const ChunkRef& ref) {
  std::lock_guard<std::mutex> l(mu_);
  auto ds = datasets_.find(ref.dataset_id);
  if (ds == datasets_.end() || ref.chunk >= ds->second.info.chunks.size()) return {};
  return std::as_const(ds->second.info.chunks)[ref.chunk].lost;
}

std::vector<ChunkRef> ClusterView::RecoveringChunks() {
  std::vector<ChunkRef> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : recovering_)
    for (uint32_t c : kv.second) out.push_back(ChunkRef{kv.first, c});
  return out;
}

std::vector<RecoveredChunk> ClusterView::RecoveredChunks() {
  std::vector<RecoveredChunk> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : recovered_)
    for (uint32_t c : kv.second) {
      RecoveredChunk r{ChunkRef{kv.first, c}, {}};
      auto ds = recovered_lost_.find(kv.first);
      if (ds != recovered_lost_.end() && ds->second.count(c)) r.lost = ds->second.at(c);
      out.push_back(std::move(r));
    }
  return out;
}

void ClusterView::MarkRecovered(const ChunkRef& ref, std::vector<PageSpan> lost) {
  std::lock_guard<std::mutex> l(mu_);
  recovering_[ref.dataset_id].erase(ref.chunk);
  recovered_[ref.dataset_id].insert(ref.chunk);
  recovered_lost_[ref.dataset_id][ref.chunk] = std::move(lost);
}

uint32_t ClusterView::TakenFrom(const ChunkRef& ref) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = taken_from_.find(ref.dataset_id);
  if (it == taken_from_.end()) return 0;
  auto c = it->second.find(ref.chunk);
  return c == it->second.end() ? 0 : c->second;
}

bool ClusterView::Recovering(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = recovering_.find(ds);
  return it != recovering_.end() && !it->second.empty();
}

}  // namespace engine
}  // namespace hotpot
