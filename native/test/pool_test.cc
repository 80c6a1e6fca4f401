// PM pool tests: page store semantics, restart, restore, redo log, group commit, mapping by another process.
#include <map>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ftw.h>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "pool/pool.h"
#include "pool/pool_internal.h"
#include "test_util.h"

using namespace hotpot;
using namespace hotpot::pool;

namespace {

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

// A fresh temp dir under /dev/shm, removed when the test ends.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/dev/shm/hotpot-pool-test-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    CHECK(p != nullptr);
    path = p;
  }
  ~TempDir() { ::nftw(path.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS); }
  PoolOptions Options(Durability d = Durability::kDisk) const {
    PoolOptions o;
    o.pool_dir = path + "/pool/node-1";
    o.data_dir = path + "/data/node-1";
    o.durability = d;
    return o;
  }
};

std::vector<uint8_t> Pattern(uint8_t seed) {
  std::vector<uint8_t> v(kPageSize);
  for (size_t i = 0; i < v.size(); i++) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

std::vector<uint8_t> Read(DatasetStore* ds, uint64_t page, PageMeta* meta = nullptr) {
  std::vector<uint8_t> out(kPageSize, 0xEE);
  CHECK_OK(ds->ReadPage(page, out.data(), meta));
  return out;
}

bool AllZero(const std::vector<uint8_t>& v) {
  for (uint8_t b : v) {
    if (b != 0) return false;
  }
  return true;
}

RedoRecord MakeRecord(uint64_t txid, size_t nranges, size_t len) {
  RedoRecord r;
  r.txid = txid;
  r.dataset_id = 7;
  r.committer_node_id = 3;
  for (size_t i = 0; i < nranges; i++) {
    RedoRange rg;
    rg.offset = i * kPageSize + (len + 16 <= kPageSize ? 16 : 0);
    rg.bytes.assign(len, static_cast<uint8_t>(txid + i));
    r.ranges.push_back(rg);
    r.page_versions.push_back(txid * 100 + i);
  }
  return r;
}

// A prepare copy of node 5's part of commit `commit_id`, as MakeRecord.
RedoRecord MakeCopyRecord(uint64_t txid, uint64_t commit_id) {
  RedoRecord r = MakeRecord(txid, 2, 16);
  r.phase = RedoPhase::kCopy;
  r.owner_node = 5;
  r.commit_id = commit_id;
  return r;
}

// Blocks allocated to a file (st_blocks in bytes): holes cost nothing.
uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  CHECK(::stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// This process's resident memory (VmRSS, shared file pages included), in bytes.
uint64_t RssBytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  CHECK(f != nullptr);
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmRSS: %lu kB", &kb) == 1) break;
  }
  std::fclose(f);
  CHECK(kb > 0);
  return kb * 1024;
}

}  // namespace

TEST(install_read_version_state) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  DatasetStore* ds = nullptr;
  CHECK_OK(pool->OpenDataset(5, 10 * kPageSize, &ds));
  CHECK(ds->id() == 5 && ds->size_bytes() == 10 * kPageSize && ds->page_count() == 10);
  CHECK(ds->app_fd() >= 0);
  auto a = Pattern(1);
  CHECK_OK(ds->InstallPage(3, a.data(), 4, PageState::kOwned));
  PageMeta m;
  CHECK(Read(ds, 3, &m) == a);
  CHECK(m.state == PageState::kOwned && m.version == 4);
  CHECK(ds->GetMeta(3).version == 4);
  CHECK_OK(ds->SetState(3, PageState::kCommitted));
  CHECK(ds->GetMeta(3).state == PageState::kCommitted && ds->GetMeta(3).version == 4);
  // Absent pages read zeros with version 0.
  CHECK(AllZero(Read(ds, 4, &m)));
  CHECK(m.state == PageState::kAbsent && m.version == 0);
  // Stats count states and resident bytes.
  CHECK_OK(ds->InstallPage(5, a.data(), 1, PageState::kRedundant));
  PoolStats st = pool->Stats();
  CHECK(st.datasets.size() == 1 && st.datasets[0].pages_committed == 1 && st.datasets[0].pages_redundant == 1 &&
        st.datasets[0].pages_owned == 0);
  CHECK(st.bytes_resident >= 2 * kPageSize);
  CHECK(pool->FindDataset(5) == ds && pool->FindDataset(6) == nullptr);
  CHECK_OK(ds->Persist({3, 5}));  // memory durability: a fence
  CHECK(pool->Stats().syncs == 0);
  // A non-page-multiple size rounds up.
  DatasetStore* odd = nullptr;
  CHECK_OK(pool->OpenDataset(6, 5000, &odd));
  CHECK(odd->page_count() == 2);
}

TEST(bounds_are_validated) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  DatasetStore* ds = nullptr;
  CHECK(pool->OpenDataset(1, 0, &ds).code() == Code::kInvalidArgument);
  CHECK(pool->OpenDataset(1, 1ull << 50, &ds).code() == Code::kInvalidArgument);
  CHECK_OK(pool->OpenDataset(1, 4 * kPageSize, &ds));
  auto a = Pattern(2);
  std::vector<uint8_t> buf(kPageSize);
  CHECK(ds->ReadPage(4, buf.data(), nullptr).code() == Code::kOutOfRange);
  CHECK(ds->ReadPage(~0ull, buf.data(), nullptr).code() == Code::kOutOfRange);
  CHECK(ds->InstallPage(4, a.data(), 1, PageState::kOwned).code() == Code::kOutOfRange);
  CHECK(ds->InstallPage(0, a.data(), 1, PageState::kAbsent).code() == Code::kInvalidArgument);
  CHECK(ds->InstallPage(0, a.data(), 1, static_cast<PageState>(9)).code() == Code::kInvalidArgument);
  CHECK(ds->SetState(9, PageState::kOwned).code() == Code::kOutOfRange);
  CHECK(ds->DropPage(4).code() == Code::kOutOfRange);
  CHECK(ds->Persist({0, 4}).code() == Code::kOutOfRange);
  // WriteBytes: inside one page only, inside the dataset, non-empty.
  CHECK(ds->WriteBytes(kPageSize - 10, a.data(), 11, 2).code() == Code::kInvalidArgument);
  CHECK(ds->WriteBytes(100, a.data(), 4097, 2).code() == Code::kInvalidArgument);
  CHECK(ds->WriteBytes(4 * kPageSize, a.data(), 1, 2).code() == Code::kOutOfRange);
  CHECK(ds->WriteBytes(~0ull - 3, a.data(), 2, 2).code() == Code::kOutOfRange);
  CHECK(ds->WriteBytes(0, a.data(), 0, 2).code() == Code::kInvalidArgument);
  CHECK(ds->GetMeta(2).version == 0);  // nothing above changed anything
  CHECK_OK(ds->InstallPage(1, a.data(), 1, PageState::kOwned));
  const uint8_t patch[10] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  CHECK_OK(ds->WriteBytes(2 * kPageSize - 10, patch, 10, 2));
  auto got = Read(ds, 1);
  CHECK(std::memcmp(got.data(), a.data(), kPageSize - 10) == 0);
  CHECK(std::memcmp(got.data() + kPageSize - 10, patch, 10) == 0);
  CHECK(ds->GetMeta(1).version == 2 && ds->GetMeta(1).state == PageState::kOwned);
}

