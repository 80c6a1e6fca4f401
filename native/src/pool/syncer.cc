// Group commit for durability disk (see Syncer in pool_internal.h).
#include <algorithm>
#include <map>

#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace internal {

Syncer::Syncer() : thread_([this] { Run(); }) {}

Syncer::~Syncer() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

Status Syncer::Submit(DatasetStoreImpl* store, const std::vector<uint64_t>* pages) {
  Request req{store, pages, Status::Ok(), false};
  std::unique_lock<std::mutex> lk(mu_);
  if (stop_) return Status(Code::kUnavailable, "pool is shutting down");
  queue_.push_back(&req);
  work_cv_.notify_one();
  done_cv_.wait(lk, [&] { return req.done; });
  return req.status;
}

void Syncer::Run() {
  std::vector<Request*> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      work_cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ with nothing left: every caller was answered
      batch.assign(queue_.begin(), queue_.end());
      queue_.clear();
    }
    // Everything that queued while the previous batch was syncing rides on this batch's fdatasyncs.
    ProcessBatch(batch);
    {
      std::lock_guard<std::mutex> lk(mu_);
      syncs_.fetch_add(1, std::memory_order_relaxed);
      synced_commits_.fetch_add(batch.size(), std::memory_order_relaxed);
      for (Request* r : batch) r->done = true;
    }
    done_cv_.notify_all();
    batch.clear();
  }
}

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
    // record body (page bytes) -> persist -> marker (page records) -> persist, once for the whole batch.
    Status st = store->WriteThroughPages(pages, &records);
    if (st.ok()) st = store->SyncDataPages();
    if (st.ok()) st = store->WriteThroughMeta(records);
    if (st.ok()) st = store->SyncDataMeta();
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
