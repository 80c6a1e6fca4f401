// The daemon side of the app unix socket (see shim_server.h and shim_protocol.h for the messages).
//
// Threads: one accept thread; per app connection a request thread (answers the app's requests in order) and a
// fault thread (epoll over that connection's userfaultfds). A fault is resolved entirely on the fault thread:
// ShimBackend::EnsurePages writes the page into the node-cache file, then UFFDIO_WAKE lets the faulting access
// retry and map the now-present page-cache page. No JavaScript and no other thread is on that path.
#include "engine/shim_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/bytes.h"
#include "common/peer_cred.h"
#include "engine/readahead.h"
#include "shimproto/protocol.h"
#include "shimproto/uffd_compat.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace engine {

namespace {

// Sequential faults fetch following pages too, and stream. A fault right after the last range a fault fetched (or
// anywhere in what read-ahead was given for its mapping) fetches its page and the 16 after it in one request — or
// takes the read-ahead run queued for its page, or waits for the run in flight that holds it — and queues the pages
// after those for read-ahead (readahead.h): 16 at the first such fault, twice as many at each next one, up to 1024
// (4 MiB). Worker threads fetch them, several runs of 64 in flight, while the app reads. A fault out of sequence
// drops what its mapping has queued and starts again at 16. A long run streams; a short one or random access fetches
// little extra.
constexpr uint64_t kPrefetchPages = 16;
constexpr uint64_t kPrefetchMaxPages = 1024;
// What a fault in sequence fetches itself (one request) when no run holds its page: few, so the app is back soon
// and finds the runs queued at the same time still in flight (it waits for them instead of fetching again).
constexpr uint64_t kFaultFetchPages = 1 + kPrefetchPages;
constexpr unsigned kReadaheadThreads = 4;    // runs in flight at once, per node
constexpr uint32_t kMaxReplicas = 64;

struct MapState {
  uint64_t id = 0;
  uint64_t session = 0;
  uint64_t dataset = 0;
  uint64_t first_page = 0;  // dataset page of the window's first page
  uint64_t pages = 0;
  uint64_t addr = 0;  // app address of the window
  UniqueFd uffd;
  uint64_t stream = 0;  // this mapping's read-ahead runs (Readahead::Queue, Drop)
  // Fault-thread only: the window page right after the last range a fault ensured (a fault from there up to
  // `ahead_end`, the end of what read-ahead was given, continues a run).
  uint64_t next_expected = UINT64_MAX;
  uint64_t ahead_end = 0;
  uint64_t prefetch = kPrefetchPages;  // how far past its own pages the next sequential fault reaches
  bool wake_error_logged = false;
};

struct SessionState {
  uint64_t dataset = 0;
  uint64_t size = 0;
  uint64_t pages = 0;
  bool read_only = false;  // opened with kOpenFlagReadOnly: its commits are refused
  std::vector<uint64_t> mappings;
  std::vector<DirtyPage> staged;  // COMMIT batches received so far (kCommitFlagMore)
};

class ServerImpl;

struct Conn {
  ServerImpl* server = nullptr;
  UniqueFd sock;
  PeerCred cred;
  UniqueFd epoll;
  UniqueFd fault_wake;  // eventfd: tells the fault thread to exit
  std::atomic<bool> fault_stop{false};
  std::atomic<bool> done{false};
  std::thread request_thread;
  std::thread fault_thread;

  std::mutex mu;  // guards maps (shared with the fault thread)
  std::map<uint64_t, std::shared_ptr<MapState>> maps;

