// The owner's side of page fetch by one-sided RDMA READ (transport rdma): windows of a dataset's page file exposed to
// peers as RDMA regions, registered on first use.
//
//   fetcher                               owner
//   FETCH_PAGES (kFetchLocate) ──────────> checks, cacher registered, page read under the owner's lock (as always);
//                                          RdmaPages::Locate: the window holding the run (mapped MAP_SHARED, pinned
//                                          and registered the first time) -> answer {versions, region, offset, crc}
//   RDMA READ region[offset, +count pages] ── the owner's device answers; its CPU is not involved
//   CRC of each page == the answer's? install : fetch again with the bytes in the answer (a commit changed the page
//                                               between the answer and the READ)
//
// The owner's page files are written in place (pwrite into the page cache of a shared file), so a pinned window sees
// every later write: the CRC check is what makes a READ racing with a commit's apply safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <map>
#include <mutex>
#include <utility>

#include "pool/pool.h"
#include "transport/rdma_transport.h"

namespace hotpot {
namespace engine {

class RdmaPages {
 public:
  // Window size: what one region pins (its holes become page-cache pages: memory grows by windows touched).
  static constexpr uint64_t kWindowBytes = 16ull << 20;

  RdmaPages(transport::RdmaTransport* rdma, std::function<void(const std::string&)> log)
      : rdma_(rdma), log_(std::move(log)) {}
  ~RdmaPages();
  RdmaPages(const RdmaPages&) = delete;
  RdmaPages& operator=(const RdmaPages&) = delete;

  // Where a peer can READ pages [first, first + count) of `store`: *region and the byte *offset of `first` in it.
  // False (the caller sends the bytes instead) when the run crosses a window, the store has no page file, or the
  // window cannot be registered (module limits, memory lock limit: logged once per window by the caller's counter).
  bool Locate(pool::DatasetStore* store, uint64_t first, uint32_t count, uint32_t* region, uint64_t* offset);

 private:
  struct Window {
    uint32_t region = 0;
    void* addr = nullptr;
    uint64_t len = 0;
    bool failed = false;  // could not be mapped or registered: its runs are sent inline from then on
  };
  void UnmapLocked(Window* w);

  transport::RdmaTransport* rdma_;
  std::function<void(const std::string&)> log_;  // a window that cannot be exposed (once per window)
  mutable std::mutex mu_;
  // (store, window index) -> window. A store is never freed while the engine runs (dropped ones are retired).
  std::map<std::pair<const pool::DatasetStore*, uint64_t>, Window> windows_;
  uint32_t next_region_ = 1;
};

}  // namespace engine
}  // namespace hotpot
