#include "shim/shim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <thread>

#include "shimproto/protocol.h"
#include "shimproto/uffd_compat.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace shim {

namespace {

Status ErrnoStatus(const std::string& what, Code code = Code::kInternal) { return Status::FromErrno(errno, what, code); }

// How long a fault on a page not yet fetched waits for a daemon that is down before it is poisoned (SIGBUS).
constexpr int64_t kDefaultReconnectWaitMs = 15000;
constexpr int64_t kMaxReconnectWaitMs = 3600000;
// Reconnect attempts: a failed connect() to a unix socket costs a syscall, so retry often enough that a restarted
// daemon is found within a fraction of a second.
constexpr int64_t kRetryFirstMs = 100;
constexpr int64_t kRetryMaxMs = 200;
// Requests of the reconnect itself: OPEN may wait for the restarted node's control plane (the engine gives up
// after 15 s) and for the revalidation of its cached pages.
constexpr int64_t kRestoreCallTimeoutMs = 60000;

int64_t MonotonicMs() {
  timespec ts{};
  (void)::clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with a valid clock and pointer
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Status ReconnectWaitFromEnv(int64_t* out) {
  *out = kDefaultReconnectWaitMs;
  const char* env = std::getenv("HOTPOT_RECONNECT_WAIT_MS");
  if (env == nullptr || env[0] == 0) return Status::Ok();
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(env, &end, 10);
  if (errno != 0 || *end != 0 || v < 0 || v > kMaxReconnectWaitMs)
    return Status(Code::kInvalidArgument, "HOTPOT_RECONNECT_WAIT_MS must be a whole number of milliseconds 0.." +
                                              std::to_string(kMaxReconnectWaitMs) + ", got '" + env + "'");
  *out = v;
  return Status::Ok();
}

// A userfaultfd and the app range it is registered on. Shared by the window, the watcher (which serves it with
// poison once a daemon has been gone too long) and nothing else; the fd closes with the last reference.
struct Uffd {
  UniqueFd fd;
  uint64_t addr = 0;
  uint64_t len = 0;
  // Guards the fields below: the watcher thread and the reconnect thread both use them.
  std::mutex mu;
  // The daemon of the current connection reads this uffd's events. While false nobody reads them: faults stay
  // queued in the uffd, where the next daemon it is handed to finds them.
  bool served = false;
  // Watcher: when it first saw a queued fault while unserved (0 = none seen); the faults are poisoned once
  // HOTPOT_RECONNECT_WAIT_MS has passed since.
  int64_t pending_since_ms = 0;
  // Pages this shim poisoned. A poison marker raises SIGBUS until it is zapped, so they are zapped (exactly
  // these pages) when a daemon serves the uffd again. A poisoned page is never a private page.
  std::vector<uint64_t> poisoned;
};

Status NewUserfaultfd(UniqueFd* out) {
  // No UFFD_USER_MODE_ONLY: syscalls handed mapped memory (write(fd, buf)) must have their faults served too.
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0 && (errno == EPERM || errno == ENOSYS)) {
    int saved = errno;
    // /dev/userfaultfd grants uffds to whoever may open it (group-readable on some systems).
    UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (dev.valid()) fd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      errno = saved;
      return ErrnoStatus("userfaultfd (needed to map datasets: run as root, grant CAP_SYS_PTRACE, set "
                         "vm.unprivileged_userfaultfd=1, or use the gRPC API)",
                         Code::kFailedPrecondition);
    }
  }
  if (fd < 0) return ErrnoStatus("userfaultfd", Code::kFailedPrecondition);
  out->reset(fd);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_POISON;
  if (::ioctl(fd, UFFDIO_API, &api) != 0)
    return ErrnoStatus("UFFDIO_API (MISSING_SHMEM | POISON; the kernel must be >= 6.6)", Code::kFailedPrecondition);
  return Status::Ok();
}

Status RegisterMissing(int uffd, uint64_t addr, uint64_t len) {
  uffdio_register reg{};
  reg.range.start = addr;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
    return ErrnoStatus("UFFDIO_REGISTER (MISSING) on the dataset window", Code::kFailedPrecondition);
  return Status::Ok();
}

// Lets threads waiting in a fault of [addr, addr + len) retry it (each then faults again, queueing a new event).
void WakeRange(int uffd, uint64_t addr, uint64_t len) {
  uffdio_range range{addr, len};
  (void)::ioctl(uffd, UFFDIO_WAKE, &range);  // fails only for a range no longer registered: nobody waits there
}

// True if a poison marker was installed (false: something is mapped there already, or the range is gone).
bool PoisonPage(int uffd, uint64_t page_addr) {
  for (int attempt = 0; attempt < 100; attempt++) {
    uffdio_poison p{};
    p.range.start = page_addr;
    p.range.len = kPageSize;
    if (::ioctl(uffd, UFFDIO_POISON, &p) == 0) return true;
    if (errno == EAGAIN) continue;  // the address space changed under us; retry
    if (errno == EEXIST) WakeRange(uffd, page_addr, kPageSize);  // present now: let the access retry
    return false;
  }
  return false;
}

}  // namespace

