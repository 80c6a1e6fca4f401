#include "transport/frame_cipher.h"

#include <openssl/evp.h>

#include <climits>
#include <cstring>

namespace hotpot {
namespace transport {

FrameCipher::~FrameCipher() {
  if (ctx_ != nullptr) EVP_CIPHER_CTX_free(ctx_);
}

Status FrameCipher::Init(const uint8_t key[kFrameKeySize], bool seal) {
  if (ctx_ != nullptr) return Status(Code::kFailedPrecondition, "frame cipher already keyed");
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  if (c == nullptr) return Status(Code::kResourceExhausted, "frame cipher: out of memory");
  // The key schedule is computed once here; each frame only sets its nonce.
  int ok = seal ? EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), nullptr, key, nullptr)
                : EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), nullptr, key, nullptr);
  if (ok != 1) {
    EVP_CIPHER_CTX_free(c);
    return Status(Code::kInternal, "frame cipher: AES-256-GCM init failed");
  }
  ctx_ = c;
  seal_ = seal;
  counter_ = 0;
  return Status::Ok();
}

void FrameCipher::Nonce(uint8_t out[12]) const {
  std::memset(out, 0, 12);
  for (int i = 0; i < 8; i++) out[4 + i] = uint8_t(counter_ >> (8 * i));
}

Status FrameCipher::Seal(const uint8_t* aad, size_t aad_len, const uint8_t* plain, size_t len, uint8_t* out) {
  if (ctx_ == nullptr || !seal_) return Status(Code::kFailedPrecondition, "frame cipher not keyed for sealing");
  if (len > size_t(INT_MAX) || aad_len > size_t(INT_MAX)) return Status(Code::kInvalidArgument, "frame too large");
  uint8_t iv[12];
  Nonce(iv);
  int n = 0;
  if (EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv) != 1 ||
      EVP_EncryptUpdate(ctx_, nullptr, &n, aad, int(aad_len)) != 1 ||
      (len > 0 && EVP_EncryptUpdate(ctx_, out, &n, plain, int(len)) != 1) ||
      EVP_EncryptFinal_ex(ctx_, out + len, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, int(kFrameTagSize), out + len) != 1) {
    return Status(Code::kInternal, "frame cipher: seal failed");
  }
  counter_++;
  return Status::Ok();
}

Status FrameCipher::Open(const uint8_t* aad, size_t aad_len, const uint8_t* sealed, size_t len, uint8_t* out) {
  if (ctx_ == nullptr || seal_) return Status(Code::kFailedPrecondition, "frame cipher not keyed for opening");
  if (len < kFrameTagSize) return Status(Code::kUnauthenticated, "protected frame shorter than its tag");
  if (len > size_t(INT_MAX) || aad_len > size_t(INT_MAX)) return Status(Code::kInvalidArgument, "frame too large");
  const size_t body = len - kFrameTagSize;
  uint8_t iv[12];
  Nonce(iv);
  uint8_t tag[kFrameTagSize];
  std::memcpy(tag, sealed + body, kFrameTagSize);
  int n = 0;
  if (EVP_DecryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv) != 1 ||
      EVP_DecryptUpdate(ctx_, nullptr, &n, aad, int(aad_len)) != 1 ||
      (body > 0 && EVP_DecryptUpdate(ctx_, out, &n, sealed, int(body)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, int(kFrameTagSize), tag) != 1) {
    return Status(Code::kInternal, "frame cipher: open failed");
  }
  if (EVP_DecryptFinal_ex(ctx_, out + body, &n) != 1) {
    std::memset(out, 0, body);  // never leave unauthenticated plaintext behind
    return Status(Code::kUnauthenticated, "frame failed authentication (changed, replayed or reordered in transit, "
                                          "or the peer protects frames differently: same --insecure on every node?)");
  }
  counter_++;
  return Status::Ok();
}

}  // namespace transport
}  // namespace hotpot
