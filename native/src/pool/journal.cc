// The page journal: group commit for durability disk and the write-back of the data dir's page files off the
// callers' path (see PageJournal in pool_internal.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace internal {

namespace {

constexpr const char* kJournalNames[2] = {"pages.journal.0", "pages.journal.1"};
constexpr uint32_t kEntryHole = 1;

void EncodeHeader(uint64_t generation, uint8_t out[kJournalHeaderSize]) {
  std::memset(out, 0, kJournalHeaderSize);
  PutU64(out, kJournalMagic);
  PutU32(out + 8, kJournalFormat);
  PutU64(out + 16, generation);
  PutU32(out + 24, Crc32c(out, 24));
}

// The file's generation, or 0 for a file that is not a journal of this format (new, empty or torn header).
uint64_t DecodeHeader(const uint8_t* h) {
  if (GetU64(h) != kJournalMagic || GetU32(h + 8) != kJournalFormat || GetU32(h + 24) != Crc32c(h, 24)) return 0;
  return GetU64(h + 16);
}

// One dataset's data files during a replay (opened on its first entry; missing files: the dataset was dropped).
struct ReplayTarget {
  bool usable = false;
  UniqueFd pages, meta;
  std::string pages_path, meta_path;
  uint64_t page_count = 0;
};

Status OpenReplayTarget(const std::string& dir, uint64_t id, ReplayTarget* t) {
  t->pages_path = dir + "/" + PagesName(id);
  t->meta_path = dir + "/" + MetaName(id);
  if (!PathExists(t->pages_path) || !PathExists(t->meta_path)) return Status::Ok();  // dropped: nothing to restore
  t->pages = UniqueFd(::open(t->pages_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!t->pages.valid()) return Status::FromErrno(errno, "open " + t->pages_path);
  t->meta = UniqueFd(::open(t->meta_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!t->meta.valid()) return Status::FromErrno(errno, "open " + t->meta_path);
  HOTPOT_RETURN_IF_ERROR(ReadMetaHeader(t->meta.get(), id, t->meta_path, &t->page_count));
  t->usable = true;
  return Status::Ok();
}

// Replays one journal file's entries (generation `gen`) into the data dir; stops at the first torn or foreign entry.
Status ReplayFile(int fd, const std::string& path, uint64_t gen, const std::string& dir,
                  std::map<uint64_t, ReplayTarget>* targets, uint64_t* replayed) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size <= kJournalHeaderSize) return Status::Ok();
  std::vector<uint8_t> buf(size - kJournalHeaderSize);
  HOTPOT_RETURN_IF_ERROR(PreadFull(fd, buf.data(), buf.size(), kJournalHeaderSize, path));
  JournalEntry e;
  for (size_t off = 0, n = 0; (n = DecodeJournalEntry(buf.data() + off, buf.size() - off, gen, &e)) != 0; off += n) {
    auto it = targets->find(e.dataset);
    if (it == targets->end()) {
      it = targets->emplace(e.dataset, ReplayTarget()).first;
      HOTPOT_RETURN_IF_ERROR(OpenReplayTarget(dir, e.dataset, &it->second));
    }
    ReplayTarget& t = it->second;
    if (!t.usable || e.page >= t.page_count) continue;
    if (e.bytes == nullptr) HOTPOT_RETURN_IF_ERROR(PunchHole(t.pages.get(), e.page * kPageSize, kPageSize, t.pages_path));
    else HOTPOT_RETURN_IF_ERROR(PwriteFull(t.pages.get(), e.bytes, kPageSize, e.page * kPageSize, t.pages_path));
    HOTPOT_RETURN_IF_ERROR(
        PwriteFull(t.meta.get(), e.record, kMetaRecordSize, kMetaHeaderSize + e.page * kMetaRecordSize, t.meta_path));
    (*replayed)++;
  }
  return Status::Ok();
}

Status FailedWriteBack(const Status& st) {
  return st.Prefixed("the dataset's write-back to the data dir failed earlier and stays failed (its pages are kept "
                     "in the page journal until the node restarts, whose replay writes them again): ");
}

}  // namespace

void EncodeJournalEntryHeader(uint64_t generation, uint64_t dataset, uint64_t page,
                              const uint8_t record[kMetaRecordSize], const uint8_t* bytes,
                              uint8_t out[kJournalEntryHeaderSize]) {
  std::memset(out, 0, kJournalEntryHeaderSize);
  PutU32(out, kJournalEntryMagic);
  PutU32(out + 4, bytes == nullptr ? kEntryHole : 0);
  PutU64(out + 8, generation);
  PutU64(out + 16, dataset);
  PutU64(out + 24, page);
  std::memcpy(out + 32, record, kMetaRecordSize);
  uint32_t crc = Crc32c(out, 48);
  if (bytes != nullptr) crc = Crc32c(bytes, kPageSize, crc);
  PutU32(out + 48, crc);
}

