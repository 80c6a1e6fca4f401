// Internals of the PM pool (pool.h): file helpers, the persist primitives, the dataset store, the page
// journal and the redo log. Only pool/*.cc include this; everyone else uses pool.h.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "pool/pool.h"

namespace hotpot {
namespace pool {
namespace internal {

// ---------------------------------------------------------------------------------------------------------
// Persist primitives. The pool dir is tmpfs standing in for PM: a "persist" there is a release fence so the
// stores before it are ordered before the stores after it (a process crash keeps the page cache, so order is
// all that matters). On the data dir (a real disk) a persist is the fence plus fdatasync.

// Orders every earlier store (pwrite into the page cache, store into a MAP_SHARED mapping) before every later
// one: the PM "persist" of the original's record -> persist -> marker -> persist rule.
void PersistBarrier();
// PersistBarrier() plus, when the file lives on the data dir, fdatasync(fd).
Status PersistFile(int fd, bool on_disk, const std::string& what);
// fdatasync(fd), its error naming `what`. Linux reports a write-back error to one fdatasync only (the dirty pages
// that failed may be dropped, and a later call succeed over them): a caller that sees an error must not trust a
// later success for the writes before it (the redo log and the page write-through stay failed).
Status Fdatasync(int fd, const std::string& what);
#ifdef HOTPOT_TEST_BUILD
// Test builds: the next fdatasync of a path ending in `suffix` fails with `err` (once; "" disarms).
void FailNextFdatasyncForTest(const std::string& suffix, int err);
#endif

// ---------------------------------------------------------------------------------------------------------
// File helpers; every one returns a Status naming the path and the syscall that failed.
Status MakeDirs(const std::string& path);  // mkdir -p with mode 0700
Status SyncDir(const std::string& dir);    // fsync the directory (makes creates/renames/unlinks durable)
bool PathExists(const std::string& path);
Status PreadFull(int fd, void* buf, size_t len, uint64_t off, const std::string& what);
Status PwriteFull(int fd, const void* buf, size_t len, uint64_t off, const std::string& what);
// Deallocates [off, off+len) keeping the size; falls back to writing zeros where holes are unsupported.
Status PunchHole(int fd, uint64_t off, uint64_t len, const std::string& what);
// Copies src to dst_tmp keeping holes (SEEK_DATA/SEEK_HOLE), fdatasyncs it when on_disk, then renames it to
// dst: a reader of dst never sees a half-copied file.
Status CopyFileAtomically(const std::string& src, const std::string& dst, bool on_disk);

// ---------------------------------------------------------------------------------------------------------
// Meta file layout (`ds-<id>.meta`), identical in the pool dir and the data dir:
//   [0, 4096)            header: magic u64, format u32, page_size u32, dataset_id u64, header_crc u32 (CRC32C of
//                        bytes 0..24), pad u32, page_count u64 at offset 32 (outside the CRC: Grow updates it
//                        with one aligned 8-byte store after both files were extended, so it is never torn)
//   [4096 + 16*p, +16)   page record p: state u8, pad[7], version u64
// The records region is sparse: a record never written is a hole and reads as zeros, which is what it means
// ("absent, never written, version 0"). Creating or growing a dataset writes no records, and the store never reads a
// hole through its mapping (a read fault on a tmpfs hole would allocate the page): it keeps which 4 KiB blocks of
// the records hold data in a bitmap (128 KiB for 1 TiB) and answers records of the others without touching them.
// Pools written before that (every record block allocated, mostly zeros) open unchanged; their all-zero blocks
// are punched out again at open.
constexpr uint64_t kMetaMagic = 0x31304154454D5048ull;  // "HPMETA01"
constexpr uint32_t kMetaFormat = 1;
constexpr uint64_t kMetaHeaderSize = 4096;
constexpr uint64_t kMetaRecordSize = 16;
constexpr uint64_t kMetaPageCountOffset = 32;
constexpr uint64_t kMetaRecordsPerBlock = 4096 / kMetaRecordSize;  // records in one 4 KiB block of the meta file
// Upper bound on a dataset (1 TiB): bounds the meta mapping (256 MiB of records) and every size a peer can ask for.
constexpr uint64_t kMaxDatasetBytes = 1ull << 40;

void EncodeMetaHeader(uint64_t dataset_id, uint64_t page_count, uint8_t out[kMetaHeaderSize]);
// Validates a meta header read from `path` of file size `file_size`: DATA_LOSS for a torn/corrupt header,
// FAILED_PRECONDITION for a foreign or newer format or the wrong dataset.
Status ValidateMetaHeader(const uint8_t* hdr, uint64_t file_size, uint64_t dataset_id, const std::string& path,
                          uint64_t* page_count);

std::string PagesName(uint64_t id);
std::string MetaName(uint64_t id);

// ---------------------------------------------------------------------------------------------------------
class DatasetStoreImpl;

// The page journal (durability disk, `data_dir/pages.journal.0` and `.1`): what makes a Persist durable. A Persist
// appends a whole-page image of each listed page (its bytes and its record, taken together under the page's stripe)
// to the active journal file and fdatasyncs it once; concurrent Persists of every dataset of the node share that
// fdatasync (group commit without a thread of its own: the first caller that finds no batch under way writes
// everything queued, callers that queued meanwhile ride on the next batch, which one of them runs). The pages files
// of the data dir are written later, off every caller's path, by one write-back thread: it seals the active file
// (the other, empty one becomes active), writes the last image of every page the sealed file holds into the data
// dir's pages and meta files, fdatasyncs them once per dataset, then empties the sealed file. It writes images from
// the journal, never the pool's live pages, so a data file only ever holds persisted states, as when Persist wrote
// through itself. A restart replays both files, the older generation first, into the data dir before any dataset
// opens (a page's last image wins), then empties them: after a reboot that wiped the pool the data dir is at
// least as new as every Persist that returned.
//   [0, 4096)  file header: magic u64 "HPJRNL01", format u32, pad u32, generation u64, crc u32 (CRC32C of 0..24)
//   entries:   magic u32, flags u32 (bit 0: a hole, no bytes follow), generation u64 (the file's), dataset u64,
//              page u64, page record [16], crc u32 (CRC32C of bytes 0..48 and the page bytes), pad u32, then
//              4096 page bytes unless a hole
// A batch is one pwrite and one fdatasync; replay stops at the first entry that is torn (checksum) or of another
// generation (the tail of a batch that never completed: none of it was acknowledged).
constexpr uint64_t kJournalMagic = 0x31304C4E524A5048ull;  // "HPJRNL01"
constexpr uint32_t kJournalFormat = 1;
constexpr uint64_t kJournalHeaderSize = 4096;
constexpr uint32_t kJournalEntryMagic = 0x544E454Au;  // "JENT"
constexpr uint64_t kJournalEntryHeaderSize = 56;
constexpr uint64_t kJournalRotateBytes = 8ull << 20;  // a write-back round once the active file holds this much
constexpr uint64_t kJournalGrowBytes = 1ull << 20;     // the file grows ahead of its tail in steps of this
constexpr int kJournalRotateMs = 1000;                 // ... or once its first entry is this old

// Entry codec (exposed for tests and fuzzing). Encode: the entry header for an image (bytes == nullptr: a hole).
void EncodeJournalEntryHeader(uint64_t generation, uint64_t dataset, uint64_t page,
                              const uint8_t record[kMetaRecordSize], const uint8_t* bytes,
                              uint8_t out[kJournalEntryHeaderSize]);
struct JournalEntry {
  uint64_t dataset = 0;
  uint64_t page = 0;
  const uint8_t* record = nullptr;  // kMetaRecordSize bytes
  const uint8_t* bytes = nullptr;   // kPageSize bytes, nullptr for a hole
};
// Decodes the entry at p (avail bytes left in a file of `generation`): its length, or 0 when there is none there (the
// end, a torn entry, an entry of another generation or of an unknown kind). Never reads past avail.
size_t DecodeJournalEntry(const uint8_t* p, size_t avail, uint64_t generation, JournalEntry* out);

struct JournalOptions {
  std::string dir;  // the data dir
  uint64_t rotate_bytes = kJournalRotateBytes;
  int rotate_ms = kJournalRotateMs;
  bool write_back = true;  // false (tests): no write-back thread and none at close, as if the node crashed
};

class PageJournal {
 public:
  // Opens (creating) both files, replays what they hold into the data dir's dataset files, empties them and starts
  // the write-back thread. *replayed counts the page images written back by the replay.
  static Status Open(const JournalOptions& options, std::unique_ptr<PageJournal>* out, uint64_t* replayed);
  // Stops the thread and writes every journaled page back (unless options.write_back is false).
  ~PageJournal();
  PageJournal(const PageJournal&) = delete;
  PageJournal& operator=(const PageJournal&) = delete;

