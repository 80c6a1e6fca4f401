// Group commit for durability disk (see Syncer in pool_internal.h).
#include <algorithm>
#include <map>

#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace internal {

Syncer::~Syncer() {
  // Every Submit returns before the pool goes away; new ones are refused from here on.
  std::unique_lock<std::mutex> lk(mu_);
  stop_ = true;
  done_cv_.wait(lk, [&] { return !busy_ && queue_.empty(); });
}

Status Syncer::Submit(DatasetStoreImpl* store, const std::vector<uint64_t>* pages) {
  Request req{store, pages, Status::Ok(), false};
  std::unique_lock<std::mutex> lk(mu_);
  if (stop_) return Status(Code::kUnavailable, "pool is shutting down");
  queue_.push_back(&req);
  std::vector<Request*> batch;
  while (!req.done) {
    if (busy_) {  // a batch is under way (this request may have queued after it started): wait for it
      done_cv_.wait(lk);
      continue;
    }
    // Everything that queued while the previous batch was syncing rides on this batch's fdatasyncs.
    busy_ = true;
    batch.assign(queue_.begin(), queue_.end());
    queue_.clear();
    lk.unlock();
    ProcessBatch(batch);
    lk.lock();
    syncs_.fetch_add(1, std::memory_order_relaxed);
    synced_commits_.fetch_add(batch.size(), std::memory_order_relaxed);
    for (Request* r : batch) r->done = true;
    busy_ = false;
    done_cv_.notify_all();
  }
  return req.status;
}

namespace {
Status FailedSync(const Status& st) {
  return st.Prefixed("the dataset's write-through to the data dir failed earlier and stays failed (pages written "
                     "before it may be lost on disk): ");
}
}  // namespace

void Syncer::ProcessBatch(std::vector<Request*>& batch) {
  // Union of the pages per dataset, sorted, so each page is copied once and each file synced once.
  std::map<DatasetStoreImpl*, std::vector<uint64_t>> by_store;
  for (Request* r : batch) {
    auto& v = by_store[r->store];
    v.insert(v.end(), r->pages->begin(), r->pages->end());
  }
  for (auto& [store, pages] : by_store) {
    std::sort(pages.begin(), pages.end());
    pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
    std::vector<DatasetStoreImpl::MetaRecord> records;
    records.reserve(pages.size());
    // record body (page bytes) -> persist -> marker (page records) -> persist, once for the whole batch. A failed
    // write may be retried by a later batch (it writes the pages again); a failed fdatasync may not: the kernel may
    // have dropped the dirty pages it could not write and reports that once, so a later fdatasync can succeed over
    // pages lost on the disk. The dataset's write-through stays failed from then on.
    Status st = store->write_through_error;
    if (st.ok()) st = store->WriteThroughPages(pages, &records);
    if (st.ok()) {
      st = store->SyncDataPages();
      fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
      if (!st.ok()) store->write_through_error = FailedSync(st);
    }
    if (st.ok()) st = store->WriteThroughMeta(records);
    if (st.ok()) {
      st = store->SyncDataMeta();
      fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
      if (!st.ok()) store->write_through_error = FailedSync(st);
    }
    if (!st.ok()) {
      for (Request* r : batch) {
        if (r->store == store) r->status = st;
      }
    }
  }
}

}  // namespace internal
}  // namespace pool
}  // namespace hotpot
