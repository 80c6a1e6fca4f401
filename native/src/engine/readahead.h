// Streaming read-ahead for the shim's sequential faults (docs/design/engine.md "Faults"). Runs of pages queued ahead
// of an app that reads in sequence are fetched by a few worker threads, several runs in flight at once, while the app
// reads what came before — instead of one run per fault, fetched while the app waits.
//
// A fault looks first (Begin): a queued run holding its page is taken off the queue and fetched by the fault itself
// (no hand-off); a run in flight holding it is waited for (Wait); a run finished since holds it once (the fault may
// have been raised just before the run's pages landed). A run that failed leaves its pages to the faults, which
// fetch them with the owner wait and report errors: read-ahead never waits for an owner that is down and never fails
// an access. Only whole-page bytes the fetch path installs reach the app, so read-ahead changes what is fetched when,
// never what a read sees.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"

namespace hotpot {
namespace engine {

class Readahead {
 public:
  // Fetches [first, first + count) of dataset `ds` into the node cache (ShimBackend::PrefetchPages).
  using FetchFn = std::function<Status(uint64_t ds, uint64_t first, uint32_t count)>;
  static constexpr uint32_t kRunPages = 64;  // one FETCH (msg::kMaxFetchPages)
  static constexpr size_t kMaxQueued = 1024;  // runs; past it Queue drops what it is given
  static constexpr size_t kRecentRuns = 64;   // finished runs remembered for a fault raised just before they landed

  Readahead(FetchFn fetch, unsigned threads) : fetch_(std::move(fetch)), threads_wanted_(threads == 0 ? 1 : threads) {}
  ~Readahead() { Stop(); }
  Readahead(const Readahead&) = delete;
  Readahead& operator=(const Readahead&) = delete;

  // Drops every queued run, waits for the runs in flight, joins the threads. Queue does nothing afterwards.
  void Stop();

  // Queues pages [first, end) of dataset `ds` for `stream` (one mapping's sequential run) in runs of kRunPages. The
  // threads start with the first call.
  void Queue(uint64_t stream, uint64_t ds, uint64_t first, uint64_t end);
  // Drops the queued runs of `stream` (its mapping is gone, or its accesses stopped being sequential).
  void Drop(uint64_t stream);

  struct Run;
  // What a fault on page `page` of `ds` finds.
  enum class Found {
    kNone,      // no run holds the page: the fault fetches it
    kTaken,     // a queued run held it; it is the caller's now: fetch [*first, *end)
    kInFlight,  // a run in flight holds it ([*first, *end)): Wait(*ticket)
    kFetched,   // a run finished since holds it ([*first, *end)): its pages landed
  };
  Found Begin(uint64_t ds, uint64_t page, uint64_t* first, uint64_t* end, std::shared_ptr<Run>* ticket);
  // Blocks until the run is finished; true if it fetched every page.
  bool Wait(const std::shared_ptr<Run>& ticket);

  struct Stats {
    uint64_t runs_fetched = 0;  // by the threads, successfully
    uint64_t pages_fetched = 0;
    uint64_t runs_failed = 0;
    uint64_t runs_taken = 0;  // queued runs a fault fetched itself
    uint64_t waits = 0;       // faults that waited for a run in flight
  };
  Stats GetStats() const;

  struct Run {
    uint64_t stream = 0, ds = 0, first = 0, end = 0;
    bool finished = false, ok = false;  // under mu_
  };

 private:
  void Loop();
  bool Holds(const Run& r, uint64_t ds, uint64_t page) const { return r.ds == ds && page >= r.first && page < r.end; }

  const FetchFn fetch_;
  const unsigned threads_wanted_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // a run queued, or Stop
  std::condition_variable done_cv_;  // a run finished
  bool stopped_ = false;
  std::vector<std::thread> threads_;
  std::deque<std::shared_ptr<Run>> queued_;
  std::vector<std::shared_ptr<Run>> in_flight_;
  std::deque<std::shared_ptr<Run>> recent_;  // finished ok, each found by one fault at most
  Stats stats_;
};

}  // namespace engine
}  // namespace hotpot