size_t DecodeJournalEntry(const uint8_t* p, size_t avail, uint64_t generation, JournalEntry* out) {
  if (avail < kJournalEntryHeaderSize || GetU32(p) != kJournalEntryMagic || GetU64(p + 8) != generation) return 0;
  const uint32_t flags = GetU32(p + 4);
  if ((flags & ~kEntryHole) != 0 || GetU32(p + 52) != 0) return 0;
  const bool hole = (flags & kEntryHole) != 0;
  const size_t len = kJournalEntryHeaderSize + (hole ? 0 : kPageSize);
  if (avail < len) return 0;
  uint32_t crc = Crc32c(p, 48);
  if (!hole) crc = Crc32c(p + kJournalEntryHeaderSize, kPageSize, crc);
  if (crc != GetU32(p + 48)) return 0;  // torn: the rest was never acknowledged
  out->dataset = GetU64(p + 16);
  out->page = GetU64(p + 24);
  out->record = p + 32;
  out->bytes = hole ? nullptr : p + kJournalEntryHeaderSize;
  return len;
}

Status PageJournal::Open(const JournalOptions& options, std::unique_ptr<PageJournal>* out, uint64_t* replayed) {
  std::unique_ptr<PageJournal> j(new PageJournal(options));
  *replayed = 0;
  HOTPOT_RETURN_IF_ERROR(j->Init(replayed));
  *out = std::move(j);
  return Status::Ok();
}

