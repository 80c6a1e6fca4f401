// TCP implementation of transport::Transport (transport.h) and the pieces of it that tests and the fuzz
// target drive directly (frame reader/writer, handshake).
//
// Connection life: connect -> handshake -> framed requests/responses, one outstanding request per connection (the
// client pool gives each Call its own connection, so responses never interleave). Two handshakes, one per mode;
// every node of a cluster uses the same one (TransportOptions::credentials set or not). A server that gets the other
// mode's first message answers UNAUTHENTICATED saying which mode each side uses, so a mixed cluster is obvious.
//
// Certificate handshake (types 3 and 4; nodes with TLS certificates, i.e. not --insecure), a SIGMA-style exchange:
//   C -> S  CERT_HELLO  { client_id u32, client_nonce[32], client_eph[32], client_cert (DER, the rest) }
//   S -> C  CERT_HELLO response { server_id u32, server_nonce[32], server_eph[32], cert_len u16, server_cert,
//                                 server_sig (the rest) = Sign(server key, "hotpot-server" || T) }
//   C -> S  CERT_AUTH   { client_sig = Sign(client key, "hotpot-client" || T) }
//           (or, when the client refuses the server, an error frame whose text says why, so the server logs it)
//   S -> C  CERT_AUTH response: empty OK, or UNAUTHENTICATED error, then the server closes.
// T = SHA-256("hotpot-data-plane-v1" || client_id || server_id || client_nonce || server_nonce || client_eph ||
//             server_eph || u32 len || client_cert || u32 len || server_cert)
// covers both node ids, both nonces, both ephemeral X25519 keys and both certificates; the labels keep a signature
// from being reflected as the other side's. Each side checks the other's certificate (NodeCredentials::VerifyPeer:
// chains to the cluster CA, valid now, OU=node) and that its CN is the identity the membership lists for the node id:
// the client, the identity given to SetPeer for the node it calls (and that the server's id is that node); the
// server, the identity SetPeer gave for the claimed client id — or, for an id it has not heard of yet (a node that
// just joined, racing the membership update), any node's, remembered with the connection and dropped when SetPeer
// lists another identity for that id. A wrong identity, a certificate of another CA or role, or a bad signature
// fails the handshake with UNAUTHENTICATED (counted in handshake_failures, logged naming both identities).
// Frame keys: c2s / s2c = HKDF-SHA256(ikm = X25519(own eph, peer eph), salt = T, info = "hotpot-frames-c2s" /
// "hotpot-frames-s2c"). Only the two ends know the ephemeral keys, so a relay that forwards every byte can
// neither read nor change frames, one that swaps in its own ephemeral key breaks the signatures, and one that
// answers with its own (valid) node certificate names the wrong identity; recorded traffic stays unreadable even
// if a node's key leaks later (forward secrecy). The cluster secret plays no part.
//
// Cluster-secret handshake (types 1 and 2; --insecure clusters and tests), ids = client_id u32 LE || server_id u32 LE:
//   C -> S  HELLO  { client_id u32, client_nonce[32] }
//   S -> C  HELLO response { server_id u32, server_nonce[32],
//                            mac = HMAC(secret, "hotpot-server" || client_nonce || server_nonce || ids) }
//   C -> S  AUTH   { mac = HMAC(secret, "hotpot-client" || server_nonce || client_nonce || ids) }
//   S -> C  AUTH response: empty OK, or UNAUTHENTICATED error, then the server closes.
// Both nonces are fresh (getrandom) so a recorded exchange cannot be replayed, and both ids are under both
// MACs so a proof for one pair of nodes is useless for another. When the client finds the server's MAC wrong
// it still sends an AUTH (all zero, proving nothing) so the server learns and logs the refusal, then closes.
// The client also checks that the server's id is the node it meant to call. Any holder of the secret can claim
// any node id. Frame keys: HMAC(secret, "hotpot-frames-c2s" / "hotpot-frames-s2c" || client_nonce ||
// server_nonce || ids).
//
// After either handshake, with frame protection on (TransportOptions::protect_frames), every frame is sealed
// (frame_cipher.h) with the connection's keys.
// During the handshake a frame may carry at most kMaxHandshakePayload bytes (room for a certificate and a
// signature), so an unauthenticated peer cannot make the server allocate more than that; the whole handshake is
// bounded by handshake_timeout.
//
// Error responses (choice documented per transport.h): Call returns
//   Status(code from the header, "peer <id>: <CODE>[: <payload as text>]")
// where the text part is present only when the payload is short printable text (the usual message), and
// *response always receives the raw payload (engine uses ABORTED payloads for conflicting ranges).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "transport/frame_cipher.h"
#include "transport/node_credentials.h"
#include "transport/transport.h"
#include "wire/frame.h"

