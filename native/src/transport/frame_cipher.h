// Protection of the data-plane frames after the handshake (docs/security.md): each direction of a peer connection
// has its own AES-256-GCM key, derived from the cluster secret and both handshake nonces and node ids, so a relay
// that forwarded the handshake can neither read nor change a frame. The nonce is a per-direction frame counter: a
// dropped, replayed or reordered frame fails to open. The 64-byte frame header is authenticated (not encrypted).
// OpenSSL's EVP (libcrypto; inside Node, the copy Node exports).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace hotpot {
namespace transport {

constexpr size_t kFrameKeySize = 32;
constexpr size_t kFrameTagSize = 16;

// One direction: seals frames to send, or opens received ones (not both).
class FrameCipher {
 public:
  FrameCipher() = default;
  ~FrameCipher();
  FrameCipher(const FrameCipher&) = delete;
  FrameCipher& operator=(const FrameCipher&) = delete;

  // Sets the key; `seal` for the sending direction. Frame counting starts at 0.
  Status Init(const uint8_t key[kFrameKeySize], bool seal);
  bool ready() const { return ctx_ != nullptr; }

  // out (len + kFrameTagSize bytes) = ciphertext of `plain` || tag over aad and ciphertext. Advances the counter.
  Status Seal(const uint8_t* aad, size_t aad_len, const uint8_t* plain, size_t len, uint8_t* out);
  // out (len - kFrameTagSize bytes) = plaintext of `sealed` (ciphertext || tag); UNAUTHENTICATED when the tag does
  // not verify (a changed, replayed, reordered or foreign frame). Advances the counter on success.
  Status Open(const uint8_t* aad, size_t aad_len, const uint8_t* sealed, size_t len, uint8_t* out);

  uint64_t frames() const { return counter_; }

 private:
  void Nonce(uint8_t out[12]) const;

  EVP_CIPHER_CTX* ctx_ = nullptr;
  bool seal_ = false;
  uint64_t counter_ = 0;
};

// Both directions of one connection.
struct FrameKeys {
  FrameCipher send;
  FrameCipher recv;
};

}  // namespace transport
}  // namespace hotpot
