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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "engine/shim_protocol.h"
#include "shim/uffd_compat.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace shim {

using shimproto::kPageSize;

namespace {

Status ErrnoStatus(const std::string& what, Code code = Code::kInternal) { return Status::FromErrno(errno, what, code); }

// A userfaultfd and the app range it is registered on. Shared by the window, the watcher (which serves it with
// poison once the daemon is gone) and nothing else; the fd closes with the last reference.
struct Uffd {
  UniqueFd fd;
  uint64_t addr = 0;
  uint64_t len = 0;
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

void PoisonPage(int uffd, uint64_t page_addr) {
  for (int attempt = 0; attempt < 100; attempt++) {
    uffdio_poison p{};
    p.range.start = page_addr;
    p.range.len = kPageSize;
    if (::ioctl(uffd, UFFDIO_POISON, &p) == 0) return;
    if (errno == EAGAIN) continue;
    if (errno == EEXIST) {
      uffdio_range r{page_addr, kPageSize};
      (void)::ioctl(uffd, UFFDIO_WAKE, &r);
    }
    return;
  }
}

}  // namespace

class Connection {
 public:
  ~Connection() {
    stopping_ = true;
    Kick();
    if (watcher_.joinable()) watcher_.join();
  }

  Status Init(const std::string& path) {
    path_ = path;
    sockaddr_un addr{};
    if (path.empty() || path.size() >= sizeof(addr.sun_path))
      return Status(Code::kInvalidArgument, "hotpot socket path empty or too long: " + path);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    sock_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock_.valid()) return ErrnoStatus("socket(AF_UNIX)");
    if (::connect(sock_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      return ErrnoStatus("connect to the node daemon at " + path, Code::kUnavailable);
    pagemap_.reset(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!pagemap_.valid()) return ErrnoStatus("open /proc/self/pagemap");
    ctl_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ctl_.valid()) return ErrnoStatus("eventfd");
    shimproto::Writer w;
    w.U32(shimproto::kProtocolVersion);
    shimproto::Message resp;
    HOTPOT_RETURN_IF_ERROR(Call(shimproto::kHello, w.buf(), -1, &resp));
    watcher_ = std::thread([this] { Watch(); });
    return Status::Ok();
  }

