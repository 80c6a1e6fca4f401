#include "engine/rdma_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/page.h"

namespace hotpot {
namespace engine {

RdmaPages::~RdmaPages() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& kv : windows_) UnmapLocked(&kv.second);
  windows_.clear();
}

void RdmaPages::UnmapLocked(Window* w) {
  if (w->addr == nullptr) return;
  (void)rdma_->WithdrawRegion(w->region);  // unpins before the mapping goes
  ::munmap(w->addr, w->len);
  w->addr = nullptr;
}

bool RdmaPages::Locate(pool::DatasetStore* store, uint64_t first, uint32_t count, uint32_t* region,
                       uint64_t* offset) {
  if (count == 0) return false;
  const uint64_t begin = first * kPageSize, end = (first + count) * kPageSize;
  const uint64_t index = begin / kWindowBytes;
  if ((end - 1) / kWindowBytes != index) return false;  // crosses windows: sent inline
  const uint64_t wbegin = index * kWindowBytes;
  std::lock_guard<std::mutex> l(mu_);
  Window& w = windows_[{store, index}];
  if (w.addr != nullptr && end - wbegin > w.len) UnmapLocked(&w);  // the dataset grew past a short last window
  if (w.failed) return false;
  if (w.addr == nullptr) {
    const int fd = store->page_fd();
    const uint64_t size = store->size_bytes();
    if (fd < 0 || end > size) return false;
    const uint64_t len = std::min(kWindowBytes, size - wbegin);
    // Writable although nothing writes through it: Linux 6.1's ib_umem_get pins read-only ranges with FOLL_FORCE |
    // FOLL_WRITE, which a shared mapping without PROT_WRITE refuses (EFAULT). Peers get read access only.
    void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(wbegin));
    const std::string what = "rdma: dataset " + std::to_string(store->id()) + " bytes [" + std::to_string(wbegin) +
                             ", +" + std::to_string(len) + ") not exposed (its pages are sent in fetch answers): ";
    if (addr == MAP_FAILED) {
      if (log_) log_(what + "mmap: " + std::strerror(errno));
      w.failed = true;
      return false;
    }
    const uint32_t id = next_region_++;
    Status st = rdma_->ExposeRegion(id, addr, len, fd);
    if (!st.ok()) {
      if (log_) log_(what + st.ToString());
      ::munmap(addr, len);
      w.failed = true;
      return false;
    }
    w = Window{id, addr, len};
  }
  *region = w.region;
  *offset = begin - wbegin;
  return true;
}

}  // namespace engine
}  // namespace hotpot