TEST(reopen_after_crash_keeps_pages_and_meta) {
  TempDir t;
  auto a = Pattern(3), b = Pattern(4);
  // The child writes and dies without running any destructor: a real process crash.
  pid_t pid = ::fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    std::unique_ptr<Pool> pool;
    if (!Pool::Open(t.Options(Durability::kMemory), &pool).ok()) ::_exit(2);
    DatasetStore* ds = nullptr;
    if (!pool->OpenDataset(9, 8 * kPageSize, &ds).ok()) ::_exit(3);
    if (!ds->InstallPage(0, a.data(), 11, PageState::kOwned).ok()) ::_exit(4);
    if (!ds->InstallPage(7, b.data(), 12, PageState::kRedundant).ok()) ::_exit(5);
    if (!ds->WriteBytes(5, b.data(), 3, 13).ok()) ::_exit(6);
    ::_exit(0);
  }
  int status = 0;
  CHECK(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  CHECK(pool->ListDatasets() == std::vector<uint64_t>{9});
  DatasetStore* ds = pool->FindDataset(9);
  CHECK(ds != nullptr && ds->page_count() == 8);
  PageMeta m;
  auto got = Read(ds, 0, &m);
  CHECK(m.version == 13 && m.state == PageState::kOwned);
  CHECK(std::memcmp(got.data(), a.data(), 5) == 0 && std::memcmp(got.data() + 5, b.data(), 3) == 0);
  CHECK(Read(ds, 7, &m) == b && m.version == 12 && m.state == PageState::kRedundant);
  // Destroying the object (no shutdown path) and reopening also keeps everything.
  pool.reset();
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  CHECK(pool->FindDataset(9)->GetMeta(7).version == 12);
  // Reopening with a smaller size keeps the larger.
  CHECK_OK(pool->OpenDataset(9, kPageSize, &ds));
  CHECK(ds->page_count() == 8);
}

TEST(mismatching_meta_file_is_refused) {
  TempDir t;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
    DatasetStore* ds = nullptr;
    CHECK_OK(pool->OpenDataset(2, 2 * kPageSize, &ds));
  }
  const std::string meta = t.Options().pool_dir + "/ds-2.meta";
  // Corrupt the dataset id inside the header (covered by its checksum).
  int fd = ::open(meta.c_str(), O_RDWR);
  CHECK(fd >= 0);
  uint8_t b = 0x5A;
  CHECK(::pwrite(fd, &b, 1, 16) == 1);
  std::unique_ptr<Pool> pool;
  Status st = Pool::Open(t.Options(Durability::kMemory), &pool);
  CHECK(st.code() == Code::kDataLoss);
  // A foreign file under the dataset's name.
  const char junk[] = "definitely not a meta file";
  CHECK(::pwrite(fd, junk, sizeof junk, 0) == static_cast<ssize_t>(sizeof junk));
  ::close(fd);
  st = Pool::Open(t.Options(Durability::kMemory), &pool);
  CHECK(st.code() == Code::kFailedPrecondition);
  std::fprintf(stderr, "  refused: %s\n", st.ToString().c_str());
}

TEST(restore_from_data_dir_when_pool_wiped) {
  TempDir t;
  auto a = Pattern(5);
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(), &pool));
    DatasetStore* ds = nullptr;
    CHECK_OK(pool->OpenDataset(4, 16 * kPageSize, &ds));
    CHECK_OK(ds->InstallPage(2, a.data(), 21, PageState::kOwned));
    CHECK_OK(ds->InstallPage(15, a.data(), 22, PageState::kCommitted));
    CHECK_OK(ds->Persist({2, 15}));
    // Not persisted: lost with the pool, as a machine restart would lose it.
    CHECK_OK(ds->InstallPage(3, a.data(), 23, PageState::kOwned));
    CHECK(pool->Stats().syncs >= 1);
  }
  // "Reboot": /dev/shm is wiped.
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  CHECK(pool->ListDatasets() == std::vector<uint64_t>{4});
  DatasetStore* ds = pool->FindDataset(4);
  CHECK(ds != nullptr && ds->page_count() == 16);
  PageMeta m;
  CHECK(Read(ds, 2, &m) == a && m.version == 21 && m.state == PageState::kOwned);
  CHECK(Read(ds, 15, &m) == a && m.version == 22 && m.state == PageState::kCommitted);
  CHECK(AllZero(Read(ds, 3, &m)) && m.version == 0);
  CHECK(AllZero(Read(ds, 0, &m)) && m.state == PageState::kAbsent);
  // The restored page file is sparse again (holes stayed holes) and sits in the pool dir.
  struct stat st;
  CHECK(::stat((t.Options().pool_dir + "/ds-4.pages").c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 < 16 * kPageSize);
}

TEST(grow_extends_both_copies) {
  TempDir t;
  auto a = Pattern(6);
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(), &pool));
    DatasetStore* ds = nullptr;
    CHECK_OK(pool->OpenDataset(3, 2 * kPageSize, &ds));
    CHECK_OK(ds->InstallPage(1, a.data(), 5, PageState::kOwned));
    CHECK_OK(pool->OpenDataset(3, 6 * kPageSize, &ds));  // grows
    CHECK(ds->page_count() == 6);
    CHECK_OK(ds->InstallPage(5, a.data(), 6, PageState::kOwned));
    CHECK_OK(ds->Grow(kPageSize));  // smaller keeps the larger
    CHECK(ds->page_count() == 6);
    CHECK_OK(ds->Grow(8 * kPageSize));
    CHECK(ds->page_count() == 8 && ds->GetMeta(1).version == 5 && ds->GetMeta(5).version == 6);
    CHECK(ds->GetMeta(7).state == PageState::kAbsent);
    CHECK_OK(ds->Persist({1, 5}));
    struct stat st;
    CHECK(::fstat(ds->app_fd(), &st) == 0 && st.st_size == static_cast<off_t>(8 * kPageSize));
  }
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  DatasetStore* ds = pool->FindDataset(3);
  CHECK(ds != nullptr && ds->page_count() == 8);
  CHECK(Read(ds, 5) == a && ds->GetMeta(5).version == 6);
}

TEST(drop_page_and_dataset) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  DatasetStore* ds = nullptr;
  CHECK_OK(pool->OpenDataset(8, 4 * kPageSize, &ds));
  auto a = Pattern(7);
  CHECK_OK(ds->InstallPage(1, a.data(), 3, PageState::kCommitted));
  uint64_t before = pool->Stats().bytes_resident;
  CHECK_OK(ds->DropPage(1));
  PageMeta m;
  CHECK(AllZero(Read(ds, 1, &m)) && m.version == 0 && m.state == PageState::kAbsent);
  CHECK(pool->Stats().bytes_resident + kPageSize <= before);
  CHECK(pool->Stats().datasets[0].pages_committed == 0);
  CHECK_OK(ds->Persist({1}));
  CHECK(pool->DropDataset(8).ok());
  CHECK(pool->FindDataset(8) == nullptr && pool->ListDatasets().empty());
  CHECK(pool->DropDataset(8).code() == Code::kNotFound);
  // The old pointer stays safe to call and says the dataset is gone.
  CHECK(ds->ReadPage(0, a.data(), nullptr).code() == Code::kFailedPrecondition);
  CHECK(ds->app_fd() == -1);
  CHECK(!internal::PathExists(t.Options().pool_dir + "/ds-8.pages"));
  CHECK(!internal::PathExists(t.Options().pool_dir + "/ds-8.meta"));
  CHECK(!internal::PathExists(t.Options().data_dir + "/ds-8.pages"));
  CHECK(!internal::PathExists(t.Options().data_dir + "/ds-8.meta"));
  pool.reset();
  CHECK_OK(Pool::Open(t.Options(), &pool));
  CHECK(pool->ListDatasets().empty());
  // The id can be created again, fresh.
  CHECK_OK(pool->OpenDataset(8, kPageSize, &ds));
  CHECK(ds->GetMeta(0).version == 0);
}

