// The committer side of the commit protocol (docs/design/engine.md "Commit protocol", committer;
// docs/design/consistency.md "Multi-owner atomicity", "Timeouts"): an app session's dirty pages become byte ranges
// against their base images, grouped into parts by owner (commit_plan); one part is a one-shot PREPARE, several are
// PREPARE all, a durable decision, APPLY all, DONE, RELEASE. It keeps the decisions until every part is done,
// answers OUTCOME queries from them, and re-drives unfinished ones (DriveDecisions, from the resolver).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "engine/cluster_view.h"
#include "engine/commit_plan.h"
#include "engine/core.h"
#include "engine/fetcher.h"
#include "engine/node_cache.h"
#include "engine/owner.h"
#include "engine/peers.h"
#include "engine/replicator.h"

namespace hotpot {
namespace engine {

class Committer {
 public:
  Committer(Context* ctx, ClusterView* view, NodeCache* cache, Owner* owner, Fetcher* fetcher, Replicator* replicator,
            Peers* peers)
      : ctx_(ctx), view_(view), cache_(cache), owner_(owner), fetcher_(fetcher), replicator_(replicator),
        peers_(peers) {}

  // Decision records from the redo log (before the transport listens: an OUTCOME query must never be answered
  // "aborted" for a commit decided on disk), and the txid counter past every txid used before the restart.
  void Recover();
  Status Commit(uint64_t session, const std::vector<DirtyPage>& pages, uint32_t replicas, const CommitExtras& extras,
                CommitResult* result);
  // OUTCOME of one of this node's parts: pending while undecided, committed once decided (or from a decision
  // record), otherwise aborted (presumed: without a decision no part applied; after it is done no part is left).
  msg::OutcomeCode OutcomeOf(uint64_t txid);
  // MARK_STATUS, committer role: the commit with this id is running or decided and not done everywhere.
  bool InProgress(uint64_t id);
  // Re-drives decided commits whose parts are not all applied and released; frees their records once done.
  void DriveDecisions();
  size_t PendingDecisions();

 private:
  // An MRSW lease below the dispatcher's floor for this node ended (the node was declared dead or restarted).
  Status CheckLeaseFloor(const std::vector<uint8_t>& lease) const;
  // A multi-part commit decided COMMIT whose parts are not all applied and released yet.
  struct Decision {
    uint64_t ds = 0;
    std::vector<pool::RedoPart> parts;
    std::vector<bool> applied;  // APPLY acknowledged by the part's owner (or it completed the part without us)
    std::vector<bool> done;     // then RELEASE acknowledged: sent only once every part is applied and DONE is sent
    // Applied with fewer than N page copies (or re-driven, copies unknown): its RELEASE counts only once its owner
    // has released the part's prepare copies. Until then a node taking the chunk over may find a copy the part's
    // pages never reached and ask us: the decision must still be here to answer "committed", not "aborted" (presumed).
    std::vector<bool> short_copies;
    uint64_t commit_id = 0;
    std::set<uint32_t> marked;  // nodes holding an open mark of the commit: DONE once every part is done
    std::set<uint32_t> missed;  // of those, nodes a push failed to: their DONE says to check their copies
    uint32_t slot = 0;
    bool has_slot = false;  // durable decision record in the redo log (commits with >= 2 writing parts)
    bool driving = false;   // the resolver is re-driving it
    // The nodes a part's pushes marked are not all known (the decision was recovered after a restart, or an owner
    // completed a part without us): DONE, with the check flag, then goes to every alive node (idempotent, and rare).
    bool done_everywhere = false;
    bool done_sent = false;  // DONE went out (every part applied)
    // Context::lease_lapses when the commit began: a lapse since (this node may have been declared dead, and its
    // participants may have aborted the commit without it) makes "not prepared" mean applied or aborted.
    uint64_t lease_lapses = 0;
    void Add(const msg::MarkedNodes& m) {
      marked.insert(m.marked.begin(), m.marked.end());
      missed.insert(m.missed.begin(), m.missed.end());
    }
  };

  // Diff and read checks -> parts (nothing to do: parts empty).
  Status Plan(uint64_t session, const DatasetState& d, const std::vector<DirtyPage>& pages,
              const CommitExtras& extras, std::vector<plan::Part>* parts, CommitResult* result);
  Status OneShot(plan::Part* part, CommitResult* result);
  Status MultiPart(const DatasetState& d, std::vector<plan::Part>* parts, uint32_t n, CommitResult* result);
  // APPLY to every part of a decided commit (retried within a budget), then DONE, then RELEASE of applied parts.
  Status ApplyAll(const std::vector<plan::Part>& parts, uint32_t n, Decision* dec, CommitResult* result);
  // After an ABORTED commit: the conflicting pages cached here are checked with their owners, so the retry does not
  // conflict again on a copy that missed a commit.
  void RefreshConflicts(const DatasetState& d, const CommitResult& result);
  Status CallPrepare(uint32_t owner, const msg::PrepareRequest& req, uint32_t* copies,
                     std::vector<msg::Conflict>* conflicts);
  Status CallTx(uint32_t owner, uint16_t type, uint64_t txid, uint32_t* copies, msg::MarkedNodes* marked = nullptr,
                uint64_t ds = 0, uint64_t generation = 0);
  // RELEASE of an applied part, naming the nodes the commit's pushes missed; *copies_pending: its owner is still
  // releasing the part's prepare copies at their holders.
  Status Release(uint32_t owner, uint64_t txid, const Decision& dec, bool* copies_pending);
  // A one-shot PREPARE that got no usable answer: ABORT settles whether it applied (docs "Timeouts").
  Status SettleOneShot(uint32_t owner, uint64_t txid, const Status& failed, uint32_t* copies);
  // APPLY to a part of a decision; true when the owner has applied it (now or before).
  bool ApplyPart(const pool::RedoPart& part, Decision* dec, uint64_t generation = 0);
  // Every part applied: DONE to the marked nodes, then RELEASE of every part not released yet (a part released while
  // another is still unapplied would let a node fetch its pages next to the other part's old ones). True when all
  // are released.
  bool ReleaseAll(Decision* dec);
  void SendDecisionDone(const Decision& dec);
  uint64_t NewTxid();

  Context* ctx_;
  ClusterView* view_;
  NodeCache* cache_;
  Owner* owner_;
  Fetcher* fetcher_;
  Replicator* replicator_;
  Peers* peers_;
  std::atomic<uint64_t> next_txid_{1};
  std::mutex mu_;
  std::map<uint64_t, msg::OutcomeCode> in_flight_;           // part txid -> state while its Commit runs
  std::map<uint64_t, std::shared_ptr<Decision>> decisions_;  // part txid -> decided, not done everywhere
};

}  // namespace engine
}  // namespace hotpot
