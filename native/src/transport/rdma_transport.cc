#include "transport/rdma_transport.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "../../../kmod/hotpot_rdma_uapi.h"
#include "common/fd.h"

namespace hotpot {
namespace transport {
namespace {

// kRdmaConnect bodies, little-endian:
//   request { magic u32, version u16, reserved u16, qpn u32, psn u32, gid[16] }                       32 bytes
//   reply   { magic u32, version u16, nregions u16, qpn u32, psn u32, gid[16],
//             nregions x { region_id u32, rkey u32, length u64 } }                                     32 + 16 n
constexpr uint32_t kConnectMagic = 0x43525048;  // "HPRC"
constexpr uint16_t kConnectVersion = 1;
constexpr size_t kConnectSize = 32;
constexpr size_t kRegionEntrySize = 16;
constexpr size_t kMaxRegions = 4096;
// Reads in flight at once per transport, each in its own slot (RdmaOptions::bounce_bytes) of one registered region.
constexpr size_t kReadSlots = 4;

void Put16(std::vector<uint8_t>* b, uint16_t v) {
  for (int i = 0; i < 2; i++) b->push_back(uint8_t(v >> (8 * i)));
}
void Put32(std::vector<uint8_t>* b, uint32_t v) {
  for (int i = 0; i < 4; i++) b->push_back(uint8_t(v >> (8 * i)));
}
void Put64(std::vector<uint8_t>* b, uint64_t v) {
  for (int i = 0; i < 8; i++) b->push_back(uint8_t(v >> (8 * i)));
}
uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t Get64(const uint8_t* p) { return uint64_t(Get32(p)) | (uint64_t(Get32(p + 4)) << 32); }

struct QpEndpoint {
  uint32_t qpn = 0;
  uint32_t psn = 0;
  uint8_t gid[16] = {};
};

void PutEndpoint(std::vector<uint8_t>* b, uint16_t count_or_reserved, const QpEndpoint& e) {
  Put32(b, kConnectMagic);
  Put16(b, kConnectVersion);
  Put16(b, count_or_reserved);
  Put32(b, e.qpn);
  Put32(b, e.psn);
  b->insert(b->end(), e.gid, e.gid + 16);
}

// Checks magic and version; *count receives the u16 after the version.
bool GetEndpoint(const uint8_t* p, size_t len, QpEndpoint* e, uint16_t* count) {
  if (len < kConnectSize || Get32(p) != kConnectMagic || Get16(p + 4) != kConnectVersion) return false;
  *count = Get16(p + 6);
  e->qpn = Get32(p + 8);
  e->psn = Get32(p + 12);
  std::memcpy(e->gid, p + 16, 16);
  return true;
}

Status ErrnoStatus(Code code, const std::string& what, int err) {
  return Status(code, "rdma: " + what + ": " + std::strerror(err));
}

// Completion status (a positive errno from the module) -> what ReadRemote returns.
Status CompletionStatus(uint32_t node_id, int err) {
  std::string who = "rdma read from node " + std::to_string(node_id) + ": ";
  switch (err) {
    case EACCES:
      return Status(Code::kPermissionDenied, who + "refused by the peer's device (key or range)");
    case ETIMEDOUT:
      return Status(Code::kUnavailable, who + "peer gone (no answer after the QP's retries)");
    case ECANCELED:
      return Status(Code::kUnavailable, who + "flushed (the QP failed or was dropped)");
    default:
      return Status(Code::kUnavailable, who + std::strerror(err));
  }
}

bool LinkLocal(const uint8_t gid[16]) {
  static const uint8_t prefix[8] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0};
  return std::memcmp(gid, prefix, 8) == 0;
}

class RdmaTransportImpl : public RdmaTransport {
 public:
  RdmaTransportImpl(std::unique_ptr<Transport> tcp, UniqueFd dev, const hotpot_rdma_bind& bind, void* bounce,
                    size_t bounce_len, uint32_t bounce_mr)
      : tcp_(std::move(tcp)),
        dev_(std::move(dev)),
        bind_(bind),
        bounce_(bounce),
        bounce_len_(bounce_len),
        bounce_mr_(bounce_mr) {
    tcp_->SetHandler([this](const Request& req, Reply* reply) {
      if (req.type == kRdmaConnect) {
        ServeConnect(req, reply);
      } else if (user_) {
        user_(req, reply);
      } else {
        reply->status = Status(Code::kUnimplemented, "no handler");
      }
    });
  }
  ~RdmaTransportImpl() override { Shutdown(); }