TEST(redo_append_phase_free_across_reopen) {
  for (Durability d : {Durability::kMemory, Durability::kDisk}) {
    TempDir t;
    uint32_t s1 = 0, s2 = 0, s3 = 0;
    {
      std::unique_ptr<Pool> pool;
      CHECK_OK(Pool::Open(t.Options(d), &pool));
      CHECK(pool->redo().InFlight().empty());
      CHECK_OK(pool->redo().Append(MakeRecord(100, 3, 40), &s1));
      CHECK_OK(pool->redo().Append(MakeRecord(200, 1, 4096), &s2));
      CHECK_OK(pool->redo().Append(MakeRecord(300, 2, 1), &s3));
      CHECK(s1 != s2 && s2 != s3 && s1 != s3);
      CHECK_OK(pool->redo().SetPhase(s2, RedoPhase::kApplying));
      CHECK_OK(pool->redo().Free(s3));
      CHECK(pool->redo().Free(s3).code() == Code::kFailedPrecondition);
      CHECK(pool->redo().SetPhase(internal::kRedoSlots, RedoPhase::kApplied).code() == Code::kOutOfRange);
      CHECK(pool->redo().SetPhase(s1, RedoPhase::kFree).code() == Code::kInvalidArgument);
      CHECK(pool->Stats().redo_in_flight == 2);
    }
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(d), &pool));
    auto in = pool->redo().InFlight();
    CHECK(in.size() == 2);
    CHECK(pool->Stats().redo_in_flight == 2);
    for (auto& [slot, r] : in) {
      RedoRecord want = MakeRecord(slot == s1 ? 100 : 200, slot == s1 ? 3 : 1, slot == s1 ? 40 : 4096);
      CHECK(slot == s1 || slot == s2);
      CHECK(r.txid == want.txid && r.dataset_id == 7 && r.committer_node_id == 3);
      CHECK(r.phase == (slot == s1 ? RedoPhase::kPrepared : RedoPhase::kApplying));
      CHECK(r.ranges.size() == want.ranges.size() && r.page_versions == want.page_versions);
      for (size_t i = 0; i < r.ranges.size(); i++) {
        CHECK(r.ranges[i].offset == want.ranges[i].offset && r.ranges[i].bytes == want.ranges[i].bytes);
      }
    }
    // Switching durability while records are in flight would hide them: refused.
    std::unique_ptr<Pool> other;
    const Durability flipped = d == Durability::kDisk ? Durability::kMemory : Durability::kDisk;
    CHECK(Pool::Open(t.Options(flipped), &other).code() == Code::kFailedPrecondition);
    CHECK_OK(pool->redo().Free(s1));
    CHECK_OK(pool->redo().Free(s2));
    CHECK(pool->redo().InFlight().empty());
    pool.reset();
    CHECK_OK(Pool::Open(t.Options(flipped), &other));
  }
}

// An owner record of a multi-part commit keeps its commit id across a reopen (a recovered part re-pushes under it);
// records without one read back with 0.
TEST(redo_owner_record_keeps_its_commit_id_across_reopen) {
  TempDir t;
  uint32_t with_id = 0, without = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
    RedoRecord r = MakeRecord(400, 2, 16);
    r.commit_id = (uint64_t(3) << 40) | 399;
    CHECK_OK(pool->redo().Append(r, &with_id));
    CHECK_OK(pool->redo().SetPhase(with_id, RedoPhase::kApplying));
    CHECK_OK(pool->redo().Append(MakeRecord(401, 2, 16), &without));
    RedoRecord bad = MakeRecord(402, 2, 16);
    bad.commit_id = 5;
    bad.parts = {RedoPart{3, 5}};
    uint32_t unused = 0;
    CHECK(pool->redo().Append(bad, &unused).code() == Code::kInvalidArgument);
  }
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  auto in = pool->redo().InFlight();
  CHECK(in.size() == 2);
  for (auto& [slot, r] : in) {
    CHECK(r.parts.empty());
    if (slot == with_id) CHECK(r.commit_id == ((uint64_t(3) << 40) | 399) && r.phase == RedoPhase::kApplying);
    else CHECK(slot == without && r.commit_id == 0);
  }
}

// A prepare copy (another owner's part kept here) reads back with its owner node and commit id (0 for a one-shot
// part); one without an owner is refused, and it cannot change phase.
TEST(redo_prepare_copy_keeps_its_owner_across_reopen) {
  TempDir t;
  uint32_t multi = 0, one_shot = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
    RedoRecord r = MakeRecord(500, 2, 16);
    r.phase = RedoPhase::kCopy;
    r.owner_node = 7;
    r.commit_id = (uint64_t(2) << 40) | 499;
    CHECK_OK(pool->redo().Append(r, &multi));
    RedoRecord o = MakeRecord(501, 1, 4096);
    o.phase = RedoPhase::kCopy;
    o.owner_node = 3;
    CHECK_OK(pool->redo().Append(o, &one_shot));
    RedoRecord bad = MakeRecord(502, 1, 8);
    bad.phase = RedoPhase::kCopy;
    uint32_t unused = 0;
    CHECK(pool->redo().Append(bad, &unused).code() == Code::kInvalidArgument);
    CHECK(pool->redo().SetPhase(multi, RedoPhase::kCopy).code() == Code::kInvalidArgument);
  }
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
  auto in = pool->redo().InFlight();
  CHECK(in.size() == 2);
  for (auto& [slot, r] : in) {
    CHECK(r.parts.empty() && r.phase == RedoPhase::kCopy);
    if (slot == multi) CHECK(r.owner_node == 7 && r.commit_id == ((uint64_t(2) << 40) | 499) && r.txid == 500);
    else CHECK(slot == one_shot && r.owner_node == 3 && r.commit_id == 0 && r.ranges.size() == 1);
  }
}

// A prepare copy whose owner applied the part short of N copies moves to copy-applied in place (durably, read back
// after a reopen with its owner and commit id); an owner's record cannot move there.
TEST(redo_prepare_copy_moves_to_copy_applied) {
  TempDir t;
  uint32_t copy = 0, owned = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
    CHECK_OK(pool->redo().Append(MakeCopyRecord(600, (uint64_t(3) << 40) | 599), &copy));
    RedoRecord o = MakeRecord(601, 1, 8);
    CHECK_OK(pool->redo().Append(o, &owned));
    CHECK(pool->redo().SetPhase(owned, RedoPhase::kCopyApplied).code() == Code::kInvalidArgument);
    CHECK_OK(pool->redo().SetPhase(copy, RedoPhase::kCopyApplied));
    CHECK_OK(pool->redo().SetPhase(copy, RedoPhase::kCopyApplied));  // again: no change
  }
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
  std::map<uint32_t, RedoRecord> in;
  for (auto& kv : pool->redo().InFlight()) in.emplace(kv.first, std::move(kv.second));
  CHECK(in.size() == 2);
  CHECK(in.count(copy) && in.at(copy).phase == RedoPhase::kCopyApplied && in.at(copy).owner_node == 5 &&
        in.at(copy).commit_id == ((uint64_t(3) << 40) | 599) && in.at(copy).parts.empty());
  CHECK(in.count(owned) && in.at(owned).phase != RedoPhase::kCopyApplied);
}

// A prepared owner record moves to frozen and on to applying (the participants applied it); a prepare copy to
// copy-frozen and on to copy-applied; both read back after a reopen. An owner's record cannot move to copy-frozen.
TEST(redo_records_move_to_frozen_durably) {
  TempDir t;
  uint32_t copy = 0, owned = 0, later = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
    CHECK_OK(pool->redo().Append(MakeCopyRecord(700, (uint64_t(3) << 40) | 699), &copy));
    RedoRecord o = MakeRecord(701, 1, 8);
    o.commit_id = (uint64_t(3) << 40) | 699;
    CHECK_OK(pool->redo().Append(o, &owned));
    RedoRecord o2 = MakeRecord(702, 1, 8);
    CHECK_OK(pool->redo().Append(o2, &later));
    CHECK(pool->redo().SetPhase(owned, RedoPhase::kCopyFrozen).code() == Code::kInvalidArgument);
    CHECK_OK(pool->redo().SetPhase(owned, RedoPhase::kFrozen));
    CHECK_OK(pool->redo().SetPhase(copy, RedoPhase::kCopyFrozen));
    CHECK_OK(pool->redo().SetPhase(later, RedoPhase::kFrozen));
    CHECK_OK(pool->redo().SetPhase(later, RedoPhase::kApplying));
  }
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
    std::map<uint32_t, RedoRecord> in;
    for (auto& kv : pool->redo().InFlight()) in.emplace(kv.first, std::move(kv.second));
    CHECK(in.size() == 3);
    CHECK(in.at(copy).phase == RedoPhase::kCopyFrozen && IsCopyPhase(in.at(copy).phase) && in.at(copy).owner_node == 5);
    CHECK(in.at(owned).phase == RedoPhase::kFrozen && !IsCopyPhase(in.at(owned).phase) &&
          in.at(owned).commit_id == ((uint64_t(3) << 40) | 699));
    CHECK(in.at(later).phase == RedoPhase::kApplying);
    CHECK_OK(pool->redo().SetPhase(copy, RedoPhase::kCopyApplied));
  }
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
  for (auto& kv : pool->redo().InFlight())
    if (kv.first == copy) CHECK(kv.second.phase == RedoPhase::kCopyApplied);
}

