// Fuzz target for the MRSW lease certificate (engine::DecodeLease, native/src/engine/lease.h): bytes a committer
// attaches to PREPARE, checked by every owner. With the input's MAC left as is, mutated certificates must be refused
// before their fields are trusted; with the MAC recomputed over the mutated bytes (as the dispatcher would sign
// them), the field decoding itself is reached. An accepted certificate must re-encode to exactly the input.
// Builds with the standalone driver (driver.cc) or with clang -fsanitize=fuzzer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/sha256.h"
#include "engine/lease.h"
#include "fuzz_input.h"

using namespace hotpot;
using namespace hotpot::engine;

namespace {

const std::string kSecret = "fuzz-cluster-secret";

// The certificate's MAC as lease.h specifies it: HMAC-SHA256(secret, "hotpot-lease-v1" || bytes before the mac).
void Sign(std::vector<uint8_t>* b) {
  if (b->size() < kSha256Size) return;
  static const char kLabel[] = "hotpot-lease-v1";
  HmacSha256 h(kSecret.data(), kSecret.size());
  h.Update(kLabel, sizeof(kLabel) - 1);
  h.Update(b->data(), b->size() - kSha256Size);
  h.Final(b->data() + b->size() - kSha256Size);
}

// The range count (at offset 32, lease.h) made to agree with the length, so mutated ranges get decoded.
void FixCount(std::vector<uint8_t>* b) {
  constexpr size_t kFixed = 36 + kSha256Size;
  if (b->size() >= kFixed && (b->size() - kFixed) % 16 == 0)
    PutU32(b->data() + 32, uint32_t((b->size() - kFixed) / 16));
}

}  // namespace

// Input: mode byte (0: as is, 1: re-signed, 2: no secret on this node, 3: count fixed and re-signed), then the
// certificate.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0] % 4;
  std::vector<uint8_t> cert(data + 1, data + size);
  if (mode == 3) FixCount(&cert);
  if (mode == 1 || mode == 3) Sign(&cert);
  LeaseCert c;
  Status st = DecodeLease(cert, mode == 2 ? std::string() : kSecret, &c);
  if (!st.ok()) return 0;
  if (mode == 2 || c.ranges.empty() || c.ranges.size() > kMaxLeaseRanges) __builtin_trap();
  if (EncodeLease(c, kSecret) != cert) __builtin_trap();
  for (const LeaseRange& r : c.ranges) {
    if (r.count > 0 && !c.Covers(r.first_page)) __builtin_trap();
    (void)c.Covers(r.first_page + r.count);  // wraps for the largest pages: must not misbehave
  }
  return 0;
}

// Seed for the standalone driver: one certificate signed with the fuzz secret, in every mode (mutations seldom
// change the mode byte, and modes 1 and 3 are the ones that reach the field decoding).
extern "C" void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out) {
  LeaseCert c;
  c.dataset = 7;
  c.holder_node = 2;
  c.epoch = 3;
  c.expiry_unix_ms = 1790000000000ull;
  c.ranges = {LeaseRange{0, 16}, LeaseRange{100, 1}};
  const std::vector<uint8_t> b = EncodeLease(c, kSecret);
  for (uint8_t mode = 0; mode < 4; mode++) out->push_back(hotpot_fuzz::Selected(mode, b));
}