  // One request/response exchange; requests on a connection are serialised.
  Status Call(uint16_t type, const std::vector<uint8_t>& payload, int fd, shimproto::Message* resp) {
    std::lock_guard<std::mutex> lk(call_mu_);
    if (dead_) return Unavailable();
    wire::FrameHeader h;
    h.type = type;
    h.request_id = ++next_request_;
    // A traced commit (hotpot_commit_traced) hands the app's W3C context to the node in the frame header.
    if (const wire::TraceContext* t = wire::CurrentTrace()) h.trace = *t;
    Status st = shimproto::SendMessage(sock_.get(), h, payload.data(), payload.size(), fd >= 0 ? &fd : nullptr,
                                       fd >= 0 ? 1 : 0);
    if (st.ok()) st = shimproto::RecvMessage(sock_.get(), resp);
    if (!st.ok()) {
      if (dead_ || st.code() == Code::kUnavailable) return Unavailable();
      return st;
    }
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

  void AddUffd(const std::shared_ptr<Uffd>& u) {
    {
      std::lock_guard<std::mutex> lk(wmu_);
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

  int pagemap() const { return pagemap_.get(); }
  bool dead() const { return dead_; }

 private:
  Status Unavailable() const {
    return Status(Code::kUnavailable, "lost the node daemon at " + path_ + "; reconnect after it restarts");
  }
  void Kick() {
    uint64_t one = 1;
    if (ctl_.valid()) (void)!::write(ctl_.get(), &one, sizeof(one));
  }
  void Drain() {
    uint64_t v;
    (void)!::read(ctl_.get(), &v, sizeof(v));
  }

  // Watches the daemon socket for hang-up only; once the daemon is gone it serves every fault of this
  // connection's mappings with UFFDIO_POISON, so an unfetched page raises SIGBUS instead of reading zeros.
  void Watch() {
    while (!stopping_) {
      pollfd p[2] = {{sock_.get(), POLLRDHUP, 0}, {ctl_.get(), POLLIN, 0}};
      int r = ::poll(p, 2, -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "hotpot: watcher poll failed: %s\n", std::strerror(errno));
        return;
      }
      if (p[1].revents != 0) Drain();
      if (p[0].revents != 0) break;
    }
    if (stopping_) return;
    dead_ = true;
    // Unblocks a request waiting on the dead socket.
    ::shutdown(sock_.get(), SHUT_RDWR);
    std::fprintf(stderr, "hotpot: lost the node daemon at %s; pages not yet fetched are unavailable\n",
                 path_.c_str());
    std::vector<std::shared_ptr<Uffd>> set;
    bool rebuilt = true;
    while (!stopping_) {
      if (rebuilt) {
        std::lock_guard<std::mutex> lk(wmu_);
        set = uffds_;
        // Faults the daemon read but never answered: wake them so they fault again and reach us.
        for (auto& u : set) {
          uffdio_range range{u->addr, u->len};
          (void)::ioctl(u->fd.get(), UFFDIO_WAKE, &range);
        }
        rebuilt = false;
      }
      std::vector<pollfd> p;
      p.push_back({ctl_.get(), POLLIN, 0});
      for (auto& u : set) p.push_back({u->fd.get(), POLLIN, 0});
      int r = ::poll(p.data(), p.size(), -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[0].revents != 0) {
        Drain();
        rebuilt = true;
        continue;
      }
      for (size_t i = 1; i < p.size(); i++) {
        if (p[i].revents == 0) continue;
        uffd_msg msgs[16];
        ssize_t n = ::read(set[i - 1]->fd.get(), msgs, sizeof(msgs));
        if (n <= 0) continue;
        for (size_t k = 0; k < static_cast<size_t>(n) / sizeof(uffd_msg); k++)
          if (msgs[k].event == UFFD_EVENT_PAGEFAULT)
            PoisonPage(set[i - 1]->fd.get(), msgs[k].arg.pagefault.address & ~uint64_t(kPageSize - 1));
      }
    }
  }

  std::string path_;
  UniqueFd sock_;
  UniqueFd pagemap_;
  UniqueFd ctl_;
  std::mutex call_mu_;
  uint64_t next_request_ = 0;
  std::atomic<bool> dead_{false};
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
  std::mutex wmu_;
  std::vector<std::shared_ptr<Uffd>> uffds_;
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

bool IsDead(const Connection& c) { return c.dead(); }

struct Dataset::Window {
  Mapping map;
  uint64_t first_page = 0;  // dataset page of the window's first page
  uint64_t pages = 0;
  std::shared_ptr<Uffd> uffd;
};

Dataset::~Dataset() {
  (void)Close();
  if (pub_map_ != nullptr) ::munmap(pub_map_, kPageSize);
}

Status Dataset::Open(const std::shared_ptr<Connection>& conn, const std::string& name, const CreateSpec* create,
                     std::unique_ptr<Dataset>* out) {
  if (!conn) return Status(Code::kInvalidArgument, "no connection");
  if (name.empty() || name.size() > shimproto::kMaxNameLen)
    return Status(Code::kInvalidArgument, "dataset name must be 1.." + std::to_string(shimproto::kMaxNameLen) +
                                              " bytes");
  shimproto::OpenRequest req;
  req.name = name;
  if (create != nullptr) {
    req.create = true;
    req.size = create->size;
    req.mode = static_cast<uint8_t>(create->mode);
    req.replicas = create->replicas;
    if (create->mode != 1 && create->mode != 2) return Status(Code::kInvalidArgument, "create: mode must be 1 or 2");
  }
  shimproto::Message resp;
  HOTPOT_RETURN_IF_ERROR(conn->Call(shimproto::kOpen, shimproto::EncodeOpenRequest(req), -1, &resp));
  shimproto::OpenResponse r;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeOpenResponse(resp.payload, &r));
  std::unique_ptr<Dataset> ds(new Dataset());
  ds->conn_ = conn;
  ds->session_ = r.session;
  if (resp.fds.size() != 1) {
    // Without the page file nothing can be mapped; release the session the daemon opened.
    shimproto::Message ignored;
    (void)conn->Call(shimproto::kClose, shimproto::EncodeSession(r.session), -1, &ignored);
    ds->closed_ = true;
    return Status(Code::kInternal, "the daemon's OPEN response carried no page file");
  }
  ds->page_fd_ = std::move(resp.fds[0]);
  ds->info_.id = r.dataset;
  ds->info_.size = r.size;
  ds->info_.mode = r.mode;
  ds->info_.replicas = r.replicas;
  ds->info_.chunk_size = r.chunk_size;
  *out = std::move(ds);
  return Status::Ok();
}

Status Dataset::Map(uint64_t offset, uint64_t length, void** addr, size_t* mapped_len) {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
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
  uffdio_register reg{};
  reg.range.start = win->uffd->addr;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(win->uffd->fd.get(), UFFDIO_REGISTER, &reg) != 0)
    return ErrnoStatus("UFFDIO_REGISTER (MISSING) on the dataset window", Code::kFailedPrecondition);
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
  if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
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
  std::vector<Run> runs;
  HOTPOT_RETURN_IF_ERROR(ScanLocked(&runs));
  HOTPOT_RETURN_IF_ERROR(DropLocked(runs));
  shimproto::Message resp;
  return conn_->Call(shimproto::kRollback, shimproto::EncodeSession(session_), -1, &resp);
}

Status Dataset::Refresh(size_t* kept_out) {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
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
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return Status(Code::kFailedPrecondition, "dataset is closed");
    conn = conn_;
    if (!pub_tried_) {
      // Once per dataset: map the node's shared publication word read-only. Any failure (an older node, no
      // memfd) leaves the socket probe in place.
      pub_tried_ = true;
      shimproto::Message m;
      if (conn_->Call(shimproto::kPublicationMap, shimproto::EncodeSession(session_), -1, &m).ok() &&
          m.fds.size() == 1) {
        struct stat st;
        if (::fstat(m.fds[0].get(), &st) == 0 && st.st_size >= static_cast<off_t>(kPageSize)) {
          void* p = ::mmap(nullptr, kPageSize, PROT_READ, MAP_SHARED, m.fds[0].get(), 0);
          if (p != MAP_FAILED) {
            pub_map_ = p;
            pub_word_ = static_cast<const std::atomic<uint64_t>*>(p);
          }
        }
      }
    }
    word = pub_word_;
  }
  if (word != nullptr) {
    // A dead daemon no longer updates the word: say so instead of reporting a state that never changes.
    if (IsDead(*conn)) return Status(Code::kUnavailable, "lost the node daemon; reconnect after it restarts");
    // Orders the caller's loads of the mapping before this load (the end probe of a snapshot).
    std::atomic_thread_fence(std::memory_order_acquire);
    shimproto::DecodePublicationWord(word->load(std::memory_order_acquire), &out->seq, &out->open_commits);
    return Status::Ok();
  }
  shimproto::Message resp;
  HOTPOT_RETURN_IF_ERROR(conn->Call(shimproto::kPublication, shimproto::EncodeSession(session_), -1, &resp));
  shimproto::PublicationResponse pr;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodePublicationResponse(resp.payload, &pr));
  out->seq = pr.seq;
  out->open_commits = pr.open_commits;
  return Status::Ok();
}

Status Dataset::Close() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return Status::Ok();
  closed_ = true;
  for (auto& w : windows_) {
    // Unmap before the uffd goes: no fault can then be raised on a range nobody serves.
    w->map.reset();
    conn_->RemoveUffd(w->uffd.get());
  }
  windows_.clear();
  shimproto::Message resp;
  Status st = conn_->Call(shimproto::kClose, shimproto::EncodeSession(session_), -1, &resp);
  conn_.reset();
  return st;
}

}  // namespace shim
}  // namespace hotpot
