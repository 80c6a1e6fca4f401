// Peer transport: request/response between node daemons over framed messages (wire/frame.h).
// One interface, two implementations: `tcp` (here) and `rdma` (kmod/, later). The conformance suite in
// native/test/transport_conformance.h runs against any implementation.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "transport/node_credentials.h"
#include "wire/frame.h"

namespace hotpot {
namespace transport {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline DeadlineIn(std::chrono::milliseconds ms) { return Clock::now() + ms; }

// Message types below kFirstUserType are reserved for the transport (handshake).
constexpr uint16_t kFirstUserType = 16;

// Status::reason of a call that failed before any byte of its request left this node (no connection to the peer could
// be made or authenticated, none came free before the deadline, or the peer has no address): the peer saw nothing of
// it. Local only: a peer's answer never carries it (Call clears it from one). A call that failed later may have been
// received, even handled, whatever its error says.
constexpr uint16_t kReasonNotSent = 0xFFFE;

struct Request {
  uint16_t type = 0;
  const uint8_t* data = nullptr;
  size_t len = 0;
  wire::TraceContext trace;
  uint32_t peer_node_id = 0;  // authenticated id of the caller
  uint64_t peer_epoch = 0;    // the membership epoch the caller knew when it sent this (0 = not told)
  uint8_t depth = 0;          // 0: sent by a thread serving no request; d + 1: sent by a handler of a depth-d request
};

struct Reply {
  Status status;                 // non-OK -> error response carrying status.message()
  std::vector<uint8_t> payload;  // response body (sent also with ABORTED so callers get details)
};

using Handler = std::function<void(const Request& req, Reply* reply)>;
using LogFn = std::function<void(const std::string& line)>;

struct TransportOptions {
  uint32_t node_id = 0;        // this node's id, sent in the handshake; may be set later with SetNodeId
  std::string cluster_secret;  // shared secret; the handshake proves knowledge of it both ways (HMAC-SHA256)
  // This node's certificate, key and the cluster CA (NodeCredentials::FromPem). Set: connections are authenticated
  // by certificate — each end proves the identity the membership lists for its node id, and frame keys come from
  // an ephemeral X25519 exchange (tcp_transport.h) — and the cluster secret is not used. Not set (--insecure):
  // the cluster-secret handshake. Every node of a cluster must do the same (a mismatch is refused, saying so).
  std::shared_ptr<const NodeCredentials> credentials;
  // Encrypt and authenticate every frame after the handshake (AES-256-GCM, keys from the handshake): off only for
  // --insecure development clusters. Both ends of a connection must agree (a mismatch fails the first frame).
  bool protect_frames = true;
  // Connections to one peer in use at once, per call depth (wire::kFlagDepthShift): calls a handler makes have pools
  // of their own, so nested calls never wait for connections their callers hold.
  size_t max_connections_per_peer = 4;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds handshake_timeout{2000};
  LogFn log;  // refused peers, malformed frames, connection errors (may be empty)
};

struct TransportStats {
  uint64_t requests_sent = 0;
  uint64_t requests_served = 0;
  uint64_t bytes_out = 0;
  uint64_t bytes_in = 0;
  uint64_t handshake_failures = 0;
  uint64_t malformed_frames = 0;
  uint64_t connections_open = 0;
  uint64_t call_timeouts = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Must be called before Listen. The handler runs on transport threads, concurrently.
  virtual void SetHandler(Handler handler) = 0;
  virtual void SetNodeId(uint32_t node_id) = 0;
  // The membership epoch this node knows, stamped on every request it sends (peers fence a node declared dead by
  // comparing it with the epoch of that declaration). Never goes down; values above wire::kMaxEpoch are clamped.
  virtual void SetEpoch(uint64_t epoch) = 0;
  // Binds host:port (port 0 = any) and starts serving; *bound_port receives the port.
  virtual Status Listen(const std::string& host, uint16_t port, uint16_t* bound_port) = 0;
  // Where to reach a peer ("host:port") and the identity the membership lists for it (its certificate's CN; "" =
  // unknown). Replacing an address or identity drops pooled connections to the old one. With certificates, calls to
  // the peer succeed only if it proves that identity, and connections from it are accepted only with a certificate
  // for it: connections already accepted from that node id with another identity (before this node knew it) are
  // dropped. Identities are kept after RemovePeer (node ids are never reused for another identity).
  virtual void SetPeer(uint32_t node_id, const std::string& address, const std::string& identity) = 0;
  // For transports that authenticate with the cluster secret only (no identity to check).
  void SetPeer(uint32_t node_id, const std::string& address) { SetPeer(node_id, address, std::string()); }
  // The peer is no member now (declared dead, or gone): calls to it fail, those in flight at once (UNAVAILABLE,
  // "removed from the members during the call") instead of waiting out their deadlines.
  virtual void RemovePeer(uint32_t node_id) = 0;
  // Synchronous call, safe from any thread. A call made on a thread running a handler (of any transport) is
  // nested: it carries its depth and takes connections from that depth's pool. Returns the peer's status (payload filled also for non-OK
  // responses that carry one), UNAVAILABLE when the peer cannot be reached, UNAUTHENTICATED when the handshake
  // fails, DEADLINE_EXCEEDED past `deadline` (the connection is then discarded, never reused).
  virtual Status Call(uint32_t node_id, uint16_t type, const uint8_t* data, size_t len, std::vector<uint8_t>* response,
                      Deadline deadline, const wire::TraceContext* trace = nullptr) = 0;
  virtual TransportStats Stats() const = 0;
  // Stops accepting, closes every connection, joins threads. Idempotent.
  virtual void Shutdown() = 0;
  // Closes every connection both ways (calls in flight finish; the next ones connect and authenticate again): after
  // the certificate revocation list changed, so a connection authenticated before cannot outlive its certificate.
  virtual void Reauthenticate() {}
};

std::unique_ptr<Transport> NewTcpTransport(const TransportOptions& options);

// The call depth the calls made on this thread carry (wire/frame.h: the depth of the request its handler serves plus
// one; 0 on a thread serving none). A thread doing part of a handler's work (engine::FanOut) adopts the handler's,
// so its calls take connections from the same pools as the handler's own would.
uint8_t ThreadCallDepth();
class AdoptCallDepth {
 public:
  explicit AdoptCallDepth(uint8_t depth);
  ~AdoptCallDepth();
  AdoptCallDepth(const AdoptCallDepth&) = delete;
  AdoptCallDepth& operator=(const AdoptCallDepth&) = delete;

 private:
  uint8_t saved_;
};

}  // namespace transport
}  // namespace hotpot
