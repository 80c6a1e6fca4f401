// MRSW lease certificates (docs/design/consistency.md): the dispatcher (the MRSW master) grants write ownership
// of page ranges to a holder on one node and signs {dataset, holder node, fencing epoch, expiry, page ranges}
// with the cluster secret. The committer attaches the certificate to PREPARE; owners verify the MAC, the expiry,
// the holder and that every written page is covered, and refuse epochs older than one they have seen for a page.
//
// Wire format (little-endian):
//   magic u32 = "HPL1", dataset u64, holder_node u32, epoch u64, expiry_unix_ms u64, n u32 (1..4096),
//   n x {first_page u64, count u64}, mac[32] = HMAC-SHA256(secret, "hotpot-lease-v1" || every byte before mac)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace hotpot {
namespace engine {

struct LeaseRange {
  uint64_t first_page = 0;
  uint64_t count = 0;
};

struct LeaseCert {
  uint64_t dataset = 0;
  uint32_t holder_node = 0;
  uint64_t epoch = 0;
  uint64_t expiry_unix_ms = 0;
  std::vector<LeaseRange> ranges;
  bool Covers(uint64_t page) const;
};

constexpr uint32_t kLeaseMagic = 0x314c5048;  // "HPL1"
constexpr uint32_t kMaxLeaseRanges = 4096;

// Decodes and checks the MAC. PERMISSION_DENIED for a bad MAC, INVALID_ARGUMENT for a malformed certificate.
Status DecodeLease(const std::vector<uint8_t>& bytes, const std::string& secret, LeaseCert* out);
// For tests: the encoding the dispatcher produces.
std::vector<uint8_t> EncodeLease(const LeaseCert& cert, const std::string& secret);

}  // namespace engine
}  // namespace hotpot
