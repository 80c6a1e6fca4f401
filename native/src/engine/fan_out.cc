#include "engine/fan_out.h"

#include <algorithm>

#include "transport/transport.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace engine {

struct FanOut::Call {
  const std::function<void(size_t)>* step = nullptr;
  std::thread::id caller;
  wire::TraceContext trace;  // the caller's (invalid: none)
  uint8_t depth = 0;         // the caller's call depth (a handler's work fanned out calls from the handler's pools)
  size_t pending = 0;  // steps not finished yet (under mu_)
  std::condition_variable done_cv;
};

FanOut::~FanOut() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;  // Run's callers have all returned: the queue is empty
    threads.swap(threads_);
  }
  work_cv_.notify_all();
  for (auto& t : threads) t.join();
}

void FanOut::Run(size_t n, const std::function<void(size_t)>& step) {
  Call call;
  call.step = &step;
  call.pending = n;
  call.caller = std::this_thread::get_id();
  if (const wire::TraceContext* t = wire::CurrentTrace()) call.trace = *t;
  call.depth = transport::ThreadCallDepth();
  {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 1; i < n; i++) queue_.push_back(Task{&call, i});
    while (threads_.size() < threads_wanted_ && !stop_) threads_.emplace_back([this] { Loop(); });
  }
  // One helper per queued step, not all of them: a wake-up is tens of µs of a vCPU here, and a woken helper that
  // finds the queue empty only goes back to sleep.
  for (size_t i = 1; i < n; i++) work_cv_.notify_one();
  RunTask(Task{&call, 0});
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    // This call's steps nobody has started: run them here rather than wait for a helper.
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Task& t) { return t.call == &call; });
    if (it == queue_.end()) break;
    const Task t = *it;
    queue_.erase(it);
    l.unlock();
    RunTask(t);
    l.lock();
  }
  call.done_cv.wait(l, [&] { return call.pending == 0; });
}

void FanOut::RunTask(const Task& t) {
  if (std::this_thread::get_id() == t.call->caller) {
    (*t.call->step)(t.index);
  } else {
    wire::TraceScope scope(t.call->trace);
    transport::AdoptCallDepth depth(t.call->depth);
    (*t.call->step)(t.index);
  }
  std::lock_guard<std::mutex> l(mu_);
  if (--t.call->pending == 0) t.call->done_cv.notify_all();
}

void FanOut::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    work_cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_
    const Task t = queue_.front();
    queue_.pop_front();
    l.unlock();
    RunTask(t);
    l.lock();
  }
}

}  // namespace engine
}  // namespace hotpot
