// Commit planning (engine/commit_plan.h): the byte diff of a page, read ranges split at pages, the grouping of ranges
// into PREPARE parts with their read checks, and the cut of a push into PUSH_BATCH messages. Pure functions: every
// case states the exact plan expected.

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "engine/commit_plan.h"
#include "engine/messages.h"
#include "test_util.h"

using namespace hotpot;
using namespace hotpot::engine;
using plan::kMaxBatchBytes;
using plan::kMaxBatchPages;
using plan::kMaxPartBytes;
using plan::kMergeGap;

namespace {

constexpr size_t kPage = 4096;

// A page image of varied bytes (a range's old and new bytes, and its gaps, are told apart by value).
std::vector<uint8_t> BaseImage(size_t n = kPage) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(i * 37 + 11);
  return v;
}

// `base` with every byte at `at` changed (xor: never equal to the old value).
std::vector<uint8_t> Changed(const std::vector<uint8_t>& base, const std::vector<size_t>& at) {
  std::vector<uint8_t> v = base;
  for (size_t i : at) v[i] ^= 0x5A;
  return v;
}

std::vector<uint8_t> Slice(const std::vector<uint8_t>& v, size_t from, size_t to) {
  return std::vector<uint8_t>(v.begin() + long(from), v.begin() + long(to));
}

// The range [from, to) of a page at dataset offset `page * kPage + from`, its old bytes from `base`, new from `data`.
bool IsRange(const msg::Range& r, uint64_t page, size_t from, size_t to, const std::vector<uint8_t>& base,
             const std::vector<uint8_t>& data) {
  return r.offset == page * kPage + from && r.old_bytes == Slice(base, from, to) &&
         r.new_bytes == Slice(data, from, to);
}

// A written range for GroupParts (contents only matter for identity).
msg::Range MakeRange(uint64_t offset, uint32_t len) {
  msg::Range r;
  r.offset = offset;
  r.old_bytes.assign(len, uint8_t(offset));
  r.new_bytes.assign(len, uint8_t(offset + 1));
  return r;
}

// `count` whole-page ranges, pages first .. first + count - 1.
std::vector<msg::Range> WholePages(uint64_t first, size_t count) {
  std::vector<msg::Range> v;
  for (uint64_t p = first; p < first + count; p++) v.push_back(MakeRange(p * kPage, kPage));
  return v;
}

// What GroupParts counts for a part: its encoded ranges (offset u64, len u32, old and new bytes each).
size_t EncodedRanges(const msg::PrepareRequest& req) {
  size_t n = 0;
  for (const msg::Range& r : req.ranges) n += 12 + 2 * size_t(r.len());
  return n;
}

bool SameCheck(const msg::ReadCheck& c, uint64_t offset, uint32_t len, uint64_t version) {
  return c.offset == offset && c.len == len && c.version == version;
}

// The fields GroupParts leaves to the caller stay at their defaults.
bool CallerFieldsUnset(const msg::PrepareRequest& req) {
  return req.txid == 0 && req.dataset == 0 && req.replicas == 0 && req.flags == 0 && req.lease.empty() &&
         req.deadline_unix_ms == 0 && req.commit_id == 0;
}

using NoReads = std::map<uint32_t, std::vector<msg::ReadCheck>>;
using NoBases = std::map<uint64_t, uint64_t>;

// A push entry whose PUSH_BATCH encoding is exactly `encoded` bytes (>= 32): version, base, count, one range.
msg::PushPage PushOf(uint64_t page, size_t encoded) {
  msg::PushPage p;
  p.version = 2;
  p.ranges.push_back(msg::PushRange{page * kPage, std::vector<uint8_t>(encoded - 32, uint8_t(page))});
  return p;
}

std::vector<msg::PushPage> SmallPushes(size_t n) {
  std::vector<msg::PushPage> v;
  for (size_t i = 0; i < n; i++) v.push_back(PushOf(i, 32 + 8));
  return v;
}

using Cuts = std::vector<std::pair<size_t, size_t>>;

}  // namespace

// ---- DiffPage ----

