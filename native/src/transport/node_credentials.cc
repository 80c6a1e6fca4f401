#include "transport/node_credentials.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>

#include "common/sha256.h"

namespace hotpot {
namespace transport {

namespace {

// OpenSSL keeps failures in a per-thread queue; leaving them there would make a later, unrelated caller on this
// thread (Node's own crypto on the main thread) see them. Every failure path takes the first one and clears.
std::string TakeOpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// A key protected by a passphrase is refused rather than prompted for on the terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

BioPtr MemBio(const std::string& s) {
  if (s.size() > size_t(INT_MAX)) return nullptr;
  return BioPtr(BIO_new_mem_buf(s.data(), int(s.size())));
}

// The one entry of `nid` in a subject name, as UTF-8; false when there is none or more than one.
bool OneSubjectEntry(X509* cert, int nid, std::string* out) {
  X509_NAME* name = X509_get_subject_name(cert);
  if (name == nullptr) return false;
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0 || X509_NAME_get_index_by_NID(name, nid, i) >= 0) return false;
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) {
    ERR_clear_error();
    return false;
  }
  out->assign(reinterpret_cast<const char*>(utf8), size_t(len));
  OPENSSL_free(utf8);
  return true;
}

// Chains `cert` to the CA in `store` (validity dates included) and reads its role and identity.
Status CheckCertificate(X509_STORE* store, X509* cert, std::string* identity) {
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  if (ctx == nullptr) return Status(Code::kResourceExhausted, "certificate check: out of memory");
  int ok = X509_STORE_CTX_init(ctx, store, cert, nullptr);
  if (ok == 1) ok = X509_verify_cert(ctx);
  int err = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  if (ok != 1) {
    ERR_clear_error();
    const std::string why = X509_verify_cert_error_string(err);
    return Status(Code::kUnauthenticated, "certificate not accepted: " + why + " (not of the cluster CA, or expired)");
  }
  std::string role, cn;
  if (!OneSubjectEntry(cert, NID_organizationalUnitName, &role))
    return Status(Code::kUnauthenticated, "certificate names no role (one subject OU)");
  if (role != kNodeRole)
    return Status(Code::kUnauthenticated, "certificate is a " + PrintableName(role, 32) + "'s, not a node's");
  if (!OneSubjectEntry(cert, NID_commonName, &cn) || cn.empty() || cn.size() > kMaxIdentitySize)
    return Status(Code::kUnauthenticated, "node certificate names no identity (one subject CN of 1-128 bytes)");
  *identity = std::move(cn);
  return Status::Ok();
}

}  // namespace

std::string PrintableName(const std::string& s, size_t max) {
  std::string out = s.substr(0, max);
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  if (s.size() > max) out += "...";
  return out;
}

PeerCertificate::~PeerCertificate() {
  if (cert_ != nullptr) X509_free(cert_);
}

Status PeerCertificate::VerifySignature(const uint8_t* msg, size_t len, const uint8_t* sig, size_t sig_len) const {
  if (cert_ == nullptr) return Status(Code::kFailedPrecondition, "no peer certificate");
  EVP_PKEY* pub = X509_get0_pubkey(cert_);
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  if (pub == nullptr || md == nullptr) {
    if (md != nullptr) EVP_MD_CTX_free(md);
    return Status(Code::kUnauthenticated, "peer certificate: unusable public key: " + TakeOpenSslError());
  }
  int ok = EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, pub);
  if (ok == 1) ok = EVP_DigestVerify(md, sig, sig_len, msg, len);
  EVP_MD_CTX_free(md);
  if (ok != 1) {
    ERR_clear_error();
    return Status(Code::kUnauthenticated, "signature does not verify with the certificate's key");
  }
  return Status::Ok();
}

NodeCredentials::~NodeCredentials() {
  if (store_ != nullptr) X509_STORE_free(store_);
  if (key_ != nullptr) EVP_PKEY_free(key_);
  if (cert_ != nullptr) X509_free(cert_);
}

