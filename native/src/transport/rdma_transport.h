// RDMA transport: pages move by one-sided RDMA READ through the kernel module (kmod/, /dev/hotpot-rdma); every
// request/response message (Call) goes over the TCP transport it wraps, which keeps the handshake, node identity,
// frame protection and the per-depth connection pools. QP numbers, GIDs and region keys are exchanged by a Call of
// type kRdmaConnect over that authenticated link, so a peer that cannot authenticate never gets a QP or a key, and
// the peer's CPU is involved only in that exchange, never in serving a page.
//
//   node A (reader)                                  node B (owner)
//   ReadRemote(B, region, off, len)
//     no QP to B yet: CREATE_QP, Call(B, kRdmaConnect, {qpn, psn, gid}) ─TCP─>  handler: CREATE_QP + CONNECT_QP
//                     CONNECT_QP  <── {qpn, psn, gid, regions: id, rkey, length} ──┘
//     POST_READ(offset into B's region) ── RDMA READ ──> B's device answers from pinned pages; B's CPU idle
//     REAP: status 0 -> bytes copied to the caller; any failure drops the QP (the next read connects again, e.g.
//           after the peer's module was reloaded)
//
// Limits of this version (kmod/README.md): up to 4 reads in flight per transport (more wait for a slot); the peer must
// be reachable by a link-local GID (RoCE on one L2 segment: the kernel derives the MAC from it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace hotpot {
namespace transport {

// In the user range (the TCP transport carries it) but owned by this transport: never reaches the handler.
constexpr uint16_t kRdmaConnect = 0xFFF0;

struct RdmaOptions {
  std::string device_path = "/dev/hotpot-rdma";
  std::string device;        // RDMA device name; "" = the first RoCE device
  uint32_t gid_index = 0;    // must be a link-local GID (index 0 on RoCE)
  size_t bounce_bytes = 1u << 20;  // largest single ReadRemote (each of the 4 read slots is this large)
};

struct RdmaStats {
  uint64_t reads = 0;
  uint64_t read_bytes = 0;
  uint64_t read_failures = 0;
  uint64_t qps_connected = 0;  // QPs this node connected as reader (reconnects included)
  uint64_t qps_served = 0;     // QPs created for peers that read this node
};

class RdmaTransport : public Transport {
 public:
  // Lets peers READ [addr, addr + len): page-aligned, one shared mapping of `fd` (a pool page file). The id is the
  // caller's name for it (e.g. the page file's number); peers learn it on their next connect.
  virtual Status ExposeRegion(uint32_t region_id, void* addr, size_t len, int fd) = 0;
  // Stops exposing a region and unpins its pages (NOT_FOUND if it is not exposed). A peer's read of it fails from
  // then on (PERMISSION_DENIED), and the peer connects again before its next read.
  virtual Status WithdrawRegion(uint32_t region_id) = 0;
  // Copies [offset, offset + len) of the peer's region `region_id` to dst with one-sided RDMA READ. Errors:
  // NOT_FOUND (the peer exposes no such region), OUT_OF_RANGE (past its end), UNAVAILABLE (peer unreachable or
  // gone mid-read), PERMISSION_DENIED (the peer's device refused the key or range), DEADLINE_EXCEEDED,
  // INVALID_ARGUMENT (len 0 or above RdmaOptions::bounce_bytes).
  virtual Status ReadRemote(uint32_t node_id, uint32_t region_id, uint64_t offset, void* dst, size_t len,
                            Deadline deadline) = 0;
  virtual RdmaStats RdmaCounters() const = 0;
};

// nullptr and *status FAILED_PRECONDITION, saying what is missing, when the device cannot be opened or bound (the
// module is not loaded, no RDMA device, no permission).
std::unique_ptr<RdmaTransport> NewRdmaTransport(const TransportOptions& options, const RdmaOptions& rdma,
                                                Status* status);

}  // namespace transport
}  // namespace hotpot
