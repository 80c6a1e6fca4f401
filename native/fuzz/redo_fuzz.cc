// Fuzz target for the redo record body (pool internal DecodeRedoBody, native/src/pool/pool_internal.h): bytes read
// back from the redo log after a crash, where a torn or corrupted body must be refused, never trusted. The slot's
// CRC32C guards against torn writes, not against a decoder that reads out of bounds, so the decoder must hold on
// its own. An accepted body must re-encode to exactly the input, also after an owner record's commit id is taken
// from its parts (as recovery does).
// Builds with the standalone driver (driver.cc) or with clang -fsanitize=fuzzer.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/page.h"
#include "pool/pool_internal.h"

using namespace hotpot;
using namespace hotpot::pool;
using namespace hotpot::pool::internal;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  RedoRecord r;
  if (!DecodeRedoBody(data, size, &r).ok()) return 0;
  for (const RedoRange& rg : r.ranges)
    if (rg.bytes.empty() || rg.offset % kPageSize + rg.bytes.size() > kPageSize) __builtin_trap();
  const std::vector<uint8_t> in(data, data + size);
  std::vector<uint8_t> enc;
  if (!EncodeRedoBody(r, &enc).ok() || enc != in) __builtin_trap();
  // An owner's record (phase kPrepared..kApplied) carries its commit id as its one part (and its epoch stamp, if
  // known, as a second).
  if (OwnerCommitIdFromParts(&r).ok() && r.commit_id != 0) {
    if (!r.parts.empty() || !EncodeRedoBody(r, &enc).ok() || enc != in) __builtin_trap();
  }
  return 0;
}

// Seeds for the standalone driver: an owner record with a commit id (with and without its epoch stamp), and a
// committer's decision record.
extern "C" void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out) {
  RedoRecord owner;
  owner.txid = 11;
  owner.dataset_id = 2;
  owner.committer_node_id = 1;
  owner.ranges = {RedoRange{4096 + 7, {1, 2, 3}}, RedoRange{3 * 4096, std::vector<uint8_t>(64, 9)}};
  owner.page_versions = {4, 2};
  owner.commit_id = 99;
  std::vector<uint8_t> enc;
  if (EncodeRedoBody(owner, &enc).ok()) out->push_back(enc);
  owner.sender_epoch = 41;  // the PREPARE's epoch stamp: a second part {node 0, epoch}
  if (EncodeRedoBody(owner, &enc).ok()) out->push_back(enc);
  owner.sender_epoch = 0;
  RedoRecord decided;
  decided.txid = 12;
  decided.dataset_id = 2;
  decided.committer_node_id = 1;
  decided.phase = RedoPhase::kDecided;
  decided.parts = {RedoPart{2, 40}, RedoPart{3, 41}};
  if (EncodeRedoBody(decided, &enc).ok()) out->push_back(enc);
}
