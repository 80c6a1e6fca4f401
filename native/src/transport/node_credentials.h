// Certificate identities for the data-plane handshake (tcp_transport.h, docs/security.md "Data plane"): this
// node's certificate and key and the cluster CA, and the primitives the certificate handshake is built from —
// checking a peer's certificate, signing and verifying a transcript, ephemeral X25519 and HKDF-SHA256.
// OpenSSL libcrypto (inside Node, the copy Node exports), like frame_cipher.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

typedef struct x509_st X509;
typedef struct x509_store_st X509_STORE;
typedef struct evp_pkey_st EVP_PKEY;

namespace hotpot {
namespace transport {

// Bounds of what a peer may send before it is authenticated. Node certificates made by `hotpot certs` are about
// 600 bytes of DER and their ECDSA P-256 signatures at most 72; the bounds leave room for bigger keys and names.
constexpr size_t kMaxCertificateSize = 3072;
constexpr size_t kMaxSignatureSize = 512;
constexpr size_t kMaxIdentitySize = 128;  // a node's name (services/common/certs.ts: 1-128 characters)
constexpr size_t kX25519KeySize = 32;

// The role a certificate must name (subject OU) to speak the data plane.
constexpr const char* kNodeRole = "node";

// A peer's certificate after VerifyPeer: who it names and the key its signatures must verify with.
class PeerCertificate {
 public:
  PeerCertificate() = default;
  ~PeerCertificate();
  PeerCertificate(const PeerCertificate&) = delete;
  PeerCertificate& operator=(const PeerCertificate&) = delete;

  const std::string& identity() const { return identity_; }
  // Checks `sig` (DER ECDSA, or what the certificate's key makes) over SHA-256 of msg; UNAUTHENTICATED when wrong.
  Status VerifySignature(const uint8_t* msg, size_t len, const uint8_t* sig, size_t sig_len) const;

 private:
  friend class NodeCredentials;
  X509* cert_ = nullptr;
  std::string identity_;
};

// Certificates refused although they chain to the CA (`hotpot certs revoke`), by the SHA-256 of their DER. Thread-safe;
// replaced whole when the dispatcher's revocation list changes.
class RevokedCertificates {
 public:
  // `fingerprints`: 64 hex digits each, colons allowed ("AB:CD:…" as openssl prints them). INVALID_ARGUMENT (nothing
  // changed) for anything else. *changed: whether the set differs from the one before.
  Status Replace(const std::vector<std::string>& fingerprints, bool* changed);
  bool Has(const uint8_t* der, size_t len) const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::set<std::string> hex_;  // lower-case hex without colons
};

// One node's credentials, parsed once at start and shared (thread-safe) by every connection; only the revocation list
// changes after start.

class NodeCredentials {
 public:
  // Parses PEM text: this node's certificate, its private key (which must match it) and one or more CA
  // certificates. INVALID_ARGUMENT naming what is wrong; with `check_own`, also when this node's certificate would
  // be refused by its peers (another CA, expired, not a node's) — tests turn that off to present such certificates.
  static Status FromPem(const std::string& cert_pem, const std::string& key_pem, const std::string& ca_pem,
                        std::shared_ptr<const NodeCredentials>* out, bool check_own = true);
  ~NodeCredentials();
  NodeCredentials(const NodeCredentials&) = delete;
  NodeCredentials& operator=(const NodeCredentials&) = delete;

  const std::vector<uint8_t>& cert_der() const { return cert_der_; }
  RevokedCertificates& revoked() const { return *revoked_; }
  const std::string& identity() const { return identity_; }  // this node's certificate's CN

  // Signature with this node's key over SHA-256 of msg.
  Status Sign(const uint8_t* msg, size_t len, std::vector<uint8_t>* sig) const;
  // Checks a peer's certificate (DER, at most kMaxCertificateSize bytes): it chains to the CA and is valid now
  // (X509_verify_cert), is not revoked, and its subject names the node role (OU=node) and one identity (CN).
  // UNAUTHENTICATED with the reason (bounded text) when not.
  Status VerifyPeer(const uint8_t* der, size_t len, PeerCertificate* out) const;

 private:
  NodeCredentials() = default;
  X509* cert_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  X509_STORE* store_ = nullptr;
  std::vector<uint8_t> cert_der_;
  std::string identity_;
  std::shared_ptr<RevokedCertificates> revoked_ = std::make_shared<RevokedCertificates>();
};

// An X25519 key pair made for one handshake (forward secrecy: it is forgotten with the connection's handshake).
class EphemeralKey {
 public:
  EphemeralKey() = default;
  ~EphemeralKey();
  EphemeralKey(const EphemeralKey&) = delete;
  EphemeralKey& operator=(const EphemeralKey&) = delete;

  Status Generate();
  const uint8_t* public_key() const { return public_; }
  // The shared secret with a peer's public key; UNAUTHENTICATED for a key that gives none (a low-order point).
  Status Agree(const uint8_t peer_public[kX25519KeySize], uint8_t out[kX25519KeySize]) const;

 private:
  EVP_PKEY* key_ = nullptr;
  uint8_t public_[kX25519KeySize] = {};
};

// HKDF-SHA256 (RFC 5869): out_len (at most 255 * 32) bytes from ikm, salt and info.
void HkdfSha256(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len, const std::string& info,
                uint8_t* out, size_t out_len);

// `s` cut to `max` characters with anything but printable ASCII replaced by '?': what a log line or a status may
// quote of a name a peer chose.
std::string PrintableName(const std::string& s, size_t max = kMaxIdentitySize);

}  // namespace transport
}  // namespace hotpot