  // Makes the listed pages of `store` durable (group commit, see above).
  Status Submit(DatasetStoreImpl* store, const std::vector<uint64_t>* pages);
  // Writes back every page journaled so far and empties both files (a dataset drop; tests).
  Status WriteBackAll();

  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }
  uint64_t synced_commits() const { return synced_commits_.load(std::memory_order_relaxed); }
  // Journal batches' fdatasyncs and the write-back rounds' (one per data file written).
  uint64_t fdatasyncs() const { return fdatasyncs_.load(std::memory_order_relaxed); }
  uint64_t write_backs() const { return write_backs_.load(std::memory_order_relaxed); }
  // Page images held now (both files), and those carried from a sealed file to the active one so far (the images of
  // a dataset whose write-back failed, which stay journaled until a restart).
  uint64_t images();
  uint64_t carried() const { return carried_.load(std::memory_order_relaxed); }

 private:
  struct Request {
    DatasetStoreImpl* store;
    const std::vector<uint64_t>* pages;
    Status status;
    bool done = false;
  };
  struct Entry {
    DatasetStoreImpl* store;
    uint64_t page;
    uint64_t off;  // of the entry in its file
    bool hole;
  };
  struct File {
    UniqueFd fd;
    std::string path;
    uint64_t generation = 0;
    uint64_t tail = kJournalHeaderSize;
    uint64_t allocated = 0;  // bytes of the file written (zeros ahead of the tail; kept across Reset)
    std::vector<Entry> entries;  // in file order
    std::chrono::steady_clock::time_point first;  // when the first entry went in
    size_t carried = 0;          // of the entries, those Carry put here, and their bytes
    uint64_t carried_bytes = 0;
  };
  explicit PageJournal(const JournalOptions& o) : options_(o) {}
  Status Init(uint64_t* replayed);
  // Builds and writes one batch at `off` of `f` and fdatasyncs it; per-request errors go to the requests.
  Status WriteBatch(std::vector<Request*>& batch, File& f, uint64_t off, std::vector<Entry>* added,
                    uint64_t* bytes);
  // Writes `buf` at `off` of `f` (growing the file ahead first) and fdatasyncs it; a failed write is zeroed out
  // again, a failed fdatasync fails the journal for good (error_).
  Status Append(File& f, uint64_t off, const std::vector<uint8_t>& buf);
  // Appends copies of `images` (entries of the sealed file `from`) to the active file as one batch, under the active
  // file's generation.
  Status Carry(File& from, const std::vector<const Entry*>& images);
  // One round: seal the active file (if it holds entries) and write the sealed one back.
  Status WriteBackRound();
  Status WriteBackRoundLocked();  // caller holds wb_mu_
  // Writes back f's last image of each page, fdatasyncs each dataset's data files, then empties f; keeps the images
  // of a dataset whose write-back failed.
  Status WriteBack(File& f);
  Status Reset(File& f, uint64_t generation);
  void Loop();

