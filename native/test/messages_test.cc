// Engine message codecs: round trips, and every decoder rejects truncated / oversized / out-of-page input.
#include <cstring>

#include "engine/messages.h"
#include "test_util.h"

using namespace hotpot;
using namespace hotpot::engine;

TEST(FetchRoundTrip) {
  std::vector<uint8_t> b;
  msg::EncodeFetchRequest({7, 100, 64, msg::kFetchCoherent}, &b);
  msg::FetchRequest r;
  CHECK_OK(msg::DecodeFetchRequest(b.data(), b.size(), &r));
  CHECK(r.dataset == 7 && r.first_page == 100 && r.count == 64 && r.flags == 1 && r.generation == 0);
  // The chunk-map generation the sender routed by travels with the request.
  msg::EncodeFetchRequest({7, 100, 1, msg::kFetchCoherent, 42}, &b);
  CHECK(b.size() == 32);
  CHECK_OK(msg::DecodeFetchRequest(b.data(), b.size(), &r));
  CHECK(r.generation == 42);
  CHECK(!msg::DecodeFetchRequest(b.data(), 24, &r).ok());  // the old 24-byte form is refused
  msg::EncodeFetchRequest({7, 100, 65, 0}, &b);
  CHECK(!msg::DecodeFetchRequest(b.data(), b.size(), &r).ok());
  msg::EncodeFetchRequest({7, 100, 0, 0}, &b);
  CHECK(!msg::DecodeFetchRequest(b.data(), b.size(), &r).ok());
  msg::EncodeFetchRequest({7, UINT64_MAX, 1, 0}, &b);
  CHECK(!msg::DecodeFetchRequest(b.data(), b.size(), &r).ok());
  CHECK(!msg::DecodeFetchRequest(b.data(), b.size() - 1, &r).ok());

  std::vector<msg::FetchedPage> meta(2);
  meta[0] = {5, 3};
  meta[1] = {0, 3};
  std::vector<uint8_t> pages(2 * 4096, 0xAB);
  msg::EncodeFetchResponse(meta, pages.data(), false, &b);
  std::vector<msg::FetchedPage> got;
  const uint8_t* p = nullptr;
  CHECK_OK(msg::DecodeFetchResponse(b.data(), b.size(), 2, false, &got, &p));
  CHECK(got.size() == 2 && got[0].version == 5 && got[1].state == 3 && p[8191] == 0xAB);
  CHECK(got[0].open_commit == 0 && got[1].open_committer == 0);
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size(), 3, false, &got, &p).ok());
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size() - 1, 2, false, &got, &p).ok());
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size(), 2, true, &got, &p).ok());  // no lock trailer
  b[8] = 9;  // bad state
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size(), 2, false, &got, &p).ok());
  // A revalidation answer carries, per page, the multi-part commit holding it locked (if any).
  meta[1].open_committer = 4;
  meta[1].open_commit = (uint64_t(4) << 40) | 77;
  msg::EncodeFetchResponse(meta, pages.data(), true, &b);
  CHECK_OK(msg::DecodeFetchResponse(b.data(), b.size(), 2, true, &got, &p));
  CHECK(got[0].open_committer == 0 && got[0].open_commit == 0 && p[0] == 0xAB);
  CHECK(got[1].open_committer == 4 && got[1].open_commit == ((uint64_t(4) << 40) | 77));
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size(), 2, false, &got, &p).ok());
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size() - 12, 2, true, &got, &p).ok());
}

