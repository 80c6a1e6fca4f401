// Status: the one error type of the engine. Codes mirror gRPC status codes so the N-API boundary and
// the C ABI can map them 1:1 (conventions.md error codes). No exceptions are used anywhere in native/.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace hotpot {

enum class Code : uint8_t {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

const char* CodeName(Code c);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  // `reason` refines the code for programs (a protocol defines its values; 0 = none): a peer decides on it, never
  // on the message text. It travels with the code across the transport.
  Status(Code code, uint16_t reason, std::string message)
      : code_(code), reason_(reason), message_(std::move(message)) {}
  static Status Ok() { return Status(); }
  // errno-carrying failure of a syscall: "<what>: <strerror> (errno N)".
  static Status FromErrno(int err, const std::string& what, Code code = Code::kInternal);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  uint16_t reason() const { return reason_; }
  const std::string& message() const { return message_; }
  // The same code and reason with `prefix` in front of the message (context added on the way up).
  Status Prefixed(const std::string& prefix) const { return Status(code_, reason_, prefix + message_); }
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  uint16_t reason_ = 0;
  std::string message_;
};

#define HOTPOT_RETURN_IF_ERROR(expr)      \
  do {                                    \
    ::hotpot::Status _st = (expr);        \
    if (!_st.ok()) return _st;            \
  } while (0)

}  // namespace hotpot