  void SetHandler(Handler handler) override { user_ = std::move(handler); }
  void SetNodeId(uint32_t node_id) override { tcp_->SetNodeId(node_id); }
  void SetEpoch(uint64_t epoch) override { tcp_->SetEpoch(epoch); }
  Status Listen(const std::string& host, uint16_t port, uint16_t* bound_port) override {
    return tcp_->Listen(host, port, bound_port);
  }
  void SetPeer(uint32_t node_id, const std::string& address, const std::string& identity) override {
    tcp_->SetPeer(node_id, address, identity);
    DropPeer(node_id);  // the next read connects, through the (possibly new) authenticated link
  }
  void RemovePeer(uint32_t node_id) override {
    tcp_->RemovePeer(node_id);
    DropPeer(node_id);
  }
  Status Call(uint32_t node_id, uint16_t type, const uint8_t* data, size_t len, std::vector<uint8_t>* response,
              Deadline deadline, const wire::TraceContext* trace) override {
    if (type == kRdmaConnect) {
      if (response) response->clear();
      return Status(Code::kInvalidArgument, "message type " + std::to_string(type) + " is reserved for rdma");
    }
    return tcp_->Call(node_id, type, data, len, response, deadline, trace);
  }
  TransportStats Stats() const override { return tcp_->Stats(); }
  void Reauthenticate() override {
    tcp_->Reauthenticate();
    // QPs were granted over connections authenticated before; grant them again over new ones.
    std::lock_guard<std::mutex> lk(peers_mu_);
    for (auto& p : peers_) DestroyQp(p.second.qp_id);
    peers_.clear();
    std::lock_guard<std::mutex> lk2(served_mu_);
    for (auto& s : served_) DestroyQp(s.second);
    served_.clear();
  }

  void Shutdown() override {
    {
      std::lock_guard<std::mutex> lk(slot_mu_);  // no read starts after this (ActiveRead)
      if (shut_.exchange(true)) return;
    }
    slot_cv_.notify_all();
    done_cv_.notify_all();
    tcp_->Shutdown();  // joins the handler threads: no ServeConnect runs after this
    {
      // Reads in flight notice the shutdown within 100 ms (their reap or wait wakes up that often) and return; the
      // device and the bounce region go only after that.
      std::unique_lock<std::mutex> lk(slot_mu_);
      slot_cv_.wait(lk, [this] { return active_reads_ == 0; });
    }
    std::lock_guard<std::mutex> lk(peers_mu_);
    std::lock_guard<std::mutex> lk2(served_mu_);
    peers_.clear();
    served_.clear();
    dev_.reset();  // the module frees the session: QPs (flushed), regions (unpinned), CQ, PD
    if (bounce_ != nullptr) ::munmap(bounce_, kReadSlots * bounce_len_);
    bounce_ = nullptr;
  }

  Status ExposeRegion(uint32_t region_id, void* addr, size_t len, int fd) override {
    if (shut_.load()) return Status(Code::kUnavailable, "transport is shut down");
    std::lock_guard<std::mutex> lk(served_mu_);
    if (regions_.count(region_id)) return Status(Code::kAlreadyExists, "rdma region " + std::to_string(region_id));
    hotpot_rdma_reg_mr r = {};
    r.addr = reinterpret_cast<uintptr_t>(addr);
    r.length = len;
    r.fd = fd;
    r.access = HOTPOT_RDMA_ACCESS_REMOTE_READ;
    if (::ioctl(dev_.get(), HOTPOT_RDMA_IOC_REG_MR, &r) != 0) {
      int e = errno;
      Code c = (e == E2BIG || e == ENOSPC || e == ENOMEM) ? Code::kResourceExhausted : Code::kInvalidArgument;
      return ErrnoStatus(c, "register region " + std::to_string(region_id) + " (" + std::to_string(len) + " bytes)",
                         e);
    }
    regions_[region_id] = Region{r.mr_id, r.rkey, len};
    return Status::Ok();
  }

