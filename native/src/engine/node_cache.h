// The node cache (ARCHITECTURE §3-§4): this node's copies of pages — owned, cached, redundant — as apps map them,
// the apps' sessions with their sync points and base images (pre-images of pages overwritten since), and the
// publication state snapshot readers check (docs/design/consistency.md "Snapshot reads"). Every change of page
// content happens here, in one critical section per step: the step saves pre-images, sets the publication word
// busy, changes the pages, and publishes the next seq. A leaf: it calls no other component and no peer.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "common/fd.h"
#include "engine/core.h"
#include "engine/messages.h"

namespace hotpot {
namespace engine {

// An owner applying a commit part to its own pages: page numbers (sorted), their new versions, the ranges.
struct OwnerWrite {
  uint64_t ds = 0;
  pool::DatasetStore* store = nullptr;
  const std::vector<uint64_t>* pages = nullptr;
  const std::vector<uint64_t>* versions = nullptr;
  const std::vector<msg::Range>* ranges = nullptr;
  MarkKey mark{0, 0};  // multi-part commits: marked open on this node until DONE (0, 0: none)
};

// The copies a recovering owner collected for a run of pages: the newest version of each (have = someone holds it)
// and where its bytes are (nullptr: this node's own copy is the newest).
struct RecoveredRun {
  uint64_t first = 0;
  std::vector<bool> have;
  std::vector<uint64_t> version;
  std::vector<const uint8_t*> data;
};

class NodeCache {
 public:
  explicit NodeCache(Context* ctx) : ctx_(ctx) {}

  // Sessions: one app's view of one dataset; its sync point decides its base images.
  uint64_t OpenSession(uint64_t ds, const PeerCred& cred);
  void CloseSession(uint64_t session);
  void ResyncSession(uint64_t session);
  Status SessionDataset(uint64_t session, uint64_t* ds);
  // The page as of the session's sync point and the version it had then.
  Status BaseImage(uint64_t session, const DatasetState& d, uint64_t page, uint8_t* out4096, uint64_t* version);
  struct SessionInfo {
    uint64_t id, ds;
    PeerCred cred;
  };
  std::vector<SessionInfo> Sessions();

  // Publication state (snapshot reads).
  PublicationInfo Publication(uint64_t ds);
  Status PublicationFd(uint64_t ds, int* fd);
  // DONE from `key.first` for commit `key.second`: closes its mark on every dataset; true if it was open. With
  // `check` (this node may have missed some of the commit's pushes) each of those datasets has missed a push.
  bool CloseMark(const MarkKey& key, bool check);
  // Takeover: a multi-part commit with a part settled here whose other parts may not be applied everywhere yet is
  // open on this node until its DONE (or its committer says it is finished), unless it is known finished already.
  void MarkOpen(uint64_t ds, const MarkKey& key);
  // Marks (except "unchecked") opened before `limit`, to ask their key nodes about.
  std::set<MarkKey> MarksOpenedBefore(TimePoint limit);
  // Closes marks their key nodes say are finished (a lost DONE, which may have been one with the check flag): as
  // CloseMark with a check.
  void CloseFinished(const std::set<MarkKey>& finished);
  // The "unchecked" mark of a dataset on or off; true when it changed. It goes off only if no push was missed since
  // `if_missed_epoch` (MissedEpoch before the check pass that clears it).
  bool SetUnchecked(uint64_t ds, bool on, uint64_t if_missed_epoch = UINT64_MAX);
  // Missed pushes (docs/design/consistency.md "Missed pushes"): this node may hold copies that missed a commit while
  // it holds others that did not, so a snapshot could show part of it. The dataset gets the "unchecked" mark in the
  // same step as the evidence arrives and is queued for a check of every cached copy (TakeRechecks, by the
  // resolver); MissedEpoch counts these events.
  uint64_t MissedEpoch(uint64_t ds);
  // Evidence from outside (CHECK_COPIES): as above.
  void Missed(uint64_t ds);
  std::set<uint64_t> TakeRechecks();
  // A consistent copy of present pages [first, first + count): copied in one step when no mark is open and every
  // page is present (*ready); otherwise nothing is copied.
  Status ReadConsistent(const DatasetState& d, uint64_t first, uint32_t count, uint8_t* out, bool* ready);