// Transport rdma: a request may ask for the pages' location (not with revalidation); the located answer carries the
// region, the offset and one checksum per page, and is told apart from an answer with the bytes by size and magic.
TEST(FetchLocatedRoundTripAndBounds) {
  std::vector<uint8_t> b;
  msg::FetchRequest r;
  msg::EncodeFetchRequest({7, 100, 4, msg::kFetchCoherent | msg::kFetchLocate, 3}, &b);
  CHECK_OK(msg::DecodeFetchRequest(b.data(), b.size(), &r));
  CHECK(r.flags == (msg::kFetchCoherent | msg::kFetchLocate));
  msg::EncodeFetchRequest({7, 100, 4, msg::kFetchRevalidate | msg::kFetchLocate}, &b);
  CHECK(!msg::DecodeFetchRequest(b.data(), b.size(), &r).ok());
  msg::EncodeFetchRequest({7, 100, 4, 1u << 4}, &b);  // unknown flag
  CHECK(!msg::DecodeFetchRequest(b.data(), b.size(), &r).ok());

  std::vector<msg::FetchedPage> meta(3);
  meta[0] = {5, 3};
  meta[1] = {6, 3, msg::kFetchedCheck};
  meta[2] = {0, 3};
  msg::FetchLocation at;
  at.region = 9;
  at.offset = 12 * 4096;
  at.crc = {0x11111111, 0x22222222, 0xDEADBEEF};
  msg::EncodeFetchLocated(meta, at, &b);
  CHECK(b.size() == 3 * 20 + 16 && msg::IsFetchLocated(b.data(), b.size(), 3));
  CHECK(!msg::IsFetchLocated(b.data(), b.size(), 2) && !msg::IsFetchLocated(b.data(), b.size() - 1, 3));
  std::vector<msg::FetchedPage> got;
  msg::FetchLocation where;
  CHECK_OK(msg::DecodeFetchLocated(b.data(), b.size(), 3, &got, &where));
  CHECK(got.size() == 3 && got[1].version == 6 && got[1].flags == msg::kFetchedCheck && got[2].state == 3);
  CHECK(where.region == 9 && where.offset == 12 * 4096 && where.crc == at.crc);
  const uint8_t* p = nullptr;
  CHECK(!msg::DecodeFetchResponse(b.data(), b.size(), 3, false, &got, &p).ok());  // not an answer with bytes
  std::vector<uint8_t> bad = b;
  bad[3 * 16] ^= 1;  // magic
  CHECK(!msg::IsFetchLocated(bad.data(), bad.size(), 3));
  CHECK(!msg::DecodeFetchLocated(bad.data(), bad.size(), 3, &got, &where).ok());
  bad = b;
  bad[3 * 16 + 8] = 1;  // offset not page-aligned
  CHECK(!msg::DecodeFetchLocated(bad.data(), bad.size(), 3, &got, &where).ok());
  bad = b;
  bad[8] = 9;  // bad state
  CHECK(!msg::DecodeFetchLocated(bad.data(), bad.size(), 3, &got, &where).ok());
  // An answer with the bytes is never taken for a located one.
  std::vector<uint8_t> pages(3 * 4096, 0);
  msg::EncodeFetchResponse(meta, pages.data(), false, &b);
  CHECK(!msg::IsFetchLocated(b.data(), b.size(), 3));
}

TEST(PrepareRoundTripAndBounds) {
  msg::PrepareRequest pr;
  pr.txid = 99;
  pr.dataset = 3;
  pr.replicas = 2;
  pr.flags = msg::kPrepareOneShot;
  msg::Range r;
  r.offset = 4096 + 10;
  r.old_bytes = {1, 2, 3};
  r.new_bytes = {4, 5, 6};
  pr.ranges.push_back(r);
  r.offset = 3 * 4096;
  r.old_bytes.assign(4096, 0);
  r.new_bytes.assign(4096, 1);
  pr.ranges.push_back(r);
  std::vector<uint8_t> b;
  msg::EncodePrepareRequest(pr, &b);
  CHECK(b.size() == msg::PrepareRequestSize(pr));
  msg::PrepareRequest got;
  CHECK_OK(msg::DecodePrepareRequest(b.data(), b.size(), &got));
  CHECK(got.txid == 99 && got.dataset == 3 && got.replicas == 2 && got.flags == 1 && got.ranges.size() == 2);
  CHECK(got.ranges[0].offset == 4106 && got.ranges[0].new_bytes[2] == 6 && got.ranges[1].len() == 4096);
  // Every truncation fails cleanly.
  for (size_t n = 0; n < b.size(); n += (n < 64 ? 1 : 997)) CHECK(!msg::DecodePrepareRequest(b.data(), n, &got).ok());
  b.push_back(0);
  CHECK(!msg::DecodePrepareRequest(b.data(), b.size(), &got).ok());
  // A range crossing a page is rejected.
  pr.ranges.resize(1);
  pr.ranges[0].offset = 4096 - 2;
  msg::EncodePrepareRequest(pr, &b);
  CHECK(!msg::DecodePrepareRequest(b.data(), b.size(), &got).ok());
  // A huge count with a small payload is rejected before allocating.
  pr.ranges[0].offset = 0;
  msg::EncodePrepareRequest(pr, &b);
  b[28] = 0xff;
  b[29] = 0xff;
  b[30] = 0xff;
  CHECK(!msg::DecodePrepareRequest(b.data(), b.size(), &got).ok());
  // The committer's deadline rides last and round-trips; a flag without the field is rejected.
  pr.deadline_unix_ms = 1790000000123ull;
  msg::EncodePrepareRequest(pr, &b);
  CHECK(b.size() == msg::PrepareRequestSize(pr));
  CHECK_OK(msg::DecodePrepareRequest(b.data(), b.size(), &got));
  CHECK(got.deadline_unix_ms == 1790000000123ull && (got.flags & msg::kPrepareDeadline));
  CHECK(!msg::DecodePrepareRequest(b.data(), b.size() - 8, &got).ok());
  pr.deadline_unix_ms = 0;
  msg::EncodePrepareRequest(pr, &b);
  CHECK_OK(msg::DecodePrepareRequest(b.data(), b.size(), &got));
  CHECK(got.deadline_unix_ms == 0 && !(got.flags & msg::kPrepareDeadline));
}