  Status WithdrawRegion(uint32_t region_id) override {
    std::lock_guard<std::mutex> lk(served_mu_);
    auto it = regions_.find(region_id);
    if (it == regions_.end()) return Status(Code::kNotFound, "rdma region " + std::to_string(region_id));
    hotpot_rdma_handle h = {};
    h.id = it->second.mr_id;
    const int rc = shut_.load() ? 0 : ::ioctl(dev_.get(), HOTPOT_RDMA_IOC_DEREG_MR, &h);
    const int e = errno;
    regions_.erase(it);
    // ENODEV: the device went away and the module freed the region with the session's other resources.
    if (rc != 0 && e != ENODEV) return ErrnoStatus(Code::kInternal, "deregister region " + std::to_string(region_id), e);
    return Status::Ok();
  }

  // Up to kReadSlots reads at once, each in its own slot of the bounce region. Whoever waits for a completion and finds
  // no thread reaping reaps for everyone (completions of other reads are handed over through done_), so no thread
  // is dedicated to it and a lone read reaps its own completion without a hand-off.
  Status ReadRemote(uint32_t node_id, uint32_t region_id, uint64_t offset, void* dst, size_t len,
                    Deadline deadline) override {
    if (len == 0 || len > bounce_len_)
      return Status(Code::kInvalidArgument, "rdma read of " + std::to_string(len) + " bytes (1.." +
                                                std::to_string(bounce_len_) + ")");
    ActiveRead active(this);
    if (!active.ok) return Status(Code::kUnavailable, "transport is shut down");
    size_t slot = 0;
    if (!AcquireSlot(deadline, &slot)) {
      read_failures_++;
      return Status(Code::kDeadlineExceeded, "rdma read from node " + std::to_string(node_id) + ": no free slot");
    }
    struct SlotRelease {
      RdmaTransportImpl* t;
      size_t slot;
      ~SlotRelease() { t->ReleaseSlot(slot); }
    } release{this, slot};
    const uint64_t wr_id = next_wr_++;
    uint32_t qp_id = 0;
    {
      std::lock_guard<std::mutex> lk(peers_mu_);
      auto it = peers_.find(node_id);
      if (it == peers_.end() || !it->second.regions.count(region_id)) {
        // Unknown region: the peer may have exposed it after we connected; connecting again fetches its list.
        Status st = ConnectLocked(node_id, deadline);
        if (!st.ok()) return st;
        it = peers_.find(node_id);
      }
      auto reg = it->second.regions.find(region_id);
      if (reg == it->second.regions.end())
        return Status(Code::kNotFound, "node " + std::to_string(node_id) + " exposes no rdma region " +
                                           std::to_string(region_id));
      if (offset > reg->second.length || len > reg->second.length - offset)
        return Status(Code::kOutOfRange, "rdma read [" + std::to_string(offset) + ", +" + std::to_string(len) +
                                             ") past region " + std::to_string(region_id) + " of " +
                                             std::to_string(reg->second.length) + " bytes");
      qp_id = it->second.qp_id;
      hotpot_rdma_post_read p = {};
      p.wr_id = wr_id;
      p.qp_id = qp_id;
      p.mr_id = bounce_mr_;
      p.local_offset = slot * bounce_len_;
      p.remote_addr = offset;
      p.rkey = reg->second.rkey;
      p.length = uint32_t(len);
      {
        std::lock_guard<std::mutex> dl(done_mu_);
        waiting_.insert(wr_id);
      }
      if (::ioctl(dev_.get(), HOTPOT_RDMA_IOC_POST_READ, &p) != 0) {
        int e = errno;
        ForgetWait(wr_id);
        DropLocked(node_id);
        return ErrnoStatus(Code::kUnavailable, "post read to node " + std::to_string(node_id), e);
      }
    }
    int status = 0;
    Status waited = WaitCompletion(wr_id, deadline, &status);
    if (!waited.ok() || status != 0) {
      // Destroying the QP flushes the READ, so it can no longer land in this slot after we return; the next read
      // connects again (e.g. to a restarted peer, or after its module was reloaded).
      DropQp(node_id, qp_id);
      read_failures_++;
      if (!waited.ok()) {
        if (waited.code() == Code::kDeadlineExceeded)
          return Status(Code::kDeadlineExceeded, "rdma read from node " + std::to_string(node_id));
        return waited;
      }
      return CompletionStatus(node_id, status);
    }
    std::memcpy(dst, static_cast<uint8_t*>(bounce_) + slot * bounce_len_, len);
    reads_++;
    read_bytes_ += len;
    return Status::Ok();
  }

