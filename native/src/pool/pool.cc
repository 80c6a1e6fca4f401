// Pool::Open and the pool object: the datasets of one node, its redo log and the page journal.
#include "pool/pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "common/random.h"
#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace {

using internal::DatasetStoreImpl;

// Parses "ds-<decimal id>.meta"; false for anything else (temporaries, pages files, foreign files).
bool ParseMetaName(const char* name, uint64_t* id) {
  std::string n(name);
  const std::string prefix = "ds-", suffix = ".meta";
  if (n.size() <= prefix.size() + suffix.size() || n.compare(0, prefix.size(), prefix) != 0 ||
      n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  std::string digits = n.substr(prefix.size(), n.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 20) return false;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
  }
  errno = 0;
  unsigned long long v = std::strtoull(digits.c_str(), nullptr, 10);
  if (errno != 0 || std::to_string(v) != digits) return false;  // overflow or leading zeros
  *id = v;
  return true;
}

Status ListMetaFiles(const std::string& dir, std::set<uint64_t>* ids) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "opendir " + dir);
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    uint64_t id;
    if (ParseMetaName(e->d_name, &id)) ids->insert(id);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return Status::FromErrno(err, "readdir " + dir);
  return Status::Ok();
}

constexpr char kIdentityFile[] = "store.id";
constexpr char kIdentityMagic[] = "hotpot-store-v1";

// "hotpot-store-v1 <32 hex id> <incarnation>\n"; anything else is refused (a foreign or damaged file must not be
// mistaken for "no store yet": that would hide the pages this directory may hold).
Status ReadIdentity(const std::string& path, StoreIdentity* out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + path);
  char buf[128] = {};
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n < 0) return Status::FromErrno(errno, "read " + path);
  char magic[32] = {}, id[64] = {};
  unsigned long long inc = 0;
  if (std::sscanf(buf, "%31s %63s %llu", magic, id, &inc) != 3 || std::string(magic) != kIdentityMagic ||
      std::strlen(id) != 32 || std::strspn(id, "0123456789abcdef") != 32 || inc == 0)
    return Status(Code::kDataLoss, path + ": not a hotpot store identity file");
  out->id = id;
  out->incarnation = inc;
  return Status::Ok();
}

