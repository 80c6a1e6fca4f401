// One dataset's slice of the PM pool: the sparse page file (the node cache apps map MAP_PRIVATE), the page
// records (meta file mapped MAP_SHARED) and, with durability disk, their write-through copies in the data dir.
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/bytes.h"
#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace internal {

namespace {

bool ValidState(uint8_t s) { return s <= static_cast<uint8_t>(PageState::kOwned); }

// Rounds a byte size up to whole pages; 0 for an invalid size.
uint64_t PagesFor(uint64_t size_bytes) {
  if (size_bytes == 0 || size_bytes > kMaxDatasetBytes) return 0;
  return (size_bytes + kPageSize - 1) / kPageSize;
}

Status FileSize(int fd, const std::string& what, uint64_t* size) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "fstat " + what);
  *size = static_cast<uint64_t>(st.st_size);
  return Status::Ok();
}

Status OpenRw(const std::string& path, UniqueFd* out) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + path);
  *out = std::move(fd);
  return Status::Ok();
}

Status ExtendTo(int fd, uint64_t size, const std::string& what) {
  uint64_t cur = 0;
  HOTPOT_RETURN_IF_ERROR(FileSize(fd, what, &cur));
  if (cur >= size) return Status::Ok();
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return Status::FromErrno(errno, "ftruncate " + what);
  return Status::Ok();
}

// Creates a fresh (pages, meta) pair in dir. The meta file appears last, by rename, with a complete header:
// a meta file on disk always describes a pages file that exists (the dataset's commit point).
Status CreateFiles(const std::string& dir, uint64_t id, uint64_t page_count, bool on_disk) {
  const std::string pages = dir + "/" + PagesName(id);
  const std::string meta = dir + "/" + MetaName(id);
  const std::string tmp = meta + ".tmp";
  {
    // O_TRUNC: without a meta file a leftover pages file belongs to a creation that never completed.
    UniqueFd pf(::open(pages.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!pf.valid()) return Status::FromErrno(errno, "create " + pages);
    if (::ftruncate(pf.get(), static_cast<off_t>(page_count * kPageSize)) != 0) {
      return Status::FromErrno(errno, "ftruncate " + pages);
    }
    HOTPOT_RETURN_IF_ERROR(PersistFile(pf.get(), on_disk, pages));
  }
  {
    UniqueFd mf(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!mf.valid()) return Status::FromErrno(errno, "create " + tmp);
    if (::ftruncate(mf.get(), static_cast<off_t>(kMetaHeaderSize + page_count * kMetaRecordSize)) != 0) {
      return Status::FromErrno(errno, "ftruncate " + tmp);
    }
    uint8_t hdr[kMetaHeaderSize];
    EncodeMetaHeader(id, page_count, hdr);
    HOTPOT_RETURN_IF_ERROR(PwriteFull(mf.get(), hdr, sizeof hdr, 0, tmp));
    HOTPOT_RETURN_IF_ERROR(PersistFile(mf.get(), on_disk, tmp));
  }
  if (::rename(tmp.c_str(), meta.c_str()) != 0) return Status::FromErrno(errno, "rename " + tmp + " -> " + meta);
  if (on_disk) HOTPOT_RETURN_IF_ERROR(SyncDir(dir));
  return Status::Ok();
}

// Reads and validates the header of an open meta file.

Status StorePageCount(int meta_fd, uint64_t page_count, bool on_disk, const std::string& path) {
  uint8_t b[8];
  PutU64(b, page_count);
  HOTPOT_RETURN_IF_ERROR(PwriteFull(meta_fd, b, sizeof b, kMetaPageCountOffset, path));
  return PersistFile(meta_fd, on_disk, path);
}

}  // namespace

Status ReadMetaHeader(int fd, uint64_t id, const std::string& path, uint64_t* page_count) {
  uint64_t size = 0;
  HOTPOT_RETURN_IF_ERROR(FileSize(fd, path, &size));
  uint8_t hdr[kMetaHeaderSize] = {};
  if (size >= kMetaHeaderSize) HOTPOT_RETURN_IF_ERROR(PreadFull(fd, hdr, sizeof hdr, 0, path));
  return ValidateMetaHeader(hdr, size, id, path, page_count);
}