TEST(ConflictsAndSmall) {
  std::vector<uint8_t> b;
  msg::EncodeConflicts({{10, 3}, {8192, 4096}}, &b);
  std::vector<msg::Conflict> c;
  CHECK_OK(msg::DecodeConflicts(b.data(), b.size(), &c));
  CHECK(c.size() == 2 && c[1].offset == 8192 && c[1].len == 4096);
  CHECK(!msg::DecodeConflicts(b.data(), b.size() - 1, &c).ok());
  uint64_t t = 0;
  msg::EncodeTxid(1234567890123ull, &b);
  CHECK_OK(msg::DecodeTxid(b.data(), b.size(), &t));
  CHECK(t == 1234567890123ull);
  CHECK(!msg::DecodeTxid(b.data(), 7, &t).ok());
  uint32_t u = 0;
  msg::EncodeU32(3, &b);
  CHECK_OK(msg::DecodeU32(b.data(), b.size(), &u));
  CHECK(u == 3);
}

TEST(PushBatchApplyReplyAndCommitId) {
  msg::PushBatch b;
  b.committer = 3;
  b.flags = msg::kPushOpen;
  b.commit_id = 77;
  b.dataset = 5;
  b.pages.push_back(msg::PushPage{4, 1, {msg::PushRange{4096 + 7, {3, 4}}, msg::PushRange{4096 + 100, {5}}}});
  b.pages.push_back(msg::PushPage{2, 0, {msg::PushRange{3 * 4096, {6, 6, 6}}}});
  std::vector<uint8_t> enc;
  msg::EncodePushBatch(b, &enc);
  msg::PushBatch got;
  CHECK_OK(msg::DecodePushBatch(enc.data(), enc.size(), &got));
  CHECK(got.committer == 3 && got.flags == msg::kPushOpen && got.commit_id == 77 && got.dataset == 5);
  CHECK(got.pages.size() == 2 && got.pages[0].ranges.size() == 2 && got.pages[1].version == 2);
  CHECK(got.pages[0].base == 1 && got.pages[1].base == 0);
  CHECK(got.pages[0].ranges[1].offset == 4096 + 100 && got.pages[1].ranges[0].bytes.size() == 3);
  for (size_t n = 0; n < enc.size(); n++) CHECK(!msg::DecodePushBatch(enc.data(), n, &got).ok());
  // One entry's ranges must stay in one page; a page may not be listed twice; unknown flags are refused.
  msg::PushBatch bad = b;
  bad.pages[0].ranges[1].offset = 2 * 4096;
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  bad = b;
  bad.pages[1].ranges[0].offset = 4096 + 200;
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  bad = b;
  bad.pages[0].base = 4;  // a base is below its version
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  bad = b;
  bad.flags = 1u << 7;
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  // A replica entry is exactly one whole page.
  bad = b;
  bad.flags = msg::kPushReplica;
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  bad.pages = {msg::PushPage{1, 0, {msg::PushRange{8192, std::vector<uint8_t>(4096, 1)}}}};
  msg::EncodePushBatch(bad, &enc);
  CHECK_OK(msg::DecodePushBatch(enc.data(), enc.size(), &got));
  // Version 0 (a page served as zeros, handed off with its chunk) only in a replica, with base 0.
  bad.pages = {msg::PushPage{0, 0, {msg::PushRange{8192, std::vector<uint8_t>(4096, 0)}}}};
  msg::EncodePushBatch(bad, &enc);
  CHECK_OK(msg::DecodePushBatch(enc.data(), enc.size(), &got));
  CHECK(got.pages.size() == 1 && got.pages[0].version == 0);
  bad.pages[0].base = 1;
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  bad = b;
  bad.pages[1].version = 0;
  msg::EncodePushBatch(bad, &enc);
  CHECK(!msg::DecodePushBatch(enc.data(), enc.size(), &got).ok());
  // APPLY reply: copies, the marked nodes, the missed ones; an older owner's reply stops after the copies or the
  // marked nodes.
  msg::EncodeApplyReply(2, msg::MarkedNodes{{1, 3}, {3}}, &enc);
  uint32_t copies = 0;
  msg::MarkedNodes marked;
  CHECK_OK(msg::DecodeApplyReply(enc.data(), enc.size(), &copies, &marked));
  CHECK(copies == 2 && marked.marked == std::vector<uint32_t>({1, 3}) && marked.missed == std::vector<uint32_t>({3}));
  CHECK_OK(msg::DecodeApplyReply(enc.data(), 4 + 4 + 8, &copies, &marked));
  CHECK(copies == 2 && marked.marked.size() == 2 && marked.missed.empty());
  CHECK_OK(msg::DecodeApplyReply(enc.data(), 4, &copies, &marked));
  CHECK(copies == 2 && marked.marked.empty() && marked.missed.empty());
  CHECK(!msg::DecodeApplyReply(enc.data(), enc.size() - 1, &copies, &marked).ok());
  enc[4] = 0xff;
  CHECK(!msg::DecodeApplyReply(enc.data(), enc.size(), &copies, &marked).ok());
  // DONE: the commit id, and the check flag for a node that may have missed a push.
  uint64_t id = 0;
  bool check = true;
  msg::EncodeDone(77, false, &enc);
  CHECK_OK(msg::DecodeDone(enc.data(), enc.size(), &id, &check));
  CHECK(id == 77 && !check && enc.size() == 8);
  msg::EncodeDone(78, true, &enc);
  CHECK_OK(msg::DecodeDone(enc.data(), enc.size(), &id, &check));
  CHECK(id == 78 && check);
  enc[8] = 2;
  CHECK(!msg::DecodeDone(enc.data(), enc.size(), &id, &check).ok());
  CHECK(!msg::DecodeDone(enc.data(), 7, &id, &check).ok());
  // PREPARE carries the commit id last.
  msg::PrepareRequest pr;
  pr.txid = 5;
  pr.dataset = 1;
  pr.replicas = 1;
  msg::Range r;
  r.offset = 10;
  r.old_bytes = {1};
  r.new_bytes = {2};
  pr.ranges.push_back(r);
  pr.deadline_unix_ms = 123;
  pr.commit_id = 4;
  msg::EncodePrepareRequest(pr, &enc);
  msg::PrepareRequest gp;
  CHECK_OK(msg::DecodePrepareRequest(enc.data(), enc.size(), &gp));
  CHECK(gp.commit_id == 4 && gp.deadline_unix_ms == 123 && (gp.flags & msg::kPrepareCommitId));
  CHECK(gp.generation == 0 && !(gp.flags & msg::kPrepareGeneration));
  // With the chunk-map generation (last): round trip; a zero generation behind the flag is malformed.
  pr.generation = 9;
  msg::EncodePrepareRequest(pr, &enc);
  CHECK(enc.size() == msg::PrepareRequestSize(pr));
  CHECK_OK(msg::DecodePrepareRequest(enc.data(), enc.size(), &gp));
  CHECK(gp.generation == 9 && gp.commit_id == 4 && (gp.flags & msg::kPrepareGeneration));
  for (size_t i = enc.size() - 8; i < enc.size(); i++) enc[i] = 0;
  CHECK(!msg::DecodePrepareRequest(enc.data(), enc.size(), &gp).ok());
  CHECK(!msg::DecodePrepareRequest(enc.data(), enc.size() - 8, &gp).ok());  // flag without the field
}