namespace hotpot {
namespace transport {
namespace tcp {

constexpr uint16_t kTypeHello = 1;
constexpr uint16_t kTypeAuth = 2;
constexpr uint16_t kTypeCertHello = 3;
constexpr uint16_t kTypeCertAuth = 4;
constexpr size_t kNonceSize = 32;
constexpr size_t kMacSize = 32;
// CERT_HELLO response, the largest handshake message: 70 bytes + certificate + signature.
constexpr uint32_t kMaxHandshakePayload = 4096;
static_assert(4 + 2 * 32 + 2 + kMaxCertificateSize + kMaxSignatureSize <= kMaxHandshakePayload,
              "a CERT_HELLO response of the largest certificate and signature fits a handshake frame");
constexpr size_t kMaxServerConnections = 1024;  // bounds threads an accept storm can create

// Why a frame read failed; the caller decides what to count and log.
enum class ReadFailure { kNone, kClosed, kTimeout, kMalformed, kIo };

struct IoCounters {
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
};

// Writes header + payload (sendmsg with MSG_NOSIGNAL on a non-blocking socket, polling until `deadline`;
// Deadline::max() = no limit). `h.length`/checksum are computed from the payload. With `seal` (a connection
// past its handshake, frame protection on) the payload goes encrypted with its tag (length = len + 16) and the
// header, checksum field zeroed, is authenticated with it (frame_cipher.h).
Status WriteFrame(int fd, const wire::FrameHeader& h, const uint8_t* data, size_t len, Deadline deadline,
                  IoCounters* io, FrameCipher* seal = nullptr);

// Reads one frame: 64-byte header, DecodeHeader (rejects before allocating), exactly `length` payload bytes,
// VerifyPayload; with `open`, authenticates and decrypts it (h->length becomes the plaintext's). On failure *why
// says whether it was malformed (or failed authentication), a close, a timeout or an I/O error.
Status ReadFrame(int fd, Deadline deadline, uint32_t max_payload, wire::FrameHeader* h, std::vector<uint8_t>* payload,
                 ReadFailure* why, IoCounters* io, FrameCipher* open = nullptr);

// Server half of the cluster-secret handshake on an accepted socket. On success *peer_id is the caller's
// authenticated id and, with `keys`, both directions' frame keys are set (derived from the secret, both nonces and
// both ids:
// HMAC(secret, "hotpot-frames-c2s" / "hotpot-frames-s2c" || client_nonce || server_nonce || ids)).
// Returns UNAUTHENTICATED when the peer's MAC is wrong (after telling it so); *why is kMalformed when the
// peer sent a malformed frame and kNone for protocol violations that are not framing errors.
Status ServerHandshake(int fd, const std::string& secret, uint32_t self_id, Deadline deadline, uint32_t* peer_id,
                       ReadFailure* why, IoCounters* io, FrameKeys* keys = nullptr);

// Client half. `expected_peer_id` is the node the caller meant to reach; `keys` as for ServerHandshake.
Status ClientHandshake(int fd, const std::string& secret, uint32_t self_id, uint32_t expected_peer_id,
                       Deadline deadline, ReadFailure* why, IoCounters* io, FrameKeys* keys = nullptr);

// The server's check of a client's claimed node id against the identity its (already verified) certificate names:
// non-OK (UNAUTHENTICATED, naming both identities) refuses the connection.
using PeerIdentityCheck = std::function<Status(uint32_t peer_id, const std::string& identity)>;

// Server half of the certificate handshake on an accepted socket. On success *peer_id and *peer_identity are the
// caller's node id and certificate CN, and `keys` (if given) are set. `check` may be empty (any valid node
// certificate is accepted).
Status ServerCertHandshake(int fd, const NodeCredentials& creds, uint32_t self_id, const PeerIdentityCheck& check,
                           Deadline deadline, uint32_t* peer_id, std::string* peer_identity, ReadFailure* why,
                           IoCounters* io, FrameKeys* keys = nullptr);

// Client half. The server must be node `expected_peer_id` and prove `expected_identity` (empty: refused, since
// there is nothing to check the certificate against).
Status ClientCertHandshake(int fd, const NodeCredentials& creds, uint32_t self_id, uint32_t expected_peer_id,
                           const std::string& expected_identity, Deadline deadline, ReadFailure* why, IoCounters* io,
                           FrameKeys* keys = nullptr);

// "host:port" or "[v6]:port" -> host, port. Returns INVALID_ARGUMENT naming the address when malformed.
Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

}  // namespace tcp
}  // namespace transport
}  // namespace hotpot
