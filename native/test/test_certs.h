// Test certificates made in-process with libcrypto (no openssl command, no files): a cluster CA and certificates
// it signs, shaped like services/common/certs.ts makes them (EC P-256, subject O=hotpot/OU=<role>/CN=<name>), plus
// what the tests need that `hotpot certs` never makes (a validity window in the past).
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "test_util.h"
#include "transport/node_credentials.h"

namespace hotpot_test {

struct TestKey {
  EVP_PKEY* key = nullptr;
  TestKey() {
    key = EVP_EC_gen("P-256");
    CHECK(key != nullptr);
  }
  ~TestKey() { EVP_PKEY_free(key); }
  TestKey(const TestKey&) = delete;
  TestKey& operator=(const TestKey&) = delete;
};

inline std::string ToPem(X509* cert) {
  BIO* b = BIO_new(BIO_s_mem());
  CHECK(b != nullptr && PEM_write_bio_X509(b, cert) == 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, size_t(n));
  BIO_free(b);
  return out;
}

inline std::string KeyPem(EVP_PKEY* key) {
  BIO* b = BIO_new(BIO_s_mem());
  CHECK(b != nullptr && PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, size_t(n));
  BIO_free(b);
  return out;
}

inline void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  CHECK(ext != nullptr && X509_add_ext(cert, ext, -1) == 1);
  X509_EXTENSION_free(ext);
}

// Subject O=hotpot/OU=<ou>/CN=<cn> (ou empty: none), valid from now + from_s to now + to_s.
inline X509* MakeCert(EVP_PKEY* subject_key, const std::string& ou, const std::string& cn, X509* issuer,
                      EVP_PKEY* issuer_key, bool ca, long from_s = -3600, long to_s = 86400) {
  static long serial = 1000;
  X509* c = X509_new();
  CHECK(c != nullptr);
  CHECK(X509_set_version(c, 2) == 1);
  CHECK(ASN1_INTEGER_set(X509_get_serialNumber(c), serial++) == 1);
  CHECK(X509_gmtime_adj(X509_getm_notBefore(c), from_s) != nullptr);
  CHECK(X509_gmtime_adj(X509_getm_notAfter(c), to_s) != nullptr);
  CHECK(X509_set_pubkey(c, subject_key) == 1);
  X509_NAME* name = X509_get_subject_name(c);
  CHECK(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("hotpot"), -1, -1,
                                   0) == 1);
  if (!ou.empty())
    CHECK(X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(ou.c_str()), -1,
                                     -1, 0) == 1);
  CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1,
                                   -1, 0) == 1);
  X509* signer = issuer != nullptr ? issuer : c;
  CHECK(X509_set_issuer_name(c, X509_get_subject_name(signer)) == 1);
  if (ca) {
    AddExt(c, signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    AddExt(c, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExt(c, signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExt(c, signer, NID_key_usage, "critical,digitalSignature,keyAgreement");
    AddExt(c, signer, NID_ext_key_usage, "serverAuth,clientAuth");
    AddExt(c, signer, NID_subject_alt_name, "DNS:node.hotpot,DNS:localhost,IP:127.0.0.1");
  }
  CHECK(X509_sign(c, issuer_key != nullptr ? issuer_key : subject_key, EVP_sha256()) > 0);
  return c;
}

// A cluster CA that issues node (and other) certificates as PEM.
class TestCa {
 public:
  explicit TestCa(const std::string& name = "test CA") {
    cert_ = MakeCert(key_.key, "ca", "hotpot cluster CA " + name, nullptr, nullptr, true, -86400, 86400 * 365);
    pem_ = ToPem(cert_);
  }
  ~TestCa() { X509_free(cert_); }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const std::string& pem() const { return pem_; }

  struct Issued {
    std::string cert_pem, key_pem;
  };
  Issued Issue(const std::string& role, const std::string& name, long from_s = -3600, long to_s = 86400) const {
    TestKey k;
    X509* c = MakeCert(k.key, role, name, cert_, key_.key, false, from_s, to_s);
    Issued out{ToPem(c), KeyPem(k.key)};
    X509_free(c);
    return out;
  }

  // Node credentials for `name` as the transport takes them (this CA trusted), or with `cert` issued elsewhere.
  std::shared_ptr<const hotpot::transport::NodeCredentials> Node(const std::string& name) const {
    return Credentials(Issue("node", name));
  }
  // `check_own` false: credentials that present a certificate peers refuse (another role, expired, another CA).
  std::shared_ptr<const hotpot::transport::NodeCredentials> Credentials(const Issued& cert,
                                                                        bool check_own = true) const {
    std::shared_ptr<const hotpot::transport::NodeCredentials> c;
    CHECK_OK(hotpot::transport::NodeCredentials::FromPem(cert.cert_pem, cert.key_pem, pem_, &c, check_own));
    return c;
  }

 private:
  TestKey key_;
  X509* cert_ = nullptr;
  std::string pem_;
};

}  // namespace hotpot_test
