// Fuzz target for the page journal's entry decoder (pool internal DecodeJournalEntry, native/src/pool/pool_internal.h):
// bytes read back from `pages.journal.*` at a restart, where a torn, foreign or corrupted entry must end the replay,
// never be trusted or read past the file. Walks the input as a journal file's entries (generation 7); every entry it
// accepts lies inside the input and re-encodes to exactly its header.
// Builds with the standalone driver (driver.cc) or with clang -fsanitize=fuzzer.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/page.h"
#include "pool/pool_internal.h"

using namespace hotpot;
using namespace hotpot::pool;
using namespace hotpot::pool::internal;

namespace {
constexpr uint64_t kGeneration = 7;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  JournalEntry e;
  for (size_t off = 0, n = 0; (n = DecodeJournalEntry(data + off, size - off, kGeneration, &e)) != 0; off += n) {
    const size_t want = kJournalEntryHeaderSize + (e.bytes == nullptr ? 0 : kPageSize);
    if (n != want || n > size - off) __builtin_trap();
    if (e.record != data + off + 32) __builtin_trap();
    if (e.bytes != nullptr && e.bytes != data + off + kJournalEntryHeaderSize) __builtin_trap();
    uint8_t h[kJournalEntryHeaderSize];
    EncodeJournalEntryHeader(kGeneration, e.dataset, e.page, e.record, e.bytes, h);
    if (std::memcmp(h, data + off, sizeof h) != 0) __builtin_trap();
  }
  return 0;
}

// Seeds for the standalone driver: a page image followed by a hole, and the same with the image torn.
extern "C" void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out) {
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < page.size(); i++) page[i] = uint8_t(i * 13);
  uint8_t record[kMetaRecordSize] = {3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0};
  uint8_t h[kJournalEntryHeaderSize];
  std::vector<uint8_t> file;
  EncodeJournalEntryHeader(kGeneration, 4, 2, record, page.data(), h);
  file.insert(file.end(), h, h + sizeof h);
  file.insert(file.end(), page.begin(), page.end());
  uint8_t zero[kMetaRecordSize] = {};
  EncodeJournalEntryHeader(kGeneration, 4, 3, zero, nullptr, h);
  file.insert(file.end(), h, h + sizeof h);
  out->push_back(file);
  file[100] ^= 1;
  out->push_back(file);
}
