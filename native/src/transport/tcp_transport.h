// TCP implementation of transport::Transport (transport.h) and the pieces of it that tests and the fuzz
// target drive directly (frame reader/writer, handshake).
//
// Connection life: connect -> handshake (HELLO, AUTH) -> framed requests/responses, one outstanding request
// per connection (the client pool gives each Call its own connection, so responses never interleave).
//
// Handshake (docs/design/engine.md, types 1 and 2), ids = client_id u32 LE || server_id u32 LE:
//   C -> S  HELLO  { client_id u32, client_nonce[32] }
//   S -> C  HELLO response { server_id u32, server_nonce[32],
//                            mac = HMAC(secret, "hotpot-server" || client_nonce || server_nonce || ids) }
//   C -> S  AUTH   { mac = HMAC(secret, "hotpot-client" || server_nonce || client_nonce || ids) }
//   S -> C  AUTH response: empty OK, or UNAUTHENTICATED error, then the server closes.
// Both nonces are fresh (getrandom) so a recorded exchange cannot be replayed, and both ids are under both
// MACs so a proof for one pair of nodes is useless for another. When the client finds the server's MAC wrong
// it still sends an AUTH (all zero, proving nothing) so the server learns and logs the refusal, then closes.
// The client also checks that the server's id is the node it meant to call. After the handshake, with frame
// protection on (TransportOptions::protect_frames), every frame is sealed (frame_cipher.h) with keys both ends
// derive from the secret, both nonces and both ids.
// During the handshake a frame may carry at most kMaxHandshakePayload bytes, so an unauthenticated peer
// cannot make the server allocate more than that; the whole handshake is bounded by handshake_timeout.
//
// Error responses (choice documented per transport.h): Call returns
//   Status(code from the header, "peer <id>: <CODE>[: <payload as text>]")
// where the text part is present only when the payload is short printable text (the usual message), and
// *response always receives the raw payload (engine uses ABORTED payloads for conflicting ranges).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "transport/frame_cipher.h"
#include "transport/transport.h"
#include "wire/frame.h"

namespace hotpot {
namespace transport {
namespace tcp {

constexpr uint16_t kTypeHello = 1;
constexpr uint16_t kTypeAuth = 2;
constexpr size_t kNonceSize = 32;
constexpr size_t kMacSize = 32;
constexpr uint32_t kMaxHandshakePayload = 256;
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

// Server half of the handshake on an accepted socket. On success *peer_id is the caller's authenticated id and,
// with `keys`, both directions' frame keys are set (derived from the secret, both nonces and both ids:
// HMAC(secret, "hotpot-frames-c2s" / "hotpot-frames-s2c" || client_nonce || server_nonce || ids)).
// Returns UNAUTHENTICATED when the peer's MAC is wrong (after telling it so); *why is kMalformed when the
// peer sent a malformed frame and kNone for protocol violations that are not framing errors.
Status ServerHandshake(int fd, const std::string& secret, uint32_t self_id, Deadline deadline, uint32_t* peer_id,
                       ReadFailure* why, IoCounters* io, FrameKeys* keys = nullptr);

// Client half. `expected_peer_id` is the node the caller meant to reach; `keys` as for ServerHandshake.
Status ClientHandshake(int fd, const std::string& secret, uint32_t self_id, uint32_t expected_peer_id,
                       Deadline deadline, ReadFailure* why, IoCounters* io, FrameKeys* keys = nullptr);

// "host:port" or "[v6]:port" -> host, port. Returns INVALID_ARGUMENT naming the address when malformed.
Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

}  // namespace tcp
}  // namespace transport
}  // namespace hotpot
