#include "engine/messages.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "common/bytes.h"

namespace hotpot {
namespace engine {
namespace msg {

std::string TypeName(uint16_t type) {
  switch (type) {
    case kFetchPages: return "FETCH_PAGES";
    case kPrepare: return "PREPARE";
    case kApply: return "APPLY";
    case kRelease: return "RELEASE";
    case kAbort: return "ABORT";
    case kOutcome: return "OUTCOME";
    case kPushBatch: return "PUSH_BATCH";
    case kDone: return "DONE";
    case kMarkStatus: return "MARK_STATUS";
    case kCopyPages: return "COPY_PAGES";
    case kCheckCopies: return "CHECK_COPIES";
    case kPrepareCopy: return "PREPARE_COPY";
    case kReleaseCopies: return "RELEASE_COPIES";
    case kPartStatus: return "PART_STATUS";
    case kListCopies: return "LIST_COPIES";
    case kCommitState: return "COMMIT_STATE";
    case kCommitPeek: return "COMMIT_PEEK";
    case kKeepApplied: return "KEEP_APPLIED";
    default: return "type " + std::to_string(type);
  }
}


namespace {

// Appends little-endian integers / bytes to a growing buffer.
void AppendU32(std::vector<uint8_t>* out, uint32_t v) {
  size_t at = out->size();
  out->resize(at + 4);
  PutU32(out->data() + at, v);
}
void AppendU64(std::vector<uint8_t>* out, uint64_t v) {
  size_t at = out->size();
  out->resize(at + 8);
  PutU64(out->data() + at, v);
}
void AppendBytes(std::vector<uint8_t>* out, const uint8_t* p, size_t n) {
  if (n != 0) out->insert(out->end(), p, p + n);
}

// A bounds-checked reader: every Get fails (and stays failed) once the input is exhausted.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool U32(uint32_t* v) {
    if (n_ - at_ < 4 || at_ > n_) return false;
    *v = GetU32(p_ + at_);
    at_ += 4;
    return true;
  }
  bool U64(uint64_t* v) {
    if (n_ - at_ < 8 || at_ > n_) return false;
    *v = GetU64(p_ + at_);
    at_ += 8;
    return true;
  }
  bool Bytes(size_t len, std::vector<uint8_t>* out) {
    if (n_ - at_ < len) return false;
    out->assign(p_ + at_, p_ + at_ + len);
    at_ += len;
    return true;
  }
  size_t remaining() const { return n_ - at_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t at_ = 0;
};

Status Bad(const char* what) { return Status(Code::kInvalidArgument, std::string("malformed ") + what); }

// A range must be non-empty, at most one page, and not cross a page boundary.
bool RangeInPage(uint64_t offset, uint32_t len) {
  if (len == 0 || len > kPageSize) return false;
  uint64_t in_page = offset % kPageSize;
  return in_page + len <= kPageSize;
}

}  // namespace

void EncodeFetchRequest(const FetchRequest& r, std::vector<uint8_t>* out) {
  out->clear();
  AppendU64(out, r.dataset);
  AppendU64(out, r.first_page);
  AppendU32(out, r.count);
  AppendU32(out, r.flags);
  AppendU64(out, r.generation);
}

Status DecodeFetchRequest(const uint8_t* p, size_t n, FetchRequest* out) {
  if (n != 32) return Bad("FETCH_PAGES request: size must be 32 bytes");
  out->dataset = GetU64(p);
  out->first_page = GetU64(p + 8);
  out->count = GetU32(p + 16);
  out->flags = GetU32(p + 20);
  out->generation = GetU64(p + 24);
  if (out->count == 0 || out->count > kMaxFetchPages) return Bad("FETCH_PAGES request: count must be 1..64");
  if ((out->flags & ~(kFetchCoherent | kFetchRevalidate | kFetchPass | kFetchLocate)) != 0 ||
      ((out->flags & kFetchPass) && !(out->flags & kFetchRevalidate)) ||
      ((out->flags & kFetchLocate) && (out->flags & kFetchRevalidate)))
    return Bad("FETCH_PAGES request: unknown flags");
  if (out->first_page > (UINT64_MAX / kPageSize) - out->count) return Bad("FETCH_PAGES request: page out of range");
  return Status::Ok();
}

namespace {

constexpr uint32_t kLocatedMagic = 0x434C5048;  // "HPLC"

void AppendFetchedMeta(const std::vector<FetchedPage>& meta, std::vector<uint8_t>* out) {
  for (const FetchedPage& m : meta) {
    AppendU64(out, m.version);
    out->push_back(m.state);
    out->push_back(m.flags);
    out->insert(out->end(), 6, uint8_t(0));
  }
}

Status GetFetchedMeta(const uint8_t* p, uint32_t count, std::vector<FetchedPage>* meta) {
  meta->assign(count, FetchedPage{});
  for (uint32_t i = 0; i < count; i++) {
    (*meta)[i].version = GetU64(p + 16 * i);
    (*meta)[i].state = p[16 * i + 8];
    if ((*meta)[i].state > 3) return Bad("FETCH_PAGES response: bad page state");
    (*meta)[i].flags = p[16 * i + 9];
    if (((*meta)[i].flags & ~kFetchedCheck) != 0) return Bad("FETCH_PAGES response: unknown page flags");
    for (size_t k = 10; k < 16; k++)
      if (p[16 * i + k] != 0) return Bad("FETCH_PAGES response: padding is not zero");
  }
  return Status::Ok();
}

size_t LocatedSize(uint32_t count) { return size_t(count) * 20 + 16; }

}  // namespace

void EncodeFetchResponse(const std::vector<FetchedPage>& meta, const uint8_t* pages, bool revalidate,
                         std::vector<uint8_t>* out) {
  out->clear();
  out->reserve(meta.size() * (16 + kPageSize + (revalidate ? 12 : 0)));
  AppendFetchedMeta(meta, out);
  AppendBytes(out, pages, meta.size() * kPageSize);
  if (!revalidate) return;
  for (const FetchedPage& m : meta) {
    AppendU32(out, m.open_committer);
    AppendU64(out, m.open_commit);
  }
}

void EncodeFetchLocated(const std::vector<FetchedPage>& meta, const FetchLocation& at, std::vector<uint8_t>* out) {
  out->clear();
  out->reserve(LocatedSize(uint32_t(meta.size())));
  AppendFetchedMeta(meta, out);
  AppendU32(out, kLocatedMagic);
  AppendU32(out, at.region);
  AppendU64(out, at.offset);
  for (size_t i = 0; i < meta.size(); i++) AppendU32(out, i < at.crc.size() ? at.crc[i] : 0);
}

bool IsFetchLocated(const uint8_t* p, size_t n, uint32_t count) {
  return count >= 1 && count <= kMaxFetchPages && n == LocatedSize(count) && GetU32(p + 16 * size_t(count)) == kLocatedMagic;
}

Status DecodeFetchLocated(const uint8_t* p, size_t n, uint32_t count, std::vector<FetchedPage>* meta,
                          FetchLocation* at) {
  if (!IsFetchLocated(p, n, count)) return Bad("FETCH_PAGES located response: wrong size or magic");
  HOTPOT_RETURN_IF_ERROR(GetFetchedMeta(p, count, meta));
  const uint8_t* t = p + 16 * size_t(count) + 4;
  at->region = GetU32(t);
  at->offset = GetU64(t + 4);
  if (at->offset % kPageSize != 0) return Bad("FETCH_PAGES located response: offset not page-aligned");
  at->crc.resize(count);
  for (uint32_t i = 0; i < count; i++) at->crc[i] = GetU32(t + 12 + 4 * size_t(i));
  return Status::Ok();
}

Status DecodeFetchResponse(const uint8_t* p, size_t n, uint32_t count, bool revalidate,
                           std::vector<FetchedPage>* meta, const uint8_t** pages_out) {
  const size_t per_page = 16 + kPageSize + (revalidate ? 12 : 0);
  if (count > kMaxFetchPages || n != size_t(count) * per_page) return Bad("FETCH_PAGES response: wrong size");
  HOTPOT_RETURN_IF_ERROR(GetFetchedMeta(p, count, meta));
  *pages_out = p + 16 * size_t(count);
  if (revalidate) {
    const uint8_t* t = p + size_t(count) * (16 + kPageSize);
    for (uint32_t i = 0; i < count; i++) {
      (*meta)[i].open_committer = GetU32(t + 12 * i);
      (*meta)[i].open_commit = GetU64(t + 12 * i + 4);
    }
  }
  return Status::Ok();
}

void EncodeAbortReply(AbortState state, uint32_t copies, std::vector<uint8_t>* out) {
  out->clear();
  out->push_back(static_cast<uint8_t>(state));
  if (state == AbortState::kApplied) AppendU32(out, copies);
}

Status DecodeAbortReply(const uint8_t* p, size_t n, AbortState* state, uint32_t* copies) {
  *copies = 0;
  if (n == 0) {
    *state = AbortState::kUnknown;
    return Status::Ok();
  }
  if (p[0] > static_cast<uint8_t>(AbortState::kApplying) && p[0] != static_cast<uint8_t>(AbortState::kUnknown))
    return Bad("ABORT response: bad state");
  *state = static_cast<AbortState>(p[0]);
  if (*state == AbortState::kApplied) {
    if (n != 5) return Bad("ABORT response: wrong size");
    *copies = GetU32(p + 1);
  } else if (n != 1) {
    return Bad("ABORT response: wrong size");
  }
  return Status::Ok();
}

size_t PrepareRequestSize(const PrepareRequest& r) {
  size_t s = 8 + 8 + 4 + 4 + 4;
  for (const Range& x : r.ranges) s += 12 + 2 * size_t(x.len());
  if (!r.reads.empty()) s += 4 + 20 * r.reads.size();
  if (!r.lease.empty()) s += 4 + r.lease.size();
  if (r.deadline_unix_ms != 0) s += 8;
  if (r.commit_id != 0) s += 8;
  if (r.generation != 0) s += 8;
  return s;
}

void EncodePrepareRequest(const PrepareRequest& r, std::vector<uint8_t>* out) {
  out->clear();
  out->reserve(PrepareRequestSize(r));
  AppendU64(out, r.txid);
  AppendU64(out, r.dataset);
  AppendU32(out, r.replicas);
  uint32_t flags =
      r.flags & ~(kPrepareReads | kPrepareLease | kPrepareDeadline | kPrepareCommitId | kPrepareGeneration);
  if (!r.reads.empty()) flags |= kPrepareReads;
  if (!r.lease.empty()) flags |= kPrepareLease;
  if (r.deadline_unix_ms != 0) flags |= kPrepareDeadline;
  if (r.commit_id != 0) flags |= kPrepareCommitId;
  if (r.generation != 0) flags |= kPrepareGeneration;
  AppendU32(out, flags);
  AppendU32(out, uint32_t(r.ranges.size()));
  for (const Range& x : r.ranges) {
    AppendU64(out, x.offset);
    AppendU32(out, x.len());
    AppendBytes(out, x.old_bytes.data(), x.old_bytes.size());
    AppendBytes(out, x.new_bytes.data(), x.new_bytes.size());
  }
  if (!r.reads.empty()) {
    AppendU32(out, uint32_t(r.reads.size()));
    for (const ReadCheck& c : r.reads) {
      AppendU64(out, c.offset);
      AppendU32(out, c.len);
      AppendU64(out, c.version);
    }
  }
  if (!r.lease.empty()) {
    AppendU32(out, uint32_t(r.lease.size()));
    AppendBytes(out, r.lease.data(), r.lease.size());
  }
  if (r.deadline_unix_ms != 0) AppendU64(out, r.deadline_unix_ms);
  if (r.commit_id != 0) AppendU64(out, r.commit_id);
  if (r.generation != 0) AppendU64(out, r.generation);
}

Status DecodePrepareRequest(const uint8_t* p, size_t n, PrepareRequest* out) {
  Reader r(p, n);
  uint32_t count = 0;
  if (!r.U64(&out->txid) || !r.U64(&out->dataset) || !r.U32(&out->replicas) || !r.U32(&out->flags) ||
      !r.U32(&count))
    return Bad("PREPARE request: truncated header");
  // Each range needs at least 12 + 2 bytes: bound the count before allocating. No ranges is valid only for a
  // read-only validation.
  if ((count == 0 && (out->flags & kPrepareReads) == 0) || count > r.remaining() / 14)
    return Bad("PREPARE request: bad range count");
  out->ranges.clear();
  out->ranges.resize(count);
  for (uint32_t i = 0; i < count; i++) {
    Range& x = out->ranges[i];
    uint32_t len = 0;
    if (!r.U64(&x.offset) || !r.U32(&len)) return Bad("PREPARE request: truncated range");
    if (!RangeInPage(x.offset, len)) return Bad("PREPARE request: range empty, too long or crossing a page");
    if (!r.Bytes(len, &x.old_bytes) || !r.Bytes(len, &x.new_bytes)) return Bad("PREPARE request: truncated bytes");
  }
  out->reads.clear();
  out->lease.clear();
  if (out->flags & kPrepareReads) {
    uint32_t m = 0;
    if (!r.U32(&m) || m == 0 || m > r.remaining() / 20) return Bad("PREPARE request: bad read-check count");
    out->reads.resize(m);
    for (ReadCheck& c : out->reads) {
      if (!r.U64(&c.offset) || !r.U32(&c.len) || !r.U64(&c.version)) return Bad("PREPARE request: truncated read check");
      if (!RangeInPage(c.offset, c.len)) return Bad("PREPARE request: read check empty, too long or crossing a page");
    }
  }
  if (out->flags & kPrepareLease) {
    uint32_t len = 0;
    if (!r.U32(&len) || len == 0 || len > kMaxLeaseBytes || !r.Bytes(len, &out->lease))
      return Bad("PREPARE request: bad lease certificate length");
  }
  out->deadline_unix_ms = 0;
  if ((out->flags & kPrepareDeadline) && (!r.U64(&out->deadline_unix_ms) || out->deadline_unix_ms == 0))
    return Bad("PREPARE request: bad deadline");
  out->commit_id = 0;
  if ((out->flags & kPrepareCommitId) && (!r.U64(&out->commit_id) || out->commit_id == 0))
    return Bad("PREPARE request: bad commit id");
  out->generation = 0;
  if ((out->flags & kPrepareGeneration) && (!r.U64(&out->generation) || out->generation == 0))
    return Bad("PREPARE request: bad chunk-map generation");
  if (r.remaining() != 0) return Bad("PREPARE request: trailing bytes");
  return Status::Ok();
}

void EncodeConflicts(const std::vector<Conflict>& c, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, uint32_t(c.size()));
  for (const Conflict& x : c) {
    AppendU64(out, x.offset);
    AppendU32(out, x.len);
  }
}

Status DecodeConflicts(const uint8_t* p, size_t n, std::vector<Conflict>* out) {
  Reader r(p, n);
  uint32_t count = 0;
  if (!r.U32(&count) || size_t(count) * 12 != r.remaining()) return Bad("conflict list");
  out->resize(count);
  for (uint32_t i = 0; i < count; i++) {
    if (!r.U64(&(*out)[i].offset) || !r.U32(&(*out)[i].len)) return Bad("conflict list");
  }
  return Status::Ok();
}

void EncodeU32(uint32_t v, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, v);
}
Status DecodeU32(const uint8_t* p, size_t n, uint32_t* out) {
  if (n != 4) return Bad("u32 response");
  *out = GetU32(p);
  return Status::Ok();
}
void EncodeTxid(uint64_t txid, std::vector<uint8_t>* out) {
  out->clear();
  AppendU64(out, txid);
}
Status DecodeTxid(const uint8_t* p, size_t n, uint64_t* out) {
  if (n != 8) return Bad("txid request");
  *out = GetU64(p);
  return Status::Ok();
}

