// What an engine is given instead of making it itself, so tests can put simulated ones in (native/test/sim.h):
// the peer transport and the time source.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "transport/transport.h"

namespace hotpot {
namespace engine {

using TimePoint = std::chrono::steady_clock::time_point;

// The engine's time: steady time for deadlines and backoff, wall-clock ms for what crosses machines (PREPARE
// deadlines, lease expiry), and sleeping. Production uses the real clocks; the simulation test a virtual one.
class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual TimePoint Now() = 0;
  virtual uint64_t UnixMs() = 0;
  virtual void SleepFor(std::chrono::nanoseconds d) = 0;
};
std::shared_ptr<TimeSource> RealTime();

struct EngineDeps {
  std::unique_ptr<transport::Transport> transport;  // not listening yet: the engine sets its handler and listens
  std::shared_ptr<TimeSource> time;
  // No resolver thread: the caller runs the resolver's periodic work with Engine::RunResolverOnce (deterministic
  // tests). Without it the engine runs it about every 500 ms on its own thread. Also no FanOut helper threads (a
  // commit's steps to different nodes then run in order on the committing thread).
  bool manual_resolver = false;
};

}  // namespace engine
}  // namespace hotpot