  JournalOptions options_;
  std::mutex wb_mu_;  // one write-back round at a time (taken before mu_)
  std::mutex mu_;
  std::condition_variable done_cv_;
  std::condition_variable wb_cv_;
  std::deque<Request*> queue_;
  bool busy_ = false;  // a caller is writing a batch
  bool stop_ = false;
  Status error_;  // a failed fdatasync of the journal: every later batch fails (Fdatasync)
  File files_[2];
  int active_ = 0;
  std::thread thread_;
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> synced_commits_{0};
  std::atomic<uint64_t> fdatasyncs_{0};
  std::atomic<uint64_t> write_backs_{0};
  std::atomic<uint64_t> carried_{0};
};

// Reads and validates a meta file's header (ValidateMetaHeader).
Status ReadMetaHeader(int fd, uint64_t id, const std::string& path, uint64_t* page_count);

struct StorePaths {
  std::string pool_dir;
  std::string data_dir;  // empty unless durability disk
};

class DatasetStoreImpl final : public DatasetStore {
 public:
  // Opens the dataset's files, restoring them from the data dir when the pool copy is missing. With
  // create == false a dataset without files is NOT_FOUND; with create == true it is created with size_bytes.
  // A smaller size_bytes than the stored size keeps the stored size; a larger one grows the files.
  static Status Open(const StorePaths& paths, Durability durability, PageJournal* journal, uint64_t dataset_id,
                     uint64_t size_bytes, bool create, std::unique_ptr<DatasetStoreImpl>* out);
  ~DatasetStoreImpl() override = default;

