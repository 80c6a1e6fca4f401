#include "engine/node_cache.h"

#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "shimproto/protocol.h"

namespace hotpot {
namespace engine {

NodeCache::PubState::~PubState() {
  if (word != nullptr) ::munmap(static_cast<void*>(word), kPageSize);
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions and pre-images

uint64_t NodeCache::OpenSession(uint64_t ds, const PeerCred& cred) {
  std::lock_guard<std::mutex> l(mu_);
  const uint64_t id = next_session_++;
  sessions_[id] = Session{ds, seq_, cred};
  return id;
}

void NodeCache::CloseSession(uint64_t session) {
  std::lock_guard<std::mutex> l(mu_);
  sessions_.erase(session);
  PrunePreImages();
}

void NodeCache::ResyncSession(uint64_t session) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  it->second.sync = seq_;
  PrunePreImages();
}

Status NodeCache::SessionDataset(uint64_t session, uint64_t* ds) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return Status(Code::kNotFound, "session " + std::to_string(session) + " not open");
  *ds = it->second.ds;
  return Status::Ok();
}

std::vector<NodeCache::SessionInfo> NodeCache::Sessions() {
  std::vector<SessionInfo> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : sessions_) out.push_back(SessionInfo{kv.first, kv.second.ds, kv.second.cred});
  return out;
}

// Bumps the update sequence, and keeps the current content if some session's base image of this page is the current
// content (no kept pre-image newer than its sync point).
void NodeCache::SavePreImage(uint64_t ds, uint64_t page, pool::DatasetStore* store) {
  const uint64_t seq = ++seq_;
  const PageKey k{ds, page};
  auto it = preimages_.find(k);
  const uint64_t newest = (it == preimages_.end() || it->second.empty()) ? 0 : it->second.back().seq;
  bool needed = false;
  for (const auto& kv : sessions_)
    if (kv.second.ds == ds && kv.second.sync >= newest) {
      needed = true;
      break;
    }
  if (!needed) return;
  PreImage pi{seq, std::vector<uint8_t>(kPageSize), 0};
  PageMeta m;
  if (!store->ReadPage(page, pi.data.data(), &m).ok()) std::fill(pi.data.begin(), pi.data.end(), 0);
  else pi.version = m.version;
  preimages_[k].push_back(std::move(pi));
}

// A pre-image with seq s is kept while some session's sync point lies in [previous kept seq, s): it is then that
// session's base image.
void NodeCache::PrunePreImages() {
  for (auto it = preimages_.begin(); it != preimages_.end();) {
    std::vector<PreImage>& v = it->second;
    std::vector<PreImage> keep;
    uint64_t prev = 0;
    bool first = true;
    for (PreImage& pi : v) {
      bool needed = false;
      for (const auto& kv : sessions_) {
        if (kv.second.ds != it->first.ds) continue;
        if (kv.second.sync < pi.seq && (first || kv.second.sync >= prev)) {
          needed = true;
          break;
        }
      }
      prev = pi.seq;
      first = false;
      if (needed) keep.push_back(std::move(pi));
    }
    if (keep.empty()) {
      it = preimages_.erase(it);
    } else {
      v.swap(keep);
      ++it;
    }
  }
}

Status NodeCache::BaseImage(uint64_t session, const DatasetState& d, uint64_t page, uint8_t* out4096,
                            uint64_t* version) {
  if (page >= d.store->page_count())
    return Status(Code::kOutOfRange, PageName(d.info.id, page) + " beyond the dataset end");
  std::lock_guard<std::mutex> l(mu_);
  auto sit = sessions_.find(session);
  if (sit == sessions_.end()) return Status(Code::kNotFound, "session " + std::to_string(session) + " closed");
  auto it = preimages_.find(PageKey{d.info.id, page});
  if (it != preimages_.end()) {
    for (const PreImage& pi : it->second)
      if (pi.seq > sit->second.sync) {
        std::memcpy(out4096, pi.data.data(), kPageSize);
        *version = pi.version;
        return Status::Ok();
      }
  }
  PageMeta m;
  HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(page, out4096, &m));
  *version = m.version;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Publication state

