// Standalone fuzz driver for targets written against the libFuzzer entry point, for machines without clang's
// -fsanitize=fuzzer (CI runs it for a bounded number of inputs; sanitizers come from the build flags).
//
//   <target> [-runs=N] [-seed=S] [-max_len=L] [corpus files...]
//
// Deterministic: the same seed, corpus and run count feed the same inputs, so a crash reproduces with the
// printed seed. Mutations: bit flips, random bytes, truncation, extension, length-field lies (u32 at the
// frame header's length offset and at random offsets), chunk duplication/erase, splicing, CRC fix-up of a
// frame header (so payload decoders are reached, not only the checksum check), and wholly random inputs.
// A target may provide HotpotFuzzSeedCorpus() with built-in seeds.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "wire/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) void HotpotFuzzSeedCorpus(std::vector<std::vector<uint8_t>>* out);

namespace {

// xorshift64*: small, fast, and the same sequence on every machine.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed ? seed : 0x9E3779B97F4A7C15ull) {}
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  size_t Below(size_t n) { return n == 0 ? 0 : size_t(Next() % n); }
};

bool ReadFile(const char* path, std::vector<uint8_t>* out) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  uint8_t buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->insert(out->end(), buf, buf + n);
  bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
}

uint32_t LyingLength(Rng& r, size_t size) {
  static const uint32_t kInteresting[] = {0,          1,          63,         64,         4095,       4096,
                                          65536,      0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE,
                                          hotpot::wire::kMaxPayload, hotpot::wire::kMaxPayload + 1};
  switch (r.Below(4)) {
    case 0: return kInteresting[r.Below(sizeof kInteresting / sizeof kInteresting[0])];
    case 1: return uint32_t(size > 64 ? size - 64 : 0) + uint32_t(r.Below(5)) - 2;  // off by a little
    case 2: return uint32_t(r.Next());
    default: return uint32_t(r.Below(1024));
  }
}

void Mutate(Rng& r, std::vector<uint8_t>* d, const std::vector<std::vector<uint8_t>>& corpus, size_t max_len) {
  int rounds = 1 + int(r.Below(4));
  for (int k = 0; k < rounds; k++) {
    switch (r.Below(11)) {
      case 0:  // bit flip
        if (!d->empty()) (*d)[r.Below(d->size())] ^= uint8_t(1u << r.Below(8));
        break;
      case 1:  // random byte
        if (!d->empty()) (*d)[r.Below(d->size())] = uint8_t(r.Next());
        break;
      case 2:  // truncate
        d->resize(r.Below(d->size() + 1));
        break;
      case 3: {  // extend with random bytes
        size_t n = 1 + r.Below(128);
        for (size_t i = 0; i < n; i++) d->push_back(uint8_t(r.Next()));
        break;
      }
      case 4:  // length-field lie at the frame header's length offset
        if (d->size() >= 12) hotpot::PutU32(d->data() + 8, LyingLength(r, d->size()));
        break;
      case 5:  // length-field lie anywhere (payload codecs have their own counts and lengths)
        if (d->size() >= 4) hotpot::PutU32(d->data() + r.Below(d->size() - 3), LyingLength(r, d->size()));
        break;
      case 6: {  // duplicate a chunk
        if (d->empty()) break;
        size_t a = r.Below(d->size()), n = 1 + r.Below(d->size() - a);
        std::vector<uint8_t> chunk(d->begin() + long(a), d->begin() + long(a + n));
        size_t at = r.Below(d->size() + 1);
        d->insert(d->begin() + long(at), chunk.begin(), chunk.end());
        break;
      }
      case 7: {  // erase a chunk
        if (d->empty()) break;
        size_t a = r.Below(d->size()), n = 1 + r.Below(d->size() - a);
        d->erase(d->begin() + long(a), d->begin() + long(a + n));
        break;
      }
      case 8: {  // splice with another corpus entry
        if (corpus.empty()) break;
        const auto& o = corpus[r.Below(corpus.size())];
        size_t cut = r.Below(d->size() + 1), from = r.Below(o.size() + 1);
        d->resize(cut);
        d->insert(d->end(), o.begin() + long(from), o.end());
        break;
      }
      case 9: {  // fix the first frame's checksum so the payload itself is what gets tested
        if (d->size() < hotpot::wire::kHeaderSize) break;
        size_t avail = d->size() - hotpot::wire::kHeaderSize;
        size_t len = hotpot::GetU32(d->data() + 8);
        if (len > avail) len = avail;
        hotpot::PutU32(d->data() + 12, hotpot::Crc32c(d->data() + hotpot::wire::kHeaderSize, len));
        break;
      }
      default: {  // wholly random input
        d->resize(r.Below(256));
        for (auto& b : *d) b = uint8_t(r.Next());
        break;
      }
    }
  }
  if (d->size() > max_len) d->resize(max_len);
}

}  // namespace

int main(int argc, char** argv) {
  long long runs = 100000;
  uint64_t seed = 1;
  size_t max_len = 8192;
  std::vector<std::vector<uint8_t>> corpus;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a.rfind("-runs=", 0) == 0) {
      runs = std::atoll(a.c_str() + 6);
    } else if (a.rfind("-seed=", 0) == 0) {
      seed = std::strtoull(a.c_str() + 6, nullptr, 10);
    } else if (a.rfind("-max_len=", 0) == 0) {
      max_len = size_t(std::atoll(a.c_str() + 9));
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "fuzz driver: ignoring unknown flag %s\n", a.c_str());
    } else {
      std::vector<uint8_t> d;
      if (!ReadFile(a.c_str(), &d)) {
        std::fprintf(stderr, "fuzz driver: cannot read corpus file %s\n", a.c_str());
        return 2;
      }
      corpus.push_back(std::move(d));
    }
  }
  if (HotpotFuzzSeedCorpus) HotpotFuzzSeedCorpus(&corpus);
  corpus.push_back({});
  // Corpus entries alone first (a crash on a stored reproducer shows up before any mutation).
  for (const auto& c : corpus) LLVMFuzzerTestOneInput(c.data(), c.size());
  Rng r(seed);
  std::vector<uint8_t> input;
  for (long long i = 0; i < runs; i++) {
    input = corpus[r.Below(corpus.size())];
    Mutate(r, &input, corpus, max_len);
    // Copy to an exact-size heap buffer so ASan flags any read past the end of the input.
    std::vector<uint8_t> exact(input);
    exact.shrink_to_fit();
    uint8_t* p = exact.empty() ? nullptr : exact.data();
    LLVMFuzzerTestOneInput(p, exact.size());
  }
  std::fprintf(stderr, "fuzz driver: %lld runs (seed %llu, %zu corpus entries) without a crash\n", runs,
               (unsigned long long)seed, corpus.size());
  return 0;
}
