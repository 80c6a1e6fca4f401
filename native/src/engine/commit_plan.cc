#include "engine/commit_plan.h"

#include <algorithm>

namespace hotpot {
namespace engine {
namespace plan {

std::vector<msg::Range> DiffPage(uint64_t page, const uint8_t* base, const uint8_t* data, size_t page_size) {
  std::vector<msg::Range> out;
  size_t i = 0;
  while (i < page_size) {
    if (base[i] == data[i]) {
      i++;
      continue;
    }
    size_t start = i, end = i + 1;  // [start, end) differing run, extended over short equal gaps
    size_t j = end;
    while (j < page_size) {
      if (base[j] != data[j]) {
        end = ++j;
      } else if (j - end + 1 >= kMergeGap) {
        break;
      } else {
        j++;
      }
    }
    msg::Range r;
    r.offset = page * page_size + start;
    r.old_bytes.assign(base + start, base + end);
    r.new_bytes.assign(data + start, data + end);
    out.push_back(std::move(r));
    i = end;
  }
  return out;
}

std::vector<ReadPiece> SplitAtPages(uint64_t offset, uint64_t len, size_t page_size) {
  std::vector<ReadPiece> out;
  for (uint64_t off = offset, end = offset + len; off < end;) {
    const uint64_t pg = off / page_size;
    const uint64_t stop = std::min<uint64_t>(end, (pg + 1) * page_size);
    out.push_back(ReadPiece{pg, off, uint32_t(stop - off)});
    off = stop;
  }
  return out;
}

std::vector<Part> GroupParts(std::map<uint32_t, std::vector<msg::Range>> ranges_by_owner,
                             const std::map<uint32_t, std::vector<msg::ReadCheck>>& reads_by_owner,
                             const std::map<uint64_t, uint64_t>& mrsw_bases, size_t page_size) {
  for (const auto& kv : reads_by_owner) ranges_by_owner[kv.first];  // owners with reads only: a read-only part
  std::vector<Part> parts;
  for (auto& kv : ranges_by_owner) {
    if (kv.second.empty()) parts.push_back(Part{kv.first, msg::PrepareRequest{}});
    // Cut only between pages: every range of a page goes to one part (two parts writing one page would lock it
    // against each other). A page's ranges are far below the limit, so a page always fits a part of its own.
    size_t bytes = 0;
    for (size_t i = 0; i < kv.second.size();) {
      const uint64_t page = kv.second[i].offset / page_size;
      size_t j = i, sz = 0;
      for (; j < kv.second.size() && kv.second[j].offset / page_size == page; j++) sz += 12 + 2 * size_t(kv.second[j].len());
      if (parts.empty() || parts.back().owner != kv.first || (bytes > 0 && bytes + sz > kMaxPartBytes)) {
        parts.push_back(Part{kv.first, msg::PrepareRequest{}});
        bytes = 0;
      }
      for (; i < j; i++) parts.back().req.ranges.push_back(std::move(kv.second[i]));
      bytes += sz;
    }
  }
  std::map<uint64_t, size_t> writer;  // page -> index of the part writing it
  for (size_t i = 0; i < parts.size(); i++)
    for (const msg::Range& r : parts[i].req.ranges) writer.emplace(r.offset / page_size, i);
  auto part_for = [&](uint32_t owner, uint64_t page) -> Part& {
    auto w = writer.find(page);
    if (w != writer.end()) return parts[w->second];
    for (Part& part : parts)
      if (part.owner == owner) return part;
    return parts.front();  // unreachable: every owner with checks has a part
  };
  for (const auto& kv : reads_by_owner)
    for (const msg::ReadCheck& c : kv.second) part_for(kv.first, c.offset / page_size).req.reads.push_back(c);
  for (const auto& kv : mrsw_bases) {
    auto w = writer.find(kv.first);
    if (w == writer.end()) continue;  // a dirty page equal to its base: nothing written, nothing to check
    parts[w->second].req.reads.push_back(msg::ReadCheck{kv.first * page_size, uint32_t(page_size), kv.second});
  }
  return parts;
}

std::vector<std::pair<size_t, size_t>> CutBatches(const std::vector<msg::PushPage>& pages) {
  std::vector<std::pair<size_t, size_t>> cuts;
  size_t start = 0, bytes = 0;
  for (size_t i = 0; i < pages.size(); i++) {
    size_t sz = 20;  // version, base, range count
    for (const msg::PushRange& r : pages[i].ranges) sz += 12 + r.bytes.size();
    if (i > start && (i - start >= kMaxBatchPages || bytes + sz > kMaxBatchBytes)) {
      cuts.push_back({start, i});
      start = i;
      bytes = 0;
    }
    bytes += sz;
  }
  cuts.push_back({start, pages.size()});
  return cuts;
}

}  // namespace plan
}  // namespace engine
}  // namespace hotpot