// The connection to the node daemon. Its state is one counter, epoch_: even while a daemon serves this connection,
// odd while the daemon is down or the reconnect is restoring the datasets. It is bumped on every change, so a
// snapshot probe compares epochs to know both probes talked to the same daemon.
//
// Threads: the watcher (daemon hang-up; poisons faults that waited too long while no daemon serves them) and the
// reconnector (connect, HELLO, Dataset::Reattach of every open dataset). Only the watcher turns even into odd and
// only the reconnector turns odd into even; the reconnector replaces sock_ only while odd, when the watcher does
// not poll it. Lock order: Dataset::mu_ -> call_mu_; Dataset::mu_ -> Uffd::mu; wmu_ -> Uffd::mu; reg_mu_ alone.
class Connection {
 public:
  ~Connection() {
    stopping_ = true;
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof(one));  // unblocks a reconnect request waiting for its answer
    {
      std::lock_guard<std::mutex> lk(rmu_);  // no lost wake-up between the reconnector's check and its wait
    }
    rcv_.notify_all();
    Kick();
    if (watcher_.joinable()) watcher_.join();
    if (reconnector_.joinable()) reconnector_.join();
  }

  Status Init(const std::string& path) {
    path_ = path;
    HOTPOT_RETURN_IF_ERROR(ReconnectWaitFromEnv(&wait_ms_));
    HOTPOT_RETURN_IF_ERROR(Dial(&sock_));
    pagemap_.reset(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!pagemap_.valid()) return ErrnoStatus("open /proc/self/pagemap");
    ctl_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ctl_.valid() || !stop_.valid()) return ErrnoStatus("eventfd");
    HOTPOT_RETURN_IF_ERROR(Hello(-1));
    watcher_ = std::thread([this] { Watch(); });
    reconnector_ = std::thread([this] { Reconnect(); });
    return Status::Ok();
  }

  // One request/response exchange of the app; requests on a connection are serialised. UNAVAILABLE at once while
  // the daemon is down or being reconnected to.
  Status Call(uint16_t type, const std::vector<uint8_t>& payload, int fd, shimproto::Message* resp) {
    std::lock_guard<std::mutex> lk(call_mu_);
    if (!up()) return Down();
    return ExchangeLocked(type, payload, fd, resp, -1);
  }
  // A request of the reconnect (Dataset::Reattach), made while apps still get UNAVAILABLE.
  Status RestoreCall(uint16_t type, const std::vector<uint8_t>& payload, int fd, shimproto::Message* resp) {
    std::lock_guard<std::mutex> lk(call_mu_);
    return ExchangeLocked(type, payload, fd, resp, kRestoreCallTimeoutMs);
  }

  // A window's uffd, from the moment its MAP was answered. Served only if the daemon that answered is still the
  // connection's daemon: if it was lost meanwhile, the Dataset's reattach hands the uffd over again (it needs the
  // Dataset's lock, which Map holds until the window is registered, so it comes after this).
  void AddUffd(const std::shared_ptr<Uffd>& u) {
    {
      std::lock_guard<std::mutex> lk(wmu_);
      {
        std::lock_guard<std::mutex> ul(u->mu);
        u->served = up();
      }
      uffds_.push_back(u);
    }
    Kick();
  }
  void RemoveUffd(const Uffd* u) {
    {
      std::lock_guard<std::mutex> lk(wmu_);
      uffds_.erase(std::remove_if(uffds_.begin(), uffds_.end(),
                                  [u](const std::shared_ptr<Uffd>& x) { return x.get() == u; }),
                   uffds_.end());
    }
    Kick();
  }

  // Open datasets, for the reconnect. Register fails if the daemon that opened the dataset (at `epoch`) is no
  // longer the connection's daemon: its session died with it.
  bool Register(Dataset* d, uint64_t epoch) {
    std::lock_guard<std::mutex> lk(reg_mu_);
    if (epoch_.load(std::memory_order_acquire) != epoch) return false;
    datasets_[d] = 0;
    return true;
  }
  // Waits while the reconnect works on `d` (so it never touches a destroyed Dataset).
  void Unregister(Dataset* d) {
    std::unique_lock<std::mutex> lk(reg_mu_);
    reg_cv_.wait(lk, [&] {
      auto it = datasets_.find(d);
      return it == datasets_.end() || it->second == 0;
    });
    datasets_.erase(d);
  }

  int pagemap() const { return pagemap_.get(); }
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  bool up() const { return (epoch() & 1) == 0; }
  Status Down() const {
    return Status(Code::kUnavailable, "the node daemon at " + path_ + " is down; reconnecting");
  }

 private:
  Status Dial(UniqueFd* out) const {
    sockaddr_un addr{};
    if (path_.empty() || path_.size() >= sizeof(addr.sun_path))
      return Status(Code::kInvalidArgument, "hotpot socket path empty or too long: " + path_);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return ErrnoStatus("socket(AF_UNIX)");
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      return ErrnoStatus("connect to the node daemon at " + path_, Code::kUnavailable);
    *out = std::move(s);
    return Status::Ok();
  }

  Status Hello(int64_t timeout_ms) {
    shimproto::Message resp;
    std::lock_guard<std::mutex> lk(call_mu_);
    HOTPOT_RETURN_IF_ERROR(
        ExchangeLocked(shimproto::kHello, shimproto::EncodeHelloRequest(shimproto::kProtocolVersion), -1, &resp,
                       timeout_ms));
    shimproto::HelloResponse hr;
    HOTPOT_RETURN_IF_ERROR(shimproto::DecodeHelloResponse(resp.payload, &hr));
    if (hr.version != shimproto::kProtocolVersion)
      return Status(Code::kFailedPrecondition, "the node daemon speaks shim protocol version " +
                                                   std::to_string(hr.version) + ", this app " +
                                                   std::to_string(shimproto::kProtocolVersion));
    return Status::Ok();
  }

  // timeout_ms >= 0: wait at most that long for the answer, and give up at once when the connection is destroyed.
  Status ExchangeLocked(uint16_t type, const std::vector<uint8_t>& payload, int fd, shimproto::Message* resp,
                        int64_t timeout_ms) {
    wire::FrameHeader h;
    h.type = type;
    h.request_id = ++next_request_;
    // A traced commit (hotpot_commit_traced) hands the app's W3C context to the node in the frame header.
    if (const wire::TraceContext* t = wire::CurrentTrace()) h.trace = *t;
    Status st = shimproto::SendMessage(sock_.get(), h, payload.data(), payload.size(), fd >= 0 ? &fd : nullptr,
                                       fd >= 0 ? 1 : 0);
    if (st.ok() && timeout_ms >= 0) st = AwaitAnswerLocked(timeout_ms);
    if (st.ok()) st = shimproto::RecvMessage(sock_.get(), resp);
    if (!st.ok()) return st.code() == Code::kUnavailable ? Down() : st;
    if (!resp->fds.empty() && type != shimproto::kOpen && type != shimproto::kPublicationMap)
      return Status(Code::kInternal, "the daemon attached an unexpected fd");
    if ((resp->header.flags & wire::kFlagResponse) == 0 || resp->header.type != type ||
        resp->header.request_id != h.request_id)
      return Status(Code::kInternal, "the daemon's response does not match the request");
    if ((resp->header.flags & wire::kFlagError) != 0) {
      Code code = resp->header.status == 0 ? Code::kUnknown : static_cast<Code>(resp->header.status);
      return Status(code, std::string(resp->payload.begin(), resp->payload.end()));
    }
    return Status::Ok();
  }

  Status AwaitAnswerLocked(int64_t timeout_ms) {
    const int64_t deadline = MonotonicMs() + timeout_ms;
    for (;;) {
      pollfd p[2] = {{sock_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      int r = ::poll(p, 2, static_cast<int>(std::max<int64_t>(0, deadline - MonotonicMs())));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus("poll on the daemon socket", Code::kUnavailable);
      if (p[1].revents != 0) return Status(Code::kCancelled, "the connection is being closed");
      if (p[0].revents != 0) return Status::Ok();
      if (MonotonicMs() >= deadline)
        return Status(Code::kUnavailable, "no answer within " + std::to_string(timeout_ms) + " ms");
    }
  }

  void Kick() {
    uint64_t one = 1;
    if (ctl_.valid()) (void)!::write(ctl_.get(), &one, sizeof(one));
  }
  void Drain() {
    uint64_t v;
    (void)!::read(ctl_.get(), &v, sizeof(v));
  }

  // Every uffd loses its daemon: nobody reads its faults until a daemon is handed it again. Faults a daemon read
  // but never answered are woken so they fault again and queue a new event.
  void UnserveAll() {
    std::lock_guard<std::mutex> lk(wmu_);
    for (auto& u : uffds_) {
      std::lock_guard<std::mutex> ul(u->mu);
      u->served = false;
      u->pending_since_ms = 0;
      WakeRange(u->fd.get(), u->addr, u->len);
    }
  }

  // The watcher saw the daemon hang up.
  void Lose() {
    // Unblocks a request waiting on the dead socket. Done while still "up", the only time the watcher owns sock_.
    ::shutdown(sock_.get(), SHUT_RDWR);
    epoch_.fetch_add(1, std::memory_order_acq_rel);
    std::fprintf(stderr,
                 "hotpot: lost the node daemon at %s; reconnecting (a fault on a page not yet fetched waits up to "
                 "%lld ms for it)\n",
                 path_.c_str(), static_cast<long long>(wait_ms_));
    UnserveAll();
    {
      std::lock_guard<std::mutex> lk(rmu_);
    }
    rcv_.notify_all();
  }

  // Reads the faults queued on an unserved uffd and poisons their pages: the accesses fail loudly (SIGBUS, or EFAULT
  // for a syscall) instead of waiting any longer for a daemon.
  void PoisonQueuedLocked(Uffd* u) {
    size_t n_poisoned = 0;
    for (;;) {
      uffd_msg msgs[16];
      ssize_t n = ::read(u->fd.get(), msgs, sizeof(msgs));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // EAGAIN: none left
      for (size_t k = 0; k < static_cast<size_t>(n) / sizeof(uffd_msg); k++) {
        if (msgs[k].event != UFFD_EVENT_PAGEFAULT) continue;
        uint64_t page = msgs[k].arg.pagefault.address & ~uint64_t(kPageSize - 1);
        if (PoisonPage(u->fd.get(), page)) {
          u->poisoned.push_back(page);
          n_poisoned++;
        }
      }
    }
    u->pending_since_ms = 0;
    if (n_poisoned > 0)
      std::fprintf(stderr,
                   "hotpot: the node daemon at %s did not come back within %lld ms: %zu page(s) not yet fetched are "
                   "unavailable (SIGBUS)\n",
                   path_.c_str(), static_cast<long long>(wait_ms_), n_poisoned);
  }

  // Watches the daemon socket for hang-up while up, and the uffds no daemon serves for queued faults, which it
  // leaves queued (the next daemon serves them) for up to wait_ms_, then poisons.
  void Watch() {
    while (!stopping_) {
      const bool is_up = up();
      std::vector<std::shared_ptr<Uffd>> set;
      {
        std::lock_guard<std::mutex> lk(wmu_);
        set = uffds_;
      }
      std::vector<pollfd> p;
      std::vector<Uffd*> polled;
      p.push_back({ctl_.get(), POLLIN, 0});
      if (is_up) p.push_back({sock_.get(), POLLRDHUP, 0});
      int64_t now = MonotonicMs();
      int64_t next_deadline = -1;
      for (auto& u : set) {
        std::lock_guard<std::mutex> ul(u->mu);
        if (u->served) continue;
        if (u->pending_since_ms == 0) {
          // Not reading its events: a queued fault keeps it readable, so it leaves the poll set until its deadline.
          p.push_back({u->fd.get(), POLLIN, 0});
          polled.push_back(u.get());
        } else {
          int64_t d = u->pending_since_ms + wait_ms_;
          if (next_deadline < 0 || d < next_deadline) next_deadline = d;
        }
      }
      int timeout = next_deadline < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, next_deadline - now));
      int r = ::poll(p.data(), p.size(), timeout);
      if (r < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "hotpot: watcher poll failed: %s\n", std::strerror(errno));
        return;
      }
      if (p[0].revents != 0) Drain();
      size_t first_uffd = 1;
      if (is_up) {
        first_uffd = 2;
        if (p[1].revents != 0) {
          Lose();
          continue;
        }
      }
      now = std::max<int64_t>(1, MonotonicMs());
      for (size_t i = 0; i < polled.size(); i++) {
        if (p[first_uffd + i].revents == 0) continue;
        std::lock_guard<std::mutex> ul(polled[i]->mu);
        if (!polled[i]->served && polled[i]->pending_since_ms == 0) polled[i]->pending_since_ms = now;
      }
      for (auto& u : set) {
        std::lock_guard<std::mutex> ul(u->mu);
        if (!u->served && u->pending_since_ms != 0 && now >= u->pending_since_ms + wait_ms_)
          PoisonQueuedLocked(u.get());
      }
    }
  }

  // The reconnect thread: while the daemon is down, tries every 100-200 ms to reach a daemon on the same path.
  void Reconnect() {
    int64_t delay = kRetryFirstMs;
    std::unique_lock<std::mutex> lk(rmu_);
    while (!stopping_) {
      if (up()) {
        rcv_.wait(lk, [&] { return stopping_.load() || !up(); });
        delay = kRetryFirstMs;
        continue;
      }
      rcv_.wait_for(lk, std::chrono::milliseconds(delay), [&] { return stopping_.load(); });
      if (stopping_) return;
      lk.unlock();
      bool ok = TryReconnect();
      lk.lock();
      delay = ok ? kRetryFirstMs : std::min(delay * 2, kRetryMaxMs);
    }
  }

  bool TryReconnect() {
    UniqueFd s;
    if (!Dial(&s).ok()) return false;  // nobody listens yet: the usual case while the daemon restarts
    {
      std::lock_guard<std::mutex> lk(call_mu_);
      sock_ = std::move(s);  // the lost socket closes here; nothing else uses it while the connection is down
    }
    Status st = Hello(kRestoreCallTimeoutMs);
    std::vector<Dataset*> pinned;
    if (st.ok()) {
      {
        std::lock_guard<std::mutex> lk(reg_mu_);
        for (auto& d : datasets_) {
          d.second++;
          pinned.push_back(d.first);
        }
      }
      for (Dataset* d : pinned) {
        if (st.ok()) st = d->Reattach();
        {
          std::lock_guard<std::mutex> lk(reg_mu_);
          datasets_[d]--;  // a Close waiting for this dataset may go on
        }
        reg_cv_.notify_all();
      }
    }
    if (!st.ok() || stopping_) {
      // Not ready yet (the node may still be joining its cluster): drop this attempt and try again. The daemon
      // closes the sessions of this socket.
      ::shutdown(sock_.get(), SHUT_RDWR);
      UnserveAll();
      if (!st.ok() && !stopping_ && st.ToString() != last_reconnect_error_) {
        last_reconnect_error_ = st.ToString();
        std::fprintf(stderr, "hotpot: reconnecting to the node daemon at %s: %s; retrying\n", path_.c_str(),
                     last_reconnect_error_.c_str());
      }
      return false;
    }
    last_reconnect_error_.clear();
    epoch_.fetch_add(1, std::memory_order_acq_rel);
    Kick();  // the watcher polls the new socket from now on
    std::fprintf(stderr, "hotpot: reconnected to the node daemon at %s (%zu open dataset(s) reopened)\n",
                 path_.c_str(), pinned.size());
    return true;
  }

  std::string path_;
  int64_t wait_ms_ = kDefaultReconnectWaitMs;
  UniqueFd sock_;
  UniqueFd pagemap_;
  UniqueFd ctl_;   // eventfd: wakes the watcher to rebuild its poll set
  UniqueFd stop_;  // eventfd: readable once the connection is being destroyed
  std::mutex call_mu_;
  uint64_t next_request_ = 0;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
  std::mutex wmu_;
  std::vector<std::shared_ptr<Uffd>> uffds_;
  std::thread reconnector_;
  std::mutex rmu_;
  std::condition_variable rcv_;
  std::string last_reconnect_error_;  // reconnector only: each distinct failure is logged once
  std::mutex reg_mu_;
  std::condition_variable reg_cv_;
  std::map<Dataset*, int> datasets_;  // open datasets -> how many reconnects work on them now
};