  // Request-thread only.
  bool hello = false;
  uint64_t next_map_id = 1;
  std::map<uint64_t, SessionState> sessions;
};

Status ErrnoStatus(const std::string& what, Code code = Code::kInternal) { return Status::FromErrno(errno, what, code); }

bool IsUserfaultfd(int fd) {
  char path[64], target[128];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(path, target, sizeof(target) - 1);
  if (n < 0) return false;
  target[n] = 0;
  return std::strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

class ServerImpl : public ShimServer {
 public:
  ServerImpl(ShimBackend* backend, std::function<void(const std::string&)> log)
      : backend_(backend), log_(std::move(log)),
        readahead_([backend](uint64_t ds, uint64_t first, uint32_t count) {
          return backend->PrefetchPages(ds, first, count);
        }, kReadaheadThreads) {}
  ~ServerImpl() override { Shutdown(); }

  Status Start(const std::string& path);
  ShimServerStats Stats() const override {
    ShimServerStats s;
    s.connections = connections_.load();
    s.sessions = sessions_.load();
    s.mappings = mappings_.load();
    s.faults = faults_.load();
    s.prefetched_pages = prefetched_.load();
    const Readahead::Stats ra = readahead_.GetStats();
    s.prefetched_pages += ra.pages_fetched;
    s.readahead_runs = ra.runs_fetched;
    s.readahead_failed = ra.runs_failed;
    s.readahead_faults = readahead_faults_.load();
    return s;
  }
  void Shutdown() override;

 private:
  void Log(const std::string& m) {
    if (log_) log_(m);
  }
  void AcceptLoop();
  void ReapFinished(bool all);
  void RequestLoop(Conn* c);
  void FaultLoop(Conn* c);
  void HandleFault(Conn* c, MapState* m, uint64_t addr);
  void Poison(Conn* c, MapState* m, uint64_t page_addr);
  void CloseSession(Conn* c, uint64_t session);
  Status Reply(Conn* c, const wire::FrameHeader& req, const Status& st, const std::vector<uint8_t>& payload,
               int fd = -1);
  // Each returns the status to send as an error; on success it has replied itself.
  Status OnHello(Conn* c, const shimproto::Message& m);
  Status OnOpen(Conn* c, const shimproto::Message& m);
  Status OnMap(Conn* c, shimproto::Message& m);
  Status OnCommit(Conn* c, const shimproto::Message& m);
  Status OnSessionOp(Conn* c, const shimproto::Message& m);
  Status OnBase(Conn* c, const shimproto::Message& m);
  Status OnPublication(Conn* c, const shimproto::Message& m);
  Status OnPublicationMap(Conn* c, const shimproto::Message& m);
  SessionState* FindSession(Conn* c, uint64_t id, Status* st);

  ShimBackend* backend_;
  std::function<void(const std::string&)> log_;
  Readahead readahead_;  // stopped once no fault thread is left (Shutdown)
  std::atomic<uint64_t> next_stream_{1};
  std::string path_;
  UniqueFd listen_;
  UniqueFd stop_;  // eventfd, readable once Shutdown starts; polled by the accept and request threads
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::once_flag shutdown_once_;
  std::atomic<uint64_t> connections_{0}, sessions_{0}, mappings_{0}, faults_{0}, prefetched_{0},
      readahead_faults_{0};
};

Status ServerImpl::Start(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return Status(Code::kInvalidArgument, "shim socket path empty or longer than " +
                                              std::to_string(sizeof(addr.sun_path) - 1) + " bytes: " + path);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  struct stat stt;
  if (::lstat(path.c_str(), &stt) == 0) {
    if (!S_ISSOCK(stt.st_mode))
      return Status(Code::kFailedPrecondition, "shim socket path exists and is not a socket: " + path);
    // A socket file someone still accepts on is a live daemon, not a stale leftover.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe.valid()) return ErrnoStatus("socket(AF_UNIX) for the stale-socket probe");
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0)
      return Status(Code::kAlreadyExists, "another daemon is serving the shim socket " + path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink stale shim socket " + path);
  } else if (errno != ENOENT) {
    return ErrnoStatus("lstat " + path);
  }

  listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_.valid()) return ErrnoStatus("socket(AF_UNIX)");
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return ErrnoStatus("bind shim socket " + path, Code::kFailedPrecondition);
  path_ = path;
  // Owner and group may connect (the daemon gives the socket its app group: docs/security.md); every
  // open is then checked against the app's peer credentials (SO_PEERCRED), logged per connection.
  if (::chmod(path.c_str(), 0660) != 0) return ErrnoStatus("chmod 0660 " + path);
  if (::listen(listen_.get(), 128) != 0) return ErrnoStatus("listen on " + path);
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_.valid()) return ErrnoStatus("eventfd");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

void ServerImpl::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    stopping_ = true;
    if (stop_.valid()) {
      uint64_t one = 1;
      if (::write(stop_.get(), &one, sizeof(one)) != sizeof(one)) Log("shim server: eventfd write failed");
    }
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      // Shut every app socket down now so apps see the daemon gone even while a request thread is busy.
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& c : conns_) ::shutdown(c->sock.get(), SHUT_RDWR);
    }
    ReapFinished(true);
    readahead_.Stop();
    listen_.reset();
    if (!path_.empty()) ::unlink(path_.c_str());
  });
}

