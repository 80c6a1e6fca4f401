// The PM pool of one node (ARCHITECTURE §7): per-dataset sparse page files (the node cache apps map),
// page metadata, a redo log (checksummed records, one flush each), and the durability setting.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/page.h"
#include "common/status.h"

namespace hotpot {
namespace pool {


enum class Durability : uint8_t { kMemory = 0, kDisk = 1 };

// Page states on a node (paper §5.1): the node cache holds committed (clean, possibly mapped) and redundant
// (held only for durability) copies; the owner's copy is kOwned. Dirty pages live in app processes, not here.
enum class PageState : uint8_t { kAbsent = 0, kCommitted = 1, kRedundant = 2, kOwned = 3 };

struct PageMeta {
  PageState state = PageState::kAbsent;
  uint64_t version = 0;  // bumped by every commit that changes the page; 0 = never written
};

struct PoolOptions {
  std::string pool_dir;  // e.g. /dev/shm/hotpot/node-1 (created if missing)
  std::string data_dir;  // write-through copy for durability kDisk (created if missing)
  Durability durability = Durability::kDisk;
  // Durability disk: the page journal writes the data dir's page files back in the background and at close. false
  // (tests only) leaves every persisted page in the journal, as a crash would, for the next Open to replay.
  bool journal_write_back = true;
};

struct DatasetPoolStats {
  uint64_t dataset_id = 0;
  uint64_t size_bytes = 0;
  uint64_t pages_owned = 0;
  uint64_t pages_committed = 0;
  uint64_t pages_redundant = 0;
};

struct PoolStats {
  uint64_t bytes_resident = 0;  // page-file bytes allocated (not holes)
  uint64_t redo_in_flight = 0;
  uint64_t syncs = 0;           // page-journal batches (durability disk), each one fdatasync
  uint64_t synced_commits = 0;  // persist requests covered by those batches
  // fdatasync calls for commits (durability disk): redo records and page-journal batches (each shared by concurrent
  // writers), and the journal's background write-back (one per data file per round). Opening, creating and
  // copying files is not counted.
  uint64_t fdatasyncs = 0;
  uint64_t write_backs = 0;       // page-journal write-back rounds (durability disk)
  uint64_t journal_replayed = 0;  // page images the last Open replayed from the journal into the data dir
  uint64_t journal_images = 0;    // page images in the journal now (durability disk)
  // Images of datasets whose write-back failed, moved from a sealed journal file to the active one so that the
  // sealed one can be emptied (they stay journaled until a restart replays them).
  uint64_t journal_carried = 0;
  std::vector<DatasetPoolStats> datasets;
};

class DatasetStore {
 public:
  virtual ~DatasetStore() = default;
  virtual uint64_t id() const = 0;
  virtual uint64_t size_bytes() const = 0;
  uint64_t page_count() const { return size_bytes() / kPageSize; }
  // A read-only (O_RDONLY) fd of the page file (the node cache), -1 once dropped. Apps receive it over SCM_RIGHTS and
  // map it MAP_PRIVATE (a private mapping needs no write access): an app — or another local user given it — cannot
  // write the node's copy with pwrite or a shared mapping.
  virtual int app_fd() const = 0;
  // A read-write fd of the page file, -1 once dropped: for a shared writable mapping the RDMA device can pin (Linux 6.1
  // pins a read-only mapping only as a private copy: engine/rdma_pages.h). Never handed to apps.
  virtual int page_fd() const = 0;
  virtual Status Grow(uint64_t new_size_bytes) = 0;

