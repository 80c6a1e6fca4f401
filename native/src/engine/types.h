// The engine's vocabulary: what a dataset is opened and committed with, and what a commit answers. The core, the
// shim server (shim_backend.h) and the addon all speak it; none of it depends on how an app reaches the engine.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace hotpot {
namespace engine {

enum class Mode : uint8_t { kMrmw = 1, kMrsw = 2 };

struct CreateOptions {
  uint64_t size_bytes = 0;
  Mode mode = Mode::kMrmw;
  uint32_t replicas = 1;
};

// Who opens a dataset (an app's SO_PEERCRED/SO_PEERGROUPS, or a gRPC principal's uid:gid) and the access it asks
// for: the control plane checks the dataset's owner and permission bits against both.
struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (local apps only)
  bool read_only = false;     // opened for reading: commits from its sessions are refused
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
  // Distinct nodes durably holding every committed byte: at least `replicas`, unless `under_replicated`.
  uint32_t copies = 0;
  uint32_t replicas = 0;  // N this commit asked for
  // Applied and visible everywhere, but a push failed after the commit point, so fewer than N nodes hold it: the
  // owners copy the pages to more live nodes in the background (docs/design/consistency.md "Under-replicated").
  bool under_replicated = false;
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

}  // namespace engine
}  // namespace hotpot