std::string DefaultSocketPath() {
  const char* env = std::getenv("HOTPOT_SOCKET");
  if (env != nullptr && env[0] != 0) return env;
  return "/run/hotpot/node.sock";
}

Status Connect(const std::string& socket_path, std::shared_ptr<Connection>* out) {
  auto c = std::make_shared<Connection>();
  HOTPOT_RETURN_IF_ERROR(c->Init(socket_path.empty() ? DefaultSocketPath() : socket_path));
  *out = std::move(c);
  return Status::Ok();
}

bool IsUp(const Connection& c) { return c.up(); }

struct Dataset::Window {
  Mapping map;
  uint64_t first_page = 0;  // dataset page of the window's first page
  uint64_t pages = 0;
  std::shared_ptr<Uffd> uffd;
};

Dataset::~Dataset() { (void)Close(); }

Status Dataset::Open(const std::shared_ptr<Connection>& conn, const std::string& name, const CreateSpec* create,
                     std::unique_ptr<Dataset>* out, bool read_only) {
  if (!conn) return Status(Code::kInvalidArgument, "no connection");
  if (name.empty() || name.size() > shimproto::kMaxNameLen)
    return Status(Code::kInvalidArgument, "dataset name must be 1.." + std::to_string(shimproto::kMaxNameLen) +
                                              " bytes");
  shimproto::OpenRequest req;
  req.name = name;
  req.read_only = read_only;
  if (create != nullptr) {
    req.create = true;
    req.size = create->size;
    req.mode = static_cast<uint8_t>(create->mode);
    req.replicas = create->replicas;
    if (create->mode != 1 && create->mode != 2) return Status(Code::kInvalidArgument, "create: mode must be 1 or 2");
  }
  const uint64_t epoch = conn->epoch();
  shimproto::Message resp;
  HOTPOT_RETURN_IF_ERROR(conn->Call(shimproto::kOpen, shimproto::EncodeOpenRequest(req), -1, &resp));
  shimproto::OpenResponse r;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeOpenResponse(resp.payload, &r));
  std::unique_ptr<Dataset> ds(new Dataset());
  ds->conn_ = conn;
  ds->name_ = name;
  ds->read_only_ = read_only;
  ds->session_ = r.session;
  if (resp.fds.size() != 1) {
    // Without the page file nothing can be mapped; the destructor releases the session the daemon opened.
    return Status(Code::kInternal, "the daemon's OPEN response carried no page file");
  }
  ds->page_fd_ = std::move(resp.fds[0]);
  ds->info_.id = r.dataset;
  ds->info_.size = r.size;
  ds->info_.mode = r.mode;
  ds->info_.replicas = r.replicas;
  ds->info_.chunk_size = r.chunk_size;
  // From here on a reconnect reopens it. If the daemon that answered is gone already, so is the session.
  if (!conn->Register(ds.get(), epoch))
    return Status(Code::kUnavailable,
                  "the node daemon restarted while dataset '" + name + "' was being opened; open it again");
  *out = std::move(ds);
  return Status::Ok();
}