  uint64_t id() const override { return id_; }
  uint64_t size_bytes() const override { return size_.load(std::memory_order_acquire); }
  int app_fd() const override;
  int page_fd() const override;
  Status Grow(uint64_t new_size_bytes) override;
  PageMeta GetMeta(uint64_t page) const override;
  Status ReadPage(uint64_t page, uint8_t* out, PageMeta* meta) const override;
  Status InstallPage(uint64_t page, const uint8_t* data, uint64_t version, PageState state) override;
  Status WriteBytes(uint64_t offset, const uint8_t* data, uint32_t len, uint64_t new_version) override;
  Status SetState(uint64_t page, PageState state) override;
  Status DropPage(uint64_t page) override;
  Status Persist(const std::vector<uint64_t>& pages) override;
  std::vector<std::pair<uint64_t, PageMeta>> WrittenPages(uint64_t first, uint64_t end) const override;

  // Closes the files, removes them from the pool and data dirs; the object stays valid (stable pointers held
  // elsewhere) and every later call fails with FAILED_PRECONDITION.
  Status Drop();
  DatasetPoolStats Stats() const;
  uint64_t ResidentBytes() const;

  // Page journal side of Persist (durability disk). A consistent image of a page: its record and, unless it is a
  // hole (absent, never written), its bytes.
  Status SnapshotPage(uint64_t page, uint8_t record[kMetaRecordSize], uint8_t* bytes, bool* hole) const;
  // Write-back: the image's bytes (nullptr: a hole) into the data dir's pages file; records into its meta file.
  struct MetaRecord {
    uint64_t page;
    uint8_t bytes[kMetaRecordSize];
  };
  Status WriteBackPage(uint64_t page, const uint8_t* bytes);
  Status SyncDataPages();
  Status WriteThroughMeta(const std::vector<MetaRecord>& records);
  Status SyncDataMeta();
  // After a failed fdatasync of either data file every later Persist of this dataset fails with it (Fdatasync).
  Status WriteBackError() const;
  void SetWriteBackError(const Status& st);

