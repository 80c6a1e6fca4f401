// The fetch side of the data path (docs/design/engine.md "Threads"): making pages present in the node cache for a
// fault or a read — local pages as they are, owned pages never written as zeros, absent pages fetched from their
// owner in runs of at most 64 (retrying while a commit holds them locked) — and checking cached copies with their
// owners (after a restart, a lapsed lease, an MRSW acquire or an aborted commit).
#pragma once

#include <vector>

#include "engine/cluster_view.h"
#include "engine/core.h"
#include "engine/node_cache.h"
#include "engine/owner.h"
#include "engine/peers.h"

namespace hotpot {
namespace engine {

class Fetcher {
 public:
  Fetcher(Context* ctx, ClusterView* view, NodeCache* cache, Owner* owner, Peers* peers)
      : ctx_(ctx), view_(view), cache_(cache), owner_(owner), peers_(peers) {}

  // Pages [first, first + count) present in the node cache. UNAVAILABLE when an owner cannot be reached in time. A
  // page whose owner is not alive waits up to `owner_wait` for an owner to be alive again (its restart, or a new owner
  // in a later chunk map), then is fetched from it.
  Status EnsurePages(uint64_t ds, uint64_t first, uint32_t count, std::chrono::milliseconds owner_wait = {});
  // Checks this node's cached (not owned) copies of `pages` (ascending) with their owners: one FETCH per run of one
  // owner's consecutive pages, newer copies installed in one step per run. Without `wait_unlocked` the fetch has
  // the revalidate flag (served even while locked; a page a multi-part commit holds locked marks that commit open
  // here); with it a locked page is asked for again until it is released (up to the request deadline), so the copy
  // is never older than a commit in flight (MRSW acquire). Pages absent or owned here are skipped. *unchecked gets
  // the pages whose owner is not alive, *failed those whose owner did not answer. `pass`: this checks every cached
  // copy (the resolver's pass), so the owners stop telling this node to check (kFetchPass). Returns the pages
  // updated.
  size_t RefreshFromOwners(const DatasetState& d, const std::vector<uint64_t>& pages, std::vector<uint64_t>* unchecked,
                           std::vector<uint64_t>* failed, bool wait_unlocked = false, bool pass = false);

 private:
  Status FetchRun(const DatasetState& d, uint32_t owner, uint64_t first, uint32_t count);
  // Transport rdma: READs the located pages into *out and checks each against the owner's checksum (ABORTED when a
  // page changed since the answer; the READ's own errors otherwise).
  Status ReadLocated(uint32_t owner, const msg::FetchLocation& at, uint32_t count, Deadline deadline,
                     std::vector<uint8_t>* out);
  void NoteFetch(uint64_t ds, uint32_t owner, uint64_t first, uint32_t count, uint64_t installed, uint64_t mono0,
                 uint64_t unix0);

  Context* ctx_;
  ClusterView* view_;
  NodeCache* cache_;
  Owner* owner_;
  Peers* peers_;
};

}  // namespace engine
}  // namespace hotpot