Status DatasetStoreImpl::Open(const StorePaths& paths, Durability durability, PageJournal* journal, uint64_t dataset_id,
                              uint64_t size_bytes, bool create, std::unique_ptr<DatasetStoreImpl>* out) {
  const uint64_t want_pages = size_bytes == 0 ? 0 : PagesFor(size_bytes);
  if (size_bytes != 0 && want_pages == 0) {
    return Status(Code::kInvalidArgument, "dataset " + std::to_string(dataset_id) + " size " +
                                              std::to_string(size_bytes) + " exceeds the pool limit of " +
                                              std::to_string(kMaxDatasetBytes) + " bytes");
  }
  const bool disk = durability == Durability::kDisk;
  std::unique_ptr<DatasetStoreImpl> s(new DatasetStoreImpl());
  s->id_ = dataset_id;
  s->durability_ = durability;
  s->paths_ = paths;
  s->journal_ = journal;
  const std::string pool_pages = s->PoolPath(PagesName(dataset_id));
  const std::string pool_meta = s->PoolPath(MetaName(dataset_id));

  const bool have_meta = PathExists(pool_meta);
  const bool have_pages = PathExists(pool_pages);
  if (!have_meta || !have_pages) {
    const std::string data_pages = s->DataPath(PagesName(dataset_id));
    const std::string data_meta = s->DataPath(MetaName(dataset_id));
    if (disk && PathExists(data_meta) && PathExists(data_pages)) {
      // The pool (tmpfs) lost the dataset, e.g. a reboot wiped /dev/shm: restore it from the durable copy.
      // Pages first, meta last, so the meta file (the dataset's commit point) appears only over complete pages.
      HOTPOT_RETURN_IF_ERROR(CopyFileAtomically(data_pages, pool_pages, false));
      HOTPOT_RETURN_IF_ERROR(CopyFileAtomically(data_meta, pool_meta, false));
    } else if (have_meta) {
      return Status(Code::kDataLoss, pool_meta + " exists but its page file " + pool_pages +
                                         " is missing and the data dir holds no copy");
    } else if (!create) {
      return Status(Code::kNotFound, "dataset " + std::to_string(dataset_id) + " has no files in the pool");
    } else {
      if (want_pages == 0) return Status(Code::kInvalidArgument, "dataset size must be > 0 to create it");
      HOTPOT_RETURN_IF_ERROR(CreateFiles(paths.pool_dir, dataset_id, want_pages, false));
    }
  }

  HOTPOT_RETURN_IF_ERROR(OpenRw(pool_meta, &s->meta_fd_));
  HOTPOT_RETURN_IF_ERROR(OpenRw(pool_pages, &s->page_fd_));
  s->app_fd_.reset(::open(pool_pages.c_str(), O_RDONLY | O_CLOEXEC));
  if (!s->app_fd_.valid()) return Status::FromErrno(errno, "open " + pool_pages + " read-only");
  uint64_t page_count = 0;
  HOTPOT_RETURN_IF_ERROR(ReadMetaHeader(s->meta_fd_.get(), dataset_id, pool_meta, &page_count));
  uint64_t pages_size = 0;
  HOTPOT_RETURN_IF_ERROR(FileSize(s->page_fd_.get(), pool_pages, &pages_size));
  if (pages_size < page_count * kPageSize) {
    // Grow extends the page file before it raises the page count, so this is not a crash artefact.
    return Status(Code::kDataLoss, pool_pages + " is " + std::to_string(pages_size) + " bytes, its meta file says " +
                                       std::to_string(page_count) + " pages");
  }
  if (pages_size > page_count * kPageSize &&
      ::ftruncate(s->page_fd_.get(), static_cast<off_t>(page_count * kPageSize)) != 0) {
    // A crash between extending the page file and raising the page count: drop the unused tail.
    return Status::FromErrno(errno, "ftruncate " + pool_pages);
  }
  HOTPOT_RETURN_IF_ERROR(s->MapMeta(page_count));
  s->page_count_ = page_count;
  s->size_.store(page_count * kPageSize, std::memory_order_release);
  s->ResizeBlocks(page_count);
  HOTPOT_RETURN_IF_ERROR(s->ScanRecords(page_count));

  if (disk) HOTPOT_RETURN_IF_ERROR(s->OpenDataFiles(page_count));
  if (want_pages > page_count) {
    std::unique_lock<std::shared_mutex> lk(s->geo_mu_);
    HOTPOT_RETURN_IF_ERROR(s->GrowLocked(want_pages));
  }
  *out = std::move(s);
  return Status::Ok();
}

