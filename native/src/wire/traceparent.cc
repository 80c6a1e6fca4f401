#include "wire/traceparent.h"

namespace hotpot {
namespace wire {
namespace {

int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // W3C requires lowercase
}

bool ParseHex(const std::string& s, size_t at, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; i++) {
    int hi = HexVal(s[at + 2 * i]), lo = HexVal(s[at + 2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = uint8_t(hi << 4 | lo);
  }
  return true;
}

}  // namespace

std::string HexOf(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

bool ParseTraceparent(const std::string& s, TraceContext* out) {
  // 2 + 1 + 32 + 1 + 16 + 1 + 2
  if (s.size() != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
  TraceContext t;
  if (!ParseHex(s, 3, 16, t.trace_id) || !ParseHex(s, 36, 8, t.span_id) || !ParseHex(s, 53, 1, &t.flags)) return false;
  bool span_set = false;
  for (uint8_t b : t.span_id) span_set = span_set || b != 0;
  if (!t.valid() || !span_set) return false;
  *out = t;
  return true;
}

std::string FormatTraceparent(const TraceContext& t) {
  if (!t.valid()) return std::string();
  return "00-" + HexOf(t.trace_id, 16) + "-" + HexOf(t.span_id, 8) + "-" + HexOf(&t.flags, 1);
}

namespace {
thread_local TraceContext tls_trace;
thread_local bool tls_has_trace = false;
}  // namespace

const TraceContext* CurrentTrace() { return tls_has_trace ? &tls_trace : nullptr; }

TraceScope::TraceScope(const TraceContext& t) : prev_(tls_trace), had_prev_(tls_has_trace) {
  tls_trace = t;
  tls_has_trace = t.valid();
}

TraceScope::~TraceScope() {
  tls_trace = prev_;
  tls_has_trace = had_prev_;
}

}  // namespace wire
}  // namespace hotpot
