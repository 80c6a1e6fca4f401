// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), self-contained.
// Why not OpenSSL: the N-API addon is loaded into node, which exports its own OpenSSL symbols; linking a
// second copy invites symbol clashes, and the handshake needs only these two primitives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace hotpot {

constexpr size_t kSha256Size = 32;
constexpr size_t kSha256BlockSize = 64;

class Sha256 {
 public:
  Sha256() { Reset(); }
  void Reset();
  void Update(const void* data, size_t len);
  // Writes the digest; the object must be Reset() before reuse.
  void Final(uint8_t out[kSha256Size]);

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[kSha256BlockSize];
  size_t buf_len_ = 0;
  uint64_t total_len_ = 0;
};

void Sha256Digest(const void* data, size_t len, uint8_t out[kSha256Size]);

// Incremental HMAC-SHA256: Init with the key, Update with message parts, Final.
class HmacSha256 {
 public:
  HmacSha256(const void* key, size_t key_len);
  void Update(const void* data, size_t len) { inner_.Update(data, len); }
  void Final(uint8_t out[kSha256Size]);

 private:
  Sha256 inner_;
  uint8_t opad_key_[kSha256BlockSize];
};

void HmacSha256Digest(const void* key, size_t key_len, const void* data, size_t len, uint8_t out[kSha256Size]);

// Compares without early exit so the time taken does not reveal how many leading bytes of a MAC matched.
bool ConstantTimeEqual(const void* a, const void* b, size_t len);

// Lowercase hex, for tests and logs.
std::string ToHex(const uint8_t* data, size_t len);

}  // namespace hotpot