  virtual PageMeta GetMeta(uint64_t page) const = 0;
  // Copies one page into out (4096 bytes); an absent page reads as zeros. OUT_OF_RANGE past the end.
  virtual Status ReadPage(uint64_t page, uint8_t* out, PageMeta* meta) const = 0;
  // Writes a whole page (fetched copy, replica, owner page): data first (pwrite, so concurrent faults on the
  // page wait for the copy), then metadata. Durable per the durability setting once Persist() returns.
  virtual Status InstallPage(uint64_t page, const uint8_t* data, uint64_t version, PageState state) = 0;
  // Writes `len` bytes at dataset byte `offset` (within one page) and sets the page's version (commit apply,
  // coherence push). Does not change the state.
  virtual Status WriteBytes(uint64_t offset, const uint8_t* data, uint32_t len, uint64_t new_version) = 0;
  virtual Status SetState(uint64_t page, PageState state) = 0;
  // Drops a page copy (punches a hole); used for eviction of cached copies and tests.
  virtual Status DropPage(uint64_t page) = 0;
  // Makes every write to the listed pages durable: memory -> ordering fence; disk -> an image of each page appended
  // to the node's page journal + one fdatasync shared with concurrent callers of every dataset (group commit); the
  // data dir's page files are written from the journal in the background.
  virtual Status Persist(const std::vector<uint64_t>& pages) = 0;
  // The pages in [first, end) whose record was ever written and not dropped (state not absent or version > 0), in
  // order, with their records. Costs what the written pages cost, not the range: a scan of a huge, mostly untouched
  // dataset (ownership changes, restart checks, stats) visits only pages that were used.
  virtual std::vector<std::pair<uint64_t, PageMeta>> WrittenPages(uint64_t first, uint64_t end) const = 0;
};

// One redo range: the new bytes of a committed range, enough to replay the commit after a crash.
struct RedoRange {
  uint64_t offset = 0;  // dataset byte offset
  std::vector<uint8_t> bytes;
};

// kDecided marks a committer's decision record (not an owner's redo): the commit whose parts are `parts` was
// decided COMMIT; recovering owners ask the committer, which answers from these records (presumed abort otherwise).
// kCopy marks a prepare copy: another node's (`owner_node`) prepared part, kept here until that owner finishes it, so
// a node taking over the owner's chunk has it (docs/design/availability.md "Replicated prepare"). Never replayed
// here; written once and freed. kCopyApplied: a prepare copy whose owner applied the part with fewer than N page
// copies (its pushes failed): kept until the owner has the part's pages back at N copies, and completed, not asked
// about, by a node taking the chunk over (SetPhase moves a kCopy record there in place).
// kFrozen (owner redo) and kCopyFrozen (prepare copy): a prepared part of a multi-part commit whose committer was
// declared dead or forgotten, frozen by a participant's question (COMMIT_STATE): its committer's APPLY is refused from
// then on, across restarts and takeovers, and only its participants settle it (docs/design/availability.md "A dead
// committer"). SetPhase moves kPrepared there (and on to kApplying, should the participants apply it), and kCopy to
// kCopyFrozen (and on to kCopyApplied).
enum class RedoPhase : uint8_t {
  kFree = 0,
  kPrepared = 1,
  kApplying = 2,
  kApplied = 3,
  kDecided = 4,
  kCopy = 5,
  kCopyApplied = 6,
  kFrozen = 7,
  kCopyFrozen = 8,
};
inline bool IsCopyPhase(RedoPhase p) {
  return p == RedoPhase::kCopy || p == RedoPhase::kCopyApplied || p == RedoPhase::kCopyFrozen;
}

// One part of a multi-part commit: the owner node and the txid of its PREPARE, and (decision records) the first page
// the part touches + 1 (0 = not recorded): if the part's chunk gets another owner (failover), the committer finds it
// through the chunk map.
struct RedoPart {
  uint32_t node = 0;
  uint64_t txid = 0;
  uint32_t page_plus1 = 0;
};

struct RedoRecord {
  uint64_t txid = 0;
  uint64_t dataset_id = 0;
  uint32_t committer_node_id = 0;
  RedoPhase phase = RedoPhase::kPrepared;
  std::vector<RedoRange> ranges;
  std::vector<uint64_t> page_versions;  // new version of each touched page, parallel to PagesOf(ranges)
  std::vector<RedoPart> parts;          // decision records (kDecided) only: every part of the commit
  // Owner records of a part of a multi-part commit: the commit id every part shares (its pushes mark the commit
  // open on the nodes they change; a recovered part that re-pushes must mark it again). 0 for one-shot commits.
  uint64_t commit_id = 0;
  // Prepare copies (kCopy) only: the node that owns the part (it prepared it and sent this copy).
  uint32_t owner_node = 0;
  // Owner records and prepare copies of a part of a multi-part commit: the membership epoch its committer stamped on
  // the PREPARE (0 = not known). A participant freezes the part only once the committer is known dead at an epoch at
  // least this one (docs/design/availability.md "A dead committer"), so it must outlive a restart and a takeover.
  uint64_t sender_epoch = 0;
};

class RedoLog {
 public:
  virtual ~RedoLog() = default;
  // Persists the record (body and slot header with its CRC32C, one flush). RESOURCE_EXHAUSTED when no slot is free.
  // Phase kPrepared, kApplying, kApplied (owner redo), kDecided (committer decision) or kCopy (another owner's
  // prepared part); the last two never change phase.
  virtual Status Append(const RedoRecord& record, uint32_t* slot) = 0;
  virtual Status SetPhase(uint32_t slot, RedoPhase phase) = 0;
  virtual Status Free(uint32_t slot) = 0;
  // Valid records found in the log (after a restart: the ones to replay or discard).
  virtual std::vector<std::pair<uint32_t, RedoRecord>> InFlight() const = 0;
};

// Which store this pool is (docs/design/consistency.md "A node that lost its store"): a random id made when the
// pool is created empty, kept where the pages are durable (the data dir with durability disk, else the pool dir),
// and an incarnation bumped by every Open. The dispatcher compares both with what it saw last: a new id means the
// node's pages are gone (a replaced machine, a wiped disk); a lower incarnation means an older copy was restored.
struct StoreIdentity {
  std::string id;             // 32 hex digits
  uint64_t incarnation = 0;   // 1 at creation
  bool created = false;       // made by this Open (the store was empty)
};

class Pool {
 public:
  virtual ~Pool() = default;
  virtual const StoreIdentity& identity() const = 0;
  // Gives the store a new id (incarnation 1), e.g. after the dispatcher found it older than the cluster's view.
  virtual Status RenewIdentity() = 0;
  // Opens (creating if needed) the pool; restores pool files from data_dir when they are missing.
  static Status Open(const PoolOptions& options, std::unique_ptr<Pool>* out);

  // Creates or reopens the dataset's store, growing the files to size_bytes if smaller. Stable pointer.
  virtual Status OpenDataset(uint64_t dataset_id, uint64_t size_bytes, DatasetStore** out) = 0;
  virtual DatasetStore* FindDataset(uint64_t dataset_id) = 0;
  // Dataset ids with files in the pool (after a restart).
  virtual std::vector<uint64_t> ListDatasets() const = 0;
  virtual Status DropDataset(uint64_t dataset_id) = 0;
  virtual RedoLog& redo() = 0;
  // Durability disk: writes every page persisted so far back from the page journal into the data dir's page files
  // and empties the journal (it happens in the background anyway; at close too). Memory: nothing to do.
  virtual Status WriteBack() = 0;
  virtual Durability durability() const = 0;
  virtual PoolStats Stats() const = 0;
};

}  // namespace pool
}  // namespace hotpot