Status Dataset::UsableLocked() const {
  if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
  if (!reopen_error_.ok()) return reopen_error_;
  if (!conn_->up()) return conn_->Down();
  return Status::Ok();
}

Status Dataset::Map(uint64_t offset, uint64_t length, void** addr, size_t* mapped_len) {
  std::lock_guard<std::mutex> lk(mu_);
  HOTPOT_RETURN_IF_ERROR(UsableLocked());
  uint64_t size_pages = (info_.size + kPageSize - 1) / kPageSize;
  if (offset % kPageSize != 0) return Status(Code::kInvalidArgument, "map offset must be a multiple of 4096");
  if (offset >= info_.size)
    return Status(Code::kOutOfRange, "map offset " + std::to_string(offset) + " is beyond the dataset size " +
                                         std::to_string(info_.size));
  uint64_t first = offset / kPageSize;
  uint64_t pages = length == 0 ? size_pages - first : (length + kPageSize - 1) / kPageSize;
  if (length > UINT64_MAX - kPageSize || pages > size_pages - first)
    return Status(Code::kOutOfRange, "map window [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                         ") exceeds the dataset size " + std::to_string(info_.size));
  for (const auto& w : windows_)
    if (first < w->first_page + w->pages && w->first_page < first + pages)
      return Status(Code::kInvalidArgument, "map window overlaps an existing window of this dataset");
  if (pages > SIZE_MAX / kPageSize) return Status(Code::kOutOfRange, "map window too large");
  size_t len = static_cast<size_t>(pages * kPageSize);

  auto win = std::make_unique<Window>();
  // MAP_PRIVATE: stores copy-on-write into private pages, so uncommitted writes stay in this process.
  // MAP_NORESERVE: a huge dataset window must not be charged as if every page were about to be written.
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, page_fd_.get(),
                   static_cast<off_t>(offset));
  if (p == MAP_FAILED) return ErrnoStatus("mmap dataset window", Code::kResourceExhausted);
  win->map = Mapping(p, len);
  win->first_page = first;
  win->pages = pages;
  win->uffd = std::make_shared<Uffd>();
  win->uffd->addr = reinterpret_cast<uint64_t>(p);
  win->uffd->len = len;
  HOTPOT_RETURN_IF_ERROR(NewUserfaultfd(&win->uffd->fd));
  HOTPOT_RETURN_IF_ERROR(RegisterMissing(win->uffd->fd.get(), win->uffd->addr, len));
  shimproto::MapRequest req;
  req.session = session_;
  req.offset = offset;
  req.length = len;
  req.addr = win->uffd->addr;
  shimproto::Message resp;
  HOTPOT_RETURN_IF_ERROR(conn_->Call(shimproto::kMap, shimproto::EncodeMapRequest(req), win->uffd->fd.get(), &resp));
  conn_->AddUffd(win->uffd);
  *addr = p;
  if (mapped_len != nullptr) *mapped_len = len;
  windows_.push_back(std::move(win));
  return Status::Ok();
}

