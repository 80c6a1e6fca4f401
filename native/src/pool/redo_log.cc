// The redo log (layout and rules in pool_internal.h, RedoLogImpl).
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace internal {

namespace {

constexpr uint64_t kRedoMagic = 0x31304F4445525048ull;  // "HPREDO01"
constexpr uint32_t kRedoFormat = 1;
constexpr uint64_t kRedoHeaderSize = 4096;
constexpr uint64_t kSlotHeaderSize = 64;
uint64_t RedoFileSize(uint32_t slots) { return RedoBodyBase(slots) + uint64_t(slots) * kRedoSlotCapacity; }
constexpr uint32_t kSlotValid = 0x44455256u;  // "VRED"
constexpr size_t kBodyFixed = 32;
constexpr size_t kRangeFixed = 12;
// Bodies above this are punched out on Free so a rare huge commit does not keep tmpfs pages.
constexpr uint64_t kPunchAbove = 64 * 1024;
static_assert(RedoBodyBase(64) == 8192, "the first format's geometry (64 slots) is kept");
static_assert(kRedoSlots <= kRedoMaxSlots, "slot count within what Open accepts");

uint64_t SlotHeaderOff(uint32_t slot) { return kRedoHeaderSize + uint64_t(slot) * kSlotHeaderSize; }

void EncodeFileHeader(uint32_t slots, uint8_t out[kRedoHeaderSize]) {
  std::memset(out, 0, kRedoHeaderSize);
  PutU64(out, kRedoMagic);
  PutU32(out + 8, kRedoFormat);
  PutU32(out + 12, slots);
  PutU64(out + 16, kRedoSlotCapacity);
  PutU32(out + 24, Crc32c(out, 24));
}

bool ValidPhase(uint8_t p) {
  return p >= static_cast<uint8_t>(RedoPhase::kPrepared) && p <= static_cast<uint8_t>(RedoPhase::kCopyFrozen);
}
// Phases an owner's record moves through with SetPhase (a decision record is written once and freed).
bool ApplyPhase(uint8_t p) {
  return (p >= static_cast<uint8_t>(RedoPhase::kPrepared) && p <= static_cast<uint8_t>(RedoPhase::kApplied)) ||
         p == static_cast<uint8_t>(RedoPhase::kFrozen);
}
constexpr size_t kPartSize = 16;  // node u32, first page + 1 u32 (0: not recorded; was reserved), txid u64

}  // namespace

// An owner record's commit id travels as one part {committer, commit id}: decision records are the only ones with
// parts otherwise, so the body format (and logs written before commit ids were kept) stays the same. A prepare copy
// always has one part: {owner node, commit id (0 for a one-shot part)}. The PREPARE's epoch stamp, when known, travels
// as a second part {node 0, epoch} (records written before it was kept have one part and read as "not known").
Status EncodeRedoBody(const RedoRecord& record, std::vector<uint8_t>* out) {
  RedoRecord with_id;
  const bool copy = IsCopyPhase(record.phase);
  const bool id_as_part = copy || (record.phase != RedoPhase::kDecided && record.commit_id != 0);
  if (id_as_part) {
    if (!record.parts.empty())
      return Status(Code::kInvalidArgument, "redo record: an owner record has a commit id, not parts");
    if (copy && record.owner_node == 0)
      return Status(Code::kInvalidArgument, "redo record: a prepare copy names its owner node");
    with_id = record;
    with_id.parts = {RedoPart{copy ? record.owner_node : record.committer_node_id, record.commit_id}};
    if (record.sender_epoch != 0) with_id.parts.push_back(RedoPart{0, record.sender_epoch});
  } else if (record.sender_epoch != 0) {
    return Status(Code::kInvalidArgument, "redo record: only a part of a multi-part commit keeps an epoch stamp");
  }
  const RedoRecord& r = id_as_part ? with_id : record;
  uint64_t range_bytes = 0;
  uint64_t total = kBodyFixed + r.page_versions.size() * 8 + r.parts.size() * kPartSize;
  for (const RedoRange& rg : r.ranges) {
    if (rg.bytes.empty() || rg.bytes.size() > kPageSize || rg.offset % kPageSize + rg.bytes.size() > kPageSize) {
      return Status(Code::kInvalidArgument, "redo range at offset " + std::to_string(rg.offset) + " of " +
                                                std::to_string(rg.bytes.size()) +
                                                " bytes: must be 1..4096 bytes within one page");
    }
    range_bytes += rg.bytes.size();
    total += kRangeFixed + rg.bytes.size();
  }
  if (range_bytes > kRedoMaxRangeBytes || total > kRedoSlotCapacity || r.ranges.size() > UINT32_MAX ||
      r.page_versions.size() > UINT32_MAX || r.parts.size() > UINT32_MAX) {
    return Status(Code::kResourceExhausted, "redo record of " + std::to_string(range_bytes) + " range bytes (" +
                                                std::to_string(total) + " encoded) exceeds a slot (" +
                                                std::to_string(kRedoMaxRangeBytes) + " range bytes, " +
                                                std::to_string(kRedoSlotCapacity) + " encoded)");
  }
  out->assign(static_cast<size_t>(total), 0);
  uint8_t* p = out->data();
  PutU64(p, r.txid);
  PutU64(p + 8, r.dataset_id);
  PutU32(p + 16, r.committer_node_id);
  PutU32(p + 20, static_cast<uint32_t>(r.ranges.size()));
  PutU32(p + 24, static_cast<uint32_t>(r.page_versions.size()));
  PutU32(p + 28, static_cast<uint32_t>(r.parts.size()));  // 0 in records written before decisions existed
  p += kBodyFixed;
  for (const RedoRange& rg : r.ranges) {
    PutU64(p, rg.offset);
    PutU32(p + 8, static_cast<uint32_t>(rg.bytes.size()));
    std::memcpy(p + kRangeFixed, rg.bytes.data(), rg.bytes.size());
    p += kRangeFixed + rg.bytes.size();
  }
  for (uint64_t v : r.page_versions) {
    PutU64(p, v);
    p += 8;
  }
  for (const RedoPart& part : r.parts) {
    PutU32(p, part.node);
    PutU32(p + 4, part.page_plus1);
    PutU64(p + 8, part.txid);
    p += kPartSize;
  }
  return Status::Ok();
}

Status DecodeRedoBody(const uint8_t* body, size_t len, RedoRecord* out) {
  if (len < kBodyFixed) return Status(Code::kDataLoss, "redo body shorter than its fixed fields");
  RedoRecord r;
  r.txid = GetU64(body);
  r.dataset_id = GetU64(body + 8);
  r.committer_node_id = GetU32(body + 16);
  const uint32_t n_ranges = GetU32(body + 20);
  const uint32_t n_versions = GetU32(body + 24);
  const uint32_t n_parts = GetU32(body + 28);
  size_t pos = kBodyFixed;
  // Every count is checked against the bytes that remain before anything is allocated or copied.
  if (n_ranges > (len - pos) / kRangeFixed) return Status(Code::kDataLoss, "redo body: range count too large");
  r.ranges.reserve(n_ranges);
  for (uint32_t i = 0; i < n_ranges; i++) {
    if (len - pos < kRangeFixed) return Status(Code::kDataLoss, "redo body: truncated range header");
    RedoRange rg;
    rg.offset = GetU64(body + pos);
    const uint32_t rl = GetU32(body + pos + 8);
    pos += kRangeFixed;
    if (rl == 0 || rl > kPageSize || rg.offset % kPageSize + rl > kPageSize) {
      return Status(Code::kDataLoss, "redo body: invalid range length");
    }
    if (len - pos < rl) return Status(Code::kDataLoss, "redo body: truncated range bytes");
    rg.bytes.assign(body + pos, body + pos + rl);
    pos += rl;
    r.ranges.push_back(std::move(rg));
  }
  if (uint64_t(len - pos) != uint64_t(n_versions) * 8 + uint64_t(n_parts) * kPartSize) {
    return Status(Code::kDataLoss, "redo body: page version and part counts do not match the body length");
  }
  r.page_versions.reserve(n_versions);
  for (uint32_t i = 0; i < n_versions; i++, pos += 8) r.page_versions.push_back(GetU64(body + pos));
  r.parts.reserve(n_parts);
  for (uint32_t i = 0; i < n_parts; i++, pos += kPartSize) {
    r.parts.push_back(RedoPart{GetU32(body + pos), GetU64(body + pos + 8), GetU32(body + pos + 4)});
  }
  *out = std::move(r);
  return Status::Ok();
}

Status OwnerCommitIdFromParts(RedoRecord* r) {
  if (r->phase != RedoPhase::kDecided && r->parts.size() == 2) {  // {node 0, epoch stamp} after the commit id
    if (r->parts[1].node != 0 || r->parts[1].page_plus1 != 0 || r->parts[1].txid == 0)
      return Status(Code::kDataLoss, "redo record of tx " + std::to_string(r->txid) + ": malformed epoch stamp");
    r->sender_epoch = r->parts[1].txid;
    r->parts.pop_back();
  }
  if (IsCopyPhase(r->phase)) {
    if (r->parts.size() != 1 || r->parts[0].node == 0)
      return Status(Code::kDataLoss, "prepare copy of tx " + std::to_string(r->txid) + ": malformed owner part");
    r->owner_node = r->parts[0].node;
    r->commit_id = r->parts[0].txid;
    r->parts.clear();
    return Status::Ok();
  }
  if (r->phase == RedoPhase::kDecided || r->parts.empty()) return Status::Ok();
  if (r->parts.size() != 1 || r->parts[0].node != r->committer_node_id || r->parts[0].txid == 0 ||
      r->parts[0].page_plus1 != 0)
    return Status(Code::kDataLoss, "redo record of tx " + std::to_string(r->txid) + ": malformed commit id");
  r->commit_id = r->parts[0].txid;
  r->parts.clear();
  return Status::Ok();
}

Status RedoLogImpl::Open(const std::string& path, bool on_disk, std::unique_ptr<RedoLogImpl>* out,
                         uint32_t slots_if_new) {
  if (slots_if_new == 0 || slots_if_new > kRedoMaxSlots) {
    return Status(Code::kInvalidArgument, "redo log: slot count " + std::to_string(slots_if_new) + " not in [1, " +
                                              std::to_string(kRedoMaxSlots) + "]");
  }
  std::unique_ptr<RedoLogImpl> log(new RedoLogImpl());
  log->path_ = path;
  log->on_disk_ = on_disk;
  const bool existed = PathExists(path);
  if (!existed) {
    // Created under a temporary name and renamed: a redo.log always has a complete header.
    const std::string tmp = path + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return Status::FromErrno(errno, "create " + tmp);
    if (::ftruncate(fd.get(), static_cast<off_t>(RedoFileSize(slots_if_new))) != 0)
      return Status::FromErrno(errno, "ftruncate " + tmp);
    uint8_t hdr[kRedoHeaderSize];
    EncodeFileHeader(slots_if_new, hdr);
    HOTPOT_RETURN_IF_ERROR(PwriteFull(fd.get(), hdr, sizeof hdr, 0, tmp));
    HOTPOT_RETURN_IF_ERROR(PersistFile(fd.get(), on_disk, tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::FromErrno(errno, "rename " + tmp + " -> " + path);
  }
  log->fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!log->fd_.valid()) return Status::FromErrno(errno, "open " + path);
  uint8_t hdr[kRedoHeaderSize];
  HOTPOT_RETURN_IF_ERROR(PreadFull(log->fd_.get(), hdr, sizeof hdr, 0, path));
  // The slot count is the file's: checked against the header's own CRC, then the whole header against what this
  // code would write for that count.
  const uint32_t slots = GetU32(hdr + 12);
  uint8_t want[kRedoHeaderSize];
  EncodeFileHeader(slots, want);
  if (slots == 0 || slots > kRedoMaxSlots || std::memcmp(hdr, want, 32) != 0) {
    return Status(Code::kFailedPrecondition, path + ": not a redo log of this format (magic " +
                                                 std::to_string(GetU64(hdr)) + ", format " +
                                                 std::to_string(GetU32(hdr + 8)) + ", " + std::to_string(slots) +
                                                 " slots)");
  }
  struct stat st;
  if (::fstat(log->fd_.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  if (static_cast<uint64_t>(st.st_size) != RedoFileSize(slots)) {
    return Status(Code::kFailedPrecondition, path + " is " + std::to_string(st.st_size) + " bytes, expected " +
                                                 std::to_string(RedoFileSize(slots)) + " for " +
                                                 std::to_string(slots) + " slots");
  }
  log->slots_ = slots;
  log->in_use_.assign(slots, false);
  log->body_len_.assign(slots, 0);
  if (existed) {
    // The whole slot table in one read.
    std::vector<uint8_t> table(size_t(slots) * kSlotHeaderSize);
    HOTPOT_RETURN_IF_ERROR(PreadFull(log->fd_.get(), table.data(), table.size(), SlotHeaderOff(0), path));
    for (uint32_t s = 0; s < slots; s++) {
      const uint8_t* sh = table.data() + size_t(s) * kSlotHeaderSize;
      if (GetU32(sh) != kSlotValid) continue;
      RedoRecord unused;
      if (log->ReadSlot(s, &unused)) {
        log->in_use_[s] = true;
        log->body_len_[s] = GetU64(sh + 16);
        log->used_++;
      } else {
        // A marker over a body that fails its checksum: a torn record, never acknowledged. Reclaim the slot.
        uint8_t zero[4] = {};
        HOTPOT_RETURN_IF_ERROR(PwriteFull(log->fd_.get(), zero, sizeof zero, SlotHeaderOff(s), path));
        HOTPOT_RETURN_IF_ERROR(PersistFile(log->fd_.get(), on_disk, path));
      }
    }
  }
  *out = std::move(log);
  return Status::Ok();
}

bool RedoLogImpl::ReadSlot(uint32_t slot, RedoRecord* out) const {
  uint8_t sh[kSlotHeaderSize];
  if (!PreadFull(fd_.get(), sh, sizeof sh, SlotHeaderOff(slot), path_).ok()) return false;
  if (GetU32(sh) != kSlotValid) return false;
  const uint8_t phase = sh[4];
  const uint64_t len = GetU64(sh + 16);
  if (!ValidPhase(phase) || len < kBodyFixed || len > kRedoSlotCapacity) return false;
  std::vector<uint8_t> body(static_cast<size_t>(len));
  if (!PreadFull(fd_.get(), body.data(), body.size(), SlotBodyOff(slot), path_).ok()) return false;
  if (Crc32c(body.data(), body.size()) != GetU32(sh + 24)) return false;
  RedoRecord r;
  if (!DecodeRedoBody(body.data(), body.size(), &r).ok()) return false;
  if (r.txid != GetU64(sh + 8)) return false;
  r.phase = static_cast<RedoPhase>(phase);
  if (!OwnerCommitIdFromParts(&r).ok()) return false;
  *out = std::move(r);
  return true;
}

Status RedoLogImpl::Append(const RedoRecord& record, uint32_t* slot) {
  if (slot == nullptr) return Status(Code::kInvalidArgument, "redo Append: null slot output");
  if (!ValidPhase(static_cast<uint8_t>(record.phase))) {
    return Status(Code::kInvalidArgument, "redo Append: phase must be prepared, applying, applied, decided or copy");
  }
  std::vector<uint8_t> body;
  HOTPOT_RETURN_IF_ERROR(EncodeRedoBody(record, &body));
  uint32_t s = slots_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    // The lowest free slot: small records keep reusing the same few tmpfs pages.
    for (uint32_t i = 0; used_ < slots_ && i < slots_; i++) {
      if (!in_use_[i]) {
        s = i;
        in_use_[i] = true;
        body_len_[i] = body.size();
        used_++;
        break;
      }
    }
  }
  if (s == slots_) {
    return Status(Code::kResourceExhausted, "redo log full: all " + std::to_string(slots_) +
                                                " slots hold in-flight parts, prepare copies or decisions");
  }
  // Body and slot header (validity marker included) in one flush: the header carries the body's CRC32C, so a
  // crash that persisted the marker but not the whole body leaves a record that fails its checksum and is ignored
  // as torn (the original's persist-ordering rule needed a second flush between body and marker; the checksum
  // makes the order irrelevant). The 64-byte header never straddles a sector.
  uint8_t sh[kSlotHeaderSize] = {};
  PutU32(sh, kSlotValid);
  sh[4] = static_cast<uint8_t>(record.phase);
  PutU64(sh + 8, record.txid);
  PutU64(sh + 16, body.size());
  PutU32(sh + 24, Crc32c(body.data(), body.size()));
  Status st = PwriteFull(fd_.get(), body.data(), body.size(), SlotBodyOff(s), path_);
  if (st.ok()) st = PwriteFull(fd_.get(), sh, sizeof sh, SlotHeaderOff(s), path_);
  if (st.ok()) st = SyncWrites();
  if (!st.ok()) {
    // Not acknowledged: take the marker back (best effort) so the slot is not read as a record after a restart.
    uint8_t zero[4] = {};
    (void)PwriteFull(fd_.get(), zero, sizeof zero, SlotHeaderOff(s), path_);
    std::lock_guard<std::mutex> lk(mu_);
    in_use_[s] = false;
    used_--;
    return st;
  }
  *slot = s;
  return Status::Ok();
}

Status RedoLogImpl::CheckSlotInUse(uint32_t slot) const {
  if (slot >= slots_) {
    return Status(Code::kOutOfRange, "redo slot " + std::to_string(slot) + " >= " + std::to_string(slots_));
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (!in_use_[slot]) return Status(Code::kFailedPrecondition, "redo slot " + std::to_string(slot) + " is free");
  return Status::Ok();
}

Status RedoLogImpl::SetPhase(uint32_t slot, RedoPhase phase) {
  const bool to_copy_applied = phase == RedoPhase::kCopyApplied || phase == RedoPhase::kCopyFrozen;
  if (!ApplyPhase(static_cast<uint8_t>(phase)) && !to_copy_applied) {
    return Status(Code::kInvalidArgument, "redo SetPhase: phase must be prepared, applying, applied or frozen, or "
                                          "copy-applied or copy-frozen (use Free)");
  }
  HOTPOT_RETURN_IF_ERROR(CheckSlotInUse(slot));
  if (to_copy_applied) {  // only a prepare copy moves there (an owner's record never does; not checked, hot path)
    uint8_t cur = 0;
    HOTPOT_RETURN_IF_ERROR(PreadFull(fd_.get(), &cur, 1, SlotHeaderOff(slot) + 4, path_));
    if (!IsCopyPhase(static_cast<RedoPhase>(cur)))
      return Status(Code::kInvalidArgument, "redo SetPhase: slot " + std::to_string(slot) +
                                                " is not a prepare copy (phase " + std::to_string(cur) + ")");
  }
  // One byte, outside the body checksum: the phase changes in place without tearing the record.
  const uint8_t p = static_cast<uint8_t>(phase);
  HOTPOT_RETURN_IF_ERROR(PwriteFull(fd_.get(), &p, 1, SlotHeaderOff(slot) + 4, path_));
  // kApplying must be durable before the owner pages change (a crash mid-apply is then replayed, not undone).
  // kApplied need not be: a record found as kApplying after a crash is replayed, and replay skips pages whose
  // version already reached the record's — one fdatasync less per commit on durability disk.
  if (phase == RedoPhase::kApplied) {
    PersistBarrier();
    return Status::Ok();
  }
  return SyncWrites();
}

Status RedoLogImpl::SyncWrites() {
  PersistBarrier();
  if (!on_disk_) return Status::Ok();  // tmpfs: ordering is all a persist is
  std::unique_lock<std::mutex> lk(sync_mu_);
  const uint64_t mine = ++writes_done_;  // this caller's pwrites returned before this point
  while (synced_ < mine) {
    if (!sync_error_.ok()) return sync_error_;
    if (syncing_) {  // a sync is under way; it may have started before this write: wait, then look again
      sync_cv_.wait(lk);
      continue;
    }
    syncing_ = true;
    const uint64_t covered = writes_done_;
    lk.unlock();
    const Status st = Fdatasync(fd_.get(), path_);
    fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
    lk.lock();
    syncing_ = false;
    if (st.ok()) {
      if (covered > synced_) synced_ = covered;
    } else {
      sync_error_ = st.Prefixed("the redo log failed earlier and stays failed until the node restarts (records "
                                "written before it may be lost): ");
    }
    sync_cv_.notify_all();
  }
  return Status::Ok();
}

Status RedoLogImpl::Free(uint32_t slot) {
  HOTPOT_RETURN_IF_ERROR(CheckSlotInUse(slot));
  uint8_t zero[4] = {};
  HOTPOT_RETURN_IF_ERROR(PwriteFull(fd_.get(), zero, sizeof zero, SlotHeaderOff(slot), path_));
  // Not synced: a freed record that reappears after a power loss is either prepared (discarded) or applied
  // (replay skips pages already at or past its versions), so losing the free is harmless. The next Append to the
  // slot syncs it anyway.
  PersistBarrier();
  uint64_t len;
  {
    std::lock_guard<std::mutex> lk(mu_);
    len = body_len_[slot];
  }
  if (len > kPunchAbove) {
    HOTPOT_RETURN_IF_ERROR(PunchHole(fd_.get(), SlotBodyOff(slot), (len + kPageSize - 1) / kPageSize * kPageSize, path_));
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (in_use_[slot]) used_--;
  in_use_[slot] = false;
  body_len_[slot] = 0;
  return Status::Ok();
}

std::vector<std::pair<uint32_t, RedoRecord>> RedoLogImpl::InFlight() const {
  // Only the slots in use are read (a slot is in use from before its record is written until after it is freed).
  std::vector<uint32_t> used;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (uint32_t s = 0; s < slots_; s++)
      if (in_use_[s]) used.push_back(s);
  }
  std::vector<std::pair<uint32_t, RedoRecord>> out;
  for (uint32_t s : used) {
    RedoRecord r;
    if (ReadSlot(s, &r)) out.emplace_back(s, std::move(r));
  }
  return out;
}

uint64_t RedoLogImpl::in_flight() const {
  std::lock_guard<std::mutex> lk(mu_);
  return used_;
}

}  // namespace internal
}  // namespace pool
}  // namespace hotpot
