#include "engine/readahead.h"

#include <algorithm>

namespace hotpot {
namespace engine {

void Readahead::Stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopped_ = true;
    queued_.clear();
    threads.swap(threads_);
  }
  work_cv_.notify_all();
  for (auto& t : threads) t.join();
}

void Readahead::Queue(uint64_t stream, uint64_t ds, uint64_t first, uint64_t end) {
  size_t added = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopped_) return;
    for (uint64_t p = first; p < end && queued_.size() < kMaxQueued; p += kRunPages, added++) {
      auto r = std::make_shared<Run>();
      r->stream = stream;
      r->ds = ds;
      r->first = p;
      r->end = std::min(end, p + kRunPages);
      queued_.push_back(std::move(r));
    }
    while (threads_.size() < threads_wanted_) threads_.emplace_back([this] { Loop(); });
  }
  // One thread per queued run (at most all of them): a thread woken with nothing to take only sleeps again.
  for (size_t i = 0; i < std::min<size_t>(added, threads_wanted_); i++) work_cv_.notify_one();
}

void Readahead::Drop(uint64_t stream) {
  std::lock_guard<std::mutex> l(mu_);
  queued_.erase(std::remove_if(queued_.begin(), queued_.end(),
                               [stream](const std::shared_ptr<Run>& r) { return r->stream == stream; }),
                queued_.end());
}

Readahead::Found Readahead::Begin(uint64_t ds, uint64_t page, uint64_t* first, uint64_t* end,
                                  std::shared_ptr<Run>* ticket) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = queued_.begin(); it != queued_.end(); ++it) {
    if (!Holds(**it, ds, page)) continue;
    *first = (*it)->first;
    *end = (*it)->end;
    queued_.erase(it);
    stats_.runs_taken++;
    return Found::kTaken;
  }
  for (const auto& r : in_flight_) {
    if (!Holds(*r, ds, page)) continue;
    *first = r->first;
    *end = r->end;
    *ticket = r;
    stats_.waits++;
    return Found::kInFlight;
  }
  for (auto it = recent_.begin(); it != recent_.end(); ++it) {
    if (!Holds(**it, ds, page)) continue;
    *first = (*it)->first;
    *end = (*it)->end;
    recent_.erase(it);  // once: a later fault there finds the page evicted since and fetches it
    return Found::kFetched;
  }
  return Found::kNone;
}

bool Readahead::Wait(const std::shared_ptr<Run>& ticket) {
  std::unique_lock<std::mutex> l(mu_);
  done_cv_.wait(l, [&] { return ticket->finished; });
  return ticket->ok;
}

Readahead::Stats Readahead::GetStats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void Readahead::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    work_cv_.wait(l, [&] { return stopped_ || !queued_.empty(); });
    if (stopped_) return;
    std::shared_ptr<Run> r = std::move(queued_.front());
    queued_.pop_front();
    in_flight_.push_back(r);
    l.unlock();
    const Status st = fetch_(r->ds, r->first, static_cast<uint32_t>(r->end - r->first));
    l.lock();
    r->finished = true;
    r->ok = st.ok();
    in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), r));
    if (st.ok()) {
      stats_.runs_fetched++;
      stats_.pages_fetched += r->end - r->first;
      recent_.push_back(r);
      if (recent_.size() > kRecentRuns) recent_.pop_front();
    } else {
      stats_.runs_failed++;
    }
    done_cv_.notify_all();
  }
}

}  // namespace engine
}  // namespace hotpot