// A multi-part commit's part keeps the epoch its committer stamped on the PREPARE, in its owner's record and in its
// prepare copies (one-shot copies too), across a reopen and a phase change; records without one read as 0 (not
// known); a one-shot owner record has no stamp to keep (refused rather than dropped).
TEST(redo_records_keep_the_prepares_epoch_stamp) {
  TempDir t;
  uint32_t owned = 0, copy = 0, one_shot_copy = 0, plain = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
    RedoRecord o = MakeRecord(801, 1, 8);
    o.commit_id = (uint64_t(3) << 40) | 800;
    o.sender_epoch = 77;
    CHECK_OK(pool->redo().Append(o, &owned));
    RedoRecord cp = MakeCopyRecord(802, (uint64_t(3) << 40) | 800);
    cp.sender_epoch = 78;
    CHECK_OK(pool->redo().Append(cp, &copy));
    RedoRecord cp1 = MakeCopyRecord(803, 0);
    cp1.sender_epoch = 79;
    CHECK_OK(pool->redo().Append(cp1, &one_shot_copy));
    RedoRecord o2 = MakeRecord(804, 1, 8);
    o2.commit_id = (uint64_t(3) << 40) | 800;
    CHECK_OK(pool->redo().Append(o2, &plain));
    RedoRecord one_shot = MakeRecord(805, 1, 8);
    one_shot.sender_epoch = 80;
    uint32_t refused = 0;
    CHECK(pool->redo().Append(one_shot, &refused).code() == Code::kInvalidArgument);
    CHECK_OK(pool->redo().SetPhase(owned, RedoPhase::kFrozen));
  }
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
  std::map<uint32_t, RedoRecord> in;
  for (auto& kv : pool->redo().InFlight()) in.emplace(kv.first, std::move(kv.second));
  CHECK(in.size() == 4);
  CHECK(in.at(owned).sender_epoch == 77 && in.at(owned).phase == RedoPhase::kFrozen &&
        in.at(owned).commit_id == ((uint64_t(3) << 40) | 800) && in.at(owned).parts.empty());
  CHECK(in.at(copy).sender_epoch == 78 && in.at(copy).owner_node == 5 && in.at(copy).parts.empty());
  CHECK(in.at(one_shot_copy).sender_epoch == 79 && in.at(one_shot_copy).commit_id == 0);
  CHECK(in.at(plain).sender_epoch == 0 && in.at(plain).commit_id == ((uint64_t(3) << 40) | 800));
}

// The store identity: made when the pool is created empty, the same id with a higher incarnation on every reopen,
// kept with the durable pages (the data dir with durability disk: a wiped pool dir keeps it, a wiped data dir
// does not), a new id after RenewIdentity, and a damaged identity file is refused rather than replaced.
TEST(store_identity_follows_the_durable_pages) {
  for (Durability d : {Durability::kMemory, Durability::kDisk}) {
    TempDir t;
    std::string id;
    {
      std::unique_ptr<Pool> pool;
      CHECK_OK(Pool::Open(t.Options(d), &pool));
      CHECK(pool->identity().created && pool->identity().incarnation == 1 && pool->identity().id.size() == 32);
      id = pool->identity().id;
    }
    {
      std::unique_ptr<Pool> pool;
      CHECK_OK(Pool::Open(t.Options(d), &pool));
      CHECK(!pool->identity().created && pool->identity().id == id && pool->identity().incarnation == 2);
    }
    // The tmpfs pool dir is wiped (a reboot): with disk durability the data dir still vouches for the store.
    CHECK(std::system(("rm -rf '" + t.Options(d).pool_dir + "'").c_str()) == 0);
    {
      std::unique_ptr<Pool> pool;
      CHECK_OK(Pool::Open(t.Options(d), &pool));
      if (d == Durability::kDisk) CHECK(pool->identity().id == id && pool->identity().incarnation == 3);
      else CHECK(pool->identity().created && pool->identity().id != id);
      id = pool->identity().id;
      CHECK_OK(pool->RenewIdentity());
      CHECK(pool->identity().id != id && pool->identity().incarnation == 1);
      id = pool->identity().id;
    }
    {
      std::unique_ptr<Pool> pool;
      CHECK_OK(Pool::Open(t.Options(d), &pool));
      CHECK(pool->identity().id == id && pool->identity().incarnation == 2);
    }
    const std::string dir = d == Durability::kDisk ? t.Options(d).data_dir : t.Options(d).pool_dir;
    CHECK(std::system(("echo garbage > '" + dir + "/store.id'").c_str()) == 0);
    std::unique_ptr<Pool> pool;
    CHECK(Pool::Open(t.Options(d), &pool).code() == Code::kDataLoss);
  }
}

TEST(redo_decision_record_keeps_its_parts_across_reopen) {
  TempDir t;
  uint32_t slot = 0;
  RedoRecord dec;
  dec.txid = (uint64_t(3) << 40) | 77;
  dec.dataset_id = 9;
  dec.committer_node_id = 3;
  dec.phase = RedoPhase::kDecided;
  dec.parts = {RedoPart{1, dec.txid}, RedoPart{2, dec.txid + 1}, RedoPart{3, dec.txid + 2}};
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
    CHECK_OK(pool->redo().Append(dec, &slot));
    // A decision never changes phase: it is written once and freed.
    CHECK(pool->redo().SetPhase(slot, RedoPhase::kDecided).code() == Code::kInvalidArgument);
  }
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kDisk), &pool));
  auto in = pool->redo().InFlight();
  CHECK(in.size() == 1);
  const RedoRecord& r = in[0].second;
  CHECK(in[0].first == slot && r.phase == RedoPhase::kDecided && r.txid == dec.txid && r.dataset_id == 9);
  CHECK(r.ranges.empty() && r.page_versions.empty() && r.parts.size() == 3);
  for (size_t i = 0; i < 3; i++) CHECK(r.parts[i].node == dec.parts[i].node && r.parts[i].txid == dec.parts[i].txid);
  // Owner records written before parts existed (reserved word 0) still decode with no parts.
  std::vector<uint8_t> body;
  CHECK_OK(internal::EncodeRedoBody(MakeRecord(5, 1, 10), &body));
  RedoRecord back;
  CHECK_OK(internal::DecodeRedoBody(body.data(), body.size(), &back));
  CHECK(back.parts.empty() && back.ranges.size() == 1);
  // A part count that does not match the body length is data loss, not a crash.
  body[28] = 1;
  CHECK(internal::DecodeRedoBody(body.data(), body.size(), &back).code() == Code::kDataLoss);
}

TEST(torn_redo_record_is_ignored) {
  TempDir t;
  uint32_t good = 0, torn = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
    CHECK_OK(pool->redo().Append(MakeRecord(1, 2, 100), &good));
    CHECK_OK(pool->redo().Append(MakeRecord(2, 2, 100), &torn));
  }
  // Flip one byte of the second record's body (slot bodies start after the 4 KiB header + slot table).
  const std::string log = t.Options(Durability::kMemory).pool_dir + "/redo.log";
  int fd = ::open(log.c_str(), O_RDWR);
  CHECK(fd >= 0);
  const off_t off =
      static_cast<off_t>(internal::RedoBodyBase(internal::kRedoSlots) + uint64_t(torn) * internal::kRedoSlotCapacity + 50);
  uint8_t b = 0;
  CHECK(::pread(fd, &b, 1, off) == 1);
  b ^= 0x40;
  CHECK(::pwrite(fd, &b, 1, off) == 1);
  ::close(fd);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  auto in = pool->redo().InFlight();
  CHECK(in.size() == 1 && in[0].first == good && in[0].second.txid == 1);
  // The torn slot was reclaimed.
  CHECK(pool->Stats().redo_in_flight == 1);
}

