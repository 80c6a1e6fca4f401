// Wire pieces of the consistency modes: PREPARE read checks and lease sections, lease certificates, and the
// shim COMMIT extras (docs/design/consistency.md).
#include "engine/lease.h"
#include "engine/messages.h"
#include "shimproto/protocol.h"
#include "test_util.h"

using namespace hotpot;
using namespace hotpot::engine;

TEST(PrepareWithReadsAndLeaseRoundTrips) {
  msg::PrepareRequest pr;
  pr.txid = 9;
  pr.dataset = 3;
  pr.replicas = 2;
  pr.reads.push_back({4096 + 8, 4, 17});
  pr.reads.push_back({0, 4096, 0});
  pr.lease = {1, 2, 3};
  std::vector<uint8_t> b;
  msg::EncodePrepareRequest(pr, &b);
  CHECK(b.size() == msg::PrepareRequestSize(pr));
  msg::PrepareRequest got;
  CHECK_OK(msg::DecodePrepareRequest(b.data(), b.size(), &got));
  CHECK(got.ranges.empty());  // a read-only validation
  CHECK(got.reads.size() == 2 && got.reads[0].offset == 4104 && got.reads[0].len == 4 && got.reads[0].version == 17);
  CHECK(got.lease == pr.lease);
  CHECK((got.flags & msg::kPrepareReads) && (got.flags & msg::kPrepareLease));
  for (size_t n = 0; n < b.size(); n++) CHECK(!msg::DecodePrepareRequest(b.data(), n, &got).ok());
  // A read check crossing a page is refused.
  pr.reads = {{4090, 16, 1}};
  pr.lease.clear();
  msg::EncodePrepareRequest(pr, &b);
  CHECK(!msg::DecodePrepareRequest(b.data(), b.size(), &got).ok());
  // No ranges and no reads is still malformed.
  pr.reads.clear();
  msg::EncodePrepareRequest(pr, &b);
  CHECK(!msg::DecodePrepareRequest(b.data(), b.size(), &got).ok());
}

TEST(LeaseCertificateVerifiesOnlyWithTheSecret) {
  LeaseCert c;
  c.dataset = 5;
  c.holder_node = 2;
  c.epoch = 77;
  c.expiry_unix_ms = 123456789;
  c.ranges = {{10, 3}, {100, 1}};
  const std::string secret = "0123456789abcdef-secret";
  std::vector<uint8_t> b = EncodeLease(c, secret);
  LeaseCert got;
  CHECK_OK(DecodeLease(b, secret, &got));
  CHECK(got.dataset == 5 && got.holder_node == 2 && got.epoch == 77 && got.expiry_unix_ms == 123456789);
  CHECK(got.Covers(10) && got.Covers(12) && !got.Covers(13) && got.Covers(100) && !got.Covers(9));
  CHECK(DecodeLease(b, "another-secret-0123", &got).code() == Code::kPermissionDenied);
  for (size_t i = 0; i < b.size(); i++) {
    std::vector<uint8_t> bad = b;
    bad[i] ^= 1;
    CHECK(!DecodeLease(bad, secret, &got).ok());
  }
  for (size_t n = 0; n < b.size(); n++) {
    std::vector<uint8_t> cut(b.begin(), b.begin() + n);
    CHECK(!DecodeLease(cut, secret, &got).ok());
  }
}

TEST(ShimCommitExtrasRoundTrip) {
  shimproto::Writer w;
  shimproto::EncodeCommitBatchHeader(&w, 4, 0, shimproto::kCommitFlagExtras, 0);
  shimproto::EncodeCommitExtras(&w, {{8, 16}, {4096, 1}}, {9, 9});
  shimproto::CommitBatch cb;
  CHECK_OK(shimproto::DecodeCommitBatch(w.buf(), &cb));
  CHECK(cb.session == 4 && cb.n == 0 && cb.reads.size() == 2 && cb.reads[1].offset == 4096 && cb.lease.size() == 2);
  for (size_t n = 0; n < w.buf().size(); n++) {
    std::vector<uint8_t> cut(w.buf().begin(), w.buf().begin() + n);
    CHECK(!shimproto::DecodeCommitBatch(cut, &cb).ok());
  }
  // Extras are only allowed on the final batch.
  shimproto::Writer w2;
  shimproto::EncodeCommitBatchHeader(&w2, 4, 0, shimproto::kCommitFlagExtras | shimproto::kCommitFlagMore, 0);
  shimproto::EncodeCommitExtras(&w2, {}, {});
  CHECK(!shimproto::DecodeCommitBatch(w2.buf(), &cb).ok());
}

TEST_MAIN("consistency")