namespace {
// The changed ranges of one page (PUSH, PUSH_BATCH): count u32, count x {offset u64, len u32, bytes}.
void AppendPageRanges(std::vector<uint8_t>* out, const std::vector<PushRange>& ranges) {
  AppendU32(out, uint32_t(ranges.size()));
  for (const PushRange& x : ranges) {
    AppendU64(out, x.offset);
    AppendU32(out, uint32_t(x.bytes.size()));
    AppendBytes(out, x.bytes.data(), x.bytes.size());
  }
}
// Reads `count` ranges that must all lie in one page; *page receives it. `what` names the message in errors.
Status ReadPageRanges(Reader* r, uint32_t count, std::vector<PushRange>* ranges, uint64_t* page, const std::string& what) {
  if (count == 0 || count > r->remaining() / 13) return Bad((what + ": bad range count").c_str());
  ranges->clear();
  ranges->resize(count);
  for (uint32_t i = 0; i < count; i++) {
    PushRange& x = (*ranges)[i];
    uint32_t len = 0;
    if (!r->U64(&x.offset) || !r->U32(&len)) return Bad((what + ": truncated range").c_str());
    if (!RangeInPage(x.offset, len)) return Bad((what + ": range empty, too long or crossing a page").c_str());
    if (i == 0) *page = x.offset / kPageSize;
    if (x.offset / kPageSize != *page) return Bad((what + ": ranges of more than one page in one entry").c_str());
    if (!r->Bytes(len, &x.bytes)) return Bad((what + ": truncated bytes").c_str());
  }
  return Status::Ok();
}
}  // namespace