void ServerImpl::ReapFinished(bool all) {
  std::vector<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done.load()) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished)
    if (c->request_thread.joinable()) c->request_thread.join();
}

void ServerImpl::AcceptLoop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      Log("shim server: poll on the listening socket failed: " + std::string(std::strerror(errno)));
      return;
    }
    if (p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      Log("shim server: accept failed: " + std::string(std::strerror(errno)));
      if (errno == EMFILE || errno == ENFILE) ::usleep(10000);  // out of fds: back off instead of spinning
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->server = this;
    c->sock.reset(fd);
    SocketPeer peer;
    if (Status ps = ReadSocketPeer(fd, &peer); !ps.ok()) {
      Log("shim server: dropping a connection: " + ps.message());
      continue;
    }
    c->cred.pid = peer.pid;
    c->cred.uid = peer.uid;
    c->cred.gid = peer.gid;
    c->cred.groups = std::move(peer.groups);
    c->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
    c->fault_wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!c->epoll.valid() || !c->fault_wake.valid()) {
      Log("shim server: epoll/eventfd for a connection failed: " + std::string(std::strerror(errno)));
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // mapping ids start at 1
    if (::epoll_ctl(c->epoll.get(), EPOLL_CTL_ADD, c->fault_wake.get(), &ev) != 0) {
      Log("shim server: epoll_ctl failed: " + std::string(std::strerror(errno)));
      continue;
    }
    connections_++;
    Log("shim server: app connected (pid " + std::to_string(c->cred.pid) + ", uid " + std::to_string(c->cred.uid) + ")");
    Conn* raw = c.get();
    {
      std::lock_guard<std::mutex> lk(mu_);
      conns_.push_back(std::move(c));
    }
    raw->request_thread = std::thread([this, raw] { RequestLoop(raw); });
    ReapFinished(false);
  }
}

Status ServerImpl::Reply(Conn* c, const wire::FrameHeader& req, const Status& st, const std::vector<uint8_t>& payload,
                         int fd) {
  wire::FrameHeader h;
  h.type = req.type;
  h.request_id = req.request_id;
  h.flags = wire::kFlagResponse | (st.ok() ? 0 : wire::kFlagError);
  h.status = static_cast<uint32_t>(st.code());
  if (!st.ok()) {
    std::string msg = st.message();
    return shimproto::SendMessage(c->sock.get(), h, reinterpret_cast<const uint8_t*>(msg.data()), msg.size(),
                                  nullptr, 0);
  }
  return shimproto::SendMessage(c->sock.get(), h, payload.data(), payload.size(), fd >= 0 ? &fd : nullptr,
                                fd >= 0 ? 1 : 0);
}

