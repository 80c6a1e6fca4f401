// Fault points: named places where a test makes a node process crash (exit at once, as if SIGKILLed) or stall (one
// thread sleeps there, as if the process were paused), chosen at start with HOTPOT_FAULT_POINT:
//   HOTPOT_FAULT_POINT=<name>                the process exits with kFaultExitCode when a thread reaches <name>
//   HOTPOT_FAULT_POINT=<name>:pause=<ms>     the first thread to reach <name> sleeps <ms> ms there, once
// The names are declared once, in common/fault_points.def. Only test builds (HOTPOT_TEST_BUILD: native/test and the
// hotpot_native_test addon) have them: in a release build FaultPoints is empty, Reach is an empty inline function
// and no fault point name is in the binary, so HOTPOT_FAULT_POINT does nothing there.
//
// Use: one FaultPoints per process part that owns the points (the engine), LoadFromEnv() once at start (fail the
// start with its status), then faults_.Reach(FaultPoint::kOwnerAfterLocalApply, log) at the point.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

#ifdef HOTPOT_TEST_BUILD
#include <atomic>
#include <functional>
#endif

namespace hotpot {

enum class FaultPoint : uint8_t {
#define HOTPOT_FAULT_POINT_DEF(id, name, where) id,
#include "common/fault_points.def"
#undef HOTPOT_FAULT_POINT_DEF
};

constexpr size_t kFaultPointCount = 0
#define HOTPOT_FAULT_POINT_DEF(id, name, where) +1
#include "common/fault_points.def"
#undef HOTPOT_FAULT_POINT_DEF
    ;

// The exit status of a process stopped at a fault point (the TS tests read it from here).
constexpr int kFaultExitCode = 86;

#ifdef HOTPOT_TEST_BUILD

struct FaultPointInfo {
  FaultPoint point;
  const char* name;   // the HOTPOT_FAULT_POINT spelling
  const char* where;  // what has and has not happened when a thread reaches it
};

inline constexpr FaultPointInfo kFaultPoints[kFaultPointCount] = {
#define HOTPOT_FAULT_POINT_DEF(id, name, where) {FaultPoint::id, name, where},
#include "common/fault_points.def"
#undef HOTPOT_FAULT_POINT_DEF
};

inline const FaultPointInfo& FaultPointInfoOf(FaultPoint p) { return kFaultPoints[static_cast<size_t>(p)]; }

#endif  // HOTPOT_TEST_BUILD

class FaultPoints {
 public:
#ifdef HOTPOT_TEST_BUILD
  using LogFn = std::function<void(const std::string&)>;

  // Reads HOTPOT_FAULT_POINT (unset or empty: nothing armed). INVALID_ARGUMENT, naming the value and the known
  // points, for an unknown name or a bad trigger: a test that names a point that does not exist fails at start
  // instead of waiting for a crash that never comes. Call it before any thread can reach a point.
  Status LoadFromEnv();
  // As LoadFromEnv, from a spec string ("" disarms); same rule.
  Status Arm(const std::string& spec);
  bool armed() const { return armed_ >= 0; }

  // At the point: does what the armed trigger says when `point` is the armed one (exit, or pause once), telling
  // `log` first (a callable taking const std::string&). Not armed here: one compare.
  template <class Log>
  void Reach(FaultPoint point, const Log& log) {
    if (static_cast<int>(point) != armed_) return;
    Fire(point, LogFn(log));
  }

 private:
  void Fire(FaultPoint point, const LogFn& log);

  int armed_ = -1;    // index into kFaultPoints, -1 = none
  long pause_ms_ = 0;  // 0 = exit
  std::atomic<bool> paused_{false};
#else
  Status LoadFromEnv() { return Status::Ok(); }
  bool armed() const { return false; }
  template <class Log>
  void Reach(FaultPoint, const Log&) {}
#endif
};

}  // namespace hotpot
