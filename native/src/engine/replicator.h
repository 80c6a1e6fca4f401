// The owner's fan-out of an applied commit part (docs/design/engine.md "Commit protocol", owner APPLY): a coherence
// push of the new bytes to every node caching a page — one PUSH_BATCH per node, applied there in one step, pages
// answered "stale" sent again whole — then whole-page replica top-up until every page has N holders. It keeps no
// state: the owner gives it the targets and records what comes back.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <vector>

#include "engine/cluster_view.h"
#include "engine/core.h"
#include "engine/messages.h"
#include "engine/node_cache.h"
#include "engine/peers.h"

namespace hotpot {
namespace engine {

struct PushPlan {
  TxKey key;                                   // the part: its committer and txid
  uint64_t ds = 0;
  uint64_t commit_id = 0;                      // multi-part commits: pushes are marked open until the committer's DONE
  uint32_t replicas = 1;                       // N
  pool::DatasetStore* store = nullptr;         // the owner's pages (post-commit, locked by the part)
  const std::vector<uint64_t>* pages = nullptr;
  const std::vector<uint64_t>* versions = nullptr;
  const std::vector<uint64_t>* bases = nullptr;  // each page's version before the part (PushPage::base)
  const std::vector<msg::Range>* ranges = nullptr;
  std::map<uint32_t, std::vector<size_t>> targets;  // node -> indexes into pages it caches (or may cache)
  std::function<bool(uint32_t)> suspect;             // nodes that may hold copies that missed a push (kPushCheck)
};

struct PushResult {
  std::vector<std::set<uint32_t>> holders;      // per page: nodes holding the new version (the owner included)
  std::vector<std::vector<uint32_t>> gone;      // per page: nodes that answered "not held"
  std::vector<std::vector<uint32_t>> replicated;  // per page: nodes that got a replica (redundant copies)
  msg::MarkedNodes marked;                      // nodes carrying an open mark of the commit, and those missed
  std::vector<uint32_t> failed;                 // every node a message of this push failed to (it may have missed it)
  // Per page: nodes whose message with it failed (may hold it or not), and cachers not alive (not pushed to).
  std::vector<std::vector<uint32_t>> unknown;
  uint32_t copies = 0;                          // the fewest holders of any page
};

class Replicator {
 public:
  Replicator(Context* ctx, ClusterView* view, NodeCache* cache, Peers* peers)
      : ctx_(ctx), view_(view), cache_(cache), peers_(peers) {}

  Status Push(const PushPlan& plan, PushResult* out);
  // DONE of commit `id` (this node as its key) to `nodes`, best effort: a mark left open is closed once this node
  // says the commit is finished (MARK_STATUS). Nodes in `check` get kDoneCheck: they may have missed a push.
  void SendDone(uint64_t id, const std::set<uint32_t>& nodes, const std::set<uint32_t>& check);
  // Background re-replication: whole-page replicas (kPushReplica, kPushCheck with `check`) of `pages` of dataset `ds`
  // at `versions` with contents `data`, to `node`. At most kMaxReplicaPages pages (one message, applied there in one
  // step). accepted: per page kPushHeld, kPushNotHeld, or another value when its message failed.
  static constexpr size_t kMaxReplicaPages = 256;
  Status SendReplicas(uint32_t node, uint64_t ds, bool check, const std::vector<uint64_t>& pages,
                      const std::vector<uint64_t>& versions, const std::vector<std::vector<uint8_t>>& data,
                      std::vector<uint8_t>* accepted);

 private:
  // Post-commit bytes of page `index` of a plan, read once.
  using WholePageFn = std::function<Status(size_t index, const std::vector<uint8_t>** page)>;
  // Sends `b` to `node` as PUSH_BATCH messages (plan::CutBatches): one message when it fits (applied there in one
  // step); otherwise every message is marked open (key b.committer, b.commit_id) and *split is set: the caller
  // closes the mark with DONE once all are sent. accepted: per page kPushHeld / kPushNotHeld / kUnknown (its message
  // failed: the node may or may not have applied it). Returns the first error.
  // kPushCheck on `b` when `node` is one of the plan's suspects.
  static void CheckFlag(const PushPlan& plan, uint32_t node, msg::PushBatch* b);
  Status SendPages(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole, std::vector<uint8_t>* accepted,
                   bool* split);
  Status SendBatch(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole, size_t first,
                   std::vector<uint8_t>* accepted);

  Context* ctx_;
  ClusterView* view_;
  NodeCache* cache_;
  Peers* peers_;
};

}  // namespace engine
}  // namespace hotpot