Status NodeCredentials::FromPem(const std::string& cert_pem, const std::string& key_pem, const std::string& ca_pem,
                                std::shared_ptr<const NodeCredentials>* out, bool check_own) {
  std::shared_ptr<NodeCredentials> c(new NodeCredentials());
  auto bad = [](const std::string& what) {
    return Status(Code::kInvalidArgument, "data-plane certificate: " + what + ": " + TakeOpenSslError());
  };
  BioPtr b = MemBio(cert_pem);
  if (!b || (c->cert_ = PEM_read_bio_X509(b.get(), nullptr, NoPassphrase, nullptr)) == nullptr)
    return bad("this node's certificate is not PEM");
  b = MemBio(key_pem);
  if (!b || (c->key_ = PEM_read_bio_PrivateKey(b.get(), nullptr, NoPassphrase, nullptr)) == nullptr)
    return bad("this node's key is not a PEM private key without passphrase");
  if (X509_check_private_key(c->cert_, c->key_) != 1) return bad("this node's key does not match its certificate");
  c->store_ = X509_STORE_new();
  if (c->store_ == nullptr) return bad("out of memory");
  b = MemBio(ca_pem);
  int cas = 0;
  while (b) {
    X509* ca = PEM_read_bio_X509(b.get(), nullptr, NoPassphrase, nullptr);
    if (ca == nullptr) break;
    int ok = X509_STORE_add_cert(c->store_, ca);
    X509_free(ca);
    if (ok != 1) return bad("cannot add a CA certificate");
    cas++;
  }
  ERR_clear_error();  // the end of the PEM text reads as "no start line"
  if (cas == 0) return Status(Code::kInvalidArgument, "data-plane certificate: no CA certificate in the CA PEM");
  Status st = CheckCertificate(c->store_, c->cert_, &c->identity_);
  if (!st.ok() && check_own)
    return Status(Code::kInvalidArgument, "data-plane certificate: this node's own " + st.message());
  int len = i2d_X509(c->cert_, nullptr);
  if (len <= 0 || size_t(len) > kMaxCertificateSize)
    return Status(Code::kInvalidArgument, "data-plane certificate: this node's certificate is larger than " +
                                              std::to_string(kMaxCertificateSize) + " bytes of DER");
  c->cert_der_.resize(size_t(len));
  uint8_t* p = c->cert_der_.data();
  if (i2d_X509(c->cert_, &p) != len) return bad("cannot encode this node's certificate");
  *out = std::move(c);
  return Status::Ok();
}

Status NodeCredentials::Sign(const uint8_t* msg, size_t len, std::vector<uint8_t>* sig) const {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  if (md == nullptr) return Status(Code::kResourceExhausted, "sign: out of memory");
  size_t n = 0;
  int ok = EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, key_);
  if (ok == 1) ok = EVP_DigestSign(md, nullptr, &n, msg, len);
  if (ok == 1) {
    sig->resize(n);
    ok = EVP_DigestSign(md, sig->data(), &n, msg, len);
  }
  EVP_MD_CTX_free(md);
  if (ok != 1 || n > kMaxSignatureSize) return Status(Code::kInternal, "sign the handshake: " + TakeOpenSslError());
  sig->resize(n);
  return Status::Ok();
}

namespace {
std::string HexOf(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; i++) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}
}  // namespace

Status RevokedCertificates::Replace(const std::vector<std::string>& fingerprints, bool* changed) {
  std::set<std::string> next;
  for (const std::string& f : fingerprints) {
    std::string hex;
    for (char c : f) {
      if (c == ':') continue;
      if (!std::isxdigit(static_cast<unsigned char>(c)) || hex.size() >= 64)
        return Status(Code::kInvalidArgument, "revoked certificate fingerprints are SHA-256: 64 hex digits");
      hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    if (hex.size() != 64)
      return Status(Code::kInvalidArgument, "revoked certificate fingerprints are SHA-256: 64 hex digits");
    next.insert(std::move(hex));
  }
  std::lock_guard<std::mutex> l(mu_);
  *changed = next != hex_;
  hex_ = std::move(next);
  return Status::Ok();
}

bool RevokedCertificates::Has(const uint8_t* der, size_t len) const {
  uint8_t digest[kSha256Size];
  Sha256Digest(der, len, digest);
  const std::string hex = HexOf(digest, kSha256Size);
  std::lock_guard<std::mutex> l(mu_);
  return hex_.count(hex) != 0;
}

size_t RevokedCertificates::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return hex_.size();
}