Status WriteIdentity(const std::string& dir, const StoreIdentity& ident, bool on_disk) {
  const std::string path = dir + "/" + kIdentityFile, tmp = path + ".tmp";
  const std::string text =
      std::string(kIdentityMagic) + " " + ident.id + " " + std::to_string(ident.incarnation) + "\n";
  {
    UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return Status::FromErrno(errno, "create " + tmp);
    HOTPOT_RETURN_IF_ERROR(internal::PwriteFull(fd.get(), text.data(), text.size(), 0, tmp));
    HOTPOT_RETURN_IF_ERROR(internal::PersistFile(fd.get(), on_disk, tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::FromErrno(errno, "rename " + tmp + " -> " + path);
  if (on_disk) HOTPOT_RETURN_IF_ERROR(internal::SyncDir(dir));
  return Status::Ok();
}

Status NewIdentity(StoreIdentity* out) {
  uint8_t raw[16];
  HOTPOT_RETURN_IF_ERROR(RandomBytes(raw, sizeof raw));
  static const char* hex = "0123456789abcdef";
  out->id.clear();
  for (uint8_t b : raw) {
    out->id.push_back(hex[b >> 4]);
    out->id.push_back(hex[b & 15]);
  }
  out->incarnation = 1;
  out->created = true;
  return Status::Ok();
}

class PoolImpl final : public Pool {
 public:
  PoolImpl(const PoolOptions& o) : options_(o) {
    paths_.pool_dir = o.pool_dir;
    if (o.durability == Durability::kDisk) paths_.data_dir = o.data_dir;
  }

  Status Init() {
    HOTPOT_RETURN_IF_ERROR(internal::MakeDirs(options_.pool_dir));
    const bool disk = options_.durability == Durability::kDisk;
    if (disk) HOTPOT_RETURN_IF_ERROR(internal::MakeDirs(options_.data_dir));
    // The redo log must survive what the pages survive: with disk durability it lives on the data dir.
    const std::string redo_dir = disk ? options_.data_dir : options_.pool_dir;
    HOTPOT_RETURN_IF_ERROR(CheckOtherRedoLog(disk ? options_.pool_dir : options_.data_dir, disk));
    HOTPOT_RETURN_IF_ERROR(internal::RedoLogImpl::Open(redo_dir + "/redo.log", disk, &redo_));
    if (disk) {
      HOTPOT_RETURN_IF_ERROR(internal::SyncDir(options_.data_dir));
      // Before any dataset opens: the replay brings the data dir's page files up to every Persist that returned.
      internal::JournalOptions jo;
      jo.dir = options_.data_dir;
      jo.write_back = options_.journal_write_back;
      HOTPOT_RETURN_IF_ERROR(internal::PageJournal::Open(jo, &journal_, &journal_replayed_));
    }
    HOTPOT_RETURN_IF_ERROR(OpenIdentity());
    std::set<uint64_t> ids;
    HOTPOT_RETURN_IF_ERROR(ListMetaFiles(options_.pool_dir, &ids));
    if (disk) HOTPOT_RETURN_IF_ERROR(ListMetaFiles(options_.data_dir, &ids));
    for (uint64_t id : ids) {
      std::unique_ptr<DatasetStoreImpl> s;
      HOTPOT_RETURN_IF_ERROR(
          DatasetStoreImpl::Open(paths_, options_.durability, journal_.get(), id, 0, false, &s));
      datasets_[id] = std::move(s);
    }
    return Status::Ok();
  }

  Status OpenDataset(uint64_t dataset_id, uint64_t size_bytes, DatasetStore** out) override {
    if (out == nullptr) return Status(Code::kInvalidArgument, "OpenDataset: null output");
    if (size_bytes == 0) return Status(Code::kInvalidArgument, "OpenDataset: size must be > 0");
    std::lock_guard<std::mutex> lk(mu_);
    auto it = datasets_.find(dataset_id);
    if (it != datasets_.end()) {
      HOTPOT_RETURN_IF_ERROR(it->second->Grow(size_bytes));
      *out = it->second.get();
      return Status::Ok();
    }
    std::unique_ptr<DatasetStoreImpl> s;
    HOTPOT_RETURN_IF_ERROR(
        DatasetStoreImpl::Open(paths_, options_.durability, journal_.get(), dataset_id, size_bytes, true, &s));
    *out = s.get();
    datasets_[dataset_id] = std::move(s);
    return Status::Ok();
  }

  DatasetStore* FindDataset(uint64_t dataset_id) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = datasets_.find(dataset_id);
    return it == datasets_.end() ? nullptr : it->second.get();
  }

  std::vector<uint64_t> ListDatasets() const override {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<uint64_t> ids;
    for (const auto& [id, s] : datasets_) ids.push_back(id);
    return ids;
  }

  Status DropDataset(uint64_t dataset_id) override {
    // Its journaled pages are written back (or found dropped) first: none is replayed into a later dataset that
    // gets the same id.
    if (journal_) HOTPOT_RETURN_IF_ERROR(journal_->WriteBackAll());
    std::lock_guard<std::mutex> lk(mu_);
    auto it = datasets_.find(dataset_id);
    if (it == datasets_.end()) {
      return Status(Code::kNotFound, "dataset " + std::to_string(dataset_id) + " is not in the pool");
    }
    Status st = it->second->Drop();
    // The store object outlives the drop: pointers handed out stay valid and report FAILED_PRECONDITION.
    retired_.push_back(std::move(it->second));
    datasets_.erase(it);
    return st;
  }

  const StoreIdentity& identity() const override { return identity_; }

  Status RenewIdentity() override {
    StoreIdentity fresh;
    HOTPOT_RETURN_IF_ERROR(NewIdentity(&fresh));
    HOTPOT_RETURN_IF_ERROR(WriteIdentity(IdentityDir(), fresh, options_.durability == Durability::kDisk));
    identity_ = fresh;
    return Status::Ok();
  }

  RedoLog& redo() override { return *redo_; }
  Status WriteBack() override { return journal_ ? journal_->WriteBackAll() : Status::Ok(); }
  Durability durability() const override { return options_.durability; }

  PoolStats Stats() const override {
    PoolStats st;
    st.redo_in_flight = redo_->in_flight();
    st.fdatasyncs = redo_->fdatasyncs();
    if (journal_) {
      st.syncs = journal_->syncs();
      st.synced_commits = journal_->synced_commits();
      st.fdatasyncs += journal_->fdatasyncs();
      st.write_backs = journal_->write_backs();
      st.journal_replayed = journal_replayed_;
      st.journal_images = journal_->images();
      st.journal_carried = journal_->carried();
    }
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& [id, s] : datasets_) {
      st.bytes_resident += s->ResidentBytes();
      st.datasets.push_back(s->Stats());
    }
    return st;
  }

 private:
  // The durability setting picks where redo.log lives. A log left at the other place by a run with the other
  // setting may hold prepared commits; silently starting a fresh log would lose them, so refuse instead.
  static Status CheckOtherRedoLog(const std::string& dir, bool now_disk) {
    if (dir.empty()) return Status::Ok();
    const std::string path = dir + "/redo.log";
    if (!internal::PathExists(path)) return Status::Ok();
    std::unique_ptr<internal::RedoLogImpl> other;
    HOTPOT_RETURN_IF_ERROR(internal::RedoLogImpl::Open(path, !now_disk, &other));
    const size_t n = other->InFlight().size();
    if (n == 0) return Status::Ok();
    return Status(Code::kFailedPrecondition,
                  path + " holds " + std::to_string(n) + " in-flight redo records written with durability " +
                      (now_disk ? "memory" : "disk") + "; reopen with that durability to recover them first");
  }

  // The identity lives where the pages are durable: with durability disk the data dir (the pool dir is restored
  // from it), else the pool dir (a data dir without the pages must not vouch for them).
  std::string IdentityDir() const {
    return options_.durability == Durability::kDisk ? options_.data_dir : options_.pool_dir;
  }

  Status OpenIdentity() {
    const std::string path = IdentityDir() + "/" + kIdentityFile;
    if (internal::PathExists(path)) {
      HOTPOT_RETURN_IF_ERROR(ReadIdentity(path, &identity_));
      identity_.incarnation++;
      identity_.created = false;
    } else {
      HOTPOT_RETURN_IF_ERROR(NewIdentity(&identity_));
    }
    return WriteIdentity(IdentityDir(), identity_, options_.durability == Durability::kDisk);
  }

  PoolOptions options_;
  StoreIdentity identity_;
  internal::StorePaths paths_;
  std::unique_ptr<internal::RedoLogImpl> redo_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<DatasetStoreImpl>> datasets_;
  std::vector<std::unique_ptr<DatasetStoreImpl>> retired_;
  // Declared after the stores so it is destroyed before them: its write-back thread and its last write-back (at
  // close) read their files.
  std::unique_ptr<internal::PageJournal> journal_;
  uint64_t journal_replayed_ = 0;
};

}  // namespace

Status Pool::Open(const PoolOptions& options, std::unique_ptr<Pool>* out) {
  if (out == nullptr) return Status(Code::kInvalidArgument, "Pool::Open: null output");
  if (options.pool_dir.empty()) return Status(Code::kInvalidArgument, "pool_dir is required");
  if (options.durability != Durability::kMemory && options.durability != Durability::kDisk) {
    return Status(Code::kInvalidArgument, "unknown durability setting");
  }
  if (options.durability == Durability::kDisk && options.data_dir.empty()) {
    return Status(Code::kInvalidArgument, "durability disk needs data_dir");
  }
  std::unique_ptr<PoolImpl> p(new PoolImpl(options));
  HOTPOT_RETURN_IF_ERROR(p->Init());
  *out = std::move(p);
  return Status::Ok();
}

}  // namespace pool
}  // namespace hotpot