void ServerImpl::RequestLoop(Conn* c) {
  c->fault_thread = std::thread([this, c] { FaultLoop(c); });
  const std::string who = "pid " + std::to_string(c->cred.pid);
  while (!stopping_) {
    pollfd p[2] = {{c->sock.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents != 0) break;
    if (p[0].revents == 0) continue;
    shimproto::Message m;
    Status st = shimproto::RecvMessage(c->sock.get(), &m);
    if (!st.ok()) {
      if (st.code() != Code::kUnavailable) {
        // The byte stream cannot be trusted after a framing error: say why, then drop the connection.
        Log("shim server: bad message from " + who + ": " + st.ToString());
        (void)Reply(c, m.header, st, {});
      }
      break;
    }
    if ((m.header.flags & wire::kFlagResponse) != 0) {
      st = Status(Code::kInvalidArgument, "a response frame where a request was expected");
    } else if (m.header.type != shimproto::kHello && !c->hello) {
      st = Status(Code::kFailedPrecondition, "HELLO must be the first message");
    } else if (m.header.type != shimproto::kMap && !m.fds.empty()) {
      st = Status(Code::kInvalidArgument, "unexpected fd attached to a shim request");
    } else {
      switch (m.header.type) {
        case shimproto::kHello: st = OnHello(c, m); break;
        case shimproto::kOpen: st = OnOpen(c, m); break;
        case shimproto::kMap: st = OnMap(c, m); break;
        case shimproto::kCommit: st = OnCommit(c, m); break;
        case shimproto::kRollback:
        case shimproto::kResync:
        case shimproto::kClose: st = OnSessionOp(c, m); break;
        case shimproto::kBase: st = OnBase(c, m); break;
        case shimproto::kPublication: st = OnPublication(c, m); break;
        case shimproto::kPublicationMap: st = OnPublicationMap(c, m); break;
        default: st = Status(Code::kUnimplemented, "unknown shim message type " + std::to_string(m.header.type));
      }
    }
    if (!st.ok()) {
      if (st.code() == Code::kUnavailable && st.message().rfind("sendmsg", 0) == 0) break;  // app gone
      if (!Reply(c, m.header, st, {}).ok()) break;
    }
  }
  // App gone (or shutdown): stop serving its faults, then close its sessions.
  c->fault_stop = true;
  uint64_t one = 1;
  if (::write(c->fault_wake.get(), &one, sizeof(one)) != sizeof(one)) Log("shim server: eventfd write failed");
  if (c->fault_thread.joinable()) c->fault_thread.join();
  std::vector<uint64_t> ids;
  for (auto& s : c->sessions) ids.push_back(s.first);
  for (uint64_t id : ids) CloseSession(c, id);
  // The fd itself closes with the Conn after the join (Shutdown may still be calling shutdown() on it).
  ::shutdown(c->sock.get(), SHUT_RDWR);
  Log("shim server: app disconnected (" + who + ")");
  c->done = true;
}

SessionState* ServerImpl::FindSession(Conn* c, uint64_t id, Status* st) {
  auto it = c->sessions.find(id);
  if (it == c->sessions.end()) {
    *st = Status(Code::kNotFound, "session " + std::to_string(id) + " is not open on this connection");
    return nullptr;
  }
  return &it->second;
}

void ServerImpl::CloseSession(Conn* c, uint64_t session) {
  auto it = c->sessions.find(session);
  if (it == c->sessions.end()) return;
  {
    std::lock_guard<std::mutex> lk(c->mu);
    for (uint64_t mid : it->second.mappings) {
      auto mi = c->maps.find(mid);
      if (mi == c->maps.end()) continue;
      // Best effort: the uffd may already be gone from the set; its last reference closes it.
      (void)::epoll_ctl(c->epoll.get(), EPOLL_CTL_DEL, mi->second->uffd.get(), nullptr);
      readahead_.Drop(mi->second->stream);
      c->maps.erase(mi);
    }
  }
  c->sessions.erase(it);
  backend_->CloseSession(session);
}

Status ServerImpl::OnHello(Conn* c, const shimproto::Message& m) {
  uint32_t version = 0;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeHelloRequest(m.payload, &version));
  if (version != shimproto::kProtocolVersion)
    return Status(Code::kFailedPrecondition, "shim protocol version " + std::to_string(version) +
                                                 " not supported (daemon speaks " +
                                                 std::to_string(shimproto::kProtocolVersion) + ")");
  c->hello = true;
  return Reply(c, m.header, Status::Ok(),
               shimproto::EncodeHelloResponse({shimproto::kProtocolVersion, static_cast<uint32_t>(::getpid())}));
}

