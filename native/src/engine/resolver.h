// The resolver: everything the engine does by itself, about every 500 ms on its own thread (or when a test calls
// RunOnce): the lease check, checking cached copies with their owners after a restart or a lapsed lease, recovering
// the chunks of a replaced store, re-driving decided commits, resolving in-doubt parts by asking their committers,
// and closing open marks whose DONE was lost (docs/design/consistency.md). It drives the other components; none
// calls it back except to queue work.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "engine/cluster_view.h"
#include "engine/committer.h"
#include "engine/core.h"
#include "engine/fetcher.h"
#include "engine/node_cache.h"
#include "engine/owner.h"
#include "engine/part_copies.h"
#include "engine/peers.h"

namespace hotpot {
namespace engine {

class Resolver {
 public:
  Resolver(Context* ctx, ClusterView* view, NodeCache* cache, PartCopies* copies, Owner* owner, Fetcher* fetcher,
           Committer* committer, Peers* peers)
      : ctx_(ctx), view_(view), cache_(cache), copies_(copies), owner_(owner), fetcher_(fetcher),
        committer_(committer), peers_(peers) {}
  ~Resolver() { Stop(); }

  void Start();  // the thread
  void Stop();
  void Wake() { cv_.notify_all(); }
  // One round of everything (the thread's loop body).
  void RunOnce();

  // Cached copies found in the pool when a dataset is first opened may have missed commits while this node was
  // down: they are checked with their owners, and apps cannot open the dataset until every copy whose owner is alive
  // is checked (WaitReady).
  void QueueRevalidation(uint64_t ds, std::vector<uint64_t> pages);
  // UNAVAILABLE after 2 x the request timeout if the dataset's copies are still being checked or its owned chunks
  // recovered.
  Status WaitReady(uint64_t ds);
  // Until when the membership lease is surely valid; past it every dataset gets the unchecked mark, and a valid lease
  // after a lapse checks every cached copy (docs/design/consistency.md "A node whose lease lapsed").
  void SetLeaseDeadline(uint64_t unix_ms);
  // Engine::EndLease: the lease ends now, the unchecked marks go up before this returns, and no later deadline counts.
  void EndLease();
  // Engine::HideSnapshots: every dataset's unchecked mark goes up now and no check lifts it any more.
  void HideSnapshots();
  // Past the lease deadline: marks every dataset unchecked (once) before anything else changes the node cache.
  void CheckLease();
  // Tells every alive node a push of dataset `ds` from here failed to (or every node, since a restart) to check its
  // copies, now (by `until`); the nodes that did not answer. A handoff ends only once this is empty: the target
  // cannot know them.
  std::vector<uint32_t> TellCheckCopiesNow(uint64_t ds, Deadline until);