TEST(diff_of_identical_pages_has_no_ranges) {
  const std::vector<uint8_t> base = BaseImage();
  CHECK(plan::DiffPage(7, base.data(), base.data(), kPage).empty());
  const std::vector<uint8_t> copy = base, zeros(kPage, 0), zeros2(kPage, 0);
  CHECK(plan::DiffPage(7, base.data(), copy.data(), kPage).empty());
  CHECK(plan::DiffPage(0, zeros.data(), zeros2.data(), kPage).empty());
}

TEST(diff_of_one_changed_byte_is_one_byte_range_at_its_dataset_offset) {
  const std::vector<uint8_t> base = BaseImage(), data = Changed(base, {100});
  auto d = plan::DiffPage(3, base.data(), data.data(), kPage);
  CHECK(d.size() == 1);
  CHECK(d[0].offset == 3 * kPage + 100 && d[0].len() == 1);
  CHECK(d[0].old_bytes == std::vector<uint8_t>{base[100]});  // old from base, new from data
  CHECK(d[0].new_bytes == std::vector<uint8_t>{data[100]});
  CHECK(d[0].old_bytes != d[0].new_bytes);
  CHECK(IsRange(d[0], 3, 100, 101, base, data));
  // A page far into the dataset: the offset is 64-bit page * page_size + in-page offset.
  const uint64_t far = uint64_t(1) << 33;
  d = plan::DiffPage(far, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && d[0].offset == far * kPage + 100);
}

TEST(diff_merges_runs_fewer_than_kMergeGap_equal_bytes_apart_including_the_gap) {
  static_assert(kMergeGap == 16, "the cases below are written for a 16-byte merge gap");
  const std::vector<uint8_t> base = BaseImage();
  // [10, 13) and [28, 30): 15 equal bytes between them (13..27), one short of kMergeGap: one range [10, 30).
  std::vector<uint8_t> data = Changed(base, {10, 11, 12, 28, 29});
  auto d = plan::DiffPage(2, base.data(), data.data(), kPage);
  CHECK(d.size() == 1);
  CHECK(IsRange(d[0], 2, 10, 30, base, data));
  CHECK(d[0].len() == 20);
  // The gap travels with the same old and new bytes (the base's).
  CHECK(Slice(d[0].old_bytes, 3, 18) == Slice(base, 13, 28));
  CHECK(Slice(d[0].new_bytes, 3, 18) == Slice(base, 13, 28));
  // A one-byte gap too.
  data = Changed(base, {40, 42});
  d = plan::DiffPage(2, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 2, 40, 43, base, data));
  // Merging chains: single bytes each 15 equal bytes after the previous one stay one range.
  data = Changed(base, {0, 16, 32, 48});
  d = plan::DiffPage(0, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 0, 0, 49, base, data));
}

TEST(diff_keeps_runs_kMergeGap_or_more_equal_bytes_apart_separate) {
  const std::vector<uint8_t> base = BaseImage();
  // [10, 13) and [29, 31): exactly 16 equal bytes between them (13..28): two ranges.
  std::vector<uint8_t> data = Changed(base, {10, 11, 12, 29, 30});
  auto d = plan::DiffPage(2, base.data(), data.data(), kPage);
  CHECK(d.size() == 2);
  CHECK(IsRange(d[0], 2, 10, 13, base, data));
  CHECK(IsRange(d[1], 2, 29, 31, base, data));
  // Single bytes exactly 16 equal bytes apart, and far apart: separate, in ascending order.
  data = Changed(base, {100, 117, 2000});
  d = plan::DiffPage(9, base.data(), data.data(), kPage);
  CHECK(d.size() == 3);
  CHECK(IsRange(d[0], 9, 100, 101, base, data));
  CHECK(IsRange(d[1], 9, 117, 118, base, data));
  CHECK(IsRange(d[2], 9, 2000, 2001, base, data));
  // One side of the boundary merges, the other does not: 15 then 16 equal bytes.
  data = Changed(base, {200, 216, 233});
  d = plan::DiffPage(9, base.data(), data.data(), kPage);
  CHECK(d.size() == 2);
  CHECK(IsRange(d[0], 9, 200, 217, base, data));
  CHECK(IsRange(d[1], 9, 233, 234, base, data));
}