void EncodePushBatch(const PushBatch& b, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, b.committer);
  AppendU32(out, b.flags);
  AppendU64(out, b.commit_id);
  AppendU64(out, b.dataset);
  AppendU32(out, uint32_t(b.pages.size()));
  for (const PushPage& pg : b.pages) {
    AppendU64(out, pg.version);
    AppendU64(out, pg.base);
    AppendPageRanges(out, pg.ranges);
  }
}

Status DecodePushBatch(const uint8_t* p, size_t n, PushBatch* out) {
  Reader r(p, n);
  uint32_t count = 0;
  if (!r.U32(&out->committer) || !r.U32(&out->flags) || !r.U64(&out->commit_id) || !r.U64(&out->dataset) ||
      !r.U32(&count))
    return Bad("PUSH_BATCH request: truncated header");
  if ((out->flags & ~(kPushOpen | kPushReplica | kPushCheck)) != 0) return Bad("PUSH_BATCH request: unknown flags");
  // Each page needs at least 20 + one 13-byte range: bound the count before allocating.
  if (count == 0 || count > kMaxPushPages || count > r.remaining() / 33) return Bad("PUSH_BATCH request: bad page count");
  out->pages.clear();
  out->pages.resize(count);
  std::set<uint64_t> seen;
  for (PushPage& pg : out->pages) {
    uint32_t nr = 0;
    if (!r.U64(&pg.version) || !r.U64(&pg.base) || !r.U32(&nr)) return Bad("PUSH_BATCH request: truncated page");
    // Version 0 only in a replica: a page served as zeros, handed off with its chunk so the new owner knows it may be
    // held (Owner::HandOff).
    if (pg.version == 0 && !(out->flags & kPushReplica)) return Bad("PUSH_BATCH request: version 0");
    if (pg.version == 0 ? pg.base != 0 : pg.base >= pg.version)
      return Bad("PUSH_BATCH request: base version not below the version");
    uint64_t page = 0;
    HOTPOT_RETURN_IF_ERROR(ReadPageRanges(&r, nr, &pg.ranges, &page, "PUSH_BATCH request"));
    if (!seen.insert(page).second) return Bad("PUSH_BATCH request: a page listed twice");
    if ((out->flags & kPushReplica) && (nr != 1 || pg.ranges[0].offset % kPageSize != 0 || pg.ranges[0].bytes.size() != kPageSize))
      return Bad("PUSH_BATCH request: a replica entry must be one whole page");
  }
  if (r.remaining() != 0) return Bad("PUSH_BATCH request: trailing bytes");
  return Status::Ok();
}

