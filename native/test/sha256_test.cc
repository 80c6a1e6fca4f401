// SHA-256 against FIPS 180-2 appendix B vectors, HMAC-SHA256 against RFC 4231.
#include <cstring>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/sha256.h"
#include "test_util.h"

using namespace hotpot;

static std::string Hash(const std::string& s) {
  uint8_t d[kSha256Size];
  Sha256Digest(s.data(), s.size(), d);
  return ToHex(d, sizeof d);
}

static std::vector<uint8_t> Bytes(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

static std::string Hmac(const std::vector<uint8_t>& key, const std::string& msg, size_t truncate = 32) {
  uint8_t d[kSha256Size];
  HmacSha256Digest(key.data(), key.size(), msg.data(), msg.size(), d);
  return ToHex(d, truncate);
}

TEST(sha256_fips_vectors) {
  CHECK(Hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(Hash("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
             "mnopqrstnopqrstu") == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // One million 'a', fed in uneven pieces to exercise the block buffer.
  Sha256 s;
  std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    size_t n = left < chunk.size() ? left : chunk.size();
    s.Update(chunk.data(), n);
    left -= n;
  }
  uint8_t d[kSha256Size];
  s.Final(d);
  CHECK(ToHex(d, 32) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(sha256_incremental_matches_one_shot_at_every_split) {
  std::string msg;
  for (int i = 0; i < 200; i++) msg.push_back(char(i * 7 + 3));
  for (size_t len = 0; len <= msg.size(); len += 13) {
    uint8_t one[kSha256Size];
    Sha256Digest(msg.data(), len, one);
    for (size_t split = 0; split <= len; split += 5) {
      Sha256 s;
      s.Update(msg.data(), split);
      s.Update(msg.data() + split, len - split);
      uint8_t two[kSha256Size];
      s.Final(two);
      CHECK(std::memcmp(one, two, kSha256Size) == 0);
    }
  }
}

TEST(hmac_rfc4231_vectors) {
  // Test case 1
  CHECK(Hmac(Bytes(20, 0x0b), "Hi There") == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  // Test case 2
  CHECK(Hmac(std::vector<uint8_t>{'J', 'e', 'f', 'e'}, "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 3
  CHECK(Hmac(Bytes(20, 0xaa), std::string(50, '\xdd')) ==
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  // Test case 4
  std::vector<uint8_t> key4;
  for (int i = 1; i <= 25; i++) key4.push_back(uint8_t(i));
  CHECK(Hmac(key4, std::string(50, '\xcd')) == "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  // Test case 5 (truncated to 128 bits)
  CHECK(Hmac(Bytes(20, 0x0c), "Test With Truncation", 16) == "a3b6167473100ee06e0c796c2955552b");
  // Test case 6: key longer than the block size is hashed first
  CHECK(Hmac(Bytes(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First") ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  // Test case 7
  CHECK(Hmac(Bytes(131, 0xaa),
             "This is a test using a larger than block-size key and a larger than block-size data. The key needs "
             "to be hashed before being used by the HMAC algorithm.") ==
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST(hmac_incremental_equals_one_shot) {
  const std::string key = "cluster-secret";
  const std::string a = "hotpot-server", b(32, 'x'), c(8, 'y');
  HmacSha256 h(key.data(), key.size());
  h.Update(a.data(), a.size());
  h.Update(b.data(), b.size());
  h.Update(c.data(), c.size());
  uint8_t inc[kSha256Size], one[kSha256Size];
  h.Final(inc);
  std::string all = a + b + c;
  HmacSha256Digest(key.data(), key.size(), all.data(), all.size(), one);
  CHECK(ConstantTimeEqual(inc, one, kSha256Size));
  one[31] ^= 1;
  CHECK(!ConstantTimeEqual(inc, one, kSha256Size));
  CHECK(ConstantTimeEqual(inc, one, 0));
}

TEST(random_bytes_fill_and_differ) {
  uint8_t a[32] = {}, b[32] = {};
  CHECK_OK(RandomBytes(a, sizeof a));
  CHECK_OK(RandomBytes(b, sizeof b));
  CHECK(std::memcmp(a, b, sizeof a) != 0);
  CHECK_OK(RandomBytes(nullptr, 0));
}

TEST_MAIN("sha256")