  RdmaStats RdmaCounters() const override {
    RdmaStats s;
    s.reads = reads_.load();
    s.read_bytes = read_bytes_.load();
    s.read_failures = read_failures_.load();
    s.qps_connected = qps_connected_.load();
    s.qps_served = qps_served_.load();
    return s;
  }

 private:
  struct Region {
    uint32_t mr_id = 0;
    uint32_t rkey = 0;
    uint64_t length = 0;
  };
  struct RemoteRegion {
    uint32_t rkey = 0;
    uint64_t length = 0;
  };
  struct Peer {
    uint32_t qp_id = 0;
    std::map<uint32_t, RemoteRegion> regions;
  };

  // Counts reads in flight so Shutdown frees the device and the bounce region only once they have returned.
  struct ActiveRead {
    RdmaTransportImpl* t;
    bool ok = false;
    explicit ActiveRead(RdmaTransportImpl* owner) : t(owner) {
      std::lock_guard<std::mutex> lk(t->slot_mu_);
      if (t->shut_.load()) return;
      t->active_reads_++;
      ok = true;
    }
    ~ActiveRead() {
      if (!ok) return;
      std::lock_guard<std::mutex> lk(t->slot_mu_);
      if (--t->active_reads_ == 0) t->slot_cv_.notify_all();
    }
  };

  bool AcquireSlot(Deadline deadline, size_t* slot) {
    std::unique_lock<std::mutex> lk(slot_mu_);
    for (;;) {
      for (size_t i = 0; i < kReadSlots; i++)
        if (!slot_busy_[i]) {
          slot_busy_[i] = true;
          *slot = i;
          return true;
        }
      if (shut_.load() || slot_cv_.wait_until(lk, deadline) == std::cv_status::timeout) return false;
    }
  }
  void ReleaseSlot(size_t slot) {
    std::lock_guard<std::mutex> lk(slot_mu_);
    slot_busy_[slot] = false;
    slot_cv_.notify_all();
  }
  void ForgetWait(uint64_t wr_id) {
    std::lock_guard<std::mutex> lk(done_mu_);
    waiting_.erase(wr_id);
    done_.erase(wr_id);
  }
  // *status: the completion's (0 = the bytes are in the slot). Not OK: deadline or shutdown first, or REAP failed.
  Status WaitCompletion(uint64_t wr_id, Deadline deadline, int* status) {
    std::unique_lock<std::mutex> lk(done_mu_);
    for (;;) {
      auto d = done_.find(wr_id);
      if (d != done_.end()) {
        *status = d->second;
        done_.erase(d);
        waiting_.erase(wr_id);
        return Status::Ok();
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0 || shut_.load()) {
        waiting_.erase(wr_id);
        if (shut_.load()) return Status(Code::kUnavailable, "transport is shut down");
        return Status(Code::kDeadlineExceeded, "rdma read");
      }
      if (reaping_) {  // another read reaps: it hands this one's completion over
        done_cv_.wait_for(lk, std::chrono::milliseconds(std::min<long long>(left, 100)));
        continue;
      }
      reaping_ = true;
      lk.unlock();
      hotpot_rdma_completion c[16];
      hotpot_rdma_reap r = {};
      r.entries = reinterpret_cast<uintptr_t>(c);
      r.max_entries = 16;
      r.timeout_ms = int32_t(std::min<long long>(left, 100));  // wake up to notice Shutdown
      const int rc = ::ioctl(dev_.get(), HOTPOT_RDMA_IOC_REAP, &r);
      const int e = errno;
      lk.lock();
      reaping_ = false;
      if (rc == 0) {
        // Completions nobody waits for are flushes of reads given up on: dropped.
        for (uint32_t i = 0; i < r.count; i++)
          if (waiting_.count(c[i].wr_id)) done_[c[i].wr_id] = int(c[i].status);
      }
      done_cv_.notify_all();  // a completion for another read, or the reaper's place is free
      if (rc != 0 && e != EINTR) {
        waiting_.erase(wr_id);
        return ErrnoStatus(Code::kUnavailable, "reap", e);
      }
    }
  }
  // Drops the peer's QP if it is still `qp_id` (another read may have connected again meanwhile).
  void DropQp(uint32_t node_id, uint32_t qp_id) {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto it = peers_.find(node_id);
    if (it != peers_.end() && it->second.qp_id == qp_id) DropLocked(node_id);
  }