void EncodeApplyReply(uint32_t copies, const MarkedNodes& nodes, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, copies);
  for (const std::vector<uint32_t>* list : {&nodes.marked, &nodes.missed}) {
    AppendU32(out, uint32_t(list->size()));
    for (uint32_t node : *list) AppendU32(out, node);
  }
}

Status DecodeApplyReply(const uint8_t* p, size_t n, uint32_t* copies, MarkedNodes* nodes) {
  Reader r(p, n);
  nodes->marked.clear();
  nodes->missed.clear();
  if (!r.U32(copies)) return Bad("APPLY response: truncated");
  for (std::vector<uint32_t>* list : {&nodes->marked, &nodes->missed}) {
    if (r.remaining() == 0) return Status::Ok();
    uint32_t count = 0;
    if (!r.U32(&count) || count > r.remaining() / 4) return Bad("APPLY response: bad node count");
    list->resize(count);
    for (uint32_t& node : *list) r.U32(&node);
  }
  if (r.remaining() != 0) return Bad("APPLY response: trailing bytes");
  return Status::Ok();
}

void EncodeRelease(uint64_t txid, const std::vector<uint32_t>& missed, std::vector<uint8_t>* out) {
  EncodeTxid(txid, out);
  if (missed.empty()) return;
  AppendU32(out, uint32_t(missed.size()));
  for (uint32_t node : missed) AppendU32(out, node);
}