Status Dataset::ScanLocked(std::vector<Run>* runs) {
  runs->clear();
  page_region vec[256];
  for (const auto& w : windows_) {
    uint64_t base = reinterpret_cast<uint64_t>(w->map.addr());
    uint64_t start = base, end = base + w->map.size();
    while (start < end) {
      pm_scan_arg a{};
      a.size = sizeof(a);
      a.start = start;
      a.end = end;
      a.vec = reinterpret_cast<uint64_t>(vec);
      a.vec_len = sizeof(vec) / sizeof(vec[0]);
      // Private copy-on-write pages are present and not file-backed; page-cache pages are FILE. (Poison markers
      // count as swap entries, so matching PRESENT rather than "not FILE" alone keeps them out.)
      a.category_mask = PAGE_IS_PRESENT | PAGE_IS_FILE;
      a.category_inverted = PAGE_IS_FILE;
      a.return_mask = PAGE_IS_PRESENT | PAGE_IS_FILE;
      long n = ::ioctl(conn_->pagemap(), PAGEMAP_SCAN, &a);
      if (n < 0) return ErrnoStatus("ioctl(PAGEMAP_SCAN) on /proc/self/pagemap (kernel >= 6.7 needed)");
      for (long i = 0; i < n; i++)
        runs->push_back({w.get(), (vec[i].start - base) / kPageSize, (vec[i].end - vec[i].start) / kPageSize});
      if (a.walk_end <= start) return Status(Code::kInternal, "PAGEMAP_SCAN made no progress");
      start = a.walk_end;
    }
  }
  return Status::Ok();
}