void DatasetStoreImpl::ResizeBlocks(uint64_t page_count) {
  const uint64_t blocks = (page_count + kMetaRecordsPerBlock - 1) / kMetaRecordsPerBlock;
  const uint64_t words = (blocks + 63) / 64;
  if (words <= block_words_) return;
  std::unique_ptr<std::atomic<uint64_t>[]> grown(new std::atomic<uint64_t>[words]);
  for (uint64_t w = 0; w < words; w++)
    grown[w].store(w < block_words_ ? blocks_[w].load(std::memory_order_relaxed) : 0, std::memory_order_relaxed);
  blocks_ = std::move(grown);
  block_words_ = words;
}

Status DatasetStoreImpl::ScanRecords(uint64_t page_count) {
  const std::string path = PoolPath(MetaName(id_));
  const uint64_t end = kMetaHeaderSize + page_count * kMetaRecordSize;
  const uint64_t blocks = (page_count + kMetaRecordsPerBlock - 1) / kMetaRecordsPerBlock;
  uint64_t written = 0;
  uint64_t zero_run = 0, zero_count = 0;  // a run of all-zero allocated blocks, punched out in one call
  auto punch = [&]() -> Status {
    if (zero_count == 0) return Status::Ok();
    Status st = PunchHole(meta_fd_.get(), kMetaHeaderSize + zero_run * 4096, zero_count * 4096, path);
    zero_count = 0;
    return st;
  };
  uint64_t pos = kMetaHeaderSize;
  while (pos < end) {
    const off_t data = ::lseek(meta_fd_.get(), static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // nothing but holes after pos
      return Status::FromErrno(errno, "lseek(SEEK_DATA) " + path);
    }
    if (static_cast<uint64_t>(data) >= end) break;
    off_t hole = ::lseek(meta_fd_.get(), data, SEEK_HOLE);
    if (hole < 0) return Status::FromErrno(errno, "lseek(SEEK_HOLE) " + path);
    const uint64_t stop = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    for (uint64_t b = (static_cast<uint64_t>(data) - kMetaHeaderSize) / 4096;
         b < blocks && kMetaHeaderSize + b * 4096 < stop; b++) {
      const uint64_t first = b * kMetaRecordsPerBlock;
      const uint64_t n = std::min<uint64_t>(kMetaRecordsPerBlock, page_count - first);
      bool any = false;
      for (uint64_t i = 0; i < n; i++) {
        const uint8_t* r = RecordPtr(first + i);
        const uint8_t st = r[0];
        if (!ValidState(st)) {
          return Status(Code::kDataLoss, path + ": page " + std::to_string(first + i) + " has invalid state " +
                                             std::to_string(st));
        }
        if (st == 0 && __atomic_load_n(reinterpret_cast<const uint64_t*>(r + 8), __ATOMIC_RELAXED) == 0) continue;
        any = true;
        if (st != 0) {
          state_counts_[st].fetch_add(1, std::memory_order_relaxed);
          written++;
        }
      }
      if (any) {
        MarkBlock(b);
        HOTPOT_RETURN_IF_ERROR(punch());
      } else {
        if (zero_count == 0) zero_run = b;
        zero_count++;
      }
    }
    HOTPOT_RETURN_IF_ERROR(punch());
    pos = static_cast<uint64_t>(hole);
  }
  HOTPOT_RETURN_IF_ERROR(punch());
  state_counts_[static_cast<uint8_t>(PageState::kAbsent)].store(page_count - written, std::memory_order_relaxed);
  return Status::Ok();
}

