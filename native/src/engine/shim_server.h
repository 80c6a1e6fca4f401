// The daemon side of the app unix socket: accepts shim connections (peer credentials via SO_PEERCRED),
// answers open/map/commit/rollback/refresh/close, receives each mapping's userfaultfd over SCM_RIGHTS and
// resolves its faults on an engine thread through ShimBackend::EnsurePages + UFFDIO_WAKE.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "engine/shim_backend.h"

namespace hotpot {
namespace engine {

struct ShimServerStats {
  uint64_t connections = 0;
  uint64_t sessions = 0;
  uint64_t mappings = 0;
  uint64_t faults = 0;
  uint64_t prefetched_pages = 0;  // fetched ahead of the faulting page: by the fault itself or by read-ahead
  uint64_t readahead_runs = 0;    // read-ahead runs fetched (readahead.h)
  uint64_t readahead_failed = 0;  // read-ahead runs that failed (their pages left to the faults)
  uint64_t readahead_faults = 0;  // faults a read-ahead run served (it was in flight, or landed just after the fault)
};

class ShimServer {
 public:
  virtual ~ShimServer() = default;
  virtual ShimServerStats Stats() const = 0;
  // Closes the listening socket and every app connection (apps see the daemon gone), joins threads.
  virtual void Shutdown() = 0;
};

// Binds `socket_path` (replacing a stale socket file) and serves until Shutdown. `backend` must outlive it.
Status StartShimServer(const std::string& socket_path, ShimBackend* backend,
                       std::function<void(const std::string&)> log, std::unique_ptr<ShimServer>* out);

}  // namespace engine
}  // namespace hotpot
