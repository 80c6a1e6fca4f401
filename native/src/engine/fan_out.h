// Runs the steps of one operation that go to different nodes at the same time (the PREPAREs and APPLYs of a
// multi-part commit): the caller runs the first step itself and helper threads the others, each started while the
// caller works; a step no helper has started yet when the caller is free is run by the caller. A round trip that
// would wait behind the ones before it waits beside them: a commit over three owners pays about one round of PREPARE
// and one of APPLY instead of three. Nothing a step does depends on another step of the same call.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hotpot {
namespace engine {

class FanOut {
 public:
  explicit FanOut(unsigned threads) : threads_wanted_(threads) {}
  ~FanOut();
  FanOut(const FanOut&) = delete;
  FanOut& operator=(const FanOut&) = delete;

  // Runs step(0) .. step(n - 1), all finished on return. Steps run on this thread and on helper threads (started
  // with the first call that has more than one step); a step on a helper runs in the caller's trace context (frames
  // it sends carry it) and at the caller's call depth (a handler's work fanned out takes connections from the
  // handler's pools: wire/frame.h).
  void Run(size_t n, const std::function<void(size_t)>& step);

 private:
  struct Call;
  struct Task {
    Call* call;
    size_t index;
  };
  void Loop();
  void RunTask(const Task& t);

  const unsigned threads_wanted_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
  std::deque<Task> queue_;
};

// Serial when `fan` is null (a deterministic test: everything on the calling thread, in order).
inline void RunSteps(FanOut* fan, size_t n, const std::function<void(size_t)>& step) {
  if (fan == nullptr || n <= 1) {
    for (size_t i = 0; i < n; i++) step(i);
    return;
  }
  fan->Run(n, step);
}

}  // namespace engine
}  // namespace hotpot