TEST(diff_finds_changes_at_the_first_and_last_byte_of_a_page) {
  const std::vector<uint8_t> base = BaseImage();
  std::vector<uint8_t> data = Changed(base, {0, 4095});
  auto d = plan::DiffPage(5, base.data(), data.data(), kPage);
  CHECK(d.size() == 2);
  CHECK(IsRange(d[0], 5, 0, 1, base, data) && d[0].offset == 5 * kPage);
  CHECK(IsRange(d[1], 5, 4095, 4096, base, data) && d[1].offset == 5 * kPage + 4095);
  // The last byte alone; and a run reaching the last byte over a short gap.
  data = Changed(base, {4095});
  d = plan::DiffPage(5, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 5, 4095, 4096, base, data));
  data = Changed(base, {4080, 4095});
  d = plan::DiffPage(5, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 5, 4080, 4096, base, data));
  // Every byte changed: one whole-page range.
  std::vector<size_t> all(kPage);
  for (size_t i = 0; i < kPage; i++) all[i] = i;
  data = Changed(base, all);
  d = plan::DiffPage(5, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 5, 0, kPage, base, data) && d[0].len() == kPage);
}

TEST(diff_range_ends_at_its_last_changed_byte_not_at_the_page_end) {
  const std::vector<uint8_t> base = BaseImage();
  // 5 equal bytes follow byte 4090 to the page end: they are not shipped.
  std::vector<uint8_t> data = Changed(base, {4090});
  auto d = plan::DiffPage(1, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 1, 4090, 4091, base, data));
  // Nor is a short equal gap after the last run of the page.
  data = Changed(base, {500, 501});
  d = plan::DiffPage(1, base.data(), data.data(), kPage);
  CHECK(d.size() == 1 && IsRange(d[0], 1, 500, 502, base, data));
}

TEST(diff_offsets_use_the_given_page_size) {
  const std::vector<uint8_t> base = BaseImage(64), data = Changed(base, {0, 63});
  auto d = plan::DiffPage(10, base.data(), data.data(), 64);
  CHECK(d.size() == 2);
  CHECK(d[0].offset == 640 && d[0].old_bytes == std::vector<uint8_t>{base[0]} &&
        d[0].new_bytes == std::vector<uint8_t>{data[0]});
  CHECK(d[1].offset == 703 && d[1].old_bytes == std::vector<uint8_t>{base[63]} &&
        d[1].new_bytes == std::vector<uint8_t>{data[63]});
}

// ---- SplitAtPages ----

namespace {
bool PiecesAre(const std::vector<plan::ReadPiece>& got, const std::vector<plan::ReadPiece>& want) {
  if (got.size() != want.size()) return false;
  for (size_t i = 0; i < got.size(); i++)
    if (got[i].page != want[i].page || got[i].offset != want[i].offset || got[i].len != want[i].len) return false;
  return true;
}
uint64_t TotalLen(const std::vector<plan::ReadPiece>& v) {
  uint64_t n = 0;
  for (const auto& p : v) n += p.len;
  return n;
}
}  // namespace

TEST(split_of_a_range_inside_one_page_is_that_range) {
  CHECK(PiecesAre(plan::SplitAtPages(100, 50, kPage), {{0, 100, 50}}));
  CHECK(PiecesAre(plan::SplitAtPages(3 * kPage + 1, 1, kPage), {{3, 3 * kPage + 1, 1}}));
  // Ending exactly at the page end stays one piece.
  CHECK(PiecesAre(plan::SplitAtPages(4000, 96, kPage), {{0, 4000, 96}}));
}

TEST(split_of_exactly_one_page_is_one_whole_page_piece) {
  CHECK(PiecesAre(plan::SplitAtPages(2 * kPage, kPage, kPage), {{2, 2 * kPage, 4096}}));
  CHECK(PiecesAre(plan::SplitAtPages(0, kPage, kPage), {{0, 0, 4096}}));
}