// One flush persists body and header together; a crash may persist the new header (marker, CRC) over a slot
// whose body is still the previous record's. The CRC catches it: the record is ignored as torn.
TEST(redo_header_without_its_body_is_ignored) {
  TempDir t;
  uint32_t slot = 0;
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
    CHECK_OK(pool->redo().Append(MakeRecord(1, 2, 100), &slot));
    CHECK_OK(pool->redo().Free(slot));
  }
  std::vector<uint8_t> body;
  CHECK_OK(internal::EncodeRedoBody(MakeRecord(2, 2, 100), &body));
  uint8_t sh[64] = {};
  PutU32(sh, 0x44455256u);  // the valid marker ("VRED")
  sh[4] = 1;                      // prepared
  PutU64(sh + 8, 2);
  PutU64(sh + 16, body.size());
  PutU32(sh + 24, Crc32c(body.data(), body.size()));
  const std::string log = t.Options(Durability::kMemory).pool_dir + "/redo.log";
  int fd = ::open(log.c_str(), O_RDWR);
  CHECK(fd >= 0);
  CHECK(::pwrite(fd, sh, sizeof sh, static_cast<off_t>(4096 + 64 * uint64_t(slot))) == 64);
  ::close(fd);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  CHECK(pool->redo().InFlight().empty());
  CHECK(pool->Stats().redo_in_flight == 0);
}

TEST(redo_full_and_oversize) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  std::vector<uint32_t> slots;
  for (uint32_t i = 0; i < internal::kRedoSlots; i++) {
    uint32_t s = 0;
    CHECK_OK(pool->redo().Append(MakeRecord(i + 1, 1, 8), &s));
    slots.push_back(s);
  }
  uint32_t s = 0;
  CHECK(pool->redo().Append(MakeRecord(999, 1, 8), &s).code() == Code::kResourceExhausted);
  CHECK_OK(pool->redo().Free(slots[10]));
  CHECK_OK(pool->redo().Append(MakeRecord(999, 1, 8), &s));
  CHECK(s == slots[10]);
  for (uint32_t x : slots) CHECK_OK(pool->redo().Free(x));
  // A commit of 4096 whole pages (16 MiB of range bytes) fits; one byte more does not.
  RedoRecord big = MakeRecord(5000, 0, 0);
  for (uint64_t p = 0; p < 4096; p++) {
    RedoRange rg;
    rg.offset = p * kPageSize;
    rg.bytes.assign(kPageSize, static_cast<uint8_t>(p));
    big.ranges.push_back(std::move(rg));
    big.page_versions.push_back(p + 1);
  }
  CHECK_OK(pool->redo().Append(big, &s));
  auto in = pool->redo().InFlight();
  CHECK(in.size() == 1 && in[0].second.ranges.size() == 4096 && in[0].second.ranges[4095].bytes[0] == 255);
  CHECK_OK(pool->redo().Free(s));
  RedoRange extra;
  extra.offset = 4096 * kPageSize;
  extra.bytes.assign(1, 1);
  big.ranges.push_back(extra);
  uint32_t s2 = 0;
  CHECK(pool->redo().Append(big, &s2).code() == Code::kResourceExhausted);
  // A range crossing a page is refused.
  RedoRecord bad = MakeRecord(1, 1, 8);
  bad.ranges[0].offset = kPageSize - 4;
  CHECK(pool->redo().Append(bad, &s2).code() == Code::kInvalidArgument);
  CHECK(pool->redo().InFlight().empty());
}

// A log written with the first format's 64 slots (8 KiB before the bodies) opens with its own count: its records are
// recovered, and it is full at 64. A header naming an impossible count is refused, never read past.
TEST(redo_log_keeps_its_own_slot_count) {
  TempDir t;
  const std::string path = t.path + "/old-redo.log";
  uint32_t first = 0;
  {
    std::unique_ptr<internal::RedoLogImpl> log;
    CHECK_OK(internal::RedoLogImpl::Open(path, false, &log, 64));
    CHECK(log->slot_count() == 64);
    CHECK_OK(log->Append(MakeRecord(41, 2, 100), &first));
  }
  std::unique_ptr<internal::RedoLogImpl> log;
  CHECK_OK(internal::RedoLogImpl::Open(path, false, &log));  // a new log would get kRedoSlots
  CHECK(log->slot_count() == 64 && log->in_flight() == 1);
  auto in = log->InFlight();
  CHECK(in.size() == 1 && in[0].first == first && in[0].second.txid == 41);
  std::vector<uint32_t> slots;
  for (uint32_t i = 1; i < 64; i++) {
    uint32_t s = 0;
    CHECK_OK(log->Append(MakeRecord(100 + i, 1, 8), &s));
    slots.push_back(s);
  }
  uint32_t s = 0;
  CHECK(log->Append(MakeRecord(999, 1, 8), &s).code() == Code::kResourceExhausted);
  CHECK(log->in_flight() == 64);
  log.reset();
  // A header whose slot count was changed (its CRC no longer matches) is not a redo log.
  int fd = ::open(path.c_str(), O_RDWR);
  CHECK(fd >= 0);
  uint8_t count[4];
  PutU32(count, 1u << 30);
  CHECK(::pwrite(fd, count, 4, 12) == 4);
  ::close(fd);
  CHECK(internal::RedoLogImpl::Open(path, false, &log).code() == Code::kFailedPrecondition);
  CHECK(internal::RedoLogImpl::Open(path + ".new", false, &log, 0).code() == Code::kInvalidArgument);
}

TEST(redo_body_decoder_rejects_garbage) {
  RedoRecord r = MakeRecord(77, 3, 33);
  std::vector<uint8_t> body;
  CHECK_OK(internal::EncodeRedoBody(r, &body));
  RedoRecord d;
  CHECK_OK(internal::DecodeRedoBody(body.data(), body.size(), &d));
  CHECK(d.txid == 77 && d.ranges.size() == 3 && d.page_versions == r.page_versions);
  for (size_t cut = 0; cut < body.size(); cut++) CHECK(!internal::DecodeRedoBody(body.data(), cut, &d).ok());
  std::vector<uint8_t> evil = body;
  evil[20] = 0xFF;  // n_ranges huge
  evil[23] = 0xFF;
  CHECK(!internal::DecodeRedoBody(evil.data(), evil.size(), &d).ok());
}