Status Dataset::DropLocked(const std::vector<Run>& runs) {
  for (const Run& r : runs) {
    // On a MAP_PRIVATE file mapping this frees the private copies; the next access maps the node cache again.
    if (::madvise(r.w->map.bytes() + r.first * kPageSize, r.count * kPageSize, MADV_DONTNEED) != 0)
      return ErrnoStatus("madvise(MADV_DONTNEED) on private pages");
  }
  return Status::Ok();
}

Status Dataset::PrivatePages(std::vector<uint64_t>* pages) {
  std::lock_guard<std::mutex> lk(mu_);
  pages->clear();
  if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
  std::vector<Run> runs;
  HOTPOT_RETURN_IF_ERROR(ScanLocked(&runs));
  for (const Run& r : runs)
    for (uint64_t i = 0; i < r.count; i++) pages->push_back(r.w->first_page + r.first + i);
  return Status::Ok();
}

Status Dataset::Commit(uint32_t replicas, CommitOutcome* out, const CommitOptions* opts) {
  std::lock_guard<std::mutex> lk(mu_);
  *out = CommitOutcome();
  HOTPOT_RETURN_IF_ERROR(UsableLocked());
  if (read_only_) return Status(Code::kPermissionDenied, "commit of dataset '" + name_ + "' opened read-only");
  // Diffing these pages against the new daemon's node cache would silently revert commits made since they were
  // written (a lost update), and their real base images died with the old daemon.
  if (stale_)
    return Status(Code::kAborted, "the node daemon restarted after these changes were made; rollback() and redo them");
  std::vector<Run> runs;
  HOTPOT_RETURN_IF_ERROR(ScanLocked(&runs));
  struct Ref {
    uint64_t dataset_page;
    const uint8_t* bytes;
  };
  std::vector<Ref> refs;
  for (const Run& r : runs)
    for (uint64_t i = 0; i < r.count; i++)
      refs.push_back({r.w->first_page + r.first + i, r.w->map.bytes() + (r.first + i) * kPageSize});
  const bool extras = opts != nullptr && (!opts->reads.empty() || !opts->lease.empty());
  if (opts != nullptr && opts->has_write_set) {
    for (const Ref& ref : refs) {
      bool inside = false;
      for (const ByteRange& br : opts->write_set)
        if (br.len > 0 && ref.dataset_page >= br.offset / kPageSize &&
            ref.dataset_page <= (br.offset + br.len - 1) / kPageSize)
          inside = true;
      if (!inside)
        return Status(Code::kFailedPrecondition, "commit touches page " + std::to_string(ref.dataset_page) +
                                                     " outside the write set declared by begin()");
    }
  }
  if (extras && opts->reads.size() > shimproto::kMaxCommitReads)
    return Status(Code::kInvalidArgument, "at most " + std::to_string(shimproto::kMaxCommitReads) + " read ranges");
  if (extras && opts->lease.size() > shimproto::kMaxLeaseBytes)
    return Status(Code::kInvalidArgument, "lease certificate too large");
  shimproto::Message resp;
  size_t sent = 0;
  do {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(refs.size() - sent, shimproto::kMaxCommitBatchPages));
    bool more = sent + n < refs.size();
    uint32_t flags = more ? shimproto::kCommitFlagMore : (extras ? shimproto::kCommitFlagExtras : 0);
    shimproto::Writer w;
    w.buf().reserve(32 + size_t(n) * (8 + kPageSize));
    shimproto::EncodeCommitBatchHeader(&w, session_, replicas, flags, n);
    for (uint32_t i = 0; i < n; i++) {
      w.U64(refs[sent + i].dataset_page);
      w.Bytes(refs[sent + i].bytes, kPageSize);
    }
    if (flags & shimproto::kCommitFlagExtras) {
      std::vector<shimproto::CommitReadRange> rr;
      for (const ByteRange& br : opts->reads) rr.push_back({br.offset, br.len});
      shimproto::EncodeCommitExtras(&w, rr, opts->lease);
    }
    HOTPOT_RETURN_IF_ERROR(conn_->Call(shimproto::kCommit, w.buf(), -1, &resp));
    sent += n;
  } while (sent < refs.size());
  shimproto::CommitResponse cr;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeCommitResponse(resp.payload, &cr));
  out->copies = cr.copies;
  out->replicas = cr.replicas;
  out->pages = cr.pages;
  out->ranges = cr.ranges;
  out->bytes = cr.bytes;
  for (const auto& c : cr.conflicts) out->conflicts.push_back({c.offset, c.len});
  if (!cr.status.ok()) return cr.status;  // ABORTED etc.: the private pages stay for the caller to resolve
  return DropLocked(runs);
}

