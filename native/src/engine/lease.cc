#include "engine/lease.h"

#include "common/bytes.h"
#include "common/sha256.h"

namespace hotpot {
namespace engine {
namespace {
constexpr char kMacLabel[] = "hotpot-lease-v1";
constexpr size_t kHeader = 4 + 8 + 4 + 8 + 8 + 4;

void Mac(const std::string& secret, const uint8_t* p, size_t n, uint8_t out[kSha256Size]) {
  HmacSha256 h(secret.data(), secret.size());
  h.Update(kMacLabel, sizeof(kMacLabel) - 1);
  h.Update(p, n);
  h.Final(out);
}
}  // namespace

bool LeaseCert::Covers(uint64_t page) const {
  for (const LeaseRange& r : ranges)
    if (page >= r.first_page && page - r.first_page < r.count) return true;
  return false;
}

Status DecodeLease(const std::vector<uint8_t>& b, const std::string& secret, LeaseCert* out) {
  if (b.size() < kHeader + kSha256Size) return Status(Code::kInvalidArgument, "lease certificate: truncated");
  const uint8_t* p = b.data();
  if (GetU32(p) != kLeaseMagic) return Status(Code::kInvalidArgument, "lease certificate: bad magic");
  uint32_t n = GetU32(p + kHeader - 4);
  if (n == 0 || n > kMaxLeaseRanges || b.size() != kHeader + size_t(n) * 16 + kSha256Size)
    return Status(Code::kInvalidArgument, "lease certificate: bad range count or length");
  if (secret.empty()) return Status(Code::kFailedPrecondition, "lease certificate: this node has no cluster secret");
  uint8_t mac[kSha256Size];
  Mac(secret, p, b.size() - kSha256Size, mac);
  if (!ConstantTimeEqual(mac, p + b.size() - kSha256Size, kSha256Size))
    return Status(Code::kPermissionDenied, "lease certificate: MAC does not verify (forged or another cluster)");
  out->dataset = GetU64(p + 4);
  out->holder_node = GetU32(p + 12);
  out->epoch = GetU64(p + 16);
  out->expiry_unix_ms = GetU64(p + 24);
  out->ranges.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    out->ranges[i].first_page = GetU64(p + kHeader + size_t(i) * 16);
    out->ranges[i].count = GetU64(p + kHeader + size_t(i) * 16 + 8);
  }
  return Status::Ok();
}

std::vector<uint8_t> EncodeLease(const LeaseCert& c, const std::string& secret) {
  std::vector<uint8_t> b(kHeader + c.ranges.size() * 16 + kSha256Size);
  uint8_t* p = b.data();
  PutU32(p, kLeaseMagic);
  PutU64(p + 4, c.dataset);
  PutU32(p + 12, c.holder_node);
  PutU64(p + 16, c.epoch);
  PutU64(p + 24, c.expiry_unix_ms);
  PutU32(p + 32, uint32_t(c.ranges.size()));
  for (size_t i = 0; i < c.ranges.size(); i++) {
    PutU64(p + kHeader + i * 16, c.ranges[i].first_page);
    PutU64(p + kHeader + i * 16 + 8, c.ranges[i].count);
  }
  Mac(secret, p, b.size() - kSha256Size, p + b.size() - kSha256Size);
  return b;
}

}  // namespace engine
}  // namespace hotpot