TEST(AbortReplyRoundTrip) {
  std::vector<uint8_t> b;
  msg::AbortState st;
  uint32_t copies = 0;
  msg::EncodeAbortReply(msg::AbortState::kApplied, 3, &b);
  CHECK_OK(msg::DecodeAbortReply(b.data(), b.size(), &st, &copies));
  CHECK(st == msg::AbortState::kApplied && copies == 3);
  msg::EncodeAbortReply(msg::AbortState::kNothingApplied, 9, &b);
  CHECK(b.size() == 1);
  CHECK_OK(msg::DecodeAbortReply(b.data(), b.size(), &st, &copies));
  CHECK(st == msg::AbortState::kNothingApplied && copies == 0);
  CHECK_OK(msg::DecodeAbortReply(nullptr, 0, &st, &copies));
  CHECK(st == msg::AbortState::kUnknown);
  // What an owner answers when it cannot tell (it was decoded as malformed before).
  msg::EncodeAbortReply(msg::AbortState::kUnknown, 0, &b);
  CHECK_OK(msg::DecodeAbortReply(b.data(), b.size(), &st, &copies));
  CHECK(st == msg::AbortState::kUnknown);
  const uint8_t bad_state[1] = {7};
  CHECK(!msg::DecodeAbortReply(bad_state, 1, &st, &copies).ok());
  const uint8_t short_applied[2] = {1, 0};
  CHECK(!msg::DecodeAbortReply(short_applied, 2, &st, &copies).ok());
  const uint8_t long_applying[2] = {2, 0};
  CHECK(!msg::DecodeAbortReply(long_applying, 2, &st, &copies).ok());
}