Status ServerImpl::OnOpen(Conn* c, const shimproto::Message& m) {
  shimproto::OpenRequest req;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeOpenRequest(m.payload, &req));
  if (c->sessions.size() >= shimproto::kMaxSessionsPerConnection)
    return Status(Code::kResourceExhausted, "too many open datasets on this connection");
  CreateOptions opts;
  if (req.create) {
    if (req.size == 0) return Status(Code::kInvalidArgument, "create: size must be > 0");
    if (req.mode != static_cast<uint8_t>(Mode::kMrmw) && req.mode != static_cast<uint8_t>(Mode::kMrsw))
      return Status(Code::kInvalidArgument, "create: unknown mode " + std::to_string(req.mode));
    if (req.replicas == 0 || req.replicas > kMaxReplicas)
      return Status(Code::kInvalidArgument, "create: replicas must be 1.." + std::to_string(kMaxReplicas));
    opts.size_bytes = req.size;
    opts.mode = static_cast<Mode>(req.mode);
    opts.replicas = req.replicas;
  }
  OpenResult res;
  PeerCred cred = c->cred;
  cred.read_only = req.read_only;
  HOTPOT_RETURN_IF_ERROR(backend_->Open(req.name, req.create ? &opts : nullptr, cred, &res));
  if (res.page_fd < 0) return Status(Code::kInternal, "backend returned no page file for " + req.name);
  uint64_t session = backend_->OpenSession(res.dataset_id, c->cred);
  SessionState s;
  s.dataset = res.dataset_id;
  s.size = res.size_bytes;
  s.pages = (res.size_bytes + kPageSize - 1) / kPageSize;
  s.read_only = req.read_only;
  c->sessions[session] = std::move(s);
  sessions_++;
  shimproto::OpenResponse resp;
  resp.session = session;
  resp.dataset = res.dataset_id;
  resp.size = res.size_bytes;
  resp.mode = static_cast<uint8_t>(res.mode);
  resp.replicas = res.replicas;
  resp.chunk_size = res.chunk_size_bytes;
  Status st = Reply(c, m.header, Status::Ok(), shimproto::EncodeOpenResponse(resp), res.page_fd);
  if (!st.ok()) CloseSession(c, session);
  return st;
}

Status ServerImpl::OnMap(Conn* c, shimproto::Message& m) {
  if (m.fds.size() != 1) return Status(Code::kInvalidArgument, "MAP needs exactly one fd (the userfaultfd)");
  shimproto::MapRequest req;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeMapRequest(m.payload, &req));
  Status st;
  SessionState* s = FindSession(c, req.session, &st);
  if (s == nullptr) return st;
  if (req.offset % kPageSize != 0 || req.length % kPageSize != 0 || req.addr % kPageSize != 0)
    return Status(Code::kInvalidArgument, "MAP offset, length and address must be page-aligned");
  if (req.length == 0 || req.addr == 0) return Status(Code::kInvalidArgument, "MAP of an empty window");
  uint64_t first = req.offset / kPageSize, count = req.length / kPageSize;
  if (first >= s->pages || count > s->pages - first)
    return Status(Code::kOutOfRange, "MAP window [" + std::to_string(req.offset) + ", +" +
                                         std::to_string(req.length) + ") is outside the dataset (" +
                                         std::to_string(s->size) + " bytes)");
  if (req.addr + req.length < req.addr) return Status(Code::kInvalidArgument, "MAP address range wraps");
  if (s->mappings.size() >= shimproto::kMaxMappingsPerSession)
    return Status(Code::kResourceExhausted, "too many mappings of one dataset");
  if (!IsUserfaultfd(m.fds[0].get())) return Status(Code::kInvalidArgument, "the fd attached to MAP is not a userfaultfd");
  int fl = ::fcntl(m.fds[0].get(), F_GETFL);
  if (fl < 0 || ::fcntl(m.fds[0].get(), F_SETFL, fl | O_NONBLOCK) != 0) return ErrnoStatus("fcntl O_NONBLOCK on uffd");

  auto ms = std::make_shared<MapState>();
  ms->id = c->next_map_id++;
  ms->stream = next_stream_++;
  ms->session = req.session;
  ms->dataset = s->dataset;
  ms->first_page = first;
  ms->pages = count;
  ms->addr = req.addr;
  ms->uffd = std::move(m.fds[0]);
  m.fds.clear();
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->maps[ms->id] = ms;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = ms->id;
    if (::epoll_ctl(c->epoll.get(), EPOLL_CTL_ADD, ms->uffd.get(), &ev) != 0) {
      Status e = ErrnoStatus("epoll_ctl ADD uffd");
      c->maps.erase(ms->id);
      return e;
    }
  }
  s->mappings.push_back(ms->id);
  mappings_++;
  shimproto::Writer w;
  w.U64(ms->id);
  return Reply(c, m.header, Status::Ok(), w.buf());
}

