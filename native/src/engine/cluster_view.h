// The cluster as this node sees it: members (alive or not), every dataset's chunk map and pool store, and the
// owned chunks whose pages this node's store lost (owner_recovering). A leaf: it calls no other component.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "engine/core.h"

namespace hotpot {
namespace engine {

class ClusterView {
 public:
  explicit ClusterView(Context* ctx) : ctx_(ctx) {}

  // Replaces the member list; returns the previous one (the transport's peer table follows the difference).
  std::map<uint32_t, Member> SetMembers(const std::vector<Member>& members);
  bool IsAlive(uint32_t node);
  // This node and every member marked alive, ascending.
  std::vector<uint32_t> AliveNodes();
  // Members other than this node, split into alive and not alive.
  void Peers(std::vector<uint32_t>* alive, std::vector<uint32_t>* down);
  bool HasMembers();
  // `node` was a member and is not any more (`hotpot forget`): node ids are handed out in increasing order and never
  // reused, so a node absent from a membership that lists a higher id was forgotten. (The highest id ever handed out,
  // forgotten, cannot be told from one that joined after the membership this node last heard: it reads as not
  // forgotten.)
  bool IsForgotten(uint32_t node);
  // Alive members (this node excluded) -> the epoch at which each last joined.
  std::map<uint32_t, uint64_t> AliveSince();
  // The epoch at which `node` last changed state (0 when unknown).
  uint64_t StateEpoch(uint32_t node);
  // Alive members other than this node and `owners` whose store was replaced after the epoch through which each of
  // `owners` last reported its pages at N live copies (the lowest of theirs; an unknown owner: 0; no owners: none): a
  // page of theirs may have had a copy on such a member, lost with its store (docs/design/availability.md "Lost
  // pages").
  std::vector<uint32_t> ReplacedSinceReported(const std::vector<uint32_t>& owners);
  // Fencing (docs/design/consistency.md "Fencing"): a request from `peer`, stamped with the membership epoch it knew,
  // is refused when this view shows `peer` declared dead (or gone) at that epoch or later (kReasonFenced); when the
  // stamp is later than the declaration the sender rejoined and this view is behind (kReasonEpochAhead, retry).
  // Unknown senders (a node that joined after this view's epoch) pass.
  Status CheckSender(uint32_t peer, uint64_t peer_epoch);

  // Adds or replaces a dataset; true when it was not known before. Recomputes which owned chunks are recovering.
  bool PutDataset(const DatasetInfo& info, uint32_t chunk_size, pool::DatasetStore* store);
  Status FindDataset(uint64_t ds, DatasetState* out);
  std::vector<DatasetState> Datasets();
  std::string DatasetName(uint64_t ds);
  void DetachStores();  // at shutdown: the pool goes away

  // Owned chunks of a replaced store (docs/design/consistency.md "A node that lost its store"), and lost pages
  // (docs/design/availability.md "Lost pages"). A page this node may serve or commit as its owner: refused with
  // kReasonChunkRecovering (UNAVAILABLE, retry) while its chunk is recovering here, with kReasonPageLost (DATA_LOSS)
  // when no copy of it survived.
  Status CheckServable(const DatasetState& d, uint64_t page);
  std::vector<ChunkRef> RecoveringChunks();
  std::vector<RecoveredChunk> RecoveredChunks();
  // The chunk is recovered here; `lost`: its pages no node held (sorted, not overlapping).
  void MarkRecovered(const ChunkRef& ref, std::vector<PageSpan> lost);
  // The chunk's lost pages as the chunk map has them.
  std::vector<PageSpan> MapLost(const ChunkRef& ref);
  bool Recovering(uint64_t ds);
  // The owner a recovering chunk had in the map before this node was named (0 when this node did not know it).
  uint32_t TakenFrom(const ChunkRef& ref);

 private:
  Context* ctx_;
  std::mutex mu_;
  std::map<uint32_t, Member> members_;
  std::map<uint64_t, DatasetState> datasets_;
  // ds -> owned chunks still to recover (refused meanwhile), and chunks recovered here that the chunk map does not
  // show recovered yet.
  std::map<uint64_t, std::set<uint32_t>> recovering_, recovered_;
  std::map<uint64_t, std::map<uint32_t, std::vector<PageSpan>>> recovered_lost_;  // ds -> recovered chunk -> lost
  std::map<uint64_t, std::map<uint32_t, uint32_t>> taken_from_;  // ds -> recovering chunk -> its previous owner
};

}  // namespace engine
}  // namespace hotpot