Status DecodeRelease(const uint8_t* p, size_t n, uint64_t* txid, std::vector<uint32_t>* missed) {
  missed->clear();
  if (n < 8) return Bad("RELEASE request: truncated");
  *txid = GetU64(p);
  if (n == 8) return Status::Ok();
  Reader r(p + 8, n - 8);
  uint32_t count = 0;
  if (!r.U32(&count) || count == 0 || count != r.remaining() / 4 || r.remaining() % 4 != 0)
    return Bad("RELEASE request: bad node list");
  missed->resize(count);
  for (uint32_t& node : *missed) r.U32(&node);
  return Status::Ok();
}

void EncodeApplyRequest(uint64_t txid, uint64_t dataset, uint64_t generation, std::vector<uint8_t>* out) {
  out->clear();
  AppendU64(out, txid);
  if (generation == 0) return;
  AppendU64(out, dataset);
  AppendU64(out, generation);
}

Status DecodeApplyRequest(const uint8_t* p, size_t n, uint64_t* txid, uint64_t* dataset, uint64_t* generation) {
  *dataset = 0;
  *generation = 0;
  if (n != 8 && n != 24) return Bad("APPLY request: 8 or 24 bytes");
  *txid = GetU64(p);
  if (n == 8) return Status::Ok();
  *dataset = GetU64(p + 8);
  *generation = GetU64(p + 16);
  if (*generation == 0) return Bad("APPLY request: generation 0");
  return Status::Ok();
}