 private:
  DatasetStoreImpl() = default;
  Status MapMeta(uint64_t page_count);
  Status GrowLocked(uint64_t new_page_count);
  Status OpenDataFiles(uint64_t page_count);
  Status CheckPage(uint64_t page) const;  // caller holds geo_mu_ (shared)
  // Finds the record blocks holding data (SEEK_DATA) and counts their states; punches out all-zero blocks (left by
  // the format before sparse records). Called by Open before anyone else sees the store.
  Status ScanRecords(uint64_t page_count);
  // The block bitmap (caller holds geo_mu_): is block b of the records (pages [256b, 256b+256)) allocated?
  bool BlockHasData(uint64_t block) const {
    return (blocks_[block / 64].load(std::memory_order_acquire) >> (block % 64)) & 1;
  }
  void MarkBlock(uint64_t block) { blocks_[block / 64].fetch_or(uint64_t(1) << (block % 64), std::memory_order_release); }
  void ResizeBlocks(uint64_t page_count);  // caller holds geo_mu_ exclusively
  uint8_t* RecordPtr(uint64_t page) const { return meta_map_.bytes() + kMetaHeaderSize + page * kMetaRecordSize; }
  PageMeta LoadMeta(uint64_t page) const;
  void StoreMeta(uint64_t page, uint64_t version, PageState state);  // caller holds the page's stripe
  std::mutex& Stripe(uint64_t page) const { return stripes_[page % stripes_.size()]; }
  std::string PoolPath(const std::string& name) const { return paths_.pool_dir + "/" + name; }
  std::string DataPath(const std::string& name) const { return paths_.data_dir + "/" + name; }

  uint64_t id_ = 0;
  Durability durability_ = Durability::kMemory;
  StorePaths paths_;
  PageJournal* journal_ = nullptr;
  mutable std::mutex wb_error_mu_;
  Status wb_error_;  // guarded by wb_error_mu_
  std::atomic<uint64_t> size_{0};

  // geo_mu_: shared by every page operation, exclusive for Grow (remaps the meta file) and Drop (closes fds).
  mutable std::shared_mutex geo_mu_;
  // Per-page mutual exclusion (striped): makes a page's bytes and its record change together for readers.
  mutable std::array<std::mutex, 64> stripes_;
  bool dropped_ = false;
  uint64_t page_count_ = 0;  // guarded by geo_mu_
  UniqueFd page_fd_, meta_fd_;
  UniqueFd app_fd_;  // O_RDONLY, for apps
  UniqueFd data_page_fd_, data_meta_fd_;  // durability disk only
  Mapping meta_map_;
  std::unique_ptr<std::atomic<uint64_t>[]> blocks_;  // one bit per 4 KiB block of records, guarded by geo_mu_
  uint64_t block_words_ = 0;
  std::array<std::atomic<uint64_t>, 4> state_counts_{};  // pages per PageState
};

// ---------------------------------------------------------------------------------------------------------
// Redo log (`redo.log`): one sparse file of fixed slots.
//   [0, 4096)                       header: magic u64, format u32, slot_count u32, slot_capacity u64, crc u32
//   [4096 + 64*s, +64)              slot header s: marker u32, phase u8, pad[3], txid u64, body_len u64,
//                                   body_crc u32 (CRC32C of the body)
//   [RedoBodyBase(n) + s*capacity)  slot body s (see EncodeRedoBody); RedoBodyBase(n) = 4096 + the slot table
//                                   rounded up to whole 4 KiB pages
// Bodies are written with pwrite into a sparse region: a slot costs memory only for the bytes it holds, and
// Free punches a large body's pages out again, so slots that each fit a 4096-page commit (16 MiB of range bytes)
// do not pin their capacity in tmpfs. Body and slot header (marker included) are persisted in one flush; a record
// whose marker is missing or whose body fails its CRC (a crash before the flush completed) is ignored (torn).
// With durability disk the file lives in the data dir (every persist is an fdatasync) so a prepared record
// survives a machine restart; with durability memory it lives in the pool dir.
// The slot count is the file's own (its header): a new log gets kRedoSlots; a log written with another count (the
// first format had 64) opens with that count, so its records are recovered.
// A slot is held by every part in flight here: an owner's prepared part, a prepare copy of another owner's part
// (until its release arrives), a committer's decision. Copies dominate (N-1 per part, released off the critical
// path), so the count covers seconds of commits whose releases are delayed, not only the commits in flight.
constexpr uint32_t kRedoSlots = 1024;
constexpr uint32_t kRedoMaxSlots = 65536;
constexpr uint64_t kRedoMaxRangeBytes = 16ull << 20;
// Body capacity: 16 MiB of range bytes plus 4 MiB for the fixed fields, range descriptors (12 bytes each, so
// ~349k ranges) and page versions.
constexpr uint64_t kRedoSlotCapacity = kRedoMaxRangeBytes + (4ull << 20);
// Where slot bodies start in a log of `slots` slots (8192 for the first format's 64).
constexpr uint64_t RedoBodyBase(uint32_t slots) { return 4096 + (uint64_t(slots) * 64 + 4095) / 4096 * 4096; }

class RedoLogImpl final : public RedoLog {
 public:
  // `slots_if_new`: the slot count of a log created here (an existing log keeps its own).
  static Status Open(const std::string& path, bool on_disk, std::unique_ptr<RedoLogImpl>* out,
                     uint32_t slots_if_new = kRedoSlots);
  Status Append(const RedoRecord& record, uint32_t* slot) override;
  Status SetPhase(uint32_t slot, RedoPhase phase) override;
  Status Free(uint32_t slot) override;
  std::vector<std::pair<uint32_t, RedoRecord>> InFlight() const override;
  uint64_t in_flight() const;
  uint32_t slot_count() const { return slots_; }
  // fdatasync calls made for records (Append, SetPhase): with concurrent writers one call covers several.
  uint64_t fdatasyncs() const { return fdatasyncs_.load(std::memory_order_relaxed); }

