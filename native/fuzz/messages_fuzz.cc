// Fuzz target for the engine's peer message decoders (native/src/engine/messages.h): every payload an
// authenticated peer can send. Each decoder must refuse or accept without reading out of bounds; an accepted
// message must re-encode to exactly the input (the formats have no slack), which checks the codecs agree.
// Builds with the standalone driver (driver.cc) or with clang -fsanitize=fuzzer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/messages.h"
#include "fuzz_input.h"

using namespace hotpot;
using namespace hotpot::engine;

namespace {

void Same(const std::vector<uint8_t>& enc, const uint8_t* data, size_t size) {
  if (enc.size() != size || (size != 0 && !std::equal(enc.begin(), enc.end(), data))) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t kind = data[0] % 9;
  const uint8_t* p = data + 1;
  const size_t n = size - 1;
  std::vector<uint8_t> enc;
  switch (kind) {
    case 0: {
      msg::PrepareRequest r;
      if (msg::DecodePrepareRequest(p, n, &r).ok()) {
        msg::EncodePrepareRequest(r, &enc);
        if (enc.size() != msg::PrepareRequestSize(r)) __builtin_trap();
      }
      break;
    }
    case 1: {
      msg::PushBatch b;
      if (msg::DecodePushBatch(p, n, &b).ok()) {
        if (b.pages.empty() || b.pages.size() > msg::kMaxPushPages) __builtin_trap();
        msg::EncodePushBatch(b, &enc);
        Same(enc, p, n);
      }
      break;
    }
    case 2: {
      uint32_t copies = 0;
      msg::MarkedNodes marked;
      // Older owners' shorter replies decode too; the full form must re-encode to the input.
      if (msg::DecodeApplyReply(p, n, &copies, &marked).ok() &&
          n == 12 + 4 * (marked.marked.size() + marked.missed.size())) {
        msg::EncodeApplyReply(copies, marked, &enc);
        Same(enc, p, n);
      }
      uint64_t id = 0;
      bool check = false;
      if (msg::DecodeDone(p, n, &id, &check).ok()) {
        msg::EncodeDone(id, check, &enc);
        Same(enc, p, n);
      }
      break;
    }
    case 3: {
      std::vector<msg::Conflict> c;
      (void)msg::DecodeConflicts(p, n, &c);
      break;
    }
    case 4: {
      msg::FetchRequest r;
      if (msg::DecodeFetchRequest(p, n, &r).ok()) {
        msg::EncodeFetchRequest(r, &enc);
        Same(enc, p, n);
      }
      break;
    }
    case 5: {
      msg::PartCopy c;
      if (msg::DecodePartCopy(p, n, &c).ok()) {
        if (c.ranges.empty() || c.versions.empty() || c.releases.size() > msg::kMaxPartKeys) __builtin_trap();
        msg::EncodePartCopy(c, &enc);
        Same(enc, p, n);
      }
      break;
    }
    case 6: {
      std::vector<std::pair<uint32_t, uint64_t>> keys;
      if (msg::DecodePartKeys(p, n, &keys).ok()) {
        if (keys.empty() || keys.size() > msg::kMaxPartKeys) __builtin_trap();
        msg::EncodePartKeys(keys, &enc);
        Same(enc, p, n);
      }
      break;
    }
    case 7: {
      std::vector<msg::OwnedCopy> list;
      if (msg::DecodeCopyList(p, n, &list).ok()) {
        msg::EncodeCopyList(list, &enc);
        Same(enc, p, n);
      }
      msg::CopyQuery q;
      if (msg::DecodeCopyQuery(p, n, &q).ok()) {
        msg::EncodeCopyQuery(q, &enc);
        Same(enc, p, n);
      }
      break;
    }
    default: {
      msg::AbortState as;
      uint32_t copies = 0;
      if (msg::DecodeAbortReply(p, n, &as, &copies).ok() && as != msg::AbortState::kUnknown) {
        msg::EncodeAbortReply(as, copies, &enc);
        Same(enc, p, n);
      }
      // FETCH_PAGES answers (plain and revalidation) for every count the input size could match.
      std::vector<msg::FetchedPage> meta;
      const uint8_t* pages = nullptr;
      for (uint32_t count = 0; count <= 2; count++)
        for (bool revalidate : {false, true})
          if (msg::DecodeFetchResponse(p, n, count, revalidate, &meta, &pages).ok()) {
            msg::EncodeFetchResponse(meta, pages, revalidate, &enc);
            Same(enc, p, n);
          }
      msg::FetchLocation at;
      for (uint32_t count = 0; count <= 3; count++)
        if (msg::DecodeFetchLocated(p, n, count, &meta, &at).ok()) {
          if (at.crc.size() != count || at.offset % 4096 != 0) __builtin_trap();
          msg::EncodeFetchLocated(meta, at, &enc);
          Same(enc, p, n);
        }
      break;
    }
  }
  return 0;
}

// Seeds for the standalone driver: one well-formed message of each kind.
extern "C" void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out) {
  auto with = [&](uint8_t kind, const std::vector<uint8_t>& body) {
    out->push_back(hotpot_fuzz::Selected(kind, body));
  };
  msg::PrepareRequest pr;
  pr.txid = 1;
  pr.dataset = 2;
  pr.replicas = 1;
  msg::Range r;
  r.offset = 4096 + 7;
  r.old_bytes = {1, 2};
  r.new_bytes = {3, 4};
  pr.ranges.push_back(r);
  pr.reads.push_back(msg::ReadCheck{8192, 16, 3});
  pr.deadline_unix_ms = 1790000000000ull;
  pr.commit_id = 9;
  std::vector<uint8_t> enc;
  msg::EncodePrepareRequest(pr, &enc);
  with(0, enc);
  msg::PushBatch b;
  b.committer = 1;
  b.flags = msg::kPushOpen;
  b.commit_id = 9;
  b.dataset = 2;
  b.pages.push_back(msg::PushPage{4, 1, {msg::PushRange{4096 + 7, {3, 4}}, msg::PushRange{4096 + 100, {5}}}});
  b.pages.push_back(msg::PushPage{2, 0, {msg::PushRange{3 * 4096, {6, 6, 6}}}});
  msg::EncodePushBatch(b, &enc);
  with(1, enc);
  msg::EncodeApplyReply(2, msg::MarkedNodes{{1, 3}, {3}}, &enc);
  with(2, enc);
  msg::EncodeConflicts({msg::Conflict{10, 4}}, &enc);
  with(3, enc);
  msg::FetchRequest fr;
  fr.dataset = 2;
  fr.first_page = 3;
  fr.count = 2;
  msg::EncodeFetchRequest(fr, &enc);
  with(4, enc);
  msg::FetchLocation at;
  at.region = 3;
  at.offset = 8192;
  at.crc = {7, 9};
  msg::EncodeFetchLocated({msg::FetchedPage{4, 3}, msg::FetchedPage{5, 3}}, at, &enc);
  with(8, enc);
  msg::PartCopy c;  // a prepare copy of a multi-part commit's part, frozen, with its PREPARE's epoch stamp
  c.committer = 1;
  c.txid = 5;
  c.dataset = 2;
  c.commit_id = 9;
  c.flags = msg::kCopyFrozen;
  c.ranges = {msg::PushRange{4096 + 7, {3, 4}}, msg::PushRange{3 * 4096, {6}}};
  c.versions = {4, 2};
  c.sender_epoch = 41;
  msg::EncodePartCopy(c, &enc);
  with(5, enc);
  c.releases = {{1, 3}, {2, 4}};  // and with releases riding on it
  msg::EncodePartCopy(c, &enc);
  with(5, enc);
}
