#include "common/fault_points.h"

#ifdef HOTPOT_TEST_BUILD

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace hotpot {

namespace {

constexpr long kMaxPauseMs = 3600 * 1000;

std::string KnownPoints() {
  std::string s;
  for (const FaultPointInfo& f : kFaultPoints) s += std::string(s.empty() ? "" : ", ") + f.name;
  return s;
}

Status Refused(const std::string& spec, const std::string& why) {
  return Status(Code::kInvalidArgument, "HOTPOT_FAULT_POINT=" + spec + ": " + why +
                                            " (expected <name> or <name>:pause=<ms>; names: " + KnownPoints() + ")");
}

}  // namespace

Status FaultPoints::LoadFromEnv() {
  const char* v = std::getenv("HOTPOT_FAULT_POINT");
  return Arm(v == nullptr ? "" : v);
}

Status FaultPoints::Arm(const std::string& spec) {
  armed_ = -1;
  pause_ms_ = 0;
  paused_.store(false);
  if (spec.empty()) return Status::Ok();
  std::string name = spec;
  long pause_ms = 0;
  const size_t colon = spec.find(':');
  if (colon != std::string::npos) {
    name = spec.substr(0, colon);
    const std::string trigger = spec.substr(colon + 1);
    const std::string kPause = "pause=";
    if (trigger.compare(0, kPause.size(), kPause) != 0) return Refused(spec, "unknown trigger '" + trigger + "'");
    const std::string ms = trigger.substr(kPause.size());
    if (ms.empty() || ms.find_first_not_of("0123456789") != std::string::npos)
      return Refused(spec, "pause must be a whole number of milliseconds");
    pause_ms = ms.size() > 7 ? kMaxPauseMs + 1 : std::atol(ms.c_str());
    if (pause_ms < 1 || pause_ms > kMaxPauseMs)
      return Refused(spec, "pause must be 1.." + std::to_string(kMaxPauseMs) + " ms");
  }
  for (size_t i = 0; i < kFaultPointCount; i++) {
    if (name == kFaultPoints[i].name) {
      armed_ = static_cast<int>(i);
      pause_ms_ = pause_ms;
      return Status::Ok();
    }
  }
  return Refused(spec, "no fault point named '" + name + "'");
}

void FaultPoints::Fire(FaultPoint point, const LogFn& log) {
  const char* name = FaultPointInfoOf(point).name;
  if (pause_ms_ > 0) {
    if (paused_.exchange(true)) return;
    log(std::string("fault point ") + name + " reached: pausing " + std::to_string(pause_ms_) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms_));
    return;
  }
  log(std::string("fault point ") + name + " reached: exiting");
  std::fflush(nullptr);
  ::_exit(kFaultExitCode);
}

}  // namespace hotpot

#endif  // HOTPOT_TEST_BUILD