TEST(split_crossing_page_boundaries_cuts_at_each_one_and_keeps_the_total) {
  auto one = plan::SplitAtPages(4000, 200, kPage);
  CHECK(PiecesAre(one, {{0, 4000, 96}, {1, 4096, 104}}));
  CHECK(TotalLen(one) == 200);
  auto several = plan::SplitAtPages(4000, 2 * kPage + 200, kPage);
  CHECK(PiecesAre(several, {{0, 4000, 96}, {1, 4096, 4096}, {2, 8192, 4096}, {3, 12288, 104}}));
  CHECK(TotalLen(several) == 2 * kPage + 200);
}

TEST(split_starting_at_a_page_boundary_starts_with_that_page) {
  auto v = plan::SplitAtPages(kPage, 5000, kPage);
  CHECK(PiecesAre(v, {{1, 4096, 4096}, {2, 8192, 904}}));
  CHECK(TotalLen(v) == 5000);
  v = plan::SplitAtPages(3 * kPage, 3 * kPage, kPage);
  CHECK(PiecesAre(v, {{3, 12288, 4096}, {4, 16384, 4096}, {5, 20480, 4096}}));
  CHECK(TotalLen(v) == 3 * kPage);
}

TEST(split_of_an_empty_range_has_no_pieces) { CHECK(plan::SplitAtPages(123, 0, kPage).empty()); }

// ---- GroupParts ----

TEST(group_gives_each_owner_one_part_in_owner_order) {
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[5] = {MakeRange(5 * kPage + 1, 4)};
  by_owner[2] = {MakeRange(2 * kPage, 8), MakeRange(2 * kPage + 100, 3), MakeRange(3 * kPage, 1)};
  by_owner[9] = {MakeRange(9 * kPage + 7, 1)};
  auto parts = plan::GroupParts(by_owner, NoReads{}, NoBases{}, kPage);
  CHECK(parts.size() == 3);
  CHECK(parts[0].owner == 2 && parts[1].owner == 5 && parts[2].owner == 9);
  CHECK(parts[0].req.ranges.size() == 3);
  CHECK(parts[0].req.ranges[0].offset == 2 * kPage && parts[0].req.ranges[0].len() == 8);
  CHECK(parts[0].req.ranges[1].offset == 2 * kPage + 100 && parts[0].req.ranges[1].len() == 3);
  CHECK(parts[0].req.ranges[2].offset == 3 * kPage && parts[0].req.ranges[2].len() == 1);
  CHECK(parts[1].req.ranges.size() == 1 && parts[1].req.ranges[0].offset == 5 * kPage + 1);
  CHECK(parts[2].req.ranges.size() == 1 && parts[2].req.ranges[0].offset == 9 * kPage + 7);
  for (const plan::Part& p : parts) {
    CHECK(p.req.reads.empty());
    CHECK(CallerFieldsUnset(p.req));
  }
  // The bytes are moved over unchanged.
  CHECK(parts[0].req.ranges[1].old_bytes == by_owner[2][1].old_bytes);
  CHECK(parts[0].req.ranges[1].new_bytes == by_owner[2][1].new_bytes);
  // Nothing to write or check: no parts.
  CHECK(plan::GroupParts({}, NoReads{}, NoBases{}, kPage).empty());
}

TEST(group_splits_an_owner_over_kMaxPartBytes_into_parts_under_the_limit_keeping_range_order) {
  // A whole-page range encodes to 12 + 2 * 4096 = 8204 bytes: 1022 fit in 8 MiB (1023 would be 8392692).
  static_assert(kMaxPartBytes == 8u << 20, "the counts below are written for an 8 MiB part");
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[1] = WholePages(0, 2100);
  by_owner[2] = {MakeRange(5000 * kPage, 10)};
  auto parts = plan::GroupParts(by_owner, NoReads{}, NoBases{}, kPage);
  CHECK(parts.size() == 4);
  CHECK(parts[0].owner == 1 && parts[1].owner == 1 && parts[2].owner == 1 && parts[3].owner == 2);
  CHECK(parts[0].req.ranges.size() == 1022 && parts[1].req.ranges.size() == 1022 &&
        parts[2].req.ranges.size() == 56 && parts[3].req.ranges.size() == 1);
  uint64_t next = 0;
  for (size_t i = 0; i < 3; i++) {
    CHECK(EncodedRanges(parts[i].req) <= kMaxPartBytes);
    // The encoder agrees with the count: the fixed PREPARE header (28 bytes) plus the ranges.
    CHECK(msg::PrepareRequestSize(parts[i].req) == 28 + EncodedRanges(parts[i].req));
    for (const msg::Range& r : parts[i].req.ranges) {
      CHECK(r.offset == next * kPage && r.len() == kPage);
      next++;
    }
  }
  CHECK(next == 2100);
  CHECK(parts[3].req.ranges[0].offset == 5000 * kPage);
}