Status DatasetStoreImpl::OpenDataFiles(uint64_t page_count) {
  const std::string data_pages = DataPath(PagesName(id_));
  const std::string data_meta = DataPath(MetaName(id_));
  if (!PathExists(data_meta) || !PathExists(data_pages)) {
    // No durable copy yet (new dataset, or the pool was run with durability memory): seed it from the pool.
    HOTPOT_RETURN_IF_ERROR(CopyFileAtomically(PoolPath(PagesName(id_)), data_pages, true));
    HOTPOT_RETURN_IF_ERROR(CopyFileAtomically(PoolPath(MetaName(id_)), data_meta, true));
    HOTPOT_RETURN_IF_ERROR(SyncDir(paths_.data_dir));
  }
  HOTPOT_RETURN_IF_ERROR(OpenRw(data_meta, &data_meta_fd_));
  HOTPOT_RETURN_IF_ERROR(OpenRw(data_pages, &data_page_fd_));
  uint64_t data_count = 0;
  HOTPOT_RETURN_IF_ERROR(ReadMetaHeader(data_meta_fd_.get(), id_, data_meta, &data_count));
  if (data_count < page_count) {
    HOTPOT_RETURN_IF_ERROR(ExtendTo(data_page_fd_.get(), page_count * kPageSize, data_pages));
    HOTPOT_RETURN_IF_ERROR(ExtendTo(data_meta_fd_.get(), kMetaHeaderSize + page_count * kMetaRecordSize, data_meta));
    HOTPOT_RETURN_IF_ERROR(PersistFile(data_page_fd_.get(), true, data_pages));
    HOTPOT_RETURN_IF_ERROR(PersistFile(data_meta_fd_.get(), true, data_meta));
    HOTPOT_RETURN_IF_ERROR(StorePageCount(data_meta_fd_.get(), page_count, true, data_meta));
  }
  return Status::Ok();
}

Status DatasetStoreImpl::MapMeta(uint64_t page_count) {
  const size_t len = static_cast<size_t>(kMetaHeaderSize + page_count * kMetaRecordSize);
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, meta_fd_.get(), 0);
  if (p == MAP_FAILED) return Status::FromErrno(errno, "mmap " + PoolPath(MetaName(id_)));
  meta_map_ = Mapping(p, len);
  return Status::Ok();
}

int DatasetStoreImpl::app_fd() const {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  return dropped_ ? -1 : app_fd_.get();
}

int DatasetStoreImpl::page_fd() const {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  return dropped_ ? -1 : page_fd_.get();
}

Status DatasetStoreImpl::Grow(uint64_t new_size_bytes) {
  const uint64_t want = PagesFor(new_size_bytes);
  if (want == 0) {
    return Status(Code::kInvalidArgument, "grow dataset " + std::to_string(id_) + " to " +
                                              std::to_string(new_size_bytes) + " bytes: size must be in (0, " +
                                              std::to_string(kMaxDatasetBytes) + "]");
  }
  std::unique_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return Status(Code::kFailedPrecondition, "dataset " + std::to_string(id_) + " was dropped");
  if (want <= page_count_) return Status::Ok();  // never shrinks: a smaller size keeps the larger
  return GrowLocked(want);
}

Status DatasetStoreImpl::GrowLocked(uint64_t new_count) {
  // Both copies: extend the files, persist, and only then raise the page count (the marker of the new size).
  // The data dir goes first so a durable page count never exceeds what the pool can hold after a restore.
  if (durability_ == Durability::kDisk) {
    const std::string dp = DataPath(PagesName(id_)), dm = DataPath(MetaName(id_));
    HOTPOT_RETURN_IF_ERROR(ExtendTo(data_page_fd_.get(), new_count * kPageSize, dp));
    HOTPOT_RETURN_IF_ERROR(ExtendTo(data_meta_fd_.get(), kMetaHeaderSize + new_count * kMetaRecordSize, dm));
    HOTPOT_RETURN_IF_ERROR(PersistFile(data_page_fd_.get(), true, dp));
    HOTPOT_RETURN_IF_ERROR(PersistFile(data_meta_fd_.get(), true, dm));
    HOTPOT_RETURN_IF_ERROR(StorePageCount(data_meta_fd_.get(), new_count, true, dm));
  }
  const std::string pp = PoolPath(PagesName(id_)), pm = PoolPath(MetaName(id_));
  HOTPOT_RETURN_IF_ERROR(ExtendTo(page_fd_.get(), new_count * kPageSize, pp));
  HOTPOT_RETURN_IF_ERROR(ExtendTo(meta_fd_.get(), kMetaHeaderSize + new_count * kMetaRecordSize, pm));
  PersistBarrier();
  Mapping old = std::move(meta_map_);
  Status st = MapMeta(new_count);
  if (!st.ok()) {
    meta_map_ = std::move(old);
    return st;
  }
  old.reset();
  ResizeBlocks(new_count);
  // One aligned 8-byte store: a crash leaves either the old or the new count, never a mix.
  __atomic_store_n(reinterpret_cast<uint64_t*>(meta_map_.bytes() + kMetaPageCountOffset), new_count,
                   __ATOMIC_RELEASE);
  PersistBarrier();
  state_counts_[static_cast<uint8_t>(PageState::kAbsent)].fetch_add(new_count - page_count_,
                                                                       std::memory_order_relaxed);
  page_count_ = new_count;
  size_.store(new_count * kPageSize, std::memory_order_release);
  return Status::Ok();
}