  Status CreateQp(QpEndpoint* e, uint32_t* qp_id) {
    hotpot_rdma_create_qp c = {};
    if (::ioctl(dev_.get(), HOTPOT_RDMA_IOC_CREATE_QP, &c) != 0)
      return ErrnoStatus(Code::kResourceExhausted, "create qp", errno);
    *qp_id = c.qp_id;
    e->qpn = c.qpn;
    e->psn = c.psn;
    std::memcpy(e->gid, bind_.gid, 16);
    return Status::Ok();
  }
  Status ConnectQp(uint32_t qp_id, const QpEndpoint& remote) {
    hotpot_rdma_connect c = {};
    c.qp_id = qp_id;
    c.remote_qpn = remote.qpn;
    c.remote_psn = remote.psn;
    std::memcpy(c.remote_gid, remote.gid, 16);
    if (::ioctl(dev_.get(), HOTPOT_RDMA_IOC_CONNECT_QP, &c) != 0)
      return ErrnoStatus(Code::kInvalidArgument, "connect qp", errno);
    return Status::Ok();
  }
  void DestroyQp(uint32_t qp_id) {
    hotpot_rdma_handle h = {};
    h.id = qp_id;
    (void)::ioctl(dev_.get(), HOTPOT_RDMA_IOC_DESTROY_QP, &h);  // ENOENT/ENODEV: already gone
  }
  void DropLocked(uint32_t node_id) {
    auto it = peers_.find(node_id);
    if (it == peers_.end()) return;
    DestroyQp(it->second.qp_id);
    peers_.erase(it);
  }
  void DropPeer(uint32_t node_id) {
    {
      std::lock_guard<std::mutex> lk(peers_mu_);
      DropLocked(node_id);
    }
    std::lock_guard<std::mutex> lk(served_mu_);
    auto it = served_.find(node_id);
    if (it != served_.end()) {
      DestroyQp(it->second);
      served_.erase(it);
    }
  }

  // Reader side: a fresh QP, offered to the peer over the authenticated link; its answer connects it.
  Status ConnectLocked(uint32_t node_id, Deadline deadline) {
    DropLocked(node_id);
    QpEndpoint local;
    uint32_t qp_id = 0;
    Status st = CreateQp(&local, &qp_id);
    if (!st.ok()) return st;
    std::vector<uint8_t> req, resp;
    PutEndpoint(&req, 0, local);
    st = tcp_->Call(node_id, kRdmaConnect, req.data(), req.size(), &resp, deadline, nullptr);
    QpEndpoint remote;
    uint16_t n = 0;
    if (st.ok() && (!GetEndpoint(resp.data(), resp.size(), &remote, &n) || n > kMaxRegions ||
                    resp.size() != kConnectSize + size_t(n) * kRegionEntrySize))
      st = Status(Code::kInternal, "malformed rdma connect reply from node " + std::to_string(node_id));
    if (st.ok()) st = ConnectQp(qp_id, remote);
    if (!st.ok()) {
      DestroyQp(qp_id);
      return st;
    }
    Peer peer;
    peer.qp_id = qp_id;
    for (size_t i = 0; i < n; i++) {
      const uint8_t* e = resp.data() + kConnectSize + i * kRegionEntrySize;
      peer.regions[Get32(e)] = RemoteRegion{Get32(e + 4), Get64(e + 8)};
    }
    peers_[node_id] = std::move(peer);
    qps_connected_++;
    return Status::Ok();
  }

  // Owner side (a transport thread; the caller is authenticated): a QP for that peer, its regions' keys.
  void ServeConnect(const Request& req, Reply* reply) {
    QpEndpoint remote;
    uint16_t reserved = 0;
    if (!GetEndpoint(req.data, req.len, &remote, &reserved) || req.len != kConnectSize || reserved != 0) {
      reply->status = Status(Code::kInvalidArgument, "malformed rdma connect request");
      return;
    }
    std::lock_guard<std::mutex> lk(served_mu_);
    if (shut_.load()) {
      reply->status = Status(Code::kUnavailable, "transport is shut down");
      return;
    }
    auto old = served_.find(req.peer_node_id);
    if (old != served_.end()) {  // the peer reconnects (its QP failed, or it restarted): one QP per peer
      DestroyQp(old->second);
      served_.erase(old);
    }
    QpEndpoint local;
    uint32_t qp_id = 0;
    Status st = CreateQp(&local, &qp_id);
    if (st.ok()) {
      st = ConnectQp(qp_id, remote);
      if (!st.ok()) DestroyQp(qp_id);
    }
    if (!st.ok()) {
      reply->status = st;
      return;
    }
    served_[req.peer_node_id] = qp_id;
    qps_served_++;
    PutEndpoint(&reply->payload, uint16_t(regions_.size()), local);
    for (auto& r : regions_) {
      Put32(&reply->payload, r.first);
      Put32(&reply->payload, r.second.rkey);
      Put64(&reply->payload, r.second.length);
    }
  }