TEST(group_part_limit_is_inclusive_one_more_range_starts_a_new_part) {
  // 1022 whole pages (8384488 bytes) + one 2054-byte range (12 + 4108 = 4120 bytes) = exactly kMaxPartBytes. The
  // code keeps a part of exactly the limit whole (it splits when bytes + size > kMaxPartBytes).
  std::vector<msg::Range> exact = WholePages(0, 1022);
  exact.push_back(MakeRange(1022 * kPage, 2054));
  size_t total = 0;
  for (const msg::Range& r : exact) total += 12 + 2 * size_t(r.len());
  CHECK(total == kMaxPartBytes);
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[4] = exact;
  auto parts = plan::GroupParts(by_owner, NoReads{}, NoBases{}, kPage);
  CHECK(parts.size() == 1 && parts[0].req.ranges.size() == 1023 && EncodedRanges(parts[0].req) == kMaxPartBytes);
  // One more byte-long range on the next page (14 bytes) goes to a second part of the same owner.
  by_owner[4].push_back(MakeRange(1023 * kPage, 1));
  parts = plan::GroupParts(by_owner, NoReads{}, NoBases{}, kPage);
  CHECK(parts.size() == 2 && parts[0].owner == 4 && parts[1].owner == 4);
  CHECK(parts[0].req.ranges.size() == 1023 && parts[1].req.ranges.size() == 1);
  CHECK(parts[1].req.ranges[0].offset == 1023 * kPage && parts[1].req.ranges[0].len() == 1);
}

TEST(group_gives_an_owner_with_only_read_checks_a_read_only_part) {
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[1] = {MakeRange(1 * kPage, 4)};
  NoReads reads;
  reads[3] = {msg::ReadCheck{3 * kPage + 10, 20, 7}, msg::ReadCheck{4 * kPage, 4096, 8}};
  auto parts = plan::GroupParts(by_owner, reads, NoBases{}, kPage);
  CHECK(parts.size() == 2);
  CHECK(parts[0].owner == 1 && parts[0].req.ranges.size() == 1 && parts[0].req.reads.empty());
  CHECK(parts[1].owner == 3 && parts[1].req.ranges.empty() && parts[1].req.reads.size() == 2);
  CHECK(SameCheck(parts[1].req.reads[0], 3 * kPage + 10, 20, 7));
  CHECK(SameCheck(parts[1].req.reads[1], 4 * kPage, 4096, 8));
  // A commit that only reads: one read-only part per owner, in owner order.
  reads[0] = {msg::ReadCheck{0, 1, 1}};
  parts = plan::GroupParts({}, reads, NoBases{}, kPage);
  CHECK(parts.size() == 2 && parts[0].owner == 0 && parts[1].owner == 3);
  CHECK(parts[0].req.ranges.empty() && parts[0].req.reads.size() == 1 && SameCheck(parts[0].req.reads[0], 0, 1, 1));
  CHECK(parts[1].req.ranges.empty() && parts[1].req.reads.size() == 2);
  for (const plan::Part& p : parts) CHECK(CallerFieldsUnset(p.req));
}

