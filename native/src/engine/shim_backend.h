// What the shim server (the daemon side of the app unix socket) needs from the engine. The Engine implements
// it; tests can implement it over a local file to exercise the shim alone. The types it uses are the engine's
// (types.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/types.h"

namespace hotpot {
namespace engine {

class ShimBackend {
 public:
  virtual ~ShimBackend() = default;
  // Resolves (and with `create`, creates) a dataset by name for an app. Blocks until the control plane answers.
  virtual Status Open(const std::string& name, const CreateOptions* create, const PeerCred& cred, OpenResult* out) = 0;
  // Makes pages [first, first + count) present in the node cache, from the local pool or fetched from the owner.
  // Never leaves a page half-written. UNAVAILABLE when the owner cannot be reached in time.
  virtual Status EnsurePages(uint64_t dataset_id, uint64_t first_page, uint32_t count) = 0;
  // Read-ahead (readahead.h): as EnsurePages, but never waits for an owner that is down (the fault that needs the
  // page does) and is no fault in the latency figures. Called from read-ahead threads, concurrently with faults.
  virtual Status PrefetchPages(uint64_t dataset_id, uint64_t first_page, uint32_t count) {
    return EnsurePages(dataset_id, first_page, count);
  }
  // A session is one app's view of one dataset; its sync point decides the base images of its private pages.
  virtual uint64_t OpenSession(uint64_t dataset_id, const PeerCred& cred) = 0;
  virtual void CloseSession(uint64_t session_id) = 0;
  // Moves the session's sync point to now (after commit, rollback, or a refresh with no private pages left).
  virtual void ResyncSession(uint64_t session_id) = 0;
  // The page as it was at the session's sync point (what the app's private copy was made from).
  virtual Status BaseImage(uint64_t session_id, uint64_t page, uint8_t* out4096) = 0;
  // Commits the session's private pages to N nodes (N = 0 -> the dataset default). On success the node cache
  // already holds the new bytes; the app drops its private pages. ABORTED fills result->conflicts.
  virtual Status Commit(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                        CommitResult* result) = 0;
  // Commit with read validation and/or an MRSW lease. Backends without them refuse non-empty extras.
  virtual Status CommitWith(uint64_t session_id, const std::vector<DirtyPage>& pages, uint32_t replicas,
                            const CommitExtras& extras, CommitResult* result) {
    if (!extras.empty()) return Status(Code::kUnimplemented, "this backend has no read validation or leases");
    return Commit(session_id, pages, replicas, result);
  }
  // The shared page holding the dataset's publication word (borrowed fd, 4096 bytes, word at offset 0; the word's
  // layout is shimproto::PublicationWord, shimproto/protocol.h).
  virtual Status PublicationMemory(uint64_t session_id, int* fd) {
    (void)session_id;
    *fd = -1;
    return Status(Code::kUnimplemented, "this backend has no shared publication word");
  }
  // The publication state of the session's dataset on this node.
  virtual Status Publication(uint64_t session_id, PublicationInfo* out) {
    (void)session_id;
    *out = PublicationInfo{};
    return Status(Code::kUnimplemented, "this backend has no snapshot reads");
  }
};

}  // namespace engine
}  // namespace hotpot