Status PageJournal::Init(uint64_t* replayed) {
  uint64_t gens[2] = {0, 0};
  for (int i = 0; i < 2; i++) {
    File& f = files_[i];
    f.path = options_.dir + "/" + kJournalNames[i];
    f.fd = UniqueFd(::open(f.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!f.fd.valid()) return Status::FromErrno(errno, "open " + f.path);
    uint8_t h[kJournalHeaderSize];
    const ssize_t n = ::pread(f.fd.get(), h, sizeof h, 0);
    if (n < 0) return Status::FromErrno(errno, "pread " + f.path);
    if (size_t(n) == sizeof h) gens[i] = DecodeHeader(h);
  }
  // The older generation first: a page's last image wins. Both are replayed and the data files synced before
  // either is emptied, so a crash in between replays them again (writing the same images).
  std::map<uint64_t, ReplayTarget> targets;
  const int first = gens[0] <= gens[1] ? 0 : 1;
  for (int i : {first, 1 - first})
    if (gens[i] != 0)
      HOTPOT_RETURN_IF_ERROR(ReplayFile(files_[i].fd.get(), files_[i].path, gens[i], options_.dir, &targets, replayed));
  for (auto& [id, t] : targets) {
    if (!t.usable) continue;
    HOTPOT_RETURN_IF_ERROR(Fdatasync(t.pages.get(), t.pages_path));
    HOTPOT_RETURN_IF_ERROR(Fdatasync(t.meta.get(), t.meta_path));
  }
  const uint64_t g = std::max(gens[0], gens[1]) + 1;
  HOTPOT_RETURN_IF_ERROR(Reset(files_[0], g));
  HOTPOT_RETURN_IF_ERROR(Reset(files_[1], g + 1));
  HOTPOT_RETURN_IF_ERROR(SyncDir(options_.dir));
  active_ = 0;
  if (options_.write_back) thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

PageJournal::~PageJournal() {
  {
    // Every Submit returns before the pool goes away; new ones are refused from here on.
    std::unique_lock<std::mutex> lk(mu_);
    stop_ = true;
    wb_cv_.notify_all();
    done_cv_.wait(lk, [&] { return !busy_ && queue_.empty(); });
  }
  if (thread_.joinable()) thread_.join();
  if (options_.write_back) (void)WriteBackAll();  // a clean close leaves the journal empty (a faster restart)
}

Status PageJournal::Reset(File& f, uint64_t generation) {
  // The file keeps its blocks (an append into allocated blocks needs no metadata in its fdatasync): its old entries
  // stay behind the new header, of an older generation, and a replay stops at the first of them.
  uint8_t h[kJournalHeaderSize];
  EncodeHeader(generation, h);
  HOTPOT_RETURN_IF_ERROR(PwriteFull(f.fd.get(), h, sizeof h, 0, f.path));
  HOTPOT_RETURN_IF_ERROR(Fdatasync(f.fd.get(), f.path));
  struct stat st;
  if (::fstat(f.fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + f.path);
  std::lock_guard<std::mutex> l(mu_);
  f.generation = generation;
  f.tail = kJournalHeaderSize;
  f.allocated = std::max<uint64_t>(static_cast<uint64_t>(st.st_size), kJournalHeaderSize);
  f.entries.clear();
  f.carried = 0;
  f.carried_bytes = 0;
  return Status::Ok();
}

Status PageJournal::Carry(File& from, const std::vector<const Entry*>& images) {
  if (images.empty()) return Status::Ok();
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return !busy_; });  // the active file's tail is this batch's alone, as for a Submit
  if (!error_.ok()) return error_;
  busy_ = true;
  File& a = files_[active_];
  const uint64_t off = a.tail, gen = a.generation;
  lk.unlock();
  std::vector<uint8_t> buf;
  std::vector<Entry> added;
  Status st;
  for (const Entry* e : images) {
    const size_t at = buf.size(), len = kJournalEntryHeaderSize + (e->hole ? 0 : kPageSize);
    buf.resize(at + len);
    st = PreadFull(from.fd.get(), buf.data() + at, len, e->off, from.path);
    if (!st.ok()) break;
    uint8_t record[kMetaRecordSize];
    std::memcpy(record, buf.data() + at + 32, kMetaRecordSize);
    EncodeJournalEntryHeader(gen, e->store->id(), e->page, record,
                             e->hole ? nullptr : buf.data() + at + kJournalEntryHeaderSize, buf.data() + at);
    added.push_back(Entry{e->store, e->page, off + at, e->hole});
  }
  if (st.ok()) st = Append(a, off, buf);
  lk.lock();
  if (st.ok()) {
    if (a.entries.empty()) a.first = std::chrono::steady_clock::now();
    a.tail += buf.size();
    a.entries.insert(a.entries.end(), added.begin(), added.end());
    a.carried += added.size();
    a.carried_bytes += buf.size();
    carried_.fetch_add(added.size(), std::memory_order_relaxed);
  }
  busy_ = false;
  done_cv_.notify_all();
  return st;
}

uint64_t PageJournal::images() {
  std::lock_guard<std::mutex> l(mu_);
  return files_[0].entries.size() + files_[1].entries.size();
}

Status PageJournal::Submit(DatasetStoreImpl* store, const std::vector<uint64_t>* pages) {
  Request req{store, pages, Status::Ok(), false};
  std::unique_lock<std::mutex> lk(mu_);
  if (stop_) return Status(Code::kUnavailable, "pool is shutting down");
  queue_.push_back(&req);
  std::vector<Request*> batch;
  while (!req.done) {
    if (busy_) {  // a batch is under way (this request may have queued after it started): wait for it
      done_cv_.wait(lk);
      continue;
    }
    // Everything that queued while the previous batch was syncing rides on this batch's fdatasync.
    busy_ = true;
    batch.assign(queue_.begin(), queue_.end());
    queue_.clear();
    File& f = files_[active_];
    const uint64_t off = f.tail;
    const Status poisoned = error_;
    lk.unlock();
    std::vector<Entry> added;
    uint64_t bytes = 0;
    Status st = poisoned;
    if (st.ok()) st = WriteBatch(batch, f, off, &added, &bytes);
    lk.lock();
    if (st.ok()) {
      if (f.entries.empty() && !added.empty()) f.first = std::chrono::steady_clock::now();
      f.tail += bytes;
      f.entries.insert(f.entries.end(), added.begin(), added.end());
    }
    for (Request* r : batch) {
      if (!st.ok() && r->status.ok()) r->status = st;
      r->done = true;
    }
    syncs_.fetch_add(1, std::memory_order_relaxed);
    synced_commits_.fetch_add(batch.size(), std::memory_order_relaxed);
    busy_ = false;
    done_cv_.notify_all();
    if (f.tail >= options_.rotate_bytes) wb_cv_.notify_one();
  }
  return req.status;
}

Status PageJournal::WriteBatch(std::vector<Request*>& batch, File& f, uint64_t off, std::vector<Entry>* added,
                               uint64_t* bytes) {
  std::vector<uint8_t> buf;
  std::map<std::pair<DatasetStoreImpl*, uint64_t>, bool> seen;  // a page listed twice in a batch is written once
  uint8_t record[kMetaRecordSize];
  for (Request* r : batch) {
    Status st = r->store->WriteBackError();
    const size_t mark = buf.size(), mark_added = added->size();
    for (size_t i = 0; st.ok() && i < r->pages->size(); i++) {
      const uint64_t pg = (*r->pages)[i];
      if (!seen.emplace(std::make_pair(r->store, pg), true).second) continue;
      const size_t at = buf.size();
      buf.resize(at + kJournalEntryHeaderSize + kPageSize);
      bool hole = false;
      st = r->store->SnapshotPage(pg, record, buf.data() + at + kJournalEntryHeaderSize, &hole);
      if (!st.ok()) break;
      EncodeJournalEntryHeader(f.generation, r->store->id(), pg, record, hole ? nullptr : buf.data() + at + kJournalEntryHeaderSize,
                        buf.data() + at);
      if (hole) buf.resize(at + kJournalEntryHeaderSize);
      added->push_back(Entry{r->store, pg, off + at, hole});
    }
    if (!st.ok()) {  // this request fails alone; its entries are taken out of the batch
      r->status = st;
      for (size_t k = mark_added; k < added->size(); k++) seen.erase(std::make_pair((*added)[k].store, (*added)[k].page));
      buf.resize(mark);
      added->resize(mark_added);
    }
  }
  *bytes = buf.size();
  return Append(f, off, buf);
}

Status PageJournal::Append(File& f, uint64_t off, const std::vector<uint8_t>& buf) {
  if (buf.empty()) return Status::Ok();
  // Appending past the end of the file would make every fdatasync commit a new file size and new blocks (on ext4 a
  // journal commit each): the file grows ahead in steps of zeros, written once, and batches overwrite them.
  Status st;
  if (off + buf.size() > f.allocated) {
    const uint64_t grow_to = (off + buf.size() + kJournalGrowBytes - 1) / kJournalGrowBytes * kJournalGrowBytes;
    const std::vector<uint8_t> zeros(grow_to - f.allocated, 0);
    st = PwriteFull(f.fd.get(), zeros.data(), zeros.size(), f.allocated, f.path);
    if (!st.ok()) return st;
    std::lock_guard<std::mutex> l(mu_);
    f.allocated = grow_to;
  }
  st = PwriteFull(f.fd.get(), buf.data(), buf.size(), off, f.path);
  if (!st.ok()) {
    // Nothing of a failed batch may stay behind the tail: complete entries of it past the end of a shorter later
    // batch would be replayed after that batch's newer images of the same pages.
    const std::vector<uint8_t> zeros(buf.size(), 0);
    if (!PwriteFull(f.fd.get(), zeros.data(), zeros.size(), off, f.path).ok()) {
      std::lock_guard<std::mutex> l(mu_);
      error_ = st.Prefixed("the page journal could not take back a failed write and stays failed until the node "
                           "restarts: ");
    }
    return st;
  }
  st = Fdatasync(f.fd.get(), f.path);
  fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
  if (!st.ok()) {
    // Linux reports a write-back error once: a later fdatasync could succeed over pages that never reached the disk.
    std::lock_guard<std::mutex> l(mu_);
    error_ = st.Prefixed("the page journal failed earlier and stays failed until the node restarts (pages persisted "
                         "before it may be lost): ");
  }
  return st;
}

void PageJournal::Loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    const File& a = files_[active_];
    const auto age = std::chrono::steady_clock::now() - a.first;
    // Images carried over from a failed dataset do not make a round due by themselves (they would be carried on
    // every round, an fdatasync a second for nothing).
    const bool due = a.tail - a.carried_bytes >= options_.rotate_bytes ||
                     (a.entries.size() > a.carried && age >= std::chrono::milliseconds(options_.rotate_ms)) ||
                     !files_[1 - active_].entries.empty();  // a sealed file whose write-back failed: retried
    if (!due) {
      wb_cv_.wait_for(lk, std::chrono::milliseconds(std::max(10, options_.rotate_ms / 4)));
      continue;
    }
    lk.unlock();
    const Status st = WriteBackRound();
    lk.lock();
    // A round that failed (a full disk) is retried after a pause, not in a busy loop.
    if (!st.ok()) wb_cv_.wait_for(lk, std::chrono::milliseconds(options_.rotate_ms));
  }
}