Status ServerImpl::OnCommit(Conn* c, const shimproto::Message& m) {
  wire::TraceScope trace_scope(m.header.trace);  // the app's span is the parent of the node's commit span
  shimproto::CommitBatch b;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeCommitBatch(m.payload, &b));
  Status st;
  SessionState* s = FindSession(c, b.session, &st);
  if (s == nullptr) return st;
  if (s->read_only) {
    s->staged.clear();
    return Status(Code::kPermissionDenied, "COMMIT on a session opened read-only");
  }
  if (b.replicas > kMaxReplicas) {
    s->staged.clear();
    return Status(Code::kInvalidArgument, "COMMIT replicas must be 0.." + std::to_string(kMaxReplicas));
  }
  if (s->staged.size() + b.n > s->pages) {
    s->staged.clear();
    return Status(Code::kInvalidArgument, "COMMIT has more pages than the dataset");
  }
  for (uint32_t i = 0; i < b.n; i++) {
    const uint8_t* rec = b.pages + size_t(i) * (8 + kPageSize);
    uint64_t page = GetU64(rec);
    if (page >= s->pages) {
      s->staged.clear();
      return Status(Code::kOutOfRange, "COMMIT page " + std::to_string(page) + " is outside the dataset");
    }
    DirtyPage dp;
    dp.page = page;
    dp.data.assign(rec + 8, rec + 8 + kPageSize);
    s->staged.push_back(std::move(dp));
  }
  if ((b.flags & shimproto::kCommitFlagMore) != 0) return Reply(c, m.header, Status::Ok(), {});

  std::vector<DirtyPage> pages = std::move(s->staged);
  s->staged.clear();
  std::sort(pages.begin(), pages.end(), [](const DirtyPage& a, const DirtyPage& z) { return a.page < z.page; });
  for (size_t i = 1; i < pages.size(); i++)
    if (pages[i].page == pages[i - 1].page)
      return Status(Code::kInvalidArgument, "COMMIT names page " + std::to_string(pages[i].page) + " twice");
  shimproto::CommitResponse resp;
  CommitResult result;
  CommitExtras extras;
  for (const auto& rr : b.reads) extras.reads.push_back(ReadRange{rr.offset, rr.len});
  extras.lease = b.lease;
  if (pages.empty() && extras.reads.empty()) {
    resp.status = Status::Ok();
  } else {
    resp.status = backend_->CommitWith(b.session, pages, b.replicas, extras, &result);
    // The app drops its private pages next; the node cache already holds the committed bytes.
    if (resp.status.ok()) backend_->ResyncSession(b.session);
  }
  resp.copies = result.copies;
  resp.replicas = result.replicas;
  resp.pages = result.pages;
  resp.ranges = result.ranges;
  resp.bytes = result.bytes;
  for (const auto& cr : result.conflicts) resp.conflicts.push_back({cr.offset, cr.len});
  return Reply(c, m.header, Status::Ok(), shimproto::EncodeCommitResponse(resp));
}

Status ServerImpl::OnSessionOp(Conn* c, const shimproto::Message& m) {
  uint64_t id;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeSession(m.payload, &id));
  Status st;
  SessionState* s = FindSession(c, id, &st);
  if (s == nullptr) return st;
  if (m.header.type == shimproto::kClose) {
    CloseSession(c, id);
  } else {
    s->staged.clear();
    backend_->ResyncSession(id);
  }
  return Reply(c, m.header, Status::Ok(), {});
}

