// The app side of the mmap shim (ARCHITECTURE §4): connects to the node daemon's unix socket, maps datasets
// MAP_PRIVATE over the node-cache page file it receives, hands each mapping's userfaultfd to the daemon (which
// serves first-touch faults), finds private (dirty) pages with PAGEMAP_SCAN and commits, rolls back or refreshes
// them. The C ABI in include/hotpot.h is a thin layer over these classes.
//
// Daemon restarts (docs/api.md "What an app sees while its node daemon restarts"): when the daemon's socket hangs
// up, requests return UNAVAILABLE, pages already present stay readable, and a fault on a page not yet fetched stays
// queued on its userfaultfd for up to HOTPOT_RECONNECT_WAIT_MS (then UFFDIO_POISON: SIGBUS). A background thread
// reconnects to the same socket path, reopens every open dataset by name and hands the same userfaultfds to the new
// daemon, which then serves the queued faults.
#pragma once

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/status.h"

namespace hotpot {
namespace shim {

class Connection;

struct CreateSpec {
  uint64_t size = 0;
  uint32_t mode = 1;  // 1 = MRMW, 2 = MRSW
  uint32_t replicas = 1;
};

struct DatasetInfo {
  uint64_t id = 0;
  uint64_t size = 0;
  uint32_t mode = 0;
  uint32_t replicas = 0;
  uint32_t chunk_size = 0;
};

struct Conflict {
  uint64_t offset = 0;
  uint32_t len = 0;
};

struct ByteRange {
  uint64_t offset = 0;
  uint64_t len = 0;
};

// Optional parts of a commit (docs/design/consistency.md).
struct CommitOptions {
  std::vector<ByteRange> reads;       // read validation: ABORTED if these bytes' pages changed since the last sync
  std::vector<uint8_t> lease;         // MRSW lease certificate
  bool has_write_set = false;         // begin(ranges): every private page must lie in write_set
  std::vector<ByteRange> write_set;
};

struct CommitOutcome {
  uint32_t copies = 0;
  uint32_t replicas = 0;  // N asked for; copies < replicas: applied, under-replicated
  uint64_t pages = 0, ranges = 0, bytes = 0;
  std::vector<Conflict> conflicts;  // on ABORTED
};

// The node's publication state of a dataset (engine/types.h PublicationInfo), for snapshot reads: a
// process whose loads ran between two equal states with open_commits == 0 saw every commit whole.
struct PublicationState {
  uint64_t seq = 0;
  uint32_t open_commits = 0;
  // The daemon connection the state was read from. A restarted daemon's seq starts over, so two states are equal
  // only if their generations are equal too (it changes with every reconnect).
  uint64_t generation = 0;
};

// socket_path empty: $HOTPOT_SOCKET, else "/run/hotpot/node.sock".
std::string DefaultSocketPath();
Status Connect(const std::string& socket_path, std::shared_ptr<Connection>* out);
// False while the node daemon is down or the shim is reconnecting to it (requests then return UNAVAILABLE).
bool IsUp(const Connection& c);

class Dataset {
 public:
  ~Dataset();
  Dataset(const Dataset&) = delete;
  Dataset& operator=(const Dataset&) = delete;

  // read_only: the daemon checks read permission only and refuses this dataset's commits (the app's private
  // copies stay private).
  static Status Open(const std::shared_ptr<Connection>& conn, const std::string& name, const CreateSpec* create,
                     std::unique_ptr<Dataset>* out, bool read_only = false);

  const DatasetInfo& info() const { return info_; }
  // offset page-aligned; length 0 = to the end; rounded up to whole pages. *mapped_len gets the window length.
  Status Map(uint64_t offset, uint64_t length, void** addr, size_t* mapped_len);
  Status Commit(uint32_t replicas, CommitOutcome* out, const CommitOptions* opts = nullptr);
  Status Rollback();
  // *kept (optional) = private pages with real changes that remain.
  Status Refresh(size_t* kept);
  // Unmaps every window and closes the session; idempotent.
  Status Close();
  // The node's publication state (never waits for open commits to close): one load of the shared publication
  // word once it is mapped (the first call asks the node for it), else one PUBLICATION round trip.
  Status Publication(PublicationState* out);
  // Dataset page indices of every private page (the dirty scan the commit uses), for tests and diagnostics.
  Status PrivatePages(std::vector<uint64_t>* pages);

 private:
  struct Window;
  struct Run {
    const Window* w;
    uint64_t first;  // window page index
    uint64_t count;
  };
  friend class Connection;  // its reconnect thread calls Reattach

  Dataset() = default;
  // Why a request cannot be made now (closed, not reopened after a restart, daemon down), else OK.
  Status UsableLocked() const;
  Status ScanLocked(std::vector<Run>* runs);
  Status DropLocked(const std::vector<Run>& runs);
  // After the daemon restarted (the reconnect thread, connection not yet usable by apps): reopens the dataset by
  // name in a new session, remaps the windows if the page file is a different file, and hands every window's
  // userfaultfd to the new daemon. An error means "try the whole reconnect again later".
  Status Reattach();
  Status RemapLocked(int new_page_fd);
  Status HandOverLocked(Window* w, bool remapped);

  std::shared_ptr<Connection> conn_;
  std::string name_;
  bool read_only_ = false;
  DatasetInfo info_;
  uint64_t session_ = 0;
  UniqueFd page_fd_;
  // Lock order: mu_ before the connection's request mutex.
  std::mutex mu_;
  std::vector<std::unique_ptr<Window>> windows_;
  bool closed_ = false;
  // Private pages written before the daemon restarted: their base images died with the old daemon, so the next
  // commit is refused (ABORTED) until rollback() drops them.
  bool stale_ = false;
  // Not OK once the restarted daemon no longer has this dataset (deleted or replaced while it was down).
  Status reopen_error_;
  // The node's shared publication word (read-only); empty when the node did not provide one (probes then use the
  // socket). Words of earlier daemons stay mapped until destruction: a probe racing a reconnect or Close may still
  // load them (and is then rejected by its generation).
  bool pub_tried_ = false;
  Mapping pub_map_;
  std::vector<Mapping> retired_pub_maps_;
  const std::atomic<uint64_t>* pub_word_ = nullptr;
};

}  // namespace shim
}  // namespace hotpot
