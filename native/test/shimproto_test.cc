// Shim protocol payload codecs (native/src/shimproto/protocol.h): round trips, and the canonical-form rules the
// fuzz target (native/fuzz/shimproto_fuzz.cc) checks by re-encoding what a decoder accepted.
#include <string>
#include <vector>

#include "shimproto/protocol.h"
#include "test_util.h"

using namespace hotpot;
using namespace hotpot::shimproto;

TEST(hello_round_trips_and_refuses_other_lengths) {
  uint32_t version = 0;
  CHECK_OK(DecodeHelloRequest(EncodeHelloRequest(kProtocolVersion), &version));
  CHECK(version == kProtocolVersion);
  HelloResponse hr;
  CHECK_OK(DecodeHelloResponse(EncodeHelloResponse(HelloResponse{kProtocolVersion, 4321}), &hr));
  CHECK(hr.version == kProtocolVersion && hr.server_pid == 4321);
  CHECK(DecodeHelloRequest(std::vector<uint8_t>(3), &version).code() == Code::kInvalidArgument);
  CHECK(DecodeHelloRequest(std::vector<uint8_t>(5), &version).code() == Code::kInvalidArgument);
  CHECK(DecodeHelloResponse(std::vector<uint8_t>(4), &hr).code() == Code::kInvalidArgument);
  CHECK(DecodeHelloResponse(std::vector<uint8_t>(9), &hr).code() == Code::kInvalidArgument);
}

// Regression (found by shimproto_fuzz): the OPEN request and response padding was skipped unread, so a peer could
// put anything there and a later version could never give those bytes a meaning.
TEST(open_padding_must_be_zero) {
  OpenRequest orq;
  orq.name = "ds";
  orq.create = true;
  orq.size = 1 << 20;
  orq.replicas = 2;
  std::vector<uint8_t> req = EncodeOpenRequest(orq);
  OpenRequest got;
  CHECK_OK(DecodeOpenRequest(req, &got));
  CHECK(got.name == "ds" && got.create && got.size == (1u << 20) && got.replicas == 2);
  for (size_t at : {13, 14, 15}) {  // after flags u32, size u64, mode u8
    std::vector<uint8_t> bad = req;
    bad[at] = 0x15;
    Status st = DecodeOpenRequest(bad, &got);
    CHECK(st.code() == Code::kInvalidArgument && st.message().find("padding") != std::string::npos);
  }
  std::vector<uint8_t> resp = EncodeOpenResponse(OpenResponse{3, 7, 1 << 20, 1, 2, 1 << 16});
  OpenResponse ores;
  CHECK_OK(DecodeOpenResponse(resp, &ores));
  CHECK(ores.session == 3 && ores.dataset == 7 && ores.chunk_size == (1u << 16));
  for (size_t at : {25, 26, 27}) {  // after session, dataset, size u64 and mode u8
    std::vector<uint8_t> bad = resp;
    bad[at] = 1;
    CHECK(DecodeOpenResponse(bad, &ores).code() == Code::kInvalidArgument);
  }
}

// Regression (the re-encode check of shimproto_fuzz): a COMMIT response could carry an OK status with a message
// (dropped on decode) or a message longer than any encoder sends.
TEST(commit_response_status_message_is_empty_for_ok_and_bounded) {
  CommitResponse cr;
  cr.status = Status(Code::kAborted, "conflict at 4096");
  cr.copies = 1;
  cr.conflicts = {CommitConflict{4096, 8}, CommitConflict{9000, 1}};
  CommitResponse got;
  CHECK_OK(DecodeCommitResponse(EncodeCommitResponse(cr), &got));
  CHECK(got.status.code() == Code::kAborted && got.status.message() == "conflict at 4096");
  CHECK(got.conflicts.size() == 2 && got.conflicts[1].offset == 9000);
  // A long message is cut to the bound by the encoder, and accepted at the bound.
  cr.status = Status(Code::kInternal, std::string(kMaxStatusMessage + 100, 'x'));
  CHECK_OK(DecodeCommitResponse(EncodeCommitResponse(cr), &got));
  CHECK(got.status.message().size() == kMaxStatusMessage);
  // Hand-made: OK with a message, and a message one byte over the bound.
  for (uint32_t code : {0u, uint32_t(Code::kInternal)}) {
    const size_t len = code == 0 ? 1 : kMaxStatusMessage + 1;
    Writer w;
    w.U32(code);
    w.U16(uint16_t(len));
    std::string msg(len, 'm');
    w.Bytes(msg.data(), msg.size());
    w.U32(0);
    w.U64(0);
    w.U64(0);
    w.U64(0);
    w.U32(0);
    CHECK(DecodeCommitResponse(w.buf(), &got).code() == Code::kInvalidArgument);
  }
  cr.status = Status::Ok();
  CHECK_OK(DecodeCommitResponse(EncodeCommitResponse(cr), &got));
  CHECK(got.status.ok());
}

TEST(every_truncation_of_a_valid_payload_is_refused) {
  OpenRequest orq;
  orq.name = "name";
  std::vector<std::vector<uint8_t>> all = {EncodeOpenRequest(orq), EncodeOpenResponse(OpenResponse{}),
                                           EncodeMapRequest(MapRequest{1, 0, 4096, 0}), EncodeSession(5),
                                           EncodeBaseRequest(5, {1, 2}), EncodePublicationResponse({7, 0})};
  for (size_t k = 0; k < all.size(); k++) {
    const std::vector<uint8_t>& full = all[k];
    for (size_t n = 0; n < full.size(); n++) {
      std::vector<uint8_t> cut(full.begin(), full.begin() + long(n));
      OpenRequest a;
      OpenResponse b;
      MapRequest c;
      uint64_t s;
      std::vector<uint64_t> pages;
      PublicationResponse e;
      Status st = k == 0   ? DecodeOpenRequest(cut, &a)
                  : k == 1 ? DecodeOpenResponse(cut, &b)
                  : k == 2 ? DecodeMapRequest(cut, &c)
                  : k == 3 ? DecodeSession(cut, &s)
                  : k == 4 ? DecodeBaseRequest(cut, &s, &pages)
                           : DecodePublicationResponse(cut, &e);
      CHECK(st.code() == Code::kInvalidArgument);
    }
  }
}

TEST_MAIN("shimproto")