Status ServerImpl::OnBase(Conn* c, const shimproto::Message& m) {
  uint64_t id;
  std::vector<uint64_t> pages;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeBaseRequest(m.payload, &id, &pages));
  Status st;
  SessionState* s = FindSession(c, id, &st);
  if (s == nullptr) return st;
  std::vector<uint8_t> out(pages.size() * kPageSize);
  for (size_t i = 0; i < pages.size(); i++) {
    if (pages[i] >= s->pages)
      return Status(Code::kOutOfRange, "BASE page " + std::to_string(pages[i]) + " is outside the dataset");
    HOTPOT_RETURN_IF_ERROR(backend_->BaseImage(id, pages[i], out.data() + i * kPageSize));
  }
  return Reply(c, m.header, Status::Ok(), out);
}

Status ServerImpl::OnPublicationMap(Conn* c, const shimproto::Message& m) {
  uint64_t id;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeSession(m.payload, &id));
  Status st;
  if (FindSession(c, id, &st) == nullptr) return st;
  int fd = -1;
  HOTPOT_RETURN_IF_ERROR(backend_->PublicationMemory(id, &fd));
  return Reply(c, m.header, Status::Ok(), {}, fd);  // SendMessage passes a copy of the fd; ours stays open
}

Status ServerImpl::OnPublication(Conn* c, const shimproto::Message& m) {
  uint64_t id;
  HOTPOT_RETURN_IF_ERROR(shimproto::DecodeSession(m.payload, &id));
  Status st;
  if (FindSession(c, id, &st) == nullptr) return st;
  PublicationInfo info;
  HOTPOT_RETURN_IF_ERROR(backend_->Publication(id, &info));
  shimproto::PublicationResponse resp;
  resp.seq = info.seq;
  resp.open_commits = info.open_commits;
  return Reply(c, m.header, Status::Ok(), shimproto::EncodePublicationResponse(resp));
}

void ServerImpl::FaultLoop(Conn* c) {
  epoll_event evs[16];
  while (!c->fault_stop) {
    int n = ::epoll_wait(c->epoll.get(), evs, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      Log("shim server: epoll_wait failed: " + std::string(std::strerror(errno)));
      return;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 == 0) continue;  // fault_wake: the loop condition decides
      std::shared_ptr<MapState> ms;
      {
        std::lock_guard<std::mutex> lk(c->mu);
        auto it = c->maps.find(evs[i].data.u64);
        if (it != c->maps.end()) ms = it->second;
      }
      if (!ms) continue;
      for (;;) {
        uffd_msg msgs[16];
        ssize_t r = ::read(ms->uffd.get(), msgs, sizeof(msgs));
        if (r < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN) {
            Log("shim server: read on a uffd failed, dropping it: " + std::string(std::strerror(errno)));
            std::lock_guard<std::mutex> lk(c->mu);
            (void)::epoll_ctl(c->epoll.get(), EPOLL_CTL_DEL, ms->uffd.get(), nullptr);
          }
          break;
        }
        if (r == 0) break;
        size_t cnt = static_cast<size_t>(r) / sizeof(uffd_msg);
        for (size_t k = 0; k < cnt; k++)
          if (msgs[k].event == UFFD_EVENT_PAGEFAULT) HandleFault(c, ms.get(), msgs[k].arg.pagefault.address);
      }
      if ((evs[i].events & (EPOLLHUP | EPOLLERR)) != 0) {
        std::lock_guard<std::mutex> lk(c->mu);
        (void)::epoll_ctl(c->epoll.get(), EPOLL_CTL_DEL, ms->uffd.get(), nullptr);
      }
    }
  }
}