  std::unique_ptr<Transport> tcp_;
  UniqueFd dev_;
  hotpot_rdma_bind bind_;
  void* bounce_;
  size_t bounce_len_;
  uint32_t bounce_mr_;
  Handler user_;
  std::atomic<bool> shut_{false};

  std::mutex peers_mu_;  // peers_ (QPs this node reads through) and posting to them
  std::map<uint32_t, Peer> peers_;
  std::atomic<uint64_t> next_wr_{1};
  std::mutex slot_mu_;  // slot_busy_, active_reads_
  std::condition_variable slot_cv_;
  bool slot_busy_[kReadSlots] = {};
  size_t active_reads_ = 0;
  std::mutex done_mu_;  // waiting_, done_, reaping_
  std::condition_variable done_cv_;
  std::set<uint64_t> waiting_;
  std::map<uint64_t, int> done_;
  bool reaping_ = false;

  std::mutex served_mu_;  // regions_, served_
  std::map<uint32_t, Region> regions_;
  std::map<uint32_t, uint32_t> served_;  // peer node id -> QP serving its reads

  std::atomic<uint64_t> reads_{0}, read_bytes_{0}, read_failures_{0}, qps_connected_{0}, qps_served_{0};
};

}  // namespace

std::unique_ptr<RdmaTransport> NewRdmaTransport(const TransportOptions& options, const RdmaOptions& rdma,
                                                Status* status) {
  auto fail = [&](const std::string& msg) {
    *status = Status(Code::kFailedPrecondition, "transport rdma: " + msg);
    return nullptr;
  };
  UniqueFd dev(::open(rdma.device_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!dev.valid()) {
    int e = errno;
    if (e == ENOENT)
      return fail(rdma.device_path + " does not exist: load the kernel module (kmod/README.md) or use --transport tcp");
    return fail("cannot open " + rdma.device_path + ": " + std::strerror(e));
  }
  hotpot_rdma_bind bind = {};
  if (rdma.device.size() >= sizeof(bind.device)) return fail("device name too long: " + rdma.device);
  std::memcpy(bind.device, rdma.device.c_str(), rdma.device.size());
  bind.gid_index = rdma.gid_index;
  if (::ioctl(dev.get(), HOTPOT_RDMA_IOC_BIND, &bind) != 0) {
    int e = errno;
    if (e == ENODEV)
      return fail("no RDMA device" + (rdma.device.empty() ? std::string() : " named " + rdma.device) +
                  " (Soft-RoCE: rdma link add rxe0 type rxe netdev eth0)");
    return fail("bind to the RDMA device: " + std::string(std::strerror(e)));
  }
  if (!LinkLocal(bind.gid))
    return fail("GID index " + std::to_string(rdma.gid_index) + " of " + bind.device +
                " is not link-local (peers on one L2 segment are supported)");
  if (rdma.bounce_bytes == 0 || rdma.bounce_bytes % 4096 != 0) return fail("bounce_bytes must be a multiple of 4096");
  const size_t bounce_total = kReadSlots * rdma.bounce_bytes;
  void* bounce = ::mmap(nullptr, bounce_total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bounce == MAP_FAILED) return fail(std::string("bounce buffer: ") + std::strerror(errno));
  hotpot_rdma_reg_mr r = {};
  r.addr = reinterpret_cast<uintptr_t>(bounce);
  r.length = bounce_total;
  r.fd = -1;
  r.access = HOTPOT_RDMA_ACCESS_LOCAL_WRITE;
  if (::ioctl(dev.get(), HOTPOT_RDMA_IOC_REG_MR, &r) != 0) {
    int e = errno;
    ::munmap(bounce, bounce_total);
    return fail("register the bounce buffer: " + std::string(std::strerror(e)));
  }
  *status = Status::Ok();
  return std::make_unique<RdmaTransportImpl>(NewTcpTransport(options), std::move(dev), bind, bounce,
                                             rdma.bounce_bytes, r.mr_id);
}

}  // namespace transport
}  // namespace hotpot