Status DatasetStoreImpl::CheckPage(uint64_t page) const {
  if (dropped_) return Status(Code::kFailedPrecondition, "dataset " + std::to_string(id_) + " was dropped");
  if (page >= page_count_) {
    return Status(Code::kOutOfRange, "page " + std::to_string(page) + " is past the end of dataset " +
                                         std::to_string(id_) + " (" + std::to_string(page_count_) + " pages)");
  }
  return Status::Ok();
}

PageMeta DatasetStoreImpl::LoadMeta(uint64_t page) const {
  PageMeta m;
  if (!BlockHasData(page / kMetaRecordsPerBlock)) return m;  // a hole: never written (and not faulted in)
  const uint8_t* r = RecordPtr(page);
  uint8_t st = __atomic_load_n(r, __ATOMIC_ACQUIRE);
  m.state = ValidState(st) ? static_cast<PageState>(st) : PageState::kAbsent;
  m.version = __atomic_load_n(reinterpret_cast<const uint64_t*>(r + 8), __ATOMIC_ACQUIRE);
  return m;
}

void DatasetStoreImpl::StoreMeta(uint64_t page, uint64_t version, PageState state) {
  const uint64_t block = page / kMetaRecordsPerBlock;
  const bool has = BlockHasData(block);
  // An untouched record set to "absent, version 0" stays a hole: dropping or clearing what was never written
  // allocates nothing.
  if (!has && state == PageState::kAbsent && version == 0) return;
  uint8_t* r = RecordPtr(page);
  uint8_t old = has ? __atomic_load_n(r, __ATOMIC_RELAXED) : 0;
  if (ValidState(old)) state_counts_[old].fetch_sub(1, std::memory_order_relaxed);
  state_counts_[static_cast<uint8_t>(state)].fetch_add(1, std::memory_order_relaxed);
  __atomic_store_n(reinterpret_cast<uint64_t*>(r + 8), version, __ATOMIC_RELEASE);
  __atomic_store_n(r, static_cast<uint8_t>(state), __ATOMIC_RELEASE);
  // After the record: a reader of this page holds its stripe (as this writer does), and a reader of another page of
  // the block that sees the bit reads its own record, zero either way.
  if (!has) MarkBlock(block);
}

PageMeta DatasetStoreImpl::GetMeta(uint64_t page) const {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  if (!CheckPage(page).ok()) return PageMeta{};
  std::lock_guard<std::mutex> pl(Stripe(page));
  return LoadMeta(page);
}

Status DatasetStoreImpl::ReadPage(uint64_t page, uint8_t* out, PageMeta* meta) const {
  if (out == nullptr) return Status(Code::kInvalidArgument, "ReadPage: null output buffer");
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));
  std::lock_guard<std::mutex> pl(Stripe(page));
  PageMeta m = LoadMeta(page);
  if (m.state == PageState::kAbsent && m.version == 0) {
    // Never written or dropped: zeros, whatever a crash between the record update and the hole punch left.
    std::memset(out, 0, kPageSize);
  } else {
    HOTPOT_RETURN_IF_ERROR(PreadFull(page_fd_.get(), out, kPageSize, page * kPageSize,
                                     PoolPath(PagesName(id_)) + " page " + std::to_string(page)));
  }
  if (meta != nullptr) *meta = m;
  return Status::Ok();
}

Status DatasetStoreImpl::InstallPage(uint64_t page, const uint8_t* data, uint64_t version, PageState state) {
  if (data == nullptr) return Status(Code::kInvalidArgument, "InstallPage: null data");
  if (!ValidState(static_cast<uint8_t>(state)) || state == PageState::kAbsent) {
    return Status(Code::kInvalidArgument, "InstallPage: state must be committed, redundant or owned (use DropPage)");
  }
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));
  std::lock_guard<std::mutex> pl(Stripe(page));
  // Data first (pwrite fills the page-cache page under its page lock), persist, then the record.
  HOTPOT_RETURN_IF_ERROR(PwriteFull(page_fd_.get(), data, kPageSize, page * kPageSize,
                                    PoolPath(PagesName(id_)) + " page " + std::to_string(page)));
  PersistBarrier();
  StoreMeta(page, version, state);
  PersistBarrier();
  return Status::Ok();
}