void ServerImpl::HandleFault(Conn* c, MapState* m, uint64_t addr) {
  uint64_t page_addr = addr & ~uint64_t(kPageSize - 1);
  if (page_addr < m->addr || page_addr >= m->addr + m->pages * kPageSize) {
    // The app registered more than it told us about: nothing valid to serve there.
    Poison(c, m, page_addr);
    return;
  }
  faults_++;
  const uint64_t idx = (page_addr - m->addr) / kPageSize;
  const uint64_t page = m->first_page + idx;
  const bool in_sequence =
      m->next_expected != UINT64_MAX && idx >= m->next_expected && idx <= std::max(m->next_expected, m->ahead_end);
  // What this fault fetches itself: its page alone out of sequence; in sequence, the run read-ahead queued for it
  // (taken off the queue), nothing if a run in flight or just landed holds it, else its page and up to 63 more.
  uint64_t n = 1;
  bool fetch = true;
  std::shared_ptr<Readahead::Run> ticket;
  if (in_sequence) {
    uint64_t first = 0, end = 0;
    switch (readahead_.Begin(m->dataset, page, &first, &end, &ticket)) {
      case Readahead::Found::kTaken: n = end - page; break;
      case Readahead::Found::kInFlight: n = end - page; fetch = false; break;
      case Readahead::Found::kFetched: n = end - page; fetch = false; break;
      case Readahead::Found::kNone: n = kFaultFetchPages; break;
    }
    n = std::min(n, m->pages - idx);
    // Queue the next pages before waiting or fetching, so they are in flight meanwhile.
    const uint64_t from = std::max(m->ahead_end, idx + n);
    const uint64_t to = std::min(m->pages, idx + n + m->prefetch);
    if (from < to) readahead_.Queue(m->stream, m->dataset, m->first_page + from, m->first_page + to);
    m->ahead_end = std::max(m->ahead_end, to);
    m->prefetch = std::min(m->prefetch * 2, kPrefetchMaxPages);
    if (ticket && !readahead_.Wait(ticket)) {
      fetch = true;  // the run failed: this fault fetches its page with the owner wait, and reports the error
      n = 1;
    }
  } else {
    if (m->ahead_end != 0) readahead_.Drop(m->stream);
    m->ahead_end = 0;
    m->prefetch = kPrefetchPages;
  }
  Status st;
  if (fetch) {
    st = backend_->EnsurePages(m->dataset, page, static_cast<uint32_t>(n));
    if (!st.ok() && n > 1) {
      n = 1;
      st = backend_->EnsurePages(m->dataset, page, 1);
    }
    if (st.ok()) prefetched_ += n - 1;
  } else {
    readahead_faults_++;
  }
  if (!st.ok()) {
    Log("shim server: page " + std::to_string(page) + " of dataset " + std::to_string(m->dataset) +
        " unavailable (" + st.ToString() + "); the app gets SIGBUS");
    m->next_expected = UINT64_MAX;
    m->ahead_end = 0;
    readahead_.Drop(m->stream);
    Poison(c, m, page_addr);
    return;
  }
  m->next_expected = idx + n;
  uffdio_range range{page_addr, n * kPageSize};
  if (::ioctl(m->uffd.get(), UFFDIO_WAKE, &range) != 0 && !m->wake_error_logged) {
    m->wake_error_logged = true;
    Log("shim server: UFFDIO_WAKE failed: " + std::string(std::strerror(errno)));
  }
}

void ServerImpl::Poison(Conn*, MapState* m, uint64_t page_addr) {
  for (int attempt = 0; attempt < 100; attempt++) {
    uffdio_poison p{};
    p.range.start = page_addr;
    p.range.len = kPageSize;
    p.mode = 0;
    if (::ioctl(m->uffd.get(), UFFDIO_POISON, &p) == 0) return;
    if (errno == EAGAIN) continue;  // the app's address space changed under us; retry
    if (errno == EEXIST) {
      // Something is mapped there already: let the access retry.
      uffdio_range r{page_addr, kPageSize};
      (void)::ioctl(m->uffd.get(), UFFDIO_WAKE, &r);
      return;
    }
    Log("shim server: UFFDIO_POISON failed: " + std::string(std::strerror(errno)));
    return;
  }
}

}  // namespace

Status StartShimServer(const std::string& socket_path, ShimBackend* backend,
                       std::function<void(const std::string&)> log, std::unique_ptr<ShimServer>* out) {
  if (backend == nullptr) return Status(Code::kInvalidArgument, "StartShimServer: no backend");
  auto s = std::make_unique<ServerImpl>(backend, std::move(log));
  HOTPOT_RETURN_IF_ERROR(s->Start(socket_path));
  *out = std::move(s);
  return Status::Ok();
}

}  // namespace engine
}  // namespace hotpot