TEST(group_commit_batches_fdatasync) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  DatasetStore* ds = nullptr;
  constexpr int kThreads = 8, kCalls = 50;
  CHECK_OK(pool->OpenDataset(1, kThreads * kCalls * kPageSize, &ds));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; th++) {
    threads.emplace_back([&, th] {
      std::vector<uint8_t> page(kPageSize);
      for (int i = 0; i < kCalls; i++) {
        uint64_t p = uint64_t(th) * kCalls + i;
        std::memset(page.data(), th * 16 + i, page.size());
        if (!ds->InstallPage(p, page.data(), i + 1, PageState::kOwned).ok()) failures++;
        if (!ds->Persist({p}).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  PoolStats st = pool->Stats();
  std::fprintf(stderr, "  group commit: %llu persist calls in %llu fdatasync batches (%.2f commits/sync)\n",
               static_cast<unsigned long long>(st.synced_commits), static_cast<unsigned long long>(st.syncs),
               st.syncs ? double(st.synced_commits) / double(st.syncs) : 0.0);
  CHECK(st.synced_commits == kThreads * kCalls);
  CHECK(st.syncs >= 1 && st.syncs < st.synced_commits);
  // Every page reached the data dir: wipe the pool and read it back from the durable copy.
  pool.reset();
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  CHECK_OK(Pool::Open(t.Options(), &pool));
  ds = pool->FindDataset(1);
  CHECK(ds != nullptr);
  for (int th = 0; th < kThreads; th++) {
    for (int i = 0; i < kCalls; i += 7) {
      PageMeta m;
      auto got = Read(ds, uint64_t(th) * kCalls + i, &m);
      CHECK(m.version == uint64_t(i + 1) && got[100] == uint8_t(th * 16 + i));
    }
  }
}

// Redo records of concurrent writers share fdatasyncs (group commit in the log itself, no thread of its own): on a
// real disk (an fdatasync takes long enough for others to queue behind it), 8 threads appending and marking records
// applying make fewer fdatasync calls than records, every record is durable when its call returns (all read back
// from a reopened log with its phase), and a lone writer still makes exactly one call per record.
// Linux reports a failed write-back to one fdatasync only; a later one can succeed over pages the kernel dropped. So
// after a failed fdatasync the redo log and a dataset's write-through stay failed (every later persist fails, naming
// the first error) instead of acknowledging writes on top of a hole; other datasets go on. (On the old code the
// second append and persist after the failure succeeded.)
TEST(a_failed_fdatasync_stays_failed) {
  char tmpl[] = "/var/tmp/hotpot-redo-test-XXXXXX";
  CHECK(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/redo.log";
  {
    std::unique_ptr<internal::RedoLogImpl> log;
    CHECK_OK(internal::RedoLogImpl::Open(path, true, &log));
    uint32_t slot = 0;
    CHECK_OK(log->Append(MakeRecord(1, 1, 64), &slot));
    internal::FailNextFdatasyncForTest("/redo.log", EIO);
    Status st = log->Append(MakeRecord(2, 1, 64), &slot);
    CHECK(!st.ok() && st.message().find("Input/output error") != std::string::npos);
    st = log->Append(MakeRecord(3, 1, 64), &slot);  // the disk would take it now: refused anyway
    CHECK(!st.ok() && st.message().find("stays failed") != std::string::npos);
    CHECK(!log->SetPhase(0, RedoPhase::kApplying).ok());
  }
  {
    std::unique_ptr<internal::RedoLogImpl> log;  // a restart: the log opens, with what was durable before
    CHECK_OK(internal::RedoLogImpl::Open(path, true, &log));
    auto in = log->InFlight();
    CHECK(in.size() == 1 && in.begin()->second.txid == 1);
  }
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());

  auto bytes = Pattern(3);
  // Two datasets with page 1 written; no write-back thread (the journal stays on its first file and is written back
  // only when asked).
  auto open_two = [&](const TempDir& t, std::unique_ptr<Pool>* pool, DatasetStore** a, DatasetStore** b) {
    PoolOptions o = t.Options(Durability::kDisk);
    o.journal_write_back = false;
    CHECK_OK(Pool::Open(o, pool));
    CHECK_OK((*pool)->OpenDataset(5, 10 * kPageSize, a));
    CHECK_OK((*pool)->OpenDataset(6, 10 * kPageSize, b));
    for (DatasetStore* ds : {*a, *b}) CHECK_OK(ds->InstallPage(1, bytes.data(), 1, PageState::kOwned));
    CHECK_OK((*a)->Persist({1}));
  };
  {
    // The page journal (one file for every dataset of the node): a failed fdatasync fails its batch and every later
    // one.
    TempDir t;
    std::unique_ptr<Pool> pool;
    DatasetStore* a = nullptr;
    DatasetStore* b = nullptr;
    open_two(t, &pool, &a, &b);
    internal::FailNextFdatasyncForTest("/pages.journal.0", EIO);
    Status st = a->Persist({1});
    CHECK(!st.ok() && st.message().find("Input/output error") != std::string::npos);
    st = b->Persist({1});  // the disk would take it now: refused anyway
    CHECK(!st.ok() && st.message().find("stays failed") != std::string::npos);
  }
  TempDir t;
  std::unique_ptr<Pool> pool;
  DatasetStore* a = nullptr;
  DatasetStore* b = nullptr;
  open_two(t, &pool, &a, &b);
  CHECK_OK(b->Persist({1}));
  // The write-back of a dataset's pages file fails its fdatasync: that dataset's later Persists fail (its pages may
  // be missing on the disk), another dataset's go on, and the failed one's images stay in the journal.
  internal::FailNextFdatasyncForTest("/" + internal::PagesName(5), EIO);
  CHECK(!pool->WriteBack().ok());
  CHECK_OK(a->InstallPage(2, bytes.data(), 1, PageState::kOwned));
  Status st = a->Persist({2});
  CHECK(!st.ok() && st.message().find("stays failed") != std::string::npos);
  CHECK_OK(b->InstallPage(2, bytes.data(), 1, PageState::kOwned));
  CHECK_OK(b->Persist({2}));  // another dataset's files are not affected
  internal::FailNextFdatasyncForTest("", 0);
  // The failed dataset's images move on to the active file at every round (carried), so both files keep being
  // emptied while the other dataset goes on committing: the journal holds the failed one's image and no more (before,
  // the sealed file kept it, never emptied, and the active one took every later batch without bound).
  for (uint64_t pg = 3; pg < 9; pg++) {
    CHECK_OK(b->InstallPage(pg, bytes.data(), 1, PageState::kOwned));
    CHECK_OK(b->Persist({pg}));
    CHECK_OK(pool->WriteBack());
  }
  CHECK(pool->Stats().journal_images == 1 && pool->Stats().journal_carried >= 5);
  CHECK(!a->Persist({1}).ok());  // still failed
  // A restart after a reboot: the replay writes the kept images again, so the acknowledged page is there.
  pool.reset();
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  CHECK_OK(Pool::Open(t.Options(), &pool));
  PageMeta m;
  CHECK(Read(pool->FindDataset(5), 1, &m) == bytes && m.version == 1);
  CHECK(Read(pool->FindDataset(6), 2, &m) == bytes && m.version == 1);
  CHECK(Read(pool->FindDataset(6), 8, &m) == bytes && m.version == 1);
}

// A crash before any write-back (the write-back thread off): every Persist that returned is in the journal, and the
// next Open replays it into the data dir, the last image of a page winning; a page changed after its last Persist,
// and a torn batch at the journal's end, are not replayed.
TEST(journaled_pages_survive_a_crash_before_their_write_back) {
  TempDir t;
  PoolOptions o = t.Options();
  o.journal_write_back = false;
  auto v1 = Pattern(11), v2 = Pattern(12), v3 = Pattern(13);
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(o, &pool));
    DatasetStore* a = nullptr;
    DatasetStore* b = nullptr;
    CHECK_OK(pool->OpenDataset(3, 8 * kPageSize, &a));
    CHECK_OK(pool->OpenDataset(4, 8 * kPageSize, &b));
    CHECK_OK(a->InstallPage(0, v1.data(), 1, PageState::kOwned));
    CHECK_OK(a->InstallPage(1, v1.data(), 1, PageState::kOwned));
    CHECK_OK(a->Persist({0, 1}));
    CHECK_OK(a->WriteBytes(0, v2.data(), 100, 2));  // a commit's range over page 0
    CHECK_OK(a->Persist({0}));
    CHECK_OK(b->InstallPage(7, v3.data(), 5, PageState::kCommitted));
    CHECK_OK(b->Persist({7}));
    CHECK_OK(a->DropPage(1));  // an evicted copy: its hole is persisted too
    CHECK_OK(a->Persist({1}));
    CHECK_OK(a->WriteBytes(0, v3.data(), 100, 3));  // applied, never persisted: lost with the pool
    PoolStats st = pool->Stats();
    CHECK(st.write_backs == 0 && st.syncs == 4);
  }
  // Nothing reached the data dir's page files; the journal holds it all. A batch torn at its end (an image whose
  // bytes did not all reach the disk) ends the replay: a complete image after it is not replayed either.
  {
    const uint64_t tail = internal::kJournalHeaderSize + 4 * (internal::kJournalEntryHeaderSize + kPageSize) +
                          internal::kJournalEntryHeaderSize;
    auto img = Pattern(14);
    uint8_t rec[internal::kMetaRecordSize] = {3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0};
    std::vector<uint8_t> more(2 * (internal::kJournalEntryHeaderSize + kPageSize));
    internal::EncodeJournalEntryHeader(1, 3, 2, rec, img.data(), more.data());
    std::memcpy(more.data() + internal::kJournalEntryHeaderSize, img.data(), kPageSize);
    more[internal::kJournalEntryHeaderSize + 9] ^= 0xFF;  // torn
    uint8_t* second = more.data() + internal::kJournalEntryHeaderSize + kPageSize;
    internal::EncodeJournalEntryHeader(1, 3, 3, rec, img.data(), second);
    std::memcpy(second + internal::kJournalEntryHeaderSize, img.data(), kPageSize);
    int fd = ::open((o.data_dir + "/pages.journal.0").c_str(), O_WRONLY);
    CHECK(fd >= 0);
    CHECK(::pwrite(fd, more.data(), more.size(), off_t(tail)) == ssize_t(more.size()));
    ::close(fd);
  }
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);  // the reboot
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  CHECK(pool->Stats().journal_replayed == 5);
  PageMeta m;
  std::vector<uint8_t> want = v1;
  std::memcpy(want.data(), v2.data(), 100);
  CHECK(Read(pool->FindDataset(3), 0, &m) == want && m.version == 2 && m.state == PageState::kOwned);
  CHECK(AllZero(Read(pool->FindDataset(3), 1, &m)) && m.state == PageState::kAbsent);
  CHECK(Read(pool->FindDataset(4), 7, &m) == v3 && m.version == 5 && m.state == PageState::kCommitted);
  for (uint64_t pg : {2, 3}) CHECK(AllZero(Read(pool->FindDataset(3), pg, &m)) && m.version == 0);
  // The replay emptied the journal: the next start replays nothing.
  pool.reset();
  CHECK_OK(Pool::Open(o, &pool));
  CHECK(pool->Stats().journal_replayed == 0);
}

// The write-back writes the journal's images, not the pages as they are now: a page changed after its Persist is
// not on the disk until it is persisted again. It empties the journal.
TEST(write_back_writes_persisted_images_and_empties_the_journal) {
  TempDir t;
  PoolOptions o = t.Options();
  o.journal_write_back = false;  // no thread, no write-back at close: only the explicit one below
  auto v1 = Pattern(21), v2 = Pattern(22);
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(o, &pool));
    DatasetStore* a = nullptr;
    CHECK_OK(pool->OpenDataset(3, 8 * kPageSize, &a));
    CHECK_OK(a->InstallPage(2, v1.data(), 1, PageState::kOwned));
    CHECK_OK(a->Persist({2}));
    CHECK_OK(a->InstallPage(2, v2.data(), 2, PageState::kOwned));  // not persisted
    CHECK_OK(pool->WriteBack());
    CHECK(pool->Stats().write_backs == 1);
  }
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  CHECK(pool->Stats().journal_replayed == 0);
  PageMeta m;
  CHECK(Read(pool->FindDataset(3), 2, &m) == v1 && m.version == 1);
}

