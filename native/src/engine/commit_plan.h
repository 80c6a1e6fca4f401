// Commit planning as pure functions (no engine state, no network; unit-tested in native/test/commit_plan_test.cc):
// the byte diff of a private page against its base image, read ranges split at pages, the grouping of a commit's
// ranges into parts (one PREPARE each) with every read check on the right part, and the cut of a push batch into
// messages.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "engine/messages.h"

namespace hotpot {
namespace engine {
namespace plan {

// Runs of differing bytes closer than this are shipped as one range (fewer, longer ranges).
constexpr size_t kMergeGap = 16;
// A part's encoded ranges stay below this: a frame carries at most 16 MiB, a redo slot 16 MiB of range bytes.
constexpr size_t kMaxPartBytes = 8u << 20;
// A PUSH_BATCH message carries at most this many pages and about this many bytes.
constexpr size_t kMaxBatchPages = 1024;
constexpr size_t kMaxBatchBytes = 8u << 20;

// The ranges in which `data` differs from `base` (both one page of `page_size` bytes at dataset page `page`), each
// with its old (base) and new bytes, in ascending order. Equal gaps shorter than kMergeGap are shipped inside a
// range (their old and new bytes are the same).
std::vector<msg::Range> DiffPage(uint64_t page, const uint8_t* base, const uint8_t* data, size_t page_size);

// A read range split at page boundaries: (page, offset, length) pieces in order.
struct ReadPiece {
  uint64_t page;
  uint64_t offset;
  uint32_t len;
};
std::vector<ReadPiece> SplitAtPages(uint64_t offset, uint64_t len, size_t page_size);

// One PREPARE: an owner and what it validates and writes.
struct Part {
  uint32_t owner = 0;
  msg::PrepareRequest req;
};

// Groups ranges by owner into parts in (owner, part) order, an owner's ranges split into parts below
// kMaxPartBytes of encoded ranges; owners with only read checks get a read-only part. Each read check rides on the
// part that writes its page (a check on another part of the same owner would lock the page against its own write),
// else on the owner's first part. MRSW base versions (page -> version) become whole-page read checks on the part
// writing the page. The caller fills txids, flags, lease and deadline.
std::vector<Part> GroupParts(std::map<uint32_t, std::vector<msg::Range>> ranges_by_owner,
                             const std::map<uint32_t, std::vector<msg::ReadCheck>>& reads_by_owner,
                             const std::map<uint64_t, uint64_t>& mrsw_bases, size_t page_size);

// Message boundaries [start, end) for sending `pages` as PUSH_BATCH messages within the limits above.
std::vector<std::pair<size_t, size_t>> CutBatches(const std::vector<msg::PushPage>& pages);

}  // namespace plan
}  // namespace engine
}  // namespace hotpot