void EncodeDone(uint64_t commit_id, bool check, std::vector<uint8_t>* out) {
  EncodeTxid(commit_id, out);
  if (check) out->push_back(kDoneCheck);
}

Status DecodeDone(const uint8_t* p, size_t n, uint64_t* commit_id, bool* check) {
  if (n != 8 && !(n == 9 && p[8] == kDoneCheck)) return Bad("DONE request: 8 bytes, or 9 ending with the check flag");
  *check = n == 9;
  return DecodeTxid(p, 8, commit_id);
}

void EncodePartCopy(const PartCopy& c, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, c.committer);
  AppendU64(out, c.txid);
  AppendU64(out, c.dataset);
  AppendU64(out, c.commit_id);
  AppendU32(out, (c.sender_epoch != 0 ? c.flags | kCopyEpoch : c.flags & ~kCopyEpoch) & ~kCopyReleases);
  AppendU32(out, uint32_t(c.ranges.size()));
  for (const PushRange& r : c.ranges) {
    AppendU64(out, r.offset);
    AppendU32(out, uint32_t(r.bytes.size()));
    AppendBytes(out, r.bytes.data(), r.bytes.size());
  }
  AppendU32(out, uint32_t(c.versions.size()));
  for (uint64_t v : c.versions) AppendU64(out, v);
  if (c.sender_epoch != 0) AppendU64(out, c.sender_epoch);
  if (!c.releases.empty()) AppendCopyReleases(c.releases, out);
}

