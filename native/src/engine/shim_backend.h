// What the shim server (the daemon side of the app unix socket) needs from the engine. The Engine implements
// it; tests can implement it over a local file to exercise the shim alone.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace hotpot {
namespace engine {

enum class Mode : uint8_t { kMrmw = 1, kMrsw = 2 };

struct CreateOptions {
  uint64_t size_bytes = 0;
  Mode mode = Mode::kMrmw;
  uint32_t replicas = 1;
};

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct OpenResult {
  uint64_t dataset_id = 0;
  uint64_t size_bytes = 0;
  Mode mode = Mode::kMrmw;
  uint32_t replicas = 1;
  uint32_t chunk_size_bytes = 0;
  int page_fd = -1;  // borrowed: the node-cache page file; the shim server sends a dup to the app
};

struct DirtyPage {
  uint64_t page = 0;          // page index in the dataset
  std::vector<uint8_t> data;  // the app's private copy (4096 bytes)
};

struct ConflictRange {
  uint64_t offset = 0;
  uint32_t len = 0;
};

struct CommitResult {
  uint32_t copies = 0;   // distinct nodes durably holding every committed byte (>= requested N)
  uint64_t pages = 0;    // dirty pages submitted
  uint64_t ranges = 0;   // changed byte ranges shipped
  uint64_t bytes = 0;    // changed bytes shipped
  std::vector<ConflictRange> conflicts;  // filled when the status is ABORTED
};

// Optional parts of a commit (docs/design/consistency.md).
struct ReadRange {
  uint64_t offset = 0;  // dataset byte offset
  uint64_t len = 0;
};
struct CommitExtras {
  // Read validation: the commit fails with ABORTED if a page holding any of these bytes changed since the
  // session's sync point. With no dirty pages this is a read-only validation.
  std::vector<ReadRange> reads;
  // MRSW lease certificate from the dispatcher (required to write an MRSW dataset).
  std::vector<uint8_t> lease;
  bool empty() const { return reads.empty() && lease.empty(); }
};

// The node's publication state of a dataset, for local snapshot reads (docs/design/consistency.md "Snapshot
// reads"): `seq` changes whenever the node cache content of the dataset changes or a commit opens/closes on it;
// `open_commits` counts commits whose bytes are partly published on this node (more parts are still to come).
// A process that read the mapping between two equal states with open_commits == 0 saw every commit whole.
struct PublicationInfo {
  uint64_t seq = 0;
  uint32_t open_commits = 0;
};

class ShimBackend {
 public:
  virtual ~ShimBackend() = default;
  // Resolves (and with `create`, creates) a dataset by name for an app. Blocks until the control plane answers.
  virtual Status Open(const std::string& name, const CreateOptions* create, const PeerCred& cred, OpenResult* out) = 0;
  // Makes pages [first, first + count) present in the node cache, from the local pool or fetched from the owner.
  // Never leaves a page half-written. UNAVAILABLE when the owner cannot be reached in time.
  virtual Status EnsurePages(uint64_t dataset_id, uint64_t first_page, uint32_t count) = 0;
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