TEST(group_puts_a_read_check_on_the_part_writing_its_page_else_on_the_owners_first_part) {
  // One part per owner: checks on written and unwritten pages all ride on it, in input order.
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[1] = {MakeRange(0, 8), MakeRange(1 * kPage + 5, 8)};
  by_owner[2] = {MakeRange(9000 * kPage, 8)};
  NoReads reads;
  reads[1] = {msg::ReadCheck{1 * kPage + 100, 4, 3}, msg::ReadCheck{7 * kPage, 16, 4}};
  reads[2] = {msg::ReadCheck{9001 * kPage, 1, 5}};
  auto parts = plan::GroupParts(by_owner, reads, NoBases{}, kPage);
  CHECK(parts.size() == 2);
  CHECK(parts[0].req.reads.size() == 2);
  CHECK(SameCheck(parts[0].req.reads[0], 1 * kPage + 100, 4, 3));
  CHECK(SameCheck(parts[0].req.reads[1], 7 * kPage, 16, 4));
  CHECK(parts[1].req.reads.size() == 1 && SameCheck(parts[1].req.reads[0], 9001 * kPage, 1, 5));

  // An owner split into three parts (pages 0-1021, 1022-2043, 2044-2099): a check on a written page rides on the
  // part writing that page (else that part would lock it against its own write); an unwritten page's on the first.
  by_owner.clear();
  by_owner[1] = WholePages(0, 2100);
  by_owner[2] = {MakeRange(9000 * kPage, 8)};
  reads.clear();
  reads[1] = {msg::ReadCheck{1500 * kPage + 1, 2, 10}, msg::ReadCheck{2050 * kPage, 4096, 11},
              msg::ReadCheck{5000 * kPage, 8, 12}, msg::ReadCheck{3 * kPage, 8, 13},
              msg::ReadCheck{1022 * kPage + 4095, 1, 14}};
  reads[2] = {msg::ReadCheck{9000 * kPage + 100, 1, 15}};
  parts = plan::GroupParts(by_owner, reads, NoBases{}, kPage);
  CHECK(parts.size() == 4);
  CHECK(parts[0].req.reads.size() == 2);
  CHECK(SameCheck(parts[0].req.reads[0], 5000 * kPage, 8, 12));
  CHECK(SameCheck(parts[0].req.reads[1], 3 * kPage, 8, 13));
  CHECK(parts[1].req.reads.size() == 2);
  CHECK(SameCheck(parts[1].req.reads[0], 1500 * kPage + 1, 2, 10));
  CHECK(SameCheck(parts[1].req.reads[1], 1022 * kPage + 4095, 1, 14));
  CHECK(parts[2].req.reads.size() == 1 && SameCheck(parts[2].req.reads[0], 2050 * kPage, 4096, 11));
  CHECK(parts[3].owner == 2 && parts[3].req.reads.size() == 1);
  CHECK(SameCheck(parts[3].req.reads[0], 9000 * kPage + 100, 1, 15));
}

TEST(group_turns_mrsw_base_versions_into_whole_page_checks_on_the_writing_part) {
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[1] = WholePages(0, 2100);  // parts: pages 0-1021, 1022-2043, 2044-2099
  by_owner[2] = {MakeRange(9000 * kPage + 10, 3)};
  NoReads reads;
  reads[1] = {msg::ReadCheck{1500 * kPage, 8, 40}};
  NoBases bases{{5, 11}, {1500, 12}, {2050, 13}, {9000, 14}, {7777, 15}};
  auto parts = plan::GroupParts(by_owner, reads, bases, kPage);
  CHECK(parts.size() == 4);
  // Checks: offset of the page, the whole page, the base version; after the read checks, in page order.
  CHECK(parts[0].req.reads.size() == 1 && SameCheck(parts[0].req.reads[0], 5 * kPage, 4096, 11));
  CHECK(parts[1].req.reads.size() == 2);
  CHECK(SameCheck(parts[1].req.reads[0], 1500 * kPage, 8, 40));
  CHECK(SameCheck(parts[1].req.reads[1], 1500 * kPage, 4096, 12));
  CHECK(parts[2].req.reads.size() == 1 && SameCheck(parts[2].req.reads[0], 2050 * kPage, 4096, 13));
  CHECK(parts[3].req.reads.size() == 1 && SameCheck(parts[3].req.reads[0], 9000 * kPage, 4096, 14));
  // A base of a page no range writes (a dirty page equal to its base) adds no check anywhere.
  for (const plan::Part& p : parts)
    for (const msg::ReadCheck& c : p.req.reads) CHECK(c.offset / kPage != 7777);
  // The check length is the page size given.
  by_owner.clear();
  by_owner[1] = {MakeRange(3 * 64 + 1, 2)};
  parts = plan::GroupParts(by_owner, NoReads{}, NoBases{{3, 9}}, 64);
  CHECK(parts.size() == 1 && parts[0].req.reads.size() == 1 && SameCheck(parts[0].req.reads[0], 192, 64, 9));
}