void AppendCopyReleases(const std::vector<std::pair<uint32_t, uint64_t>>& keys, std::vector<uint8_t>* encoded) {
  constexpr size_t kFlagsAt = 4 + 8 + 8 + 8;  // after committer, txid, dataset, commit_id
  PutU32(encoded->data() + kFlagsAt, GetU32(encoded->data() + kFlagsAt) | kCopyReleases);
  AppendU32(encoded, uint32_t(keys.size()));
  for (const auto& k : keys) {
    AppendU32(encoded, k.first);
    AppendU64(encoded, k.second);
  }
}

Status DecodePartCopy(const uint8_t* p, size_t n, PartCopy* out) {
  Reader r(p, n);
  uint32_t count = 0;
  if (!r.U32(&out->committer) || !r.U64(&out->txid) || !r.U64(&out->dataset) || !r.U64(&out->commit_id) ||
      !r.U32(&out->flags) || !r.U32(&count))
    return Bad("PREPARE_COPY request: truncated header");
  if (out->committer == 0 || out->txid == 0) return Bad("PREPARE_COPY request: no committer or txid");
  if ((out->flags & ~(kCopyOneShot | kCopyApplied | kCopyFrozen | kCopyEpoch | kCopyReleases)) != 0)
    return Bad("PREPARE_COPY request: unknown flags");
  if (count == 0 || count > r.remaining() / 13) return Bad("PREPARE_COPY request: bad range count");
  out->ranges.assign(count, PushRange{});
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  std::set<uint64_t> pages;
  for (PushRange& x : out->ranges) {
    uint32_t len = 0;
    if (!r.U64(&x.offset) || !r.U32(&len)) return Bad("PREPARE_COPY request: truncated range");
    if (!RangeInPage(x.offset, len)) return Bad("PREPARE_COPY request: range empty, too long or crossing a page");
    if (!r.Bytes(len, &x.bytes)) return Bad("PREPARE_COPY request: truncated bytes");
    spans.push_back({x.offset, x.offset + len});
    pages.insert(x.offset / kPageSize);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); i++)
    if (spans[i].first < spans[i - 1].second) return Bad("PREPARE_COPY request: overlapping ranges");
  uint32_t m = 0;
  if (!r.U32(&m) || m != pages.size() || m > r.remaining() / 8) return Bad("PREPARE_COPY request: bad version count");
  out->versions.resize(m);
  for (uint64_t& v : out->versions)
    if (!r.U64(&v) || v == 0) return Bad("PREPARE_COPY request: bad page version");
  out->sender_epoch = 0;
  if ((out->flags & kCopyEpoch) && (!r.U64(&out->sender_epoch) || out->sender_epoch == 0))
    return Bad("PREPARE_COPY request: bad epoch stamp");
  out->releases.clear();
  if (out->flags & kCopyReleases) {
    uint32_t k = 0;
    if (!r.U32(&k) || k == 0 || k > kMaxPartKeys || r.remaining() != size_t(k) * 12)
      return Bad("PREPARE_COPY request: bad release count");
    out->releases.resize(k);
    for (auto& key : out->releases) {
      r.U32(&key.first);
      r.U64(&key.second);
      if (key.first == 0 || key.second == 0) return Bad("PREPARE_COPY request: a release without committer or txid");
    }
  }
  out->flags &= ~(kCopyEpoch | kCopyReleases);  // carried by sender_epoch and releases
  if (r.remaining() != 0) return Bad("PREPARE_COPY request: trailing bytes");
  return Status::Ok();
}