Status Dataset::Rollback() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
  HOTPOT_RETURN_IF_ERROR(reopen_error_);
  std::vector<Run> runs;
  HOTPOT_RETURN_IF_ERROR(ScanLocked(&runs));
  // Dropping is local, so it works while the daemon is down too; with the private pages gone nothing from before a
  // restart is left to refuse.
  HOTPOT_RETURN_IF_ERROR(DropLocked(runs));
  stale_ = false;
  shimproto::Message resp;
  return conn_->Call(shimproto::kRollback, shimproto::EncodeSession(session_), -1, &resp);
}

Status Dataset::Refresh(size_t* kept_out) {
  std::lock_guard<std::mutex> lk(mu_);
  HOTPOT_RETURN_IF_ERROR(UsableLocked());
  std::vector<Run> runs;
  HOTPOT_RETURN_IF_ERROR(ScanLocked(&runs));
  struct Ref {
    uint64_t dataset_page;
    uint8_t* bytes;
  };
  std::vector<Ref> refs;
  for (const Run& r : runs)
    for (uint64_t i = 0; i < r.count; i++)
      refs.push_back({r.w->first_page + r.first + i, r.w->map.bytes() + (r.first + i) * kPageSize});
  size_t kept = 0;
  shimproto::Message resp;
  for (size_t at = 0; at < refs.size(); at += shimproto::kMaxBasePages) {
    size_t n = std::min<size_t>(refs.size() - at, shimproto::kMaxBasePages);
    std::vector<uint64_t> pages(n);
    for (size_t i = 0; i < n; i++) pages[i] = refs[at + i].dataset_page;
    HOTPOT_RETURN_IF_ERROR(conn_->Call(shimproto::kBase, shimproto::EncodeBaseRequest(session_, pages), -1, &resp));
    if (resp.payload.size() != n * kPageSize) return Status(Code::kInternal, "BASE response has the wrong size");
    for (size_t i = 0; i < n; i++) {
      uint8_t* p = refs[at + i].bytes;
      if (std::memcmp(p, resp.payload.data() + i * kPageSize, kPageSize) != 0) {
        kept++;  // a real change: refresh never discards uncommitted work
        continue;
      }
      if (::madvise(p, kPageSize, MADV_DONTNEED) != 0) return ErrnoStatus("madvise(MADV_DONTNEED) on a clean page");
    }
  }
  if (kept_out != nullptr) *kept_out = kept;
  if (kept > 0) return Status::Ok();
  // No private page left: the session may move its sync point to now.
  return conn_->Call(shimproto::kResync, shimproto::EncodeSession(session_), -1, &resp);
}

Status Dataset::Publication(PublicationState* out) {
  // The dataset lock only guards the handle: a read probe must not queue behind a commit's dirty-page scan.
  std::shared_ptr<Connection> conn;
  const std::atomic<uint64_t>* word;
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> lk(mu_);
    HOTPOT_RETURN_IF_ERROR(UsableLocked());
    conn = conn_;
    epoch = conn->epoch();
    if (!pub_tried_) {
      // Once per dataset and daemon: map the node's shared publication word read-only. Any failure (an older
      // node, no memfd) leaves the socket probe in place.
      pub_tried_ = true;
      shimproto::Message m;
      if (conn_->Call(shimproto::kPublicationMap, shimproto::EncodeSession(session_), -1, &m).ok() &&
          m.fds.size() == 1) {
        struct stat st;
        if (::fstat(m.fds[0].get(), &st) == 0 && st.st_size >= static_cast<off_t>(kPageSize)) {
          void* p = ::mmap(nullptr, kPageSize, PROT_READ, MAP_SHARED, m.fds[0].get(), 0);
          if (p != MAP_FAILED) {
            pub_map_ = Mapping(p, kPageSize);
            pub_word_ = static_cast<const std::atomic<uint64_t>*>(p);
          }
        }
      }
    }
    word = pub_word_;
  }
  if (word != nullptr) {
    // Orders the caller's loads of the mapping before this load (the end probe of a snapshot).
    std::atomic_thread_fence(std::memory_order_acquire);
    shimproto::DecodePublicationWord(word->load(std::memory_order_acquire), &out->seq, &out->open_commits);
  } else {
    shimproto::Message resp;
    HOTPOT_RETURN_IF_ERROR(conn->Call(shimproto::kPublication, shimproto::EncodeSession(session_), -1, &resp));
    shimproto::PublicationResponse pr;
    HOTPOT_RETURN_IF_ERROR(shimproto::DecodePublicationResponse(resp.payload, &pr));
    out->seq = pr.seq;
    out->open_commits = pr.open_commits;
  }
  // A dead daemon no longer updates its word, and a restarted one starts its seq over: the state counts only if
  // one daemon connection lasted from before the probe to after it.
  if (conn->epoch() != epoch) return conn->Down();
  out->generation = epoch / 2;
  return Status::Ok();
}

Status Dataset::Close() {
  std::shared_ptr<Connection> conn;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return Status::Ok();
    conn = conn_;
  }
  conn->Unregister(this);  // outside mu_: a reconnect working on this dataset takes mu_
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return Status::Ok();
  closed_ = true;
  for (auto& w : windows_) {
    // Unmap before the uffd goes: no fault can then be raised on a range nobody serves.
    w->map.reset();
    conn_->RemoveUffd(w->uffd.get());
  }
  windows_.clear();
  Status st;
  // A session of a daemon that is gone (or that no longer has the dataset) ended with it.
  if (reopen_error_.ok() && conn_->up()) {
    shimproto::Message resp;
    st = conn_->Call(shimproto::kClose, shimproto::EncodeSession(session_), -1, &resp);
    if (st.code() == Code::kUnavailable) st = Status::Ok();
  }
  conn_.reset();
  return st;
}