// The part limit falling between two ranges of one page: the page is still written by one part (two parts of one
// owner writing a page would lock it against each other at the owner: the commit aborted on every retry before
// GroupParts cut only between pages), and every check of the page rides on that part.
TEST(AllRangesOfAPageGoToOnePartWhenThePartLimitFallsInsideThePage) {
  // 1022 whole pages (8384488 bytes), then page 1022 with two ranges: 2000 bytes (4012, fits: 8388500) and 100
  // bytes at 3000 (212: 8388712 > the limit). Then page 1023.
  std::map<uint32_t, std::vector<msg::Range>> by_owner;
  by_owner[1] = WholePages(0, 1022);
  by_owner[1].push_back(MakeRange(1022 * kPage, 2000));
  by_owner[1].push_back(MakeRange(1022 * kPage + 3000, 100));
  by_owner[1].push_back(MakeRange(1023 * kPage, 8));
  NoReads reads;
  reads[1] = {msg::ReadCheck{1022 * kPage + 2500, 4, 6}};
  auto parts = plan::GroupParts(by_owner, reads, NoBases{{1022, 5}}, kPage);
  CHECK(parts.size() == 2);
  size_t ranges = 0;
  std::map<uint64_t, std::set<size_t>> writers;  // page -> parts writing it
  for (size_t i = 0; i < parts.size(); i++) {
    CHECK(EncodedRanges(parts[i].req) <= kMaxPartBytes);
    ranges += parts[i].req.ranges.size();
    for (const msg::Range& r : parts[i].req.ranges) writers[r.offset / kPage].insert(i);
  }
  CHECK(ranges == 1025);
  for (const auto& kv : writers) CHECK(kv.second.size() == 1);
  // Both checks of page 1022 ride on the one part writing it.
  const size_t w = *writers[1022].begin();
  CHECK(parts[w].req.reads.size() == 2);
  CHECK(SameCheck(parts[w].req.reads[0], 1022 * kPage + 2500, 4, 6));
  CHECK(SameCheck(parts[w].req.reads[1], 1022 * kPage, 4096, 5));
}

// ---- CutBatches ----

namespace {
// Boundaries are contiguous, non-empty, and cover [0, n).
bool Covers(const Cuts& cuts, size_t n) {
  size_t at = 0;
  for (const auto& c : cuts) {
    if (c.first != at || c.second <= c.first) return false;
    at = c.second;
  }
  return at == n;
}
}  // namespace

TEST(cut_of_no_pages_is_one_empty_batch) {
  // What the code does: one [0, 0) boundary (a PUSH_BATCH of 0 pages would be refused by its decoder; callers only
  // cut non-empty pushes).
  CHECK((plan::CutBatches({}) == Cuts{{0, 0}}));
}

TEST(cut_keeps_at_most_kMaxBatchPages_pages_per_batch) {
  static_assert(kMaxBatchPages == 1024, "the counts below are written for 1024 pages a batch");
  CHECK((plan::CutBatches(SmallPushes(1)) == Cuts{{0, 1}}));
  CHECK((plan::CutBatches(SmallPushes(1024)) == Cuts{{0, 1024}}));
  CHECK((plan::CutBatches(SmallPushes(1025)) == Cuts{{0, 1024}, {1024, 1025}}));
  CHECK((plan::CutBatches(SmallPushes(3000)) == Cuts{{0, 1024}, {1024, 2048}, {2048, 3000}}));
}