Status DatasetStoreImpl::WriteBytes(uint64_t offset, const uint8_t* data, uint32_t len, uint64_t new_version) {
  if (data == nullptr || len == 0) return Status(Code::kInvalidArgument, "WriteBytes: empty range");
  const uint64_t page = offset / kPageSize;
  if (offset % kPageSize + len > kPageSize) {
    return Status(Code::kInvalidArgument, "WriteBytes: range [" + std::to_string(offset) + ", +" +
                                              std::to_string(len) + ") crosses a page boundary");
  }
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));  // the range stays inside `page`, so this bounds the end too
  std::lock_guard<std::mutex> pl(Stripe(page));
  HOTPOT_RETURN_IF_ERROR(PwriteFull(page_fd_.get(), data, len, offset,
                                    PoolPath(PagesName(id_)) + " offset " + std::to_string(offset)));
  PersistBarrier();
  StoreMeta(page, new_version, LoadMeta(page).state);
  PersistBarrier();
  return Status::Ok();
}

Status DatasetStoreImpl::SetState(uint64_t page, PageState state) {
  if (!ValidState(static_cast<uint8_t>(state))) return Status(Code::kInvalidArgument, "SetState: invalid state");
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));
  std::lock_guard<std::mutex> pl(Stripe(page));
  StoreMeta(page, LoadMeta(page).version, state);
  PersistBarrier();
  return Status::Ok();
}

Status DatasetStoreImpl::DropPage(uint64_t page) {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));
  std::lock_guard<std::mutex> pl(Stripe(page));
  // Record first: a crash after it leaves an absent page with stale bytes (read as zeros), never a version
  // whose bytes are gone.
  StoreMeta(page, 0, PageState::kAbsent);
  PersistBarrier();
  return PunchHole(page_fd_.get(), page * kPageSize, kPageSize,
                   PoolPath(PagesName(id_)) + " page " + std::to_string(page));
}

Status DatasetStoreImpl::Persist(const std::vector<uint64_t>& pages) {
  {
    std::shared_lock<std::shared_mutex> lk(geo_mu_);
    for (uint64_t p : pages) HOTPOT_RETURN_IF_ERROR(CheckPage(p));
    if (pages.empty() && dropped_) return Status(Code::kFailedPrecondition, "dataset was dropped");
  }
  if (durability_ == Durability::kMemory || pages.empty()) {
    PersistBarrier();
    return Status::Ok();
  }
  return journal_->Submit(this, &pages);
}

std::vector<std::pair<uint64_t, PageMeta>> DatasetStoreImpl::WrittenPages(uint64_t first, uint64_t end) const {
  std::vector<std::pair<uint64_t, PageMeta>> out;
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return out;
  end = std::min(end, page_count_);
  for (uint64_t b = first / kMetaRecordsPerBlock; first < end && b * kMetaRecordsPerBlock < end; b++) {
    if (!BlockHasData(b)) continue;
    const uint64_t lo = std::max(first, b * kMetaRecordsPerBlock);
    const uint64_t hi = std::min(end, (b + 1) * kMetaRecordsPerBlock);
    for (uint64_t p = lo; p < hi; p++) {
      std::lock_guard<std::mutex> pl(Stripe(p));
      const PageMeta m = LoadMeta(p);
      if (m.state != PageState::kAbsent || m.version != 0) out.emplace_back(p, m);
    }
  }
  return out;
}

Status DatasetStoreImpl::SnapshotPage(uint64_t page, uint8_t record[kMetaRecordSize], uint8_t* bytes,
                                      bool* hole) const {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));
  // A consistent image of the page's bytes and record (writers hold the same stripe).
  std::lock_guard<std::mutex> pl(Stripe(page));
  if (BlockHasData(page / kMetaRecordsPerBlock)) std::memcpy(record, RecordPtr(page), kMetaRecordSize);
  else std::memset(record, 0, kMetaRecordSize);
  const PageMeta m = LoadMeta(page);
  *hole = m.state == PageState::kAbsent && m.version == 0;
  if (*hole) return Status::Ok();
  return PreadFull(page_fd_.get(), bytes, kPageSize, page * kPageSize,
                   PoolPath(PagesName(id_)) + " page " + std::to_string(page));
}