  // Changes of page content, one step each.
  // The owner applies a part to its own pages. *fresh receives pages that were absent (never served nor written).
  Status ApplyOwnerWrite(const OwnerWrite& w, std::vector<uint64_t>* fresh);
  // A coherence push or replica top-up batch (PUSH_BATCH) from a page's owner: every page decided first; if any
  // copy is older than the entry's version - 1 nothing is applied and those pages answer kPushStale. *persist gets
  // the pages to make durable.
  Status ApplyPushBatch(const msg::PushBatch& b, pool::DatasetStore* store, std::vector<uint8_t>* accepted,
                        std::vector<uint64_t>* persist);
  // Installs a page only if it is absent (an owned page never written: zeros at version 0). No publication step:
  // a page appearing where there was none changes nothing a snapshot reader could have read.
  // Takeover: an owned page below `floor` gets version `floor`, its bytes unchanged (*raised says whether it did).
  Status RaiseVersion(pool::DatasetStore* store, uint64_t ds, uint64_t page, uint64_t floor, bool* raised);
  Status InstallAbsent(pool::DatasetStore* store, uint64_t page, const uint8_t* data, uint64_t version,
                       PageState state, bool* installed);
  // Fetches of absent pages: a push refused while a fetch is in flight makes its copy stale.
  void BeginFetch(uint64_t ds, uint64_t first, uint32_t count);
  std::vector<uint64_t> EndFetch(uint64_t ds, uint64_t first, uint32_t count);  // refused version per page (0: none)
  // Installs fetched pages that are newer than what is here (absent pages: no publication step; a present page
  // replaced: one step). Pages whose fetch raced a newer refused push are skipped and *stale set.
  Status InstallFetched(const DatasetState& d, uint64_t first, const std::vector<msg::FetchedPage>& meta,
                        const uint8_t* pages, const std::vector<uint64_t>& refused, std::vector<uint64_t>* installed,
                        bool* stale);
  // Revalidation answers: cached (not owned) copies replaced by newer ones and commits holding checked pages marked
  // open, one step. *installed receives the pages replaced.
  Status InstallChecked(const DatasetState& d, uint64_t first, const std::vector<msg::FetchedPage>& meta,
                        const uint8_t* pages, std::vector<uint64_t>* installed);
  // A recovering owner installs the newest copies of a run as owned pages, one step. *persist gets them.
  Status InstallRecovered(const DatasetState& d, const RecoveredRun& run, std::vector<uint64_t>* persist,
                          uint64_t* installed);
  // COPY_PAGES: this node's copies (any state) of pages [first, first + count), page and version consistent.
  Status CopyPages(pool::DatasetStore* store, uint64_t first, uint32_t count, std::vector<msg::FetchedPage>* meta,
                   std::vector<uint8_t>* pages);

 private:
  struct PreImage {
    uint64_t seq;
    std::vector<uint8_t> data;
    uint64_t version = 0;  // the page version this content had (read validation compares it)
  };
  struct Session {
    uint64_t ds = 0;
    uint64_t sync = 0;
    PeerCred cred;  // the app's (hotpot stat lists mapped processes)
  };
  void MissedLocked(uint64_t ds);
  // A commit its key node says is whole everywhere (DONE, or MARK_STATUS "finished"): a revalidation answer naming
  // it (a part an owner still holds locked, in doubt) does not mark it open again. The last 4096 are kept.
  void FinishedLocked(const MarkKey& key);
  std::set<MarkKey> finished_;
  std::deque<MarkKey> finished_order_;
  std::set<uint64_t> recheck_;  // datasets to check after a missed push
  struct PubState {
    uint64_t seq = 0;
    std::map<MarkKey, TimePoint> open;  // marks -> opened at
    // The same state in a shared page apps map read-only (memfd; absent if it could not be created).
    UniqueFd memfd;
    std::atomic<uint64_t>* word = nullptr;
    PubState() = default;
    PubState(const PubState&) = delete;
    PubState& operator=(const PubState&) = delete;
    ~PubState();
    uint64_t missed = 0;  // MissedEpoch
  };
  // One change of a dataset's content while mu_ is held: the shared word shows "busy" from construction and the
  // next seq after destruction (shimproto::PublicationWord).
  class Step {
   public:
    Step(NodeCache* c, uint64_t ds) : c_(c), ds_(ds) { c_->Busy(ds_); }
    ~Step() { c_->Publish(ds_); }
    Step(const Step&) = delete;
    Step& operator=(const Step&) = delete;

   private:
    NodeCache* c_;
    uint64_t ds_;
  };
  PubState& Pub(uint64_t ds);  // mu_ held; creates the shared word on first use
  void Busy(uint64_t ds);      // mu_ held
  void Publish(uint64_t ds);   // mu_ held: seq + 1, open count, not busy
  // Called before overwriting a present page (mu_ held): keeps its content if some session's base image is it.
  void SavePreImage(uint64_t ds, uint64_t page, pool::DatasetStore* store);
  void PrunePreImages();  // mu_ held

  Context* ctx_;
  std::mutex mu_;
  uint64_t seq_ = 0;  // every pre-image save bumps it; a session's sync point is a value of it
  uint64_t next_session_ = 1;
  std::map<uint64_t, Session> sessions_;
  std::map<PageKey, std::vector<PreImage>> preimages_;  // ascending seq
  std::map<uint64_t, PubState> pub_;                    // per dataset
  // Pages with a fetch in flight -> the highest version of a push refused meanwhile (the fetched copy may be
  // older than a commit that happened after the owner recorded us as a cacher).
  std::map<PageKey, uint64_t> fetching_;
};

}  // namespace engine
}  // namespace hotpot