// ---- reconnect (on the connection's reconnect thread) ----

namespace {

Status SameFile(int a, int b, bool* same) {
  struct stat sa, sb;
  if (::fstat(a, &sa) != 0 || ::fstat(b, &sb) != 0) return ErrnoStatus("fstat of the node-cache page file");
  *same = sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return Status::Ok();
}

}  // namespace

Status Dataset::Reattach() {
  // OPEN without mu_: it may wait for the restarted node (and name_ never changes).
  shimproto::OpenRequest req;
  req.name = name_;
  req.read_only = read_only_;
  shimproto::Message resp;
  shimproto::OpenResponse r;
  Status st = conn_->RestoreCall(shimproto::kOpen, shimproto::EncodeOpenRequest(req), -1, &resp);
  if (st.ok()) st = shimproto::DecodeOpenResponse(resp.payload, &r);
  if (st.ok() && resp.fds.size() != 1) st = Status(Code::kInternal, "the daemon's OPEN response carried no page file");
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return Status::Ok();  // its new session, if any, ends with this attempt's socket or the connection
  if (st.code() == Code::kNotFound || st.code() == Code::kPermissionDenied || (st.ok() && r.dataset != info_.id)) {
    // The daemon is back but this dataset is not (deleted, or deleted and created again while the daemon was
    // down): its requests fail from now on, and its unfetched pages fail once the wait ends.
    if (st.ok()) {
      reopen_error_ = Status(Code::kFailedPrecondition,
                             "dataset '" + name_ + "' was replaced while the node daemon was down (id " +
                                 std::to_string(info_.id) + ", now " + std::to_string(r.dataset) +
                                 "); close it and open it again");
    } else {
      reopen_error_ = Status(st.code(), "dataset '" + name_ +
                                            "' could not be reopened after the node daemon restarted: " + st.message());
    }
    std::fprintf(stderr, "hotpot: %s\n", reopen_error_.ToString().c_str());
    return Status::Ok();
  }
  HOTPOT_RETURN_IF_ERROR(st);
  reopen_error_ = Status::Ok();
  session_ = r.session;
  // After the OPEN, so every page written before the new session's sync point is found.
  std::vector<Run> runs;
  HOTPOT_RETURN_IF_ERROR(ScanLocked(&runs));
  if (!runs.empty()) stale_ = true;
  bool same = false;
  HOTPOT_RETURN_IF_ERROR(SameFile(page_fd_.get(), resp.fds[0].get(), &same));
  if (!same) {
    HOTPOT_RETURN_IF_ERROR(RemapLocked(resp.fds[0].get()));
    page_fd_ = std::move(resp.fds[0]);
  }
  for (auto& w : windows_) HOTPOT_RETURN_IF_ERROR(HandOverLocked(w.get(), !same));
  // The new daemon has its own publication word; the next probe maps it.
  if (pub_map_.valid()) retired_pub_maps_.push_back(std::move(pub_map_));
  pub_word_ = nullptr;
  pub_tried_ = false;
  return Status::Ok();
}

// The pool was wiped or restored while the daemon was down: the node cache is another file. Each window is mapped
// again at the same address over it (pointers into the mapping stay valid); its private pages are lost with the old
// mapping (stale_ already refuses their commit).
Status Dataset::RemapLocked(int new_page_fd) {
  for (auto& w : windows_) {
    void* p = ::mmap(w->map.addr(), w->map.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED,
                     new_page_fd, static_cast<off_t>(w->first_page * kPageSize));
    if (p == MAP_FAILED) return ErrnoStatus("mmap(MAP_FIXED) of a dataset window over the restored page file");
    // The new mapping is not registered with the uffd yet, and carries none of the old poison markers.
    HOTPOT_RETURN_IF_ERROR(RegisterMissing(w->uffd->fd.get(), w->uffd->addr, w->uffd->len));
    std::lock_guard<std::mutex> ul(w->uffd->mu);
    w->uffd->poisoned.clear();
  }
  return Status::Ok();
}

Status Dataset::HandOverLocked(Window* w, bool remapped) {
  Uffd* u = w->uffd.get();
  {
    std::lock_guard<std::mutex> ul(u->mu);
    // From here on the watcher leaves its queued faults alone: the daemon reads them once it has the uffd.
    u->served = true;
    u->pending_since_ms = 0;
    for (uint64_t page : u->poisoned)
      if (::madvise(reinterpret_cast<void*>(page), kPageSize, MADV_DONTNEED) != 0)
        return ErrnoStatus("madvise(MADV_DONTNEED) of a poisoned page");
    u->poisoned.clear();
  }
  shimproto::MapRequest req;
  req.session = session_;
  req.offset = w->first_page * kPageSize;
  req.length = w->map.size();
  req.addr = u->addr;
  shimproto::Message resp;
  HOTPOT_RETURN_IF_ERROR(conn_->RestoreCall(shimproto::kMap, shimproto::EncodeMapRequest(req), u->fd.get(), &resp));
  // Threads that faulted on a replaced mapping (RemapLocked) retry on the new one. (Faults queued on the same
  // mapping need nothing: the daemon reads them now and wakes them itself.)
  if (remapped) WakeRange(u->fd.get(), u->addr, u->len);
  return Status::Ok();
}

}  // namespace shim
}  // namespace hotpot