Status NodeCredentials::VerifyPeer(const uint8_t* der, size_t len, PeerCertificate* out) const {
  if (len == 0 || len > kMaxCertificateSize)
    return Status(Code::kUnauthenticated, "peer certificate of " + std::to_string(len) + " bytes");
  if (revoked_->Has(der, len))
    return Status(Code::kUnauthenticated, "peer certificate was revoked (hotpot certs revoke)");
  const uint8_t* p = der;
  X509* cert = d2i_X509(nullptr, &p, long(len));
  if (cert == nullptr || p != der + len) {
    if (cert != nullptr) X509_free(cert);
    ERR_clear_error();
    return Status(Code::kUnauthenticated, "peer certificate is not one DER certificate");
  }
  std::string identity;
  Status st = CheckCertificate(store_, cert, &identity);
  if (!st.ok()) {
    X509_free(cert);
    return Status(Code::kUnauthenticated, "peer " + st.message());
  }
  if (out->cert_ != nullptr) X509_free(out->cert_);
  out->cert_ = cert;
  out->identity_ = std::move(identity);
  return Status::Ok();
}

EphemeralKey::~EphemeralKey() {
  if (key_ != nullptr) EVP_PKEY_free(key_);
}

Status EphemeralKey::Generate() {
  if (key_ != nullptr) return Status(Code::kFailedPrecondition, "ephemeral key already made");
  EVP_PKEY_CTX* c = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr);
  int ok = c != nullptr ? EVP_PKEY_keygen_init(c) : 0;
  if (ok == 1) ok = EVP_PKEY_keygen(c, &key_);
  if (c != nullptr) EVP_PKEY_CTX_free(c);
  size_t n = kX25519KeySize;
  if (ok == 1) ok = EVP_PKEY_get_raw_public_key(key_, public_, &n);
  if (ok != 1 || n != kX25519KeySize) return Status(Code::kInternal, "X25519 key: " + TakeOpenSslError());
  return Status::Ok();
}

Status EphemeralKey::Agree(const uint8_t peer_public[kX25519KeySize], uint8_t out[kX25519KeySize]) const {
  if (key_ == nullptr) return Status(Code::kFailedPrecondition, "no ephemeral key");
  EVP_PKEY* peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public, kX25519KeySize);
  EVP_PKEY_CTX* c = peer != nullptr ? EVP_PKEY_CTX_new(key_, nullptr) : nullptr;
  int ok = c != nullptr ? EVP_PKEY_derive_init(c) : 0;
  if (ok == 1) ok = EVP_PKEY_derive_set_peer(c, peer);
  size_t n = kX25519KeySize;
  if (ok == 1) ok = EVP_PKEY_derive(c, out, &n);
  if (c != nullptr) EVP_PKEY_CTX_free(c);
  if (peer != nullptr) EVP_PKEY_free(peer);
  uint8_t zero[kX25519KeySize] = {};
  if (ok != 1 || n != kX25519KeySize || ConstantTimeEqual(out, zero, kX25519KeySize)) {
    ERR_clear_error();
    std::memset(out, 0, kX25519KeySize);
    return Status(Code::kUnauthenticated, "peer's ephemeral key gives no shared secret");
  }
  return Status::Ok();
}

void HkdfSha256(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len, const std::string& info,
                uint8_t* out, size_t out_len) {
  uint8_t prk[kSha256Size];
  HmacSha256Digest(salt, salt_len, ikm, ikm_len, prk);  // extract
  uint8_t t[kSha256Size];
  size_t done = 0;
  for (uint8_t i = 1; done < out_len && i != 0; i++) {  // expand: T(i) = HMAC(PRK, T(i-1) || info || i)
    HmacSha256 h(prk, sizeof prk);
    if (i > 1) h.Update(t, sizeof t);
    h.Update(info.data(), info.size());
    h.Update(&i, 1);
    h.Final(t);
    size_t n = std::min(out_len - done, sizeof t);
    std::memcpy(out + done, t, n);
    done += n;
  }
  std::memset(prk, 0, sizeof prk);
  std::memset(t, 0, sizeof t);
}

}  // namespace transport
}  // namespace hotpot