TEST(cut_keeps_a_batch_within_kMaxBatchBytes_and_the_limit_is_inclusive) {
  static_assert(kMaxBatchBytes == 8u << 20, "the counts below are written for an 8 MiB batch");
  // Entries of exactly 1 MiB encoded: 8 fill the limit exactly and stay one batch; a 9th starts the next.
  std::vector<msg::PushPage> pages;
  for (uint64_t p = 0; p < 8; p++) pages.push_back(PushOf(p, 1u << 20));
  CHECK((plan::CutBatches(pages) == Cuts{{0, 8}}));
  pages.push_back(PushOf(8, 1u << 20));
  CHECK((plan::CutBatches(pages) == Cuts{{0, 8}, {8, 9}}));
  // One byte over the limit moves the last entry to the next batch.
  pages.pop_back();
  pages.back().ranges[0].bytes.push_back(0);
  CHECK((plan::CutBatches(pages) == Cuts{{0, 7}, {7, 8}}));
}

TEST(cut_gives_an_entry_larger_than_kMaxBatchBytes_a_batch_of_its_own) {
  std::vector<msg::PushPage> pages;
  pages.push_back(PushOf(0, 100));
  pages.push_back(PushOf(1, kMaxBatchBytes + 4096));
  pages.push_back(PushOf(2, 100));
  pages.push_back(PushOf(3, 100));
  CHECK((plan::CutBatches(pages) == Cuts{{0, 1}, {1, 2}, {2, 4}}));
  // First and alone.
  pages.erase(pages.begin());
  CHECK((plan::CutBatches(pages) == Cuts{{0, 1}, {1, 3}}));
  pages.resize(1);
  CHECK((plan::CutBatches(pages) == Cuts{{0, 1}}));
  // Two in a row: one each.
  pages.push_back(PushOf(5, kMaxBatchBytes + 1));
  CHECK((plan::CutBatches(pages) == Cuts{{0, 1}, {1, 2}}));
}

TEST(cut_batches_of_fragmented_pages_encode_within_both_limits_and_cover_every_page) {
  // Each page's entry: version u64, base u64, count u32, then per range offset u64, len u32 and the bytes.
  auto fragmented = [](size_t count, size_t ranges, size_t len) {
    std::vector<msg::PushPage> pages(count);
    for (uint64_t p = 0; p < count; p++) {
      pages[p].version = p + 1;
      for (uint64_t k = 0; k < ranges; k++)
        pages[p].ranges.push_back(msg::PushRange{p * kPage + k * len, std::vector<uint8_t>(len, uint8_t(k))});
    }
    return pages;
  };
  auto check_encoded = [](const std::vector<msg::PushPage>& pages, const Cuts& cuts) {
    CHECK(Covers(cuts, pages.size()));
    for (const auto& c : cuts) {
      msg::PushBatch b;
      b.committer = 1;
      b.commit_id = 9;
      b.dataset = 3;
      b.pages.assign(pages.begin() + long(c.first), pages.begin() + long(c.second));
      std::vector<uint8_t> enc;
      msg::EncodePushBatch(b, &enc);
      CHECK(enc.size() <= 28 + kMaxBatchBytes);  // 28: the batch header, which the limit leaves out
      msg::PushBatch back;
      CHECK_OK(msg::DecodePushBatch(enc.data(), enc.size(), &back));
      CHECK(back.pages.size() == c.second - c.first && back.pages.size() <= kMaxBatchPages);
    }
  };
  // 120 three-byte ranges a page: 20 + 120 * 15 = 1820 bytes, 4609 would fit in 8 MiB: the page limit cuts.
  std::vector<msg::PushPage> pages = fragmented(1500, 120, 3);
  Cuts cuts = plan::CutBatches(pages);
  CHECK((cuts == Cuts{{0, 1024}, {1024, 1500}}));
  check_encoded(pages, cuts);
  // 1024 four-byte ranges a page (the page full): 20 + 1024 * 16 = 16404 bytes, 511 fit in 8 MiB (512 would be
  // 8398848): the byte limit cuts.
  pages = fragmented(600, 1024, 4);
  cuts = plan::CutBatches(pages);
  CHECK((cuts == Cuts{{0, 511}, {511, 600}}));
  check_encoded(pages, cuts);
}

TEST_MAIN("commit_plan")