// PREPARE_COPY and the part-key lists: round trip, and every malformed shape refused.
TEST(PartCopyAndPartKeys) {
  msg::PartCopy c;
  c.committer = 2;
  c.txid = 77;
  c.dataset = 5;
  c.commit_id = 70;
  c.flags = msg::kCopyOneShot;
  c.ranges = {msg::PushRange{8192 + 10, {1, 2, 3}}, msg::PushRange{8192 + 100, {4}}, msg::PushRange{40960, {9, 9}}};
  c.versions = {4, 12};
  std::vector<uint8_t> b;
  msg::EncodePartCopy(c, &b);
  msg::PartCopy d;
  CHECK_OK(msg::DecodePartCopy(b.data(), b.size(), &d));
  CHECK(d.committer == 2 && d.txid == 77 && d.dataset == 5 && d.commit_id == 70 && d.flags == msg::kCopyOneShot);
  CHECK(d.ranges.size() == 3 && d.ranges[2].offset == 40960 && d.ranges[2].bytes == std::vector<uint8_t>({9, 9}));
  CHECK(d.versions == std::vector<uint64_t>({4, 12}));
  for (size_t cut = 0; cut < b.size(); cut++) CHECK(!msg::DecodePartCopy(b.data(), cut, &d).ok());
  b.push_back(0);
  CHECK(!msg::DecodePartCopy(b.data(), b.size(), &d).ok());
  auto refused = [&](msg::PartCopy bad) {
    std::vector<uint8_t> x;
    msg::EncodePartCopy(bad, &x);
    msg::PartCopy out;
    return msg::DecodePartCopy(x.data(), x.size(), &out).code() == Code::kInvalidArgument;
  };
  msg::PartCopy bad = c;
  bad.versions = {4};  // two pages, one version
  CHECK(refused(bad));
  bad = c;
  bad.versions = {4, 0};
  CHECK(refused(bad));
  bad = c;
  bad.ranges[1].offset = 8192 + 11;  // overlaps the first range
  CHECK(refused(bad));
  bad = c;
  bad.ranges[0].offset = 8192 + 4095;  // crosses into the next page
  CHECK(refused(bad));
  bad = c;
  bad.ranges.clear();
  bad.versions.clear();
  CHECK(refused(bad));
  bad = c;
  bad.flags = 32;  // no such flag
  CHECK(refused(bad));
  msg::PartCopy applied = c;  // kCopyApplied travels
  applied.flags = msg::kCopyOneShot | msg::kCopyApplied;
  msg::EncodePartCopy(applied, &b);
  CHECK_OK(msg::DecodePartCopy(b.data(), b.size(), &d));
  CHECK(d.flags == (msg::kCopyOneShot | msg::kCopyApplied));
  msg::PartCopy frozen = c;  // and kCopyFrozen
  frozen.flags = msg::kCopyFrozen;
  msg::EncodePartCopy(frozen, &b);
  CHECK_OK(msg::DecodePartCopy(b.data(), b.size(), &d));
  CHECK(d.flags == msg::kCopyFrozen);
  msg::PartCopy stamped = c;  // the PREPARE's epoch stamp travels after the versions, flagged
  stamped.sender_epoch = 4242;
  msg::EncodePartCopy(stamped, &b);
  CHECK_OK(msg::DecodePartCopy(b.data(), b.size(), &d));
  CHECK(d.sender_epoch == 4242 && d.flags == c.flags);
  CHECK(!msg::DecodePartCopy(b.data(), b.size() - 1, &d).ok());  // a cut stamp
  std::vector<uint8_t> zero = b;
  for (size_t i = zero.size() - 8; i < zero.size(); i++) zero[i] = 0;
  CHECK(!msg::DecodePartCopy(zero.data(), zero.size(), &d).ok());  // a stamp of 0
  msg::EncodePartCopy(c, &b);
  CHECK_OK(msg::DecodePartCopy(b.data(), b.size(), &d));
  CHECK(d.sender_epoch == 0);  // none: not known
  CHECK(d.releases.empty());
  msg::PartCopy releasing = stamped;  // releases ride after the stamp, flagged; the flag is not the copy's
  releasing.releases = {{2, 70}, {4, 1ull << 40}};
  msg::EncodePartCopy(releasing, &b);
  CHECK_OK(msg::DecodePartCopy(b.data(), b.size(), &d));
  CHECK(d.releases == releasing.releases && d.sender_epoch == 4242 && d.flags == c.flags);
  for (size_t cut = b.size() - 28; cut < b.size(); cut++) CHECK(!msg::DecodePartCopy(b.data(), cut, &d).ok());
  zero = b;
  for (size_t i = zero.size() - 12; i < zero.size() - 8; i++) zero[i] = 0;
  CHECK(!msg::DecodePartCopy(zero.data(), zero.size(), &d).ok());  // a release without a committer
  zero = b;
  zero[zero.size() - 28] = 0;  // the count says 0: refused, not read as none
  CHECK(!msg::DecodePartCopy(zero.data(), zero.size() - 24, &d).ok());
  bad = c;
  bad.releases.assign(msg::kMaxPartKeys + 1, {1, 1});
  CHECK(refused(bad));
  bad = c;
  bad.committer = 0;
  CHECK(refused(bad));

  std::vector<std::pair<uint32_t, uint64_t>> keys = {{1, 10}, {3, 1ull << 50}}, got;
  msg::EncodePartKeys(keys, &b);
  CHECK_OK(msg::DecodePartKeys(b.data(), b.size(), &got));
  CHECK(got == keys);
  CHECK(!msg::DecodePartKeys(b.data(), b.size() - 1, &got).ok());
  msg::EncodePartKeys({}, &b);
  CHECK(!msg::DecodePartKeys(b.data(), b.size(), &got).ok());
  msg::EncodePartKeys({{0, 5}}, &b);
  CHECK(!msg::DecodePartKeys(b.data(), b.size(), &got).ok());

  // LIST_COPIES: the query and the answer.
  msg::CopyQuery q{5, 64, 16}, q2;
  msg::EncodeCopyQuery(q, &b);
  CHECK_OK(msg::DecodeCopyQuery(b.data(), b.size(), &q2));
  CHECK(q2.dataset == 5 && q2.first_page == 64 && q2.count == 16);
  q.count = 0;
  msg::EncodeCopyQuery(q, &b);
  CHECK(!msg::DecodeCopyQuery(b.data(), b.size(), &q2).ok());
  std::vector<msg::OwnedCopy> list = {{3, c}, {9, c}}, back;
  list[1].copy.txid = 78;
  msg::EncodeCopyList(list, &b);
  CHECK_OK(msg::DecodeCopyList(b.data(), b.size(), &back));
  CHECK(back.size() == 2 && back[0].owner == 3 && back[1].owner == 9 && back[1].copy.txid == 78 &&
        back[0].copy.ranges.size() == 3);
  for (size_t cut = 0; cut < b.size(); cut++) CHECK(!msg::DecodeCopyList(b.data(), cut, &back).ok());
  msg::EncodeCopyList({}, &b);
  CHECK_OK(msg::DecodeCopyList(b.data(), b.size(), &back));
  CHECK(back.empty());
}

TEST(TypeNamesForLogLines) {
  CHECK(msg::TypeName(msg::kPrepare) == "PREPARE");
  CHECK(msg::TypeName(msg::kFetchPages) == "FETCH_PAGES");
  CHECK(msg::TypeName(msg::kKeepApplied) == "KEEP_APPLIED");
  CHECK(msg::TypeName(21) == "type 21");  // retired
  CHECK(msg::TypeName(999) == "type 999");
}

TEST_MAIN("messages")