 private:
  RedoLogImpl() = default;
  Status CheckSlotInUse(uint32_t slot) const;
  bool ReadSlot(uint32_t slot, RedoRecord* out) const;  // false = free or torn
  // Makes every write this caller finished before the call durable (PersistFile). With durability disk concurrent
  // callers share one fdatasync (group commit, no thread of its own): the first caller with nothing in flight syncs
  // for everyone whose write completed before it started; callers that arrive during it wait for it, and sync again
  // only if their write was not covered. A failed fdatasync poisons the log: a later fdatasync may report success
  // although the failed one's pages never reached the disk (Linux clears the error once reported), so every later
  // sync fails with the first error.
  Status SyncWrites();
  uint64_t SlotBodyOff(uint32_t slot) const { return RedoBodyBase(slots_) + uint64_t(slot) * kRedoSlotCapacity; }

  std::string path_;
  bool on_disk_ = false;
  uint32_t slots_ = 0;
  UniqueFd fd_;
  mutable std::mutex mu_;
  std::vector<bool> in_use_;
  std::vector<uint64_t> body_len_;
  uint32_t used_ = 0;  // slots in use
  uint32_t next_ = 0;  // where the search for a free slot starts
  // Group commit (SyncWrites): writes_done_ counts writes finished, synced_ how many of them an fdatasync covered.
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t writes_done_ = 0;
  uint64_t synced_ = 0;
  bool syncing_ = false;
  Status sync_error_;
  std::atomic<uint64_t> fdatasyncs_{0};
};

// Body codec (exposed for tests and fuzzing): txid u64, dataset u64, committer u32, n_ranges u32,
// n_versions u32, reserved u32, then n_ranges x {offset u64, len u32, bytes[len]}, then n_versions x u64.
Status EncodeRedoBody(const RedoRecord& record, std::vector<uint8_t>* out);
Status DecodeRedoBody(const uint8_t* body, size_t len, RedoRecord* out);
// After decoding a record of a known phase: an owner record's one part is its commit id (see EncodeRedoBody).
Status OwnerCommitIdFromParts(RedoRecord* r);

}  // namespace internal
}  // namespace pool
}  // namespace hotpot