NodeCache::PubState& NodeCache::Pub(uint64_t ds) {
  PubState& p = pub_[ds];
  if (p.word == nullptr && !p.memfd.valid()) {
    UniqueFd fd(::memfd_create(("hotpot-pub-" + std::to_string(ds)).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    void* m = MAP_FAILED;
    if (fd.valid() && ::ftruncate(fd.get(), kPageSize) == 0 &&
        ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0)
      m = ::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (m == MAP_FAILED) {
      ctx_->Log("engine: no shared publication word for dataset " + std::to_string(ds) + " (" + std::strerror(errno) +
                "): snapshot reads ask the daemon");
    } else {
      p.word = new (m) std::atomic<uint64_t>(shimproto::PublicationWord(p.seq, p.open.size(), false));
      p.memfd = std::move(fd);
    }
  }
  return p;
}

void NodeCache::Busy(uint64_t ds) {
  PubState& p = Pub(ds);
  if (p.word != nullptr) p.word->store(shimproto::PublicationWord(p.seq, p.open.size(), true), std::memory_order_release);
}

void NodeCache::Publish(uint64_t ds) {
  PubState& p = Pub(ds);
  p.seq++;
  if (p.word != nullptr) p.word->store(shimproto::PublicationWord(p.seq, p.open.size(), false), std::memory_order_release);
}

PublicationInfo NodeCache::Publication(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  const PubState& p = Pub(ds);
  return PublicationInfo{p.seq, uint32_t(p.open.size())};
}

Status NodeCache::PublicationFd(uint64_t ds, int* fd) {
  std::lock_guard<std::mutex> l(mu_);
  PubState& p = Pub(ds);
  if (p.word == nullptr) return Status(Code::kUnavailable, "no shared publication word on this node");
  *fd = p.memfd.get();
  return Status::Ok();
}

void NodeCache::FinishedLocked(const MarkKey& key) {
  if (!finished_.insert(key).second) return;
  finished_order_.push_back(key);
  if (finished_order_.size() > 4096) {
    finished_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

void NodeCache::MarkOpen(uint64_t ds, const MarkKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  if (finished_.count(key) != 0) return;
  Step step(this, ds);
  Pub(ds).open.emplace(key, ctx_->time->Now());
}

bool NodeCache::CloseMark(const MarkKey& key, bool check) {
  bool closed = false;
  std::lock_guard<std::mutex> l(mu_);
  FinishedLocked(key);
  for (auto& kv : pub_) {
    if (kv.second.open.count(key) == 0) continue;
    if (check) MissedLocked(kv.first);
    kv.second.open.erase(key);
    Publish(kv.first);
    closed = true;
  }
  return closed;
}

void NodeCache::MissedLocked(uint64_t ds) {
  PubState& p = Pub(ds);
  ctx_->counters.copy_checks++;
  p.open.emplace(kUncheckedMark, ctx_->time->Now());
  p.missed++;
  recheck_.insert(ds);
  if (ctx_->wake_resolver) ctx_->wake_resolver();  // queues the check (the resolver takes it on its thread)
}

void NodeCache::Missed(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  MissedLocked(ds);
  Publish(ds);
}

uint64_t NodeCache::MissedEpoch(uint64_t ds) {
  std::lock_guard<std::mutex> l(mu_);
  return Pub(ds).missed;
}

std::set<uint64_t> NodeCache::TakeRechecks() {
  std::lock_guard<std::mutex> l(mu_);
  std::set<uint64_t> out;
  out.swap(recheck_);
  return out;
}

std::set<MarkKey> NodeCache::MarksOpenedBefore(TimePoint limit) {
  std::set<MarkKey> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& kv : pub_)
    for (const auto& m : kv.second.open)
      if (m.first != kUncheckedMark && m.second < limit) out.insert(m.first);
  return out;
}

void NodeCache::CloseFinished(const std::set<MarkKey>& finished) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& kv : pub_) {
    bool closed = false;
    for (const MarkKey& key : finished)
      if (kv.second.open.count(key) != 0) {
        FinishedLocked(key);
        MissedLocked(kv.first);
        kv.second.open.erase(key);
        closed = true;
        ctx_->Log("engine: open mark of commit " + std::to_string(key.second) + " from node " +
                  std::to_string(key.first) + " on dataset " + std::to_string(kv.first) +
                  " closed: that node says it is finished (its DONE was lost); cached copies are checked next");
      }
    if (closed) Publish(kv.first);
  }
}

bool NodeCache::SetUnchecked(uint64_t ds, bool on, uint64_t if_missed_epoch) {
  std::lock_guard<std::mutex> l(mu_);
  PubState& p = Pub(ds);
  if ((p.open.count(kUncheckedMark) != 0) == on) return false;
  if (!on && if_missed_epoch != UINT64_MAX && p.missed != if_missed_epoch) return false;  // missed one meanwhile
  Step step(this, ds);
  if (on) p.open.emplace(kUncheckedMark, ctx_->time->Now());
  else p.open.erase(kUncheckedMark);
  return true;
}

Status NodeCache::ReadConsistent(const DatasetState& d, uint64_t first, uint32_t count, uint8_t* out, bool* ready) {
  // Every change of node-cache content happens under mu_, so the copy is one instant of this node; with no open
  // mark that instant shows every commit whole (fetches of pages in flight wait for RELEASE).
  std::lock_guard<std::mutex> l(mu_);
  *ready = Pub(d.info.id).open.empty();
  for (uint32_t i = 0; *ready && i < count; i++) *ready = d.store->GetMeta(first + i).state != PageState::kAbsent;
  if (!*ready) return Status::Ok();
  for (uint32_t i = 0; i < count; i++)
    HOTPOT_RETURN_IF_ERROR(d.store->ReadPage(first + i, out + size_t(i) * kPageSize, nullptr));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Changes of page content

Status NodeCache::ApplyOwnerWrite(const OwnerWrite& w, std::vector<uint64_t>* fresh) {
  const std::vector<uint64_t>& pages = *w.pages;
  std::lock_guard<std::mutex> l(mu_);
  Step step(this, w.ds);
  if (w.mark.first != 0) Pub(w.ds).open.emplace(w.mark, ctx_->time->Now());
  std::vector<uint8_t> zeros(kPageSize, 0);
  // A page already past the version this write gives it holds a newer commit (a decided part applied again after a
  // restart, or one settled by a takeover): it is left alone, never rolled back.
  std::set<uint64_t> newer;
  for (size_t i = 0; i < pages.size(); i++)
    if (w.store->GetMeta(pages[i]).version > (*w.versions)[i]) newer.insert(pages[i]);
  for (uint64_t pg : pages) {
    if (newer.count(pg)) continue;
    const PageMeta m = w.store->GetMeta(pg);
    if (m.state == PageState::kAbsent) {
      // Never served nor written: nobody caches it, so its (empty) cacher set is complete.
      HOTPOT_RETURN_IF_ERROR(w.store->InstallPage(pg, zeros.data(), 0, PageState::kOwned));
      fresh->push_back(pg);
    } else {
      SavePreImage(w.ds, pg, w.store);
      if (m.state != PageState::kOwned) HOTPOT_RETURN_IF_ERROR(w.store->SetState(pg, PageState::kOwned));
    }
  }
  for (const msg::Range& r : *w.ranges) {
    if (newer.count(r.offset / kPageSize)) continue;
    const size_t idx = size_t(std::lower_bound(pages.begin(), pages.end(), r.offset / kPageSize) - pages.begin());
    HOTPOT_RETURN_IF_ERROR(w.store->WriteBytes(r.offset, r.new_bytes.data(), r.len(), (*w.versions)[idx]));
  }
  return Status::Ok();
}

Status NodeCache::ApplyPushBatch(const msg::PushBatch& b, pool::DatasetStore* store, std::vector<uint8_t>* accepted,
                                 std::vector<uint64_t>* persist) {
  accepted->assign(b.pages.size(), msg::kPushNotHeld);
  const bool replica = (b.flags & msg::kPushReplica) != 0;
  auto whole = [](const msg::PushPage& pp) {
    return pp.ranges.size() == 1 && pp.ranges[0].bytes.size() == kPageSize && pp.ranges[0].offset % kPageSize == 0;
  };
  std::lock_guard<std::mutex> l(mu_);
  // First decide every page without changing anything (all or nothing).
  enum class Act { kSkip, kInstall, kDelta };
  std::vector<Act> act(b.pages.size(), Act::kSkip);
  bool stale = false, missed = false;
  for (size_t i = 0; i < b.pages.size(); i++) {
    const msg::PushPage& pp = b.pages[i];
    const uint64_t pg = pp.ranges[0].offset / kPageSize;
    const PageMeta m = store->GetMeta(pg);
    if (m.state == PageState::kOwned) continue;  // the owner's copy is never pushed to
    if (m.state == PageState::kAbsent) {
      if (replica) {
        act[i] = Act::kInstall;
        (*accepted)[i] = msg::kPushHeld;
        continue;
      }
      // Not held. A fetch in flight may install a copy older than this commit: it must refetch.
      auto f = fetching_.find(PageKey{b.dataset, pg});
      if (f != fetching_.end()) f->second = std::max(f->second, pp.version);
      continue;
    }
    (*accepted)[i] = msg::kPushHeld;
    if (m.version >= pp.version) continue;  // this version or a newer one is here already (a repeated push)
    missed = missed || m.version < pp.base;  // this copy missed a commit: so may the others here
    if (replica || whole(pp)) {
      act[i] = Act::kInstall;
    } else if (m.version == pp.base) {
      act[i] = Act::kDelta;
    } else {
      (*accepted)[i] = msg::kPushStale;
      stale = true;
    }
  }
  if (stale) {
    for (uint8_t& a : *accepted)
      if (a == msg::kPushHeld) a = msg::kPushNotHeld;  // nothing applied: the sender asks again
    return Status::Ok();
  }
  Step step(this, b.dataset);
  // A copy here missed a commit while others may not have (or the owner says one may have): from this step on
  // snapshot reads wait until every cached copy is checked (docs/design/consistency.md "Missed pushes").
  if (missed || (b.flags & msg::kPushCheck)) MissedLocked(b.dataset);
  if (b.flags & msg::kPushOpen) Pub(b.dataset).open.emplace(MarkKey{b.committer, b.commit_id}, ctx_->time->Now());
  for (size_t i = 0; i < b.pages.size(); i++) {
    if (act[i] == Act::kSkip) continue;
    const msg::PushPage& pp = b.pages[i];
    const uint64_t pg = pp.ranges[0].offset / kPageSize;
    const PageMeta m = store->GetMeta(pg);
    if (m.state != PageState::kAbsent) SavePreImage(b.dataset, pg, store);
    if (act[i] == Act::kInstall) {
      // A replica keeps a committed copy committed; a new one is redundant (held for durability only).
      const PageState st = m.state == PageState::kAbsent ? PageState::kRedundant : m.state;
      HOTPOT_RETURN_IF_ERROR(store->InstallPage(pg, pp.ranges[0].bytes.data(), pp.version, st));
      if (replica) ctx_->counters.replicas_received++;
    } else {
      for (const msg::PushRange& r : pp.ranges)
        HOTPOT_RETURN_IF_ERROR(store->WriteBytes(r.offset, r.bytes.data(), uint32_t(r.bytes.size()), pp.version));
    }
    persist->push_back(pg);
  }
  return Status::Ok();
}

Status NodeCache::RaiseVersion(pool::DatasetStore* store, uint64_t ds, uint64_t page, uint64_t floor, bool* raised) {
  std::lock_guard<std::mutex> l(mu_);
  const PageMeta m = store->GetMeta(page);
  *raised = m.state == PageState::kOwned && m.version < floor;
  if (!*raised) return Status::Ok();
  std::vector<uint8_t> data(kPageSize);
  PageMeta cur;
  HOTPOT_RETURN_IF_ERROR(store->ReadPage(page, data.data(), &cur));
  Step step(this, ds);  // same bytes, new version: one step, like any change of a page's record
  return store->InstallPage(page, data.data(), floor, PageState::kOwned);
}

Status NodeCache::InstallAbsent(pool::DatasetStore* store, uint64_t page, const uint8_t* data, uint64_t version,
                                PageState state, bool* installed) {
  std::lock_guard<std::mutex> l(mu_);
  *installed = store->GetMeta(page).state == PageState::kAbsent;
  if (!*installed) return Status::Ok();
  return store->InstallPage(page, data, version, state);
}

void NodeCache::BeginFetch(uint64_t ds, uint64_t first, uint32_t count) {
  std::lock_guard<std::mutex> l(mu_);
  for (uint32_t i = 0; i < count; i++) fetching_[PageKey{ds, first + i}] = 0;
}

std::vector<uint64_t> NodeCache::EndFetch(uint64_t ds, uint64_t first, uint32_t count) {
  std::vector<uint64_t> refused(count, 0);
  std::lock_guard<std::mutex> l(mu_);
  for (uint32_t i = 0; i < count; i++) {
    auto it = fetching_.find(PageKey{ds, first + i});
    if (it == fetching_.end()) continue;
    refused[i] = it->second;
    fetching_.erase(it);
  }
  return refused;
}

Status NodeCache::InstallFetched(const DatasetState& d, uint64_t first, const std::vector<msg::FetchedPage>& meta,
                                 const uint8_t* pages, const std::vector<uint64_t>& refused,
                                 std::vector<uint64_t>* installed, bool* stale) {
  const uint64_t ds = d.info.id;
  *stale = false;
  std::lock_guard<std::mutex> l(mu_);
  // Replacing a present copy (another path installed an older one meanwhile) is a change readers must see.
  bool replaces = false;
  for (size_t i = 0; i < meta.size() && !replaces; i++) {
    const PageMeta cur = d.store->GetMeta(first + i);
    replaces = refused[i] <= meta[i].version && cur.state != PageState::kAbsent && cur.version < meta[i].version;
  }
  if (replaces) Busy(ds);
  // The owner says this node may hold copies that missed a push: hidden from snapshot reads from this step on.
  for (const msg::FetchedPage& m : meta)
    if (m.flags & msg::kFetchedCheck) {
      MissedLocked(ds);
      if (!replaces) Publish(ds);
      break;
    }
  Status st;
  for (size_t i = 0; i < meta.size() && st.ok(); i++) {
    const uint64_t pg = first + i;
    // A push of a newer version was refused while this fetch was in flight: the copy is stale, refetch.
    if (refused[i] > meta[i].version) {
      *stale = true;
      continue;
    }
    const PageMeta cur = d.store->GetMeta(pg);
    if (cur.state != PageState::kAbsent && cur.version >= meta[i].version) continue;
    if (cur.state != PageState::kAbsent) SavePreImage(ds, pg, d.store);
    st = d.store->InstallPage(pg, pages + i * kPageSize, meta[i].version, PageState::kCommitted);
    if (st.ok()) installed->push_back(pg);
  }
  if (replaces) Publish(ds);
  return st;
}

Status NodeCache::InstallChecked(const DatasetState& d, uint64_t first, const std::vector<msg::FetchedPage>& meta,
                                 const uint8_t* pages, std::vector<uint64_t>* installed) {
  const uint64_t ds = d.info.id;
  auto cached = [](const PageMeta& m) { return m.state == PageState::kCommitted || m.state == PageState::kRedundant; };
  std::lock_guard<std::mutex> l(mu_);
  bool change = false, missed = false;
  for (size_t k = 0; k < meta.size(); k++) {
    const PageMeta m = d.store->GetMeta(first + k);
    const bool stale = cached(m) && m.version < meta[k].version;
    change = change || meta[k].open_commit != 0 || stale;
    // A stale copy here means this node missed a push (or the owner says it may have): its other copies may have
    // too, and a page brought up to date next to them could show part of a commit.
    missed = missed || stale || (meta[k].flags & msg::kFetchedCheck) != 0;
  }
  if (!change && !missed) return Status::Ok();
  // One step for the run (snapshot readers see all of it or none), the marks in the same step.
  Step step(this, ds);
  if (missed) MissedLocked(ds);
  PubState& pub = Pub(ds);
  for (size_t k = 0; k < meta.size(); k++) {
    const MarkKey key{meta[k].open_committer, meta[k].open_commit};
    if (key.second != 0 && finished_.count(key) == 0) pub.open.emplace(key, ctx_->time->Now());
    const uint64_t pg = first + k;
    const PageMeta m = d.store->GetMeta(pg);
    if (!cached(m) || m.version >= meta[k].version) continue;
    SavePreImage(ds, pg, d.store);
    if (d.store->InstallPage(pg, pages + k * kPageSize, meta[k].version, m.state).ok()) installed->push_back(pg);
  }
  return Status::Ok();
}

Status NodeCache::InstallRecovered(const DatasetState& d, const RecoveredRun& run, std::vector<uint64_t>* persist,
                                   uint64_t* installed) {
  std::lock_guard<std::mutex> l(mu_);
  Step step(this, d.info.id);
  for (size_t k = 0; k < run.have.size(); k++) {
    if (!run.have[k]) continue;  // nobody holds it: never written (zeros at version 0 when first served)
    const uint64_t pg = run.first + k;
    if (d.store->GetMeta(pg).state != PageState::kAbsent) SavePreImage(d.info.id, pg, d.store);
    if (run.data[k] != nullptr) {
      HOTPOT_RETURN_IF_ERROR(d.store->InstallPage(pg, run.data[k], run.version[k], PageState::kOwned));
      (*installed)++;
    } else {
      HOTPOT_RETURN_IF_ERROR(d.store->SetState(pg, PageState::kOwned));
    }
    persist->push_back(pg);
  }
  return Status::Ok();
}

Status NodeCache::CopyPages(pool::DatasetStore* store, uint64_t first, uint32_t count,
                            std::vector<msg::FetchedPage>* meta, std::vector<uint8_t>* pages) {
  meta->assign(count, msg::FetchedPage{});
  pages->assign(size_t(count) * kPageSize, 0);
  std::lock_guard<std::mutex> l(mu_);  // every content change happens under it: page and version agree
  for (uint32_t i = 0; i < count; i++) {
    PageMeta m;
    HOTPOT_RETURN_IF_ERROR(store->ReadPage(first + i, pages->data() + size_t(i) * kPageSize, &m));
    (*meta)[i].version = m.version;
    (*meta)[i].state = uint8_t(m.state);
  }
  return Status::Ok();
}

}  // namespace engine
}  // namespace hotpot
