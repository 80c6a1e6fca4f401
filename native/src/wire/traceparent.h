// W3C trace context <-> the frame header's TraceContext: "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>".
#pragma once

#include <string>

#include "wire/frame.h"

namespace hotpot {
namespace wire {

// False (and *out untouched) unless `s` is a well-formed version-00 traceparent with non-zero ids.
bool ParseTraceparent(const std::string& s, TraceContext* out);
// Empty for an invalid context.
std::string FormatTraceparent(const TraceContext& t);
std::string HexOf(const uint8_t* p, size_t n);

// The trace context of the operation this thread runs (a commit on the app side, the committer or an owner on the
// node side), so frames sent inside it carry it without new parameters on every layer. nullptr when none.
const TraceContext* CurrentTrace();
class TraceScope {
 public:
  explicit TraceScope(const TraceContext& t);  // an invalid context clears the current one for the scope
  ~TraceScope();
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  TraceContext prev_;
  bool had_prev_;
};

}  // namespace wire
}  // namespace hotpot
