// A stand-in for the RDMA transport where there is no kernel module (the development and CI hosts): every Call goes
// over a real TCP transport, and ReadRemote copies from the memory the peer exposed — the peer is an engine in this
// process — with the errors the device gives (NOT_FOUND for an unknown region, OUT_OF_RANGE past its end,
// PERMISSION_DENIED once withdrawn). The engine cannot tell it from the real one, so its fetch path over one-sided
// READ (located answers, checksums, fallbacks) runs in the host's engine tests; the qemu guests run it on the module.
// Tests can make a read fail, or run code between the owner's answer and the copy (a commit racing with the READ).
#pragma once

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "transport/rdma_transport.h"

namespace hotpot_test {

struct LoopbackRdmaFabric {
  struct Region {
    const uint8_t* addr = nullptr;
    size_t len = 0;
  };
  std::mutex mu;
  std::map<uint32_t, std::map<uint32_t, Region>> exposed;  // node id -> region id -> memory
  int fail_reads = 0;                                      // the next N reads fail (UNAVAILABLE)
  // Runs once, on the next read, after the READ was posted and before the bytes are copied.
  std::function<void()> before_copy;
  std::function<void()> after_copy;  // the same, after the copy
  uint64_t reads = 0;
  // Nodes that answer a FETCH_PAGES asking for locations as an engine from before kFetchLocate did: INVALID_ARGUMENT.
  std::set<uint32_t> before_locate;
};

class LoopbackRdma : public hotpot::transport::RdmaTransport {
 public:
  LoopbackRdma(std::shared_ptr<LoopbackRdmaFabric> fabric, const hotpot::transport::TransportOptions& o)
      : fabric_(std::move(fabric)), tcp_(hotpot::transport::NewTcpTransport(o)), node_(o.node_id) {}
  ~LoopbackRdma() override { Shutdown(); }

  void SetHandler(hotpot::transport::Handler h) override {
    tcp_->SetHandler([this, h = std::move(h)](const hotpot::transport::Request& req, hotpot::transport::Reply* reply) {
      bool old = false;
      {
        std::lock_guard<std::mutex> l(fabric_->mu);
        old = fabric_->before_locate.count(node_) != 0;
      }
      // FETCH_PAGES (type 16): flags are the u32 at byte 20; kFetchLocate is bit 3.
      if (old && req.type == 16 && req.len >= 24 && (req.data[20] & 0x08)) {
        reply->status = hotpot::Status(hotpot::Code::kInvalidArgument, "malformed FETCH_PAGES request: unknown flags");
        return;
      }
      h(req, reply);
    });
  }
  void SetNodeId(uint32_t id) override {
    node_ = id;
    tcp_->SetNodeId(id);
  }
  void SetEpoch(uint64_t epoch) override { tcp_->SetEpoch(epoch); }
  hotpot::Status Listen(const std::string& host, uint16_t port, uint16_t* bound) override {
    return tcp_->Listen(host, port, bound);
  }
  void SetPeer(uint32_t id, const std::string& address, const std::string& identity) override {
    tcp_->SetPeer(id, address, identity);
  }
  void RemovePeer(uint32_t id) override { tcp_->RemovePeer(id); }
  hotpot::Status Call(uint32_t id, uint16_t type, const uint8_t* data, size_t len, std::vector<uint8_t>* response,
                      hotpot::transport::Deadline deadline, const hotpot::wire::TraceContext* trace) override {
    return tcp_->Call(id, type, data, len, response, deadline, trace);
  }
  hotpot::transport::TransportStats Stats() const override { return tcp_->Stats(); }
  void Shutdown() override {
    tcp_->Shutdown();
    std::lock_guard<std::mutex> l(fabric_->mu);
    fabric_->exposed.erase(node_);  // a stopped node's memory is gone
  }

  hotpot::Status ExposeRegion(uint32_t region_id, void* addr, size_t len, int fd) override {
    (void)fd;
    std::lock_guard<std::mutex> l(fabric_->mu);
    auto& mine = fabric_->exposed[node_];
    if (mine.count(region_id))
      return hotpot::Status(hotpot::Code::kAlreadyExists, "rdma region " + std::to_string(region_id));
    mine[region_id] = LoopbackRdmaFabric::Region{static_cast<const uint8_t*>(addr), len};
    return hotpot::Status::Ok();
  }
  hotpot::Status WithdrawRegion(uint32_t region_id) override {
    std::lock_guard<std::mutex> l(fabric_->mu);
    auto& mine = fabric_->exposed[node_];
    if (mine.erase(region_id) == 0)
      return hotpot::Status(hotpot::Code::kNotFound, "rdma region " + std::to_string(region_id));
    return hotpot::Status::Ok();
  }
  hotpot::Status ReadRemote(uint32_t node_id, uint32_t region_id, uint64_t offset, void* dst, size_t len,
                            hotpot::transport::Deadline) override {
    std::function<void()> hook, after;
    {
      std::lock_guard<std::mutex> l(fabric_->mu);
      if (fabric_->fail_reads > 0) {
        fabric_->fail_reads--;
        failures_++;
        return hotpot::Status(hotpot::Code::kUnavailable, "loopback rdma: read failed (test)");
      }
      hook.swap(fabric_->before_copy);
      after.swap(fabric_->after_copy);
    }
    if (hook) hook();
    struct After {
      std::function<void()>& fn;
      ~After() {
        if (fn) fn();
      }
    } run_after{after};
    std::lock_guard<std::mutex> l(fabric_->mu);
    auto n = fabric_->exposed.find(node_id);
    if (n == fabric_->exposed.end() || !n->second.count(region_id)) {
      failures_++;
      return hotpot::Status(hotpot::Code::kPermissionDenied, "loopback rdma: no region " + std::to_string(region_id));
    }
    const LoopbackRdmaFabric::Region& r = n->second[region_id];
    if (offset > r.len || len > r.len - offset) return hotpot::Status(hotpot::Code::kOutOfRange, "loopback rdma");
    std::memcpy(dst, r.addr + offset, len);
    fabric_->reads++;
    reads_++;
    bytes_ += len;
    return hotpot::Status::Ok();
  }
  hotpot::transport::RdmaStats RdmaCounters() const override {
    hotpot::transport::RdmaStats s;
    s.reads = reads_;
    s.read_bytes = bytes_;
    s.read_failures = failures_;
    return s;
  }

 private:
  std::shared_ptr<LoopbackRdmaFabric> fabric_;
  std::unique_ptr<hotpot::transport::Transport> tcp_;
  uint32_t node_;
  std::atomic<uint64_t> reads_{0}, bytes_{0}, failures_{0};
};

}  // namespace hotpot_test
