// Fault points (common/fault_points.h): the list, parsing HOTPOT_FAULT_POINT, exiting and pausing. The native tests
// are a test build (HOTPOT_TEST_BUILD, native/test/Makefile), as the hotpot_native_test addon is.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/fault_points.h"
#include "test_util.h"

using hotpot::Code;
using hotpot::FaultPoint;
using hotpot::FaultPoints;
using hotpot::kFaultPointCount;
using hotpot::kFaultPoints;

#ifndef HOTPOT_TEST_BUILD
#error "native/test builds with -DHOTPOT_TEST_BUILD"
#endif

namespace {

struct Lines {
  std::vector<std::string> v;
  void operator()(const std::string& s) { v.push_back(s); }
};

}  // namespace

TEST(every_point_is_listed_once_in_enum_order_with_a_name_and_a_description) {
  CHECK(kFaultPointCount == 9);
  std::set<std::string> names;
  for (size_t i = 0; i < kFaultPointCount; i++) {
    CHECK(static_cast<size_t>(kFaultPoints[i].point) == i);
    CHECK(std::strlen(kFaultPoints[i].name) > 0 && std::strlen(kFaultPoints[i].where) > 0);
    CHECK(names.insert(kFaultPoints[i].name).second);
  }
  CHECK(std::string(hotpot::FaultPointInfoOf(FaultPoint::kOwnerAfterLocalApply).name) == "owner.after-local-apply");
}

TEST(unset_or_empty_arms_nothing_and_reaching_a_point_does_nothing) {
  ::unsetenv("HOTPOT_FAULT_POINT");
  FaultPoints f;
  CHECK_OK(f.LoadFromEnv());
  CHECK(!f.armed());
  ::setenv("HOTPOT_FAULT_POINT", "", 1);
  CHECK_OK(f.LoadFromEnv());
  CHECK(!f.armed());
  ::unsetenv("HOTPOT_FAULT_POINT");
  Lines log;
  for (size_t i = 0; i < kFaultPointCount; i++) f.Reach(kFaultPoints[i].point, [&](const std::string& s) { log(s); });
  CHECK(log.v.empty());
}

TEST(unknown_names_and_bad_triggers_are_refused_naming_the_known_points) {
  FaultPoints f;
  for (const char* bad : {"owner.after-local-aply", "commit.before-decision:pause=", "commit.before-decision:pause=0",
                          "commit.before-decision:pause=-5", "commit.before-decision:pause=10ms",
                          "commit.before-decision:pause=99999999", "commit.before-decision:crash",
                          "commit.before-decision:", ":pause=10"}) {
    ::setenv("HOTPOT_FAULT_POINT", bad, 1);
    hotpot::Status st = f.LoadFromEnv();
    std::fprintf(stderr, "  %s -> %s\n", bad, st.ToString().c_str());
    CHECK(st.code() == Code::kInvalidArgument);
    CHECK(st.message().find(bad) != std::string::npos);
    CHECK(st.message().find("owner.apply.after-commit-point") != std::string::npos);
    CHECK(!f.armed());
  }
  ::unsetenv("HOTPOT_FAULT_POINT");
}

TEST(a_paused_point_pauses_the_first_thread_that_reaches_it_once) {
  FaultPoints f;
  ::setenv("HOTPOT_FAULT_POINT", "owner.before-apply:pause=50", 1);
  CHECK_OK(f.LoadFromEnv());
  ::unsetenv("HOTPOT_FAULT_POINT");
  CHECK(f.armed());
  Lines log;
  auto to_log = [&](const std::string& s) { log(s); };
  f.Reach(FaultPoint::kOwnerAfterLocalApply, to_log);  // another point: nothing
  CHECK(log.v.empty());
  std::vector<std::thread> threads;
  std::mutex mu;
  for (int i = 0; i < 4; i++)
    threads.emplace_back([&] {
      f.Reach(FaultPoint::kOwnerBeforeApply, [&](const std::string& s) {
        std::lock_guard<std::mutex> l(mu);
        log(s);
      });
    });
  for (auto& t : threads) t.join();
  f.Reach(FaultPoint::kOwnerBeforeApply, to_log);
  CHECK(log.v.size() == 1);
  CHECK(log.v[0] == "fault point owner.before-apply reached: pausing 50 ms");
}

TEST(an_exit_point_ends_the_process_with_the_fault_exit_code_after_logging) {
  for (bool reach : {true, false}) {
    int pipefd[2];
    CHECK(::pipe(pipefd) == 0);
    pid_t pid = ::fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      ::close(pipefd[0]);
      FaultPoints f;
      if (!f.Arm("commit.after-decision").ok()) ::_exit(2);
      auto to_pipe = [&](const std::string& s) { (void)!::write(pipefd[1], s.data(), s.size()); };
      f.Reach(FaultPoint::kCommitBeforeDecision, to_pipe);
      if (reach) f.Reach(FaultPoint::kCommitAfterDecision, to_pipe);
      ::_exit(0);
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[256];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    ::close(pipefd[0]);
    int status = 0;
    CHECK(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    if (reach) {
      CHECK(WEXITSTATUS(status) == hotpot::kFaultExitCode);
      CHECK(out == "fault point commit.after-decision reached: exiting");
    } else {
      CHECK(WEXITSTATUS(status) == 0 && out.empty());
    }
  }
}

TEST_MAIN("fault_points")