Status PageJournal::WriteBackAll() {
  std::lock_guard<std::mutex> wl(wb_mu_);
  // Two rounds: the sealed file (if an earlier round left one), then the active one; then both are empty.
  for (int round = 0; round < 2; round++) HOTPOT_RETURN_IF_ERROR(WriteBackRoundLocked());
  return Status::Ok();
}

Status PageJournal::WriteBackRound() {
  std::lock_guard<std::mutex> wl(wb_mu_);
  return WriteBackRoundLocked();
}

Status PageJournal::WriteBackRoundLocked() {
  File* sealed = nullptr;
  {
    std::unique_lock<std::mutex> lk(mu_);
    File& other = files_[1 - active_];
    if (!other.entries.empty()) {
      sealed = &other;  // an earlier round's write-back failed: finish it before sealing another file
    } else {
      done_cv_.wait(lk, [&] { return !busy_; });  // no batch is writing into the active file while it is sealed
      if (files_[active_].entries.empty()) return Status::Ok();
      sealed = &files_[active_];
      active_ = 1 - active_;
    }
  }
  return WriteBack(*sealed);
}

Status PageJournal::WriteBack(File& f) {
  write_backs_.fetch_add(1, std::memory_order_relaxed);
  // The last image of each page (later entries are newer), grouped by dataset.
  std::map<DatasetStoreImpl*, std::map<uint64_t, const Entry*>> last;
  for (const Entry& e : f.entries) last[e.store][e.page] = &e;
  std::vector<uint8_t> buf(kJournalEntryHeaderSize + kPageSize);
  Status result;
  std::vector<DatasetStoreImpl*> done;
  for (auto& [store, pages] : last) {
    if (!store->WriteBackError().ok()) {
      // Failed earlier: its images must stay journaled until a restart replays them (the only place they are
      // durable), but not in this file, which could then never be emptied — the other one would take every later
      // batch and grow without bound. They move to the active file (one batch), and this file empties.
      std::vector<const Entry*> images;
      for (const auto& [pg, e] : pages) images.push_back(e);
      const Status cst = Carry(f, images);
      if (cst.ok()) done.push_back(store);
      else if (result.ok()) result = cst;
      continue;
    }
    std::vector<DatasetStoreImpl::MetaRecord> records;
    records.reserve(pages.size());
    Status st;
    for (auto& [pg, e] : pages) {
      const size_t len = kJournalEntryHeaderSize + (e->hole ? 0 : kPageSize);
      st = PreadFull(f.fd.get(), buf.data(), len, e->off, f.path);
      if (!st.ok()) break;
      DatasetStoreImpl::MetaRecord rec;
      rec.page = pg;
      std::memcpy(rec.bytes, buf.data() + 32, kMetaRecordSize);
      records.push_back(rec);
      st = store->WriteBackPage(pg, e->hole ? nullptr : buf.data() + kJournalEntryHeaderSize);
      if (!st.ok()) break;
    }
    // Pages first, then records: a record on the disk never describes bytes that are not there yet.
    bool sync_failed = false;
    if (st.ok()) {
      st = store->SyncDataPages();
      fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
      sync_failed = !st.ok();
    }
    if (st.ok()) st = store->WriteThroughMeta(records);
    if (st.ok()) {
      st = store->SyncDataMeta();
      fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
      sync_failed = !st.ok();
    }
    if (st.code() == Code::kFailedPrecondition) {  // dropped meanwhile: nothing of it needs to reach the disk
      done.push_back(store);
      continue;
    }
    if (!st.ok()) {
      // A failed pwrite is retried by the next round; a failed fdatasync is not (Fdatasync): the dataset fails.
      if (sync_failed) store->SetWriteBackError(FailedWriteBack(st));
      if (result.ok()) result = st;
      continue;
    }
    done.push_back(store);
  }
  if (done.size() == last.size()) {
    // Emptied with a generation after the active file's: it is replayed after it if it becomes active again.
    uint64_t next = 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      next = files_[active_].generation + 1;
    }
    return Reset(f, next);
  }
  // Keep only the images of the datasets not written back (retried, or kept for the replay of the next start).
  std::vector<Entry> keep;
  for (const Entry& e : f.entries)
    if (std::find(done.begin(), done.end(), e.store) == done.end()) keep.push_back(e);
  std::lock_guard<std::mutex> l(mu_);
  f.entries = std::move(keep);
  if (!result.ok()) return result;
  return Status(Code::kDataLoss, "page journal: the images of a dataset whose write-back failed are kept until the "
                                 "node restarts");
}

}  // namespace internal
}  // namespace pool
}  // namespace hotpot