// The background write-back keeps the journal small while Persists go on, and what it wrote plus what the journal
// still holds is every persisted page after a crash.
TEST(background_write_back_rotates_the_journal_under_load) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  DatasetStore* a = nullptr;
  constexpr uint64_t kPages = 64;
  CHECK_OK(pool->OpenDataset(9, kPages * kPageSize, &a));
  std::vector<uint8_t> page(kPageSize);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2600);
  uint64_t v = 0;
  while (std::chrono::steady_clock::now() < until || pool->Stats().write_backs < 2) {
    v++;
    std::memset(page.data(), int(v), page.size());
    CHECK_OK(a->InstallPage(v % kPages, page.data(), v, PageState::kOwned));
    CHECK_OK(a->Persist({v % kPages}));
  }
  const PoolStats st = pool->Stats();
  std::fprintf(stderr, "  %llu persists, %llu write-back rounds\n", static_cast<unsigned long long>(v),
               static_cast<unsigned long long>(st.write_backs));
  CHECK(st.write_backs >= 2);
  pool.reset();
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  CHECK_OK(Pool::Open(t.Options(), &pool));
  for (uint64_t k = v; k > v - kPages; k--) {  // each page's last persisted image
    PageMeta m;
    auto got = Read(pool->FindDataset(9), k % kPages, &m);
    CHECK(m.version == k && got[17] == uint8_t(k));
  }
}

// A dataset dropped and made again with the same id never gets the old one's journaled pages.
TEST(a_dropped_datasets_journaled_pages_stay_dropped) {
  TempDir t;
  PoolOptions o = t.Options();
  o.journal_write_back = false;
  auto v1 = Pattern(31);
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(o, &pool));
    DatasetStore* a = nullptr;
    CHECK_OK(pool->OpenDataset(8, 4 * kPageSize, &a));
    CHECK_OK(a->InstallPage(1, v1.data(), 4, PageState::kOwned));
    CHECK_OK(a->Persist({1}));
    CHECK_OK(pool->DropDataset(8));
    CHECK_OK(pool->OpenDataset(8, 4 * kPageSize, &a));
  }
  CHECK(::nftw((t.path + "/pool").c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS) == 0);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  PageMeta m;
  CHECK(AllZero(Read(pool->FindDataset(8), 1, &m)) && m.state == PageState::kAbsent && m.version == 0);
}