void EncodePartKeys(const std::vector<std::pair<uint32_t, uint64_t>>& keys, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, uint32_t(keys.size()));
  for (const auto& k : keys) {
    AppendU32(out, k.first);
    AppendU64(out, k.second);
  }
}

Status DecodePartKeys(const uint8_t* p, size_t n, std::vector<std::pair<uint32_t, uint64_t>>* out) {
  Reader r(p, n);
  uint32_t count = 0;
  if (!r.U32(&count) || count == 0 || count > kMaxPartKeys || r.remaining() != size_t(count) * 12)
    return Bad("part key list: bad count or length");
  out->resize(count);
  for (auto& k : *out) {
    r.U32(&k.first);
    r.U64(&k.second);
    if (k.first == 0 || k.second == 0) return Bad("part key list: no committer or txid");
  }
  return Status::Ok();
}

void EncodeCopyList(const std::vector<OwnedCopy>& copies, std::vector<uint8_t>* out) {
  out->clear();
  AppendU32(out, uint32_t(copies.size()));
  std::vector<uint8_t> one;
  for (const OwnedCopy& c : copies) {
    EncodePartCopy(c.copy, &one);
    AppendU32(out, c.owner);
    AppendU32(out, uint32_t(one.size()));
    AppendBytes(out, one.data(), one.size());
  }
}

Status DecodeCopyList(const uint8_t* p, size_t n, std::vector<OwnedCopy>* out) {
  Reader r(p, n);
  uint32_t count = 0;
  // Each entry takes at least 8 + 45 bytes (an empty PartCopy header is refused anyway): bound before allocating.
  if (!r.U32(&count) || count > r.remaining() / 53) return Bad("LIST_COPIES answer: bad count");
  out->assign(count, OwnedCopy{});
  std::vector<uint8_t> one;
  for (OwnedCopy& c : *out) {
    uint32_t len = 0;
    if (!r.U32(&c.owner) || !r.U32(&len) || c.owner == 0 || !r.Bytes(len, &one))
      return Bad("LIST_COPIES answer: truncated entry");
    HOTPOT_RETURN_IF_ERROR(DecodePartCopy(one.data(), one.size(), &c.copy));
  }
  if (r.remaining() != 0) return Bad("LIST_COPIES answer: trailing bytes");
  return Status::Ok();
}

void EncodeCopyQuery(const CopyQuery& q, std::vector<uint8_t>* out) {
  out->clear();
  AppendU64(out, q.dataset);
  AppendU64(out, q.first_page);
  AppendU32(out, q.count);
}

Status DecodeCopyQuery(const uint8_t* p, size_t n, CopyQuery* out) {
  if (n != 20) return Bad("LIST_COPIES request: 20 bytes");
  out->dataset = GetU64(p);
  out->first_page = GetU64(p + 8);
  out->count = GetU32(p + 16);
  if (out->count == 0 || out->first_page + out->count < out->first_page) return Bad("LIST_COPIES request: bad range");
  return Status::Ok();
}

}  // namespace msg
}  // namespace engine
}  // namespace hotpot