Status DatasetStoreImpl::WriteBackPage(uint64_t page, const uint8_t* bytes) {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  HOTPOT_RETURN_IF_ERROR(CheckPage(page));
  const std::string what = DataPath(PagesName(id_));
  if (bytes == nullptr) return PunchHole(data_page_fd_.get(), page * kPageSize, kPageSize, what);
  return PwriteFull(data_page_fd_.get(), bytes, kPageSize, page * kPageSize, what);
}

Status DatasetStoreImpl::WriteBackError() const {
  std::lock_guard<std::mutex> l(wb_error_mu_);
  return wb_error_;
}

void DatasetStoreImpl::SetWriteBackError(const Status& st) {
  std::lock_guard<std::mutex> l(wb_error_mu_);
  if (wb_error_.ok()) wb_error_ = st;
}

Status DatasetStoreImpl::SyncDataPages() {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return Status(Code::kFailedPrecondition, "dataset " + std::to_string(id_) + " was dropped");
  return PersistFile(data_page_fd_.get(), true, DataPath(PagesName(id_)));
}

Status DatasetStoreImpl::WriteThroughMeta(const std::vector<MetaRecord>& records) {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return Status(Code::kFailedPrecondition, "dataset " + std::to_string(id_) + " was dropped");
  const std::string what = DataPath(MetaName(id_));
  // records are sorted by page: coalesce runs of adjacent pages into one pwrite.
  std::vector<uint8_t> run;
  for (size_t i = 0; i < records.size();) {
    size_t j = i;
    run.clear();
    while (j < records.size() && records[j].page == records[i].page + (j - i)) {
      run.insert(run.end(), records[j].bytes, records[j].bytes + kMetaRecordSize);
      j++;
    }
    HOTPOT_RETURN_IF_ERROR(
        PwriteFull(data_meta_fd_.get(), run.data(), run.size(), kMetaHeaderSize + records[i].page * kMetaRecordSize, what));
    i = j;
  }
  return Status::Ok();
}

Status DatasetStoreImpl::SyncDataMeta() {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return Status(Code::kFailedPrecondition, "dataset " + std::to_string(id_) + " was dropped");
  return PersistFile(data_meta_fd_.get(), true, DataPath(MetaName(id_)));
}

Status DatasetStoreImpl::Drop() {
  std::unique_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return Status::Ok();
  dropped_ = true;
  meta_map_.reset();
  page_fd_.reset();
  app_fd_.reset();
  meta_fd_.reset();
  data_page_fd_.reset();
  data_meta_fd_.reset();
  for (auto& c : state_counts_) c.store(0, std::memory_order_relaxed);
  // Meta first: without its meta file a leftover pages file is never mistaken for a dataset.
  std::vector<std::string> victims = {PoolPath(MetaName(id_)), PoolPath(PagesName(id_))};
  if (durability_ == Durability::kDisk) {
    victims.push_back(DataPath(MetaName(id_)));
    victims.push_back(DataPath(PagesName(id_)));
  }
  for (const auto& v : victims) {
    if (::unlink(v.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, "unlink " + v);
  }
  if (durability_ == Durability::kDisk) HOTPOT_RETURN_IF_ERROR(SyncDir(paths_.data_dir));
  return Status::Ok();
}

DatasetPoolStats DatasetStoreImpl::Stats() const {
  DatasetPoolStats s;
  s.dataset_id = id_;
  s.size_bytes = size_bytes();
  s.pages_owned = state_counts_[static_cast<uint8_t>(PageState::kOwned)].load(std::memory_order_relaxed);
  s.pages_committed = state_counts_[static_cast<uint8_t>(PageState::kCommitted)].load(std::memory_order_relaxed);
  s.pages_redundant = state_counts_[static_cast<uint8_t>(PageState::kRedundant)].load(std::memory_order_relaxed);
  return s;
}

uint64_t DatasetStoreImpl::ResidentBytes() const {
  std::shared_lock<std::shared_mutex> lk(geo_mu_);
  if (dropped_) return 0;
  struct stat st;
  if (::fstat(page_fd_.get(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace internal
}  // namespace pool
}  // namespace hotpot