TEST(redo_records_of_concurrent_writers_share_fdatasyncs) {
  char tmpl[] = "/var/tmp/hotpot-redo-test-XXXXXX";  // not tmpfs: fdatasync reaches a disk
  CHECK(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/redo.log";
  constexpr int kThreads = 8, kRecords = 40;
  {
    std::unique_ptr<internal::RedoLogImpl> log;
    CHECK_OK(internal::RedoLogImpl::Open(path, true, &log));
    std::atomic<int> failures{0};
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int th = 0; th < kThreads; th++) {
      threads.emplace_back([&, th] {
        ready++;
        while (ready.load() < kThreads) std::this_thread::yield();
        for (int i = 0; i < kRecords; i++) {
          uint32_t slot = 0;
          if (!log->Append(MakeRecord(uint64_t(th) * 1000 + i + 1, 1, 64), &slot).ok()) failures++;
          if (!log->SetPhase(slot, RedoPhase::kApplying).ok()) failures++;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(failures.load() == 0);
    const uint64_t syncs = log->fdatasyncs();
    std::fprintf(stderr, "  redo group commit: %d records and phase changes in %llu fdatasyncs\n",
                 2 * kThreads * kRecords, static_cast<unsigned long long>(syncs));
    CHECK(syncs >= 1 && syncs < uint64_t(2 * kThreads * kRecords));
  }
  {
    std::unique_ptr<internal::RedoLogImpl> log;
    CHECK_OK(internal::RedoLogImpl::Open(path, true, &log));
    auto in = log->InFlight();
    CHECK(in.size() == size_t(kThreads * kRecords));
    std::set<uint64_t> txids;
    for (auto& [slot, r] : in) {
      CHECK(r.phase == RedoPhase::kApplying);
      txids.insert(r.txid);
    }
    CHECK(txids.size() == size_t(kThreads * kRecords));
    for (auto& [slot, r] : in) CHECK_OK(log->Free(slot));
    // Alone, each record is its own fdatasync (nothing to share, nothing skipped).
    const uint64_t before = log->fdatasyncs();
    for (int i = 0; i < 5; i++) {
      uint32_t slot = 0;
      CHECK_OK(log->Append(MakeRecord(9000 + i, 1, 64), &slot));
    }
    CHECK(log->fdatasyncs() - before == 5);
  }
  ::nftw(dir.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(forked_child_maps_page_file_private) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  DatasetStore* ds = nullptr;
  CHECK_OK(pool->OpenDataset(11, 4 * kPageSize, &ds));
  auto a = Pattern(8), b = Pattern(9);
  CHECK_OK(ds->InstallPage(0, a.data(), 1, PageState::kOwned));
  CHECK_OK(ds->InstallPage(2, b.data(), 1, PageState::kCommitted));
  const int fd = ds->app_fd();
  pid_t pid = ::fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    // The app's view: a private mapping of the node cache; its writes must not reach the pool.
    void* m = ::mmap(nullptr, 4 * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) ::_exit(2);
    auto* p = static_cast<uint8_t*>(m);
    if (std::memcmp(p, a.data(), kPageSize) != 0) ::_exit(3);
    if (std::memcmp(p + 2 * kPageSize, b.data(), kPageSize) != 0) ::_exit(4);
    for (uint64_t i = 0; i < kPageSize; i++) {
      if (p[kPageSize + i] != 0) ::_exit(5);
    }
    p[0] ^= 0xFF;  // copy-on-write into the child only
    // The fd is read-only: neither pwrite nor a shared writable mapping reaches the node's copy.
    if ((::fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY) ::_exit(6);
    if (::pwrite(fd, b.data(), kPageSize, 0) != -1 || errno != EBADF) ::_exit(7);
    if (::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED) ::_exit(8);
    ::_exit(0);
  }
  int status = 0;
  CHECK(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(Read(ds, 0) == a);
}

TEST(concurrent_readers_never_see_version_without_bytes) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  DatasetStore* ds = nullptr;
  CHECK_OK(pool->OpenDataset(12, 4 * kPageSize, &ds));
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  // The page's bytes are all equal to (version & 0xFF): a reader must always see a matching pair.
  std::thread writer([&] {
    std::vector<uint8_t> page(kPageSize);
    for (uint64_t v = 1; v <= 3000; v++) {
      std::memset(page.data(), static_cast<int>(v & 0xFF), page.size());
      if (!ds->InstallPage(1, page.data(), v, PageState::kOwned).ok()) bad++;
    }
    stop = true;
  });
  std::thread reader([&] {
    std::vector<uint8_t> page(kPageSize);
    while (!stop) {
      PageMeta m;
      if (!ds->ReadPage(1, page.data(), &m).ok()) bad++;
      if (m.version != 0 && (page[0] != (m.version & 0xFF) || page[kPageSize - 1] != (m.version & 0xFF))) bad++;
    }
  });
  writer.join();
  reader.join();
  CHECK(bad.load() == 0);
}

// Issue 13 "Scale": a dataset of the documented maximum costs what its used pages cost, not its declared size.
// Before sparse records, opening one read every record through the meta mapping (4 GiB of tmpfs and of RSS for
// 1 TiB) and copied the allocated file to the data dir.
void CheckHugeDatasetCostsLittle(Durability durability) {
  TempDir t;
  const uint64_t rss0 = RssBytes();
  const uint64_t last = internal::kMaxDatasetBytes / kPageSize - 1;
  auto a = Pattern(21), b = Pattern(22);
  std::vector<std::string> files = {t.Options().pool_dir + "/ds-4.meta", t.Options().pool_dir + "/ds-4.pages"};
  if (durability == Durability::kDisk) {
    files.push_back(t.Options().data_dir + "/ds-4.meta");
    files.push_back(t.Options().data_dir + "/ds-4.pages");
  }
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(durability), &pool));
    DatasetStore* ds = nullptr;
    CHECK_OK(pool->OpenDataset(4, internal::kMaxDatasetBytes, &ds));
    CHECK(ds->page_count() == last + 1);
    for (const std::string& f : files) CHECK(AllocatedBytes(f) <= 64 * 1024);
    CHECK(RssBytes() < rss0 + (16ull << 20));
    // Reading untouched records allocates nothing either.
    CHECK(ds->GetMeta(last / 2).state == PageState::kAbsent && ds->GetMeta(last / 2).version == 0);
    CHECK(ds->WrittenPages(0, last + 1).empty());
    CHECK_OK(ds->InstallPage(0, a.data(), 3, PageState::kOwned));
    CHECK_OK(ds->InstallPage(last, b.data(), 4, PageState::kCommitted));
    CHECK_OK(ds->DropPage(last / 2));  // dropping a never-written page writes no record
    CHECK_OK(ds->Persist({0, last, last / 2}));
    for (const std::string& f : files) CHECK(AllocatedBytes(f) <= 64 * 1024);
    auto w = ds->WrittenPages(0, last + 1);
    CHECK(w.size() == 2 && w[0].first == 0 && w[0].second.version == 3 && w[1].first == last &&
          w[1].second.state == PageState::kCommitted);
    CHECK(ds->WrittenPages(1, last).empty());
    PoolStats st = pool->Stats();
    CHECK(st.datasets.size() == 1 && st.datasets[0].pages_owned == 1 && st.datasets[0].pages_committed == 1);
  }
  // Reopening (a node restart) scans only the allocated records.
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(durability), &pool));
  DatasetStore* ds = pool->FindDataset(4);
  CHECK(ds != nullptr && ds->page_count() == last + 1);
  PageMeta m;
  CHECK(Read(ds, 0, &m) == a && m.version == 3 && m.state == PageState::kOwned);
  CHECK(Read(ds, last, &m) == b && m.version == 4 && m.state == PageState::kCommitted);
  CHECK(ds->WrittenPages(0, last + 1).size() == 2);
  CHECK(pool->Stats().datasets[0].pages_owned == 1 && pool->Stats().datasets[0].pages_committed == 1);
  for (const std::string& f : files) CHECK(AllocatedBytes(f) <= 64 * 1024);
  CHECK(RssBytes() < rss0 + (16ull << 20));
}

TEST(huge_dataset_in_memory_pool_costs_what_its_used_pages_cost) { CheckHugeDatasetCostsLittle(Durability::kMemory); }
TEST(huge_dataset_with_disk_copy_costs_what_its_used_pages_cost) { CheckHugeDatasetCostsLittle(Durability::kDisk); }

TEST(growing_to_the_maximum_allocates_no_records) {
  TempDir t;
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(), &pool));
  DatasetStore* ds = nullptr;
  CHECK_OK(pool->OpenDataset(9, 1ull << 30, &ds));
  auto a = Pattern(9);
  CHECK_OK(ds->InstallPage(7, a.data(), 2, PageState::kOwned));
  CHECK_OK(ds->Grow(internal::kMaxDatasetBytes));
  const uint64_t last = ds->page_count() - 1;
  CHECK_OK(ds->InstallPage(last, a.data(), 5, PageState::kRedundant));
  CHECK_OK(ds->Persist({7, last}));
  CHECK(AllocatedBytes(t.Options().pool_dir + "/ds-9.meta") <= 64 * 1024);
  CHECK(AllocatedBytes(t.Options().data_dir + "/ds-9.meta") <= 64 * 1024);
  auto w = ds->WrittenPages(0, last + 1);
  CHECK(w.size() == 2 && w[0].first == 7 && w[1].first == last && w[1].second.version == 5);
  CHECK(ds->GetMeta(7).version == 2 && ds->GetMeta(8).version == 0);
}

// A pool written before sparse records has every record block allocated (zeros for pages never written): it opens
// with its pages intact, and its all-zero blocks are given back.
TEST(pool_with_allocated_zero_records_opens_and_becomes_sparse) {
  TempDir t;
  const uint64_t pages = 64 * internal::kMetaRecordsPerBlock;
  const std::string meta = t.Options().pool_dir + "/ds-2.meta";
  auto a = Pattern(2);
  {
    std::unique_ptr<Pool> pool;
    CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
    DatasetStore* ds = nullptr;
    CHECK_OK(pool->OpenDataset(2, pages * kPageSize, &ds));
    CHECK_OK(ds->InstallPage(300, a.data(), 7, PageState::kOwned));
    CHECK_OK(ds->InstallPage(301, a.data(), 8, PageState::kCommitted));
    CHECK_OK(ds->Persist({300, 301}));
  }
  {
    // What the earlier format left: zeros written over every record block but the ones holding records.
    UniqueFd fd(::open(meta.c_str(), O_RDWR | O_CLOEXEC));
    CHECK(fd.valid());
    std::vector<uint8_t> zeros(4096, 0);
    for (uint64_t blk = 0; blk < pages / internal::kMetaRecordsPerBlock; blk++) {
      if (blk == 300 / internal::kMetaRecordsPerBlock) continue;
      CHECK_OK(internal::PwriteFull(fd.get(), zeros.data(), zeros.size(), internal::kMetaHeaderSize + blk * 4096, meta));
    }
  }
  CHECK(AllocatedBytes(meta) >= internal::kMetaHeaderSize + pages * internal::kMetaRecordSize);
  std::unique_ptr<Pool> pool;
  CHECK_OK(Pool::Open(t.Options(Durability::kMemory), &pool));
  DatasetStore* ds = pool->FindDataset(2);
  CHECK(ds != nullptr && ds->page_count() == pages);
  PageMeta m;
  CHECK(Read(ds, 300, &m) == a && m.version == 7 && m.state == PageState::kOwned);
  CHECK(ds->GetMeta(301).version == 8 && ds->GetMeta(302).version == 0);
  auto w = ds->WrittenPages(0, pages);
  CHECK(w.size() == 2 && w[0].first == 300 && w[1].first == 301);
  CHECK(pool->Stats().datasets[0].pages_owned == 1 && pool->Stats().datasets[0].pages_committed == 1);
  CHECK(AllocatedBytes(meta) <= internal::kMetaHeaderSize + 2 * 4096);
}

TEST_MAIN("pool")