 private:
  void Loop();
  void RevalidatePending();
  void RevalidateAll();
  // Datasets where this node may have missed a push (NodeCache::TakeRechecks): every cached copy is checked with its
  // owner, then the "unchecked" mark goes.
  void RecheckMissed();
  // After this node restarted as an owner: every alive member is told to check its copies (CHECK_COPIES).
  void TellCheckCopies();
  // One CHECK_COPIES to `t.node` for `t.ds`, answered by `by`: true (and recorded as told) if it answered.
  bool TellOne(const Owner::Tell& t, Deadline by);
  // Queues every cached page of `d` for checking (a new generation: a pass already running does not clear the mark).
  void QueueAll(const DatasetState& d);
  // Owned chunks this node does not hold yet (failover, or its store was replaced): newest copies of their pages and
  // the prepare copies of parts in flight at the previous owner, from every alive member, then Owner::SettleTakeover.
  void RecoverChunks();
  // This node's store was made anew by this process and owned one of `chunks` of dataset `ds` before that (or they
  // were in the first chunk map it loaded): it holds none of their pages.
  bool OwnedBeforeItsStore(uint64_t ds, const std::vector<uint32_t>& chunks);
  // Where a takeover reads the copies from: the alive members. Every acknowledged commit is on N nodes and every part
  // in flight has its prepare copies on N nodes (an under-replicated commit's kept until its pages are back at N), so
  // with fewer than N members away one that answers holds each. Away: the members down, the live ones without their
  // copies (`without`: this node's own store made anew, members replaced since the previous owner's last report), and
  // those that did not answer (`silent`: killed a moment ago and not yet declared dead, paused, cut off from this
  // node). In a failover (every chunk taken from a member now down) a member that does not answer is gone on without
  // while that keeps fewer than N away; otherwise the round ends and the next one asks again. Outside a failover (a
  // handoff cut short, an owner restarted or with its store replaced) every live member must answer: the previous
  // owner may be one of them, and it alone knows what it applied (simulation seed 356 with SIM_RESTARTS_HEAVY: after
  // takeovers of a restarted owner's chunks went on without live members, a part that had finished long before was
  // adopted and applied again over later commits).
  struct Sources {
    std::vector<uint32_t> peers;
    size_t down = 0;
    std::set<uint32_t> without;  // live members (or this node) whose copies are gone
    uint32_t n = 1;
    bool failover = false;
    std::set<uint32_t> silent;
    size_t Away() const;
    // The deadline of a call to `peer`: short while going on without it would be allowed (a member that does not
    // answer costs the takeover that much), the request timeout when the takeover has to wait for it anyway.
    Deadline CallDeadline(const Context& ctx, uint32_t peer) const;
    // `peer` did not answer: true when the takeover goes on without it.
    bool GoOnWithout(uint32_t peer);
    enum class Asked { kAnswered, kGoOn, kRetry };
    // Asks `peer` (`call`, given the deadline) unless it did not answer earlier in this round (for this dataset or
    // another: whether the takeover may go on without it is this dataset's question). Not answered: kGoOn when the
    // takeover goes on without it, kRetry when it waits (retried next round); logged as "<what>: node P <failed> ...".
    Asked Ask(Context* ctx, uint32_t peer, const std::function<Status(Deadline)>& call, const std::string& what,
              const char* failed);
  };
  // The newest copy of each page of the chunk among the members. *lost: the chunk's pages no node holds that may have
  // been written (`unheld_lost`: N or more members lost their stores, N = 1 among them; or lost before): they stay
  // refused.
  bool RecoverPages(const DatasetState& d, uint32_t chunk, uint64_t first, uint64_t end, Sources* from,
                    bool unheld_lost, uint64_t* installed, std::vector<PageSpan>* lost);
  // The log line, event and counter of a recovered chunk's lost pages.
  void NoteLost(const DatasetState& d, uint32_t chunk, const std::vector<PageSpan>& lost);
  bool GatherCopies(const DatasetState& d, const std::vector<std::pair<uint64_t, uint64_t>>& spans, Sources* from,
                    std::map<TxKey, msg::OwnedCopy>* parts);
  // Owned chunks below N live copies get replicas on more alive nodes (Owner::Rereplicate), one bounded round.
  void Rereplicate();
  void ResolveInDoubt();
  // A multi-part commit whose committer was forgotten (`every_member`: every member must be alive), or is down or
  // its part frozen (the alive members; the caller checked that the nodes down own nothing): what its participants
  // hold, each answering COMMIT_STATE, which freezes their prepared parts durably (this node's too). False (with
  // *why) when that cannot be known yet.
  struct OrphanView {
    bool applied_somewhere = false;  // here or at another participant
    bool prepared_elsewhere = false;  // another participant still holds a prepared part
  };
  bool AskParticipants(const Owner::Overdue& t, bool every_member, OrphanView* out, std::string* why);
  // A commit whose committer is down (not forgotten) can be settled in part without it once every node that is down
  // owns no chunk and no chunk is being taken over: each of its parts is then at an alive owner, which answers
  // COMMIT_PEEK (nothing frozen: the committer may return). False (with *why) otherwise.
  // It scans every chunk map: one pass (ResolveInDoubt, CheckMarks) computes it once, in *memo, for all its parts,
  // again only if the set of down nodes changed meanwhile.
  struct DownOwnership {
    bool known = false;
    std::vector<uint32_t> down;
    bool nothing = false;
    std::string why;
  };
  bool DownNodesOwnNothing(DownOwnership* memo, std::string* why);
  // What the alive members hold of commit {committer, commit_id} (COMMIT_PEEK, and this node's own parts).
  bool PeekParticipants(uint32_t committer, uint64_t commit_id, OrphanView* out, bool* held_anywhere,
                        std::string* why);
  // Open marks whose DONE has not come for a while: ask the mark's key node (MARK_STATUS) and close the ones it no
  // longer knows. A mark is never closed on age alone: a half-landed commit stays hidden until it is whole.
  void CheckMarks();
  bool Blocked(uint64_t ds);
  // No resolver thread was started: the caller runs RunOnce (EngineDeps::manual_resolver).
  bool Manual() {
    std::lock_guard<std::mutex> l(mu_);
    return !thread_.joinable();
  }

  Context* ctx_;
  ClusterView* view_;
  NodeCache* cache_;
  PartCopies* copies_;
  Owner* owner_;
  Fetcher* fetcher_;
  Committer* committer_;
  Peers* peers_;

  std::mutex mu_;  // the revalidation lists and the loop's state; never held while calling another component
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  std::map<uint64_t, std::vector<uint64_t>> revalidate_;  // ds -> cached pages still to check
  std::set<uint64_t> blocking_;              // datasets apps cannot open yet: a copy with a live owner is unchecked
  std::map<uint64_t, uint64_t> generation_;  // ds -> bumped when every cached page is queued again
  std::atomic<uint64_t> lease_until_{0};
  std::atomic<bool> lease_lapsed_{false};
  std::atomic<bool> lease_ended_{false};  // EndLease: leaving the cluster, never renewed
  std::atomic<bool> hide_snapshots_{false};  // HideSnapshots: a planned stop has begun
  bool recovery_wait_logged_ = false;
};

}  // namespace engine
}  // namespace hotpot
