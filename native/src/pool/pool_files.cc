// File helpers and the persist primitives of the PM pool (see pool_internal.h).
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "pool/pool_internal.h"

namespace hotpot {
namespace pool {
namespace internal {

void PersistBarrier() { std::atomic_thread_fence(std::memory_order_seq_cst); }

Status PersistFile(int fd, bool on_disk, const std::string& what) {
  PersistBarrier();
  return on_disk ? Fdatasync(fd, what) : Status::Ok();
}

#ifdef HOTPOT_TEST_BUILD
namespace {
std::mutex g_fail_mu;
std::string g_fail_suffix;
int g_fail_err = 0;
}  // namespace

void FailNextFdatasyncForTest(const std::string& suffix, int err) {
  std::lock_guard<std::mutex> l(g_fail_mu);
  g_fail_suffix = suffix;
  g_fail_err = err;
}
#endif

Status Fdatasync(int fd, const std::string& what) {
#ifdef HOTPOT_TEST_BUILD
  {
    std::lock_guard<std::mutex> l(g_fail_mu);
    if (!g_fail_suffix.empty() && what.size() >= g_fail_suffix.size() &&
        what.compare(what.size() - g_fail_suffix.size(), g_fail_suffix.size(), g_fail_suffix) == 0) {
      g_fail_suffix.clear();
      return Status::FromErrno(g_fail_err, "fdatasync " + what);
    }
  }
#endif
  if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync " + what);
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  if (path.empty()) return Status(Code::kInvalidArgument, "empty directory path");
  std::string cur;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    cur = path.substr(0, next);
    pos = next + 1;
    if (cur.empty()) continue;  // leading '/'
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return Status::FromErrno(errno, "mkdir " + cur);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISDIR(st.st_mode)) return Status(Code::kFailedPrecondition, path + " exists and is not a directory");
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open directory " + dir);
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync directory " + dir);
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status PreadFull(int fd, void* buf, size_t len, uint64_t off, const std::string& what) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pread " + what);
    }
    if (n == 0) return Status(Code::kDataLoss, "pread " + what + ": unexpected end of file at " + std::to_string(off));
    p += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const void* buf, size_t len, uint64_t off, const std::string& what) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pwrite " + what);
    }
    if (n == 0) return Status(Code::kInternal, "pwrite " + what + ": wrote nothing");
    p += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PunchHole(int fd, uint64_t off, uint64_t len, const std::string& what) {
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(len)) == 0) {
    return Status::Ok();
  }
  if (errno != EOPNOTSUPP) return Status::FromErrno(errno, "fallocate(PUNCH_HOLE) " + what);
  // A file system without holes: zeros read back the same, only the space is not released.
  std::vector<uint8_t> zeros(static_cast<size_t>(len < (1u << 20) ? len : (1u << 20)), 0);
  while (len > 0) {
    size_t n = static_cast<size_t>(len < zeros.size() ? len : zeros.size());
    HOTPOT_RETURN_IF_ERROR(PwriteFull(fd, zeros.data(), n, off, what));
    off += n;
    len -= n;
  }
  return Status::Ok();
}

Status CopyFileAtomically(const std::string& src, const std::string& dst, bool on_disk) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Status::FromErrno(errno, "open " + src);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + src);
  const std::string tmp = dst + ".tmp";
  UniqueFd out(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out.valid()) return Status::FromErrno(errno, "create " + tmp);
  if (::ftruncate(out.get(), st.st_size) != 0) return Status::FromErrno(errno, "ftruncate " + tmp);
  std::vector<uint8_t> buf(1u << 20);
  off_t pos = 0;
  const off_t end = st.st_size;
  while (pos < end) {
    // Copy only the data extents so the copy stays sparse (absent pages stay holes).
    off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      return Status::FromErrno(errno, "lseek(SEEK_DATA) " + src);
    }
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) return Status::FromErrno(errno, "lseek(SEEK_HOLE) " + src);
    for (off_t off = data; off < hole;) {
      size_t n = static_cast<size_t>(hole - off < static_cast<off_t>(buf.size()) ? hole - off : buf.size());
      HOTPOT_RETURN_IF_ERROR(PreadFull(in.get(), buf.data(), n, static_cast<uint64_t>(off), src));
      HOTPOT_RETURN_IF_ERROR(PwriteFull(out.get(), buf.data(), n, static_cast<uint64_t>(off), tmp));
      off += static_cast<off_t>(n);
    }
    pos = hole;
  }
  if (on_disk && ::fdatasync(out.get()) != 0) return Status::FromErrno(errno, "fdatasync " + tmp);
  if (::rename(tmp.c_str(), dst.c_str()) != 0) return Status::FromErrno(errno, "rename " + tmp + " -> " + dst);
  return Status::Ok();
}

void EncodeMetaHeader(uint64_t dataset_id, uint64_t page_count, uint8_t out[kMetaHeaderSize]) {
  std::memset(out, 0, kMetaHeaderSize);
  PutU64(out, kMetaMagic);
  PutU32(out + 8, kMetaFormat);
  PutU32(out + 12, static_cast<uint32_t>(kPageSize));
  PutU64(out + 16, dataset_id);
  PutU32(out + 24, Crc32c(out, 24));
  PutU64(out + kMetaPageCountOffset, page_count);
}

Status ValidateMetaHeader(const uint8_t* hdr, uint64_t file_size, uint64_t dataset_id, const std::string& path,
                          uint64_t* page_count) {
  if (file_size < kMetaHeaderSize) {
    return Status(Code::kDataLoss, path + ": meta file is " + std::to_string(file_size) + " bytes, shorter than its header");
  }
  if (GetU64(hdr) != kMetaMagic) {
    return Status(Code::kFailedPrecondition, path + ": not a hotpot page-metadata file (bad magic)");
  }
  if (GetU32(hdr + 24) != Crc32c(hdr, 24)) {
    return Status(Code::kDataLoss, path + ": meta header checksum mismatch");
  }
  if (GetU32(hdr + 8) != kMetaFormat) {
    return Status(Code::kFailedPrecondition, path + ": meta format " + std::to_string(GetU32(hdr + 8)) +
                                                 ", this build reads format " + std::to_string(kMetaFormat));
  }
  if (GetU32(hdr + 12) != kPageSize) {
    return Status(Code::kFailedPrecondition, path + ": page size " + std::to_string(GetU32(hdr + 12)) +
                                                 ", expected " + std::to_string(kPageSize));
  }
  if (GetU64(hdr + 16) != dataset_id) {
    return Status(Code::kFailedPrecondition, path + ": holds dataset " + std::to_string(GetU64(hdr + 16)) +
                                                 ", expected " + std::to_string(dataset_id));
  }
  uint64_t pc = GetU64(hdr + kMetaPageCountOffset);
  if (pc == 0 || pc > kMaxDatasetBytes / kPageSize) {
    return Status(Code::kDataLoss, path + ": implausible page count " + std::to_string(pc));
  }
  if (file_size < kMetaHeaderSize + pc * kMetaRecordSize) {
    return Status(Code::kDataLoss, path + ": " + std::to_string(file_size) + " bytes cannot hold " +
                                       std::to_string(pc) + " page records");
  }
  *page_count = pc;
  return Status::Ok();
}

std::string PagesName(uint64_t id) { return "ds-" + std::to_string(id) + ".pages"; }
std::string MetaName(uint64_t id) { return "ds-" + std::to_string(id) + ".meta"; }

}  // namespace internal
}  // namespace pool
}  // namespace hotpot
