// Minimal test harness: CHECK aborts with file:line and a message; TEST registers a case.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace hotpot_test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& Registry() {
  static std::vector<Case> r;
  return r;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> fn) { Registry().push_back({name, std::move(fn)}); }
};

inline int RunAll(const char* suite) {
  int n = 0;
  // HOTPOT_TEST_FILTER=substring runs only the matching cases (for debugging one case).
  const char* filter = std::getenv("HOTPOT_TEST_FILTER");
  for (auto& c : Registry()) {
    if (filter != nullptr && std::string(c.name).find(filter) == std::string::npos) continue;
    std::fprintf(stderr, "[ RUN  ] %s.%s\n", suite, c.name);
    c.fn();
    std::fprintf(stderr, "[  OK  ] %s.%s\n", suite, c.name);
    n++;
  }
  std::fprintf(stderr, "%s: %d cases passed\n", suite, n);
  return 0;
}

}  // namespace hotpot_test

#define HP_CONCAT2(a, b) a##b
#define HP_CONCAT(a, b) HP_CONCAT2(a, b)
#define TEST(name)                                                                          \
  static void name();                                                                       \
  static ::hotpot_test::Registrar HP_CONCAT(reg_, name)(#name, name);                       \
  static void name()
#define CHECK(cond)                                                                         \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)
#define CHECK_OK(expr)                                                                      \
  do {                                                                                      \
    ::hotpot::Status _s = (expr);                                                           \
    if (!_s.ok()) {                                                                         \
      std::fprintf(stderr, "%s:%d: CHECK_OK failed: %s -> %s\n", __FILE__, __LINE__, #expr, \
                   _s.ToString().c_str());                                                  \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)
#define TEST_MAIN(suite) \
  int main() { return ::hotpot_test::RunAll(suite); }
