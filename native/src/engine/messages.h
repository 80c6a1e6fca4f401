// Payload codecs for the engine's peer messages (types 16-22, docs/design/engine.md "Wire messages").
// Every decoder checks every length and count against the payload size before reading, and checks page bounds
// (a range never crosses a page, len <= 4096); dataset-size bounds are checked by the handler that knows the size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/page.h"
#include "common/status.h"

namespace hotpot {
namespace engine {
namespace msg {

constexpr uint16_t kFetchPages = 16;
constexpr uint16_t kPrepare = 17;
constexpr uint16_t kApply = 18;
constexpr uint16_t kRelease = 19;
constexpr uint16_t kAbort = 20;
// 21 and 22 were the single-page PUSH and REPLICA of earlier versions (PUSH_BATCH carries both now); not reused.
// Outcome query (request: txid; response: one byte, OutcomeCode) sent by an owner holding a prepared part it has
// not been told to apply (after its restart, or long after PREPARE) to the part's committer.
constexpr uint16_t kOutcome = 23;
enum class OutcomeCode : uint8_t { kPending = 0, kCommitted = 1, kAborted = 2 };
// Coherence push of every page of one commit part that the receiver caches, applied there in one step.
constexpr uint16_t kPushBatch = 24;
// DONE (request: commit id u64, then optionally one flags byte; the peer is the committer): every part of the
// commit is applied and pushed; the receiver closes the commit's open mark (snapshot reads on that node may succeed
// again). With kDoneCheck the receiver may have missed some of the commit's pushes (one failed, or the committer
// does not know): if it holds the mark it checks its cached copies with their owners before snapshot reads succeed.
constexpr uint16_t kDone = 25;
constexpr uint8_t kDoneCheck = 1;
// MARK_STATUS (request: the id of an open mark, u64; sent to the node of the mark's key: the committer, or the
// owner for a one-shot push split over several messages): answer one byte, 1 = that commit (or push) is still in
// progress there, 0 = finished or unknown. A node closes a mark whose DONE never came once its key node says 0,
// and keeps it while the key node says 1 or cannot be asked (docs/design/consistency.md "Snapshot reads").
constexpr uint16_t kMarkStatus = 26;
// COPY_PAGES (request as FETCH_PAGES, flags 0; answer as FETCH_PAGES: per page {version, state} and 4096 bytes,
// zeros and state absent for a page not held): the copies a node holds, owned or not. An owner whose store was
// replaced asks every member for them and keeps the newest copy of each page.
constexpr uint16_t kCopyPages = 27;
// CHECK_COPIES (request: dataset id u64; answer empty): the sender owns pages of the dataset and restarted, so it no
// longer knows which nodes missed its pushes before: the receiver checks every cached copy of the dataset with its
// owner before snapshot reads succeed there (docs/design/consistency.md "Missed pushes"). Sent by the restarted
// owner's resolver to every alive member until each has answered.
constexpr uint16_t kCheckCopies = 28;
// PREPARE_COPY (request: PartCopy; answer empty): before an owner answers PREPARE (or applies a one-shot part) it logs
// the prepared part on N-1 other nodes, which keep it durable (their redo log) until RELEASE_COPIES, so a node taking
// over a dead owner's chunk has every part that was in flight there (docs/design/availability.md "Replicated
// prepare"). RESOURCE_EXHAUSTED when the receiver's redo log is full (the owner tries another node).
constexpr uint16_t kPrepareCopy = 29;
// RELEASE_COPIES (request: PartKeys; answer empty): the sender, the parts' owner, finished them: their copies go.
constexpr uint16_t kReleaseCopies = 30;
// PART_STATUS (request: PartKeys with one key; answer one byte: 1 = the part is still prepared or applying at the
// receiver, its owner; 0 = finished or unknown): a node holding an old copy asks the owner whether to keep it.
constexpr uint16_t kPartStatus = 31;
// LIST_COPIES (request: dataset u64, first page u64, count u32; answer: CopyList): every prepare copy the receiver
// holds (of any owner) with a range in those pages. A node taking over a chunk (failover, or recovery of a replaced
// store) gathers them from every alive member to settle the parts that were in flight at the old owner.
constexpr uint16_t kListCopies = 32;
// COMMIT_STATE (request: PartKeys with one key {committer, commit id}; answer one byte, CommitState): what became of
// the receiver's parts of a multi-part commit whose committer was forgotten (`hotpot forget`: it never answers
// OUTCOME again) or is down. A prepared part is frozen by the question: its committer's APPLY is refused from then
// on, so an answer "none applied" stays true and every participant settles the commit alike (docs/design/
// availability.md "A forgotten committer", "A dead committer"). The freeze is durable before the answer: the part's
// redo record and every prepare copy carry it (an error otherwise: asked again), and a PREPARE of the commit arriving
// later is refused (kReasonCommitSettled).
constexpr uint16_t kCommitState = 33;
// COMMIT_PEEK (request as COMMIT_STATE; answer one byte: kPeekPrepared | kPeekApplied, both when the receiver holds a
// part of each kind; nothing frozen): what the receiver holds of a multi-part commit whose committer is down (declared dead, not forgotten: it may return and drive its commit) while every node that is down
// owns no chunk (theirs were taken over). An applied part is released once no participant still holds one prepared,
// a prepared one applied once another is applied, and an open mark closed once no participant holds any part
// (docs/design/availability.md "A dead committer").
constexpr uint16_t kCommitPeek = 34;
// KEEP_APPLIED (request: PartCopy flagged kCopyApplied; answer empty): the sender holds a prepare copy of a part the
// receiver owns, flagged applied (the part was applied short of N page copies), and the receiver answered
// PART_STATUS "not held" — it restarted and forgot which copies it keeps. Answer one byte: 1 = the receiver keeps track
// of the copy again and releases it once the part's pages it owns are back at N copies (the holder keeps it
// meanwhile); 0 = none of the part's pages is the receiver's now (their chunks moved on with them): the holder drops
// it. An error (a chunk still being taken over): asked again.
constexpr uint16_t kKeepApplied = 35;
// The message type's name as the comments above spell it ("PREPARE"), for log lines; "type N" for others.
std::string TypeName(uint16_t type);
constexpr uint8_t kPeekPrepared = 1;
constexpr uint8_t kPeekApplied = 2;
enum class CommitState : uint8_t { kNone = 0, kPrepared = 1, kApplied = 2 };
// Reasons (Status::reason, carried in the frame's status field) that peers decide on — never the message text.
enum Reason : uint16_t {
  kReasonNone = 0,
  kReasonPageLocked = 1,        // FETCH_PAGES: a commit holds the page locked until it is released (retry)
  kReasonDatasetNotLoaded = 2,  // the receiver's control plane has not loaded the dataset yet (retry)
  // 3 is retired (it was "applied, short of copies": that is now an OK answer whose copy count is below N).
  kReasonNotPrepared = 4,       // APPLY: no such part here any more (its owner already finished it)
  kReasonTxRecovering = 5,      // APPLY: the part is being recovered after the owner's restart (retry)
  kReasonApplyInProgress = 6,   // APPLY: an earlier APPLY of the part still runs (retry)
  kReasonChunkRecovering = 7,   // the owner recovers the chunk from the nodes holding copies (retry)
  // PREPARE: the receiver knows the sender was declared dead at an epoch >= the one the sender stamped on the frame
  // (fenced: it must rejoin, and recheck its copies, before it commits again). Nothing was prepared.
  kReasonFenced = 8,
  // PREPARE: the receiver's view shows the sender dead, but the sender stamped a later epoch: it rejoined and the
  // receiver has not seen that yet (retry). Nothing was prepared.
  kReasonEpochAhead = 9,
  // PREPARE / FETCH_PAGES: the receiver does not own the page's chunk in its chunk map (the chunk moved, or the
  // receiver has not loaded the map that gives it the chunk yet): re-read the chunk map and retry. Nothing prepared.
  kReasonNotOwner = 10,
  // PREPARE / FETCH_PAGES: the owner is handing the chunk off to another node (docs/design/availability.md
  // "Handoff"): retry, re-reading the chunk map. Nothing prepared.
  kReasonChunkMoving = 11,
  // PREPARE / FETCH_PAGES: the sender routed by a newer generation of the dataset's chunk map than the receiver has
  // loaded, so the receiver may no longer own the chunk: retry (the receiver loads the newer map within moments).
  kReasonMapBehind = 12,
  // PREPARE / FETCH_PAGES: the receiver's membership lease ran out (it could not renew it with the dispatcher), so it
  // may have been declared dead and its chunks given to another node: it serves as owner again only once it renews
  // (self-fencing). Re-read the chunk map and retry. Nothing prepared.
  kReasonLeaseLapsed = 13,
  // PREPARE / FETCH_PAGES / APPLY (code DATA_LOSS): the page has no surviving copy — its owner recovered the chunk
  // while no node held it (docs/design/availability.md "Lost pages"). Final: nothing to retry until an operator
  // accepts the loss. Nothing prepared.
  kReasonPageLost = 14,
  // APPLY / RELEASE (code FAILED_PRECONDITION): the part was frozen by a participant's question (COMMIT_STATE) after
  // its committer was declared dead or forgotten; its participants settle the commit among themselves (applied at one
  // of them: applied everywhere; else aborted), and the committer's decision no longer counts. Final for the sender:
  // the outcome is theirs to tell (docs/design/availability.md "A dead committer").
  kReasonFrozen = 15,
  // PREPARE: the commit this part belongs to was asked about by its participants (COMMIT_STATE) after its committer
  // was declared dead: a late part of it is not prepared any more. Nothing prepared.
  kReasonCommitSettled = 16,
};
// A refusal after which the sender re-reads its chunk map and retries (nothing was prepared or served).
inline bool Rerouted(uint16_t reason) {
  return reason == kReasonNotOwner || reason == kReasonChunkMoving || reason == kReasonMapBehind ||
         reason == kReasonLeaseLapsed;
}
constexpr uint32_t kMaxPushPages = 4096;
constexpr uint32_t kPushOpen = 1u << 0;  // more of this commit follows at the receiver: mark it open until DONE
// Replica top-up: every entry is one whole-page range; the receiver installs it unless it holds the page at a
// version >= the entry's (answer 1 either way), never over the owner's copy (answer 0).
constexpr uint32_t kPushReplica = 1u << 1;
// The receiver may hold copies that missed a push (the owner's suspects, as for kFetchedCheck): it applies the batch
// and hides its copies from snapshot reads until they are all checked.
constexpr uint32_t kPushCheck = 1u << 2;
// PUSH_BATCH answers, one byte per page.
constexpr uint8_t kPushNotHeld = 0;  // absent (or the owner's own copy): not a holder
constexpr uint8_t kPushHeld = 1;     // held at the entry's version (or newer) now
// Held at a version older than the entry's version - 1 (it missed a commit): a delta cannot be applied. When any
// page of a batch answers this, the receiver applied NOTHING of the batch; the sender sends the batch again with
// those pages as whole pages (one range covering the page), which a holder installs over its older copy.
constexpr uint8_t kPushStale = 3;

constexpr uint32_t kMaxFetchPages = 64;
constexpr uint32_t kFetchCoherent = 1u << 0;
// Revalidation of a restarted node's cached copies: served even while a commit holds the page locked (the
// requester only compares versions and keeps the newer copy; the commit pushes to it when it applies).
constexpr uint32_t kFetchRevalidate = 1u << 1;
// With kFetchRevalidate: part of a pass that checks every cached copy of the requester (docs/design/consistency.md
// "Missed pushes"): the owner stops telling the requester to check its copies (kFetchedCheck).
constexpr uint32_t kFetchPass = 1u << 2;
// The requester reads page bytes by one-sided RDMA READ (transport rdma): the owner may answer "located" — where the
// pages lie in a region it exposes, with a CRC32C of each page as served — instead of the bytes. Not with
// kFetchRevalidate. An owner that cannot expose them answers with the bytes as usual.
constexpr uint32_t kFetchLocate = 1u << 3;
// FetchedPage flags. kFetchedCheck: the requester may hold copies that missed a push of this owner, or of a commit
// this page's owner took part in; it installs the answer and checks every cached copy before snapshot reads succeed.
constexpr uint8_t kFetchedCheck = 1u << 0;
constexpr uint32_t kPrepareOneShot = 1u << 0;
constexpr uint32_t kPrepareReads = 1u << 1;  // a read-check section follows the ranges
constexpr uint32_t kPrepareLease = 1u << 2;  // an MRSW lease certificate follows (after the read checks)
constexpr uint32_t kPrepareDeadline = 1u << 3;  // the committer's deadline (unix ms, u64) follows
constexpr uint32_t kPrepareCommitId = 1u << 4;  // the commit id (u64, shared by every part) follows
constexpr uint32_t kPrepareGeneration = 1u << 5;  // the chunk-map generation (u64) follows, last
constexpr uint32_t kMaxLeaseBytes = 64 * 1024;

struct FetchRequest {
  uint64_t dataset = 0;
  uint64_t first_page = 0;
  uint32_t count = 0;
  uint32_t flags = 0;
  // The generation of the dataset's chunk map the sender routed by (0 = not stated): an owner whose map is older
  // refuses (kReasonMapBehind), since it may no longer own the chunk.
  uint64_t generation = 0;
};
struct FetchedPage {
  uint64_t version = 0;
  uint8_t state = 0;
  uint8_t flags = 0;  // kFetchedCheck
  // Revalidation answers only: the page is locked by a writing part of a multi-part commit (committer node,
  // commit id), so the copy may show that commit on this owner before or after its other parts land elsewhere: the
  // requester marks the commit open until its DONE (or until the committer says it is finished). 0, 0 otherwise.
  uint32_t open_committer = 0;
  uint64_t open_commit = 0;
};
// A located answer (kFetchLocate): the pages are `count` consecutive pages at byte `offset` of the owner's RDMA region
// `region`; crc[i] is the CRC32C of page i's bytes at `meta[i].version`. Bytes read there that do not match were
// changed after the answer (a later commit, being applied) and must not be installed.
struct FetchLocation {
  uint32_t region = 0;
  uint64_t offset = 0;
  std::vector<uint32_t> crc;
};
void EncodeFetchRequest(const FetchRequest& r, std::vector<uint8_t>* out);
Status DecodeFetchRequest(const uint8_t* p, size_t n, FetchRequest* out);
// Response: count x {version, state, flags, pad[6]}, then count x 4096 bytes; answers to a request with kFetchRevalidate
// end with count x {open_committer u32, open_commit u64}. `pages` points at count*4096 bytes.
void EncodeFetchResponse(const std::vector<FetchedPage>& meta, const uint8_t* pages, bool revalidate,
                         std::vector<uint8_t>* out);
// Checks the size matches `count` (and `revalidate`) exactly; *pages_out points into p.
Status DecodeFetchResponse(const uint8_t* p, size_t n, uint32_t count, bool revalidate,
                           std::vector<FetchedPage>* meta, const uint8_t** pages_out);
// Located answer: count x {version, state, flags, pad[6]}, then {magic "HPLC" u32, region u32, offset u64}, then
// count x crc32c u32.
void EncodeFetchLocated(const std::vector<FetchedPage>& meta, const FetchLocation& at, std::vector<uint8_t>* out);
bool IsFetchLocated(const uint8_t* p, size_t n, uint32_t count);  // by its size and magic
Status DecodeFetchLocated(const uint8_t* p, size_t n, uint32_t count, std::vector<FetchedPage>* meta,
                          FetchLocation* at);

// A changed byte range with its old (base) and new bytes. Never crosses a page.
struct Range {
  uint64_t offset = 0;
  std::vector<uint8_t> old_bytes;
  std::vector<uint8_t> new_bytes;
  uint32_t len() const { return uint32_t(new_bytes.size()); }
};
// Read validation: the page holding [offset, offset + len) must still be at `version` (the version of the
// committer's base image), else the commit is ABORTED with this range as a conflict.
struct ReadCheck {
  uint64_t offset = 0;
  uint32_t len = 0;
  uint64_t version = 0;
};
struct PrepareRequest {
  uint64_t txid = 0;
  uint64_t dataset = 0;
  uint32_t replicas = 0;
  uint32_t flags = 0;  // kPrepareReads / kPrepareLease are set by the encoder from `reads` / `lease`
  std::vector<Range> ranges;    // may be empty when reads is not (a read-only validation)
  std::vector<ReadCheck> reads;
  std::vector<uint8_t> lease;   // MRSW lease certificate (opaque here; verified by the owner)
  // When the committer stops waiting for this PREPARE (unix ms; 0 = none). An owner that gets it later refuses
  // it, and a one-shot owner does not apply after it: a timed-out commit leaves nothing applied.
  uint64_t deadline_unix_ms = 0;
  // Multi-part commits: the id every part shares (its first part's txid); owners tag their pushes with it so each
  // node can tell when the whole commit has landed (DONE). 0 for a one-shot commit.
  uint64_t commit_id = 0;
  // The generation of the dataset's chunk map the committer routed by (0 = not stated), as FetchRequest.
  uint64_t generation = 0;
};
void EncodePrepareRequest(const PrepareRequest& r, std::vector<uint8_t>* out);
size_t PrepareRequestSize(const PrepareRequest& r);
Status DecodePrepareRequest(const uint8_t* p, size_t n, PrepareRequest* out);

// PREPARE responses. OK: copies u32 (meaningful for one-shot; 0 otherwise). ABORTED: n u32, n x {offset u64, len u32}.
struct Conflict {
  uint64_t offset = 0;
  uint32_t len = 0;
};
void EncodeConflicts(const std::vector<Conflict>& c, std::vector<uint8_t>* out);
Status DecodeConflicts(const uint8_t* p, size_t n, std::vector<Conflict>* out);
void EncodeU32(uint32_t v, std::vector<uint8_t>* out);
Status DecodeU32(const uint8_t* p, size_t n, uint32_t* out);
void EncodeTxid(uint64_t txid, std::vector<uint8_t>* out);  // APPLY / RELEASE / ABORT

// ABORT response (a committer that gave up waiting for a one-shot PREPARE settles what happened): state u8, then
// copies u32 when kApplied. Owners from before this answer had an empty payload (kUnknown).
enum class AbortState : uint8_t {
  kNothingApplied = 0,  // dropped (or never prepared: it never will be, the txid is refused from now on)
  kApplied = 1,         // the one-shot commit passed its commit point and finished: `copies` durable copies
  kApplying = 2,        // past its commit point, still applying: ask again
  kUnknown = 255,
};
void EncodeAbortReply(AbortState state, uint32_t copies, std::vector<uint8_t>* out);
Status DecodeAbortReply(const uint8_t* p, size_t n, AbortState* state, uint32_t* copies);
Status DecodeTxid(const uint8_t* p, size_t n, uint64_t* out);
// APPLY: the txid; a committer that re-routed the part to its chunk's new owner (failover) adds the dataset and the
// chunk-map generation it routed by (24 bytes), so an owner that has not loaded that map yet answers kReasonMapBehind
// rather than "not prepared".
void EncodeApplyRequest(uint64_t txid, uint64_t dataset, uint64_t generation, std::vector<uint8_t>* out);
Status DecodeApplyRequest(const uint8_t* p, size_t n, uint64_t* txid, uint64_t* dataset, uint64_t* generation);
// RELEASE: the txid, then (optionally) the nodes the commit's pushes missed (count u32, node ids u32): the owner
// tells them to check their copies when they next fetch from it (kFetchedCheck). Answer: empty, or one byte 1 when
// the part's prepare copies are still being released at their holders (kReleaseCopiesPending).
constexpr uint8_t kReleaseCopiesPending = 1;
void EncodeRelease(uint64_t txid, const std::vector<uint32_t>& missed, std::vector<uint8_t>* out);
Status DecodeRelease(const uint8_t* p, size_t n, uint64_t* txid, std::vector<uint32_t>* missed);

// A changed range of one page (PUSH_BATCH entries).
struct PushRange {
  uint64_t offset = 0;
  std::vector<uint8_t> bytes;
};

// PUSH_BATCH: pages of one commit part for one receiver. Each page: its new version, its base (the version the
// owner's page had before this part: the receiver must hold the base, or the entry is a whole page; a receiver
// holding less missed a commit) and its changed ranges. Versions are not consecutive: a part that was prepared and
// aborted leaves its version unused. Response: one byte per page, kPushHeld, kPushNotHeld or kPushStale (then
// nothing of the batch was applied).
struct PushPage {
  uint64_t version = 0;
  uint64_t base = 0;  // < version
  std::vector<PushRange> ranges;
};
struct PushBatch {
  uint32_t committer = 0;  // the commit's committer node (DONE comes from it)
  uint32_t flags = 0;      // kPushOpen, kPushReplica
  uint64_t commit_id = 0;
  uint64_t dataset = 0;
  std::vector<PushPage> pages;
};
void EncodePushBatch(const PushBatch& b, std::vector<uint8_t>* out);
// Checks every range lies in one page per entry, distinct pages, 1..kMaxPushPages pages, base < version.
Status DecodePushBatch(const uint8_t* p, size_t n, PushBatch* out);

// The nodes an applied part's pushes marked open, and those of them whose push failed (they may hold some of the
// commit's pages and not others: their DONE carries kDoneCheck).
struct MarkedNodes {
  std::vector<uint32_t> marked;
  std::vector<uint32_t> missed;
};
// APPLY response: copies u32, marked (count u32, node ids u32), missed (count u32, node ids u32). Older owners sent
// only the copies, or no missed list.
void EncodeApplyReply(uint32_t copies, const MarkedNodes& nodes, std::vector<uint8_t>* out);
Status DecodeApplyReply(const uint8_t* p, size_t n, uint32_t* copies, MarkedNodes* nodes);
void EncodeDone(uint64_t commit_id, bool check, std::vector<uint8_t>* out);

// A prepared part as its owner logged it (PREPARE_COPY): the new bytes of every range and the version each touched
// page gets (ascending page order). committer u32, txid u64, dataset u64, commit_id u64, flags u32, n u32,
// n x {offset u64, len u32, bytes[len]}, m u32, m x version u64, then with kCopyEpoch the PREPARE's epoch stamp u64,
// then with kCopyReleases k u32 (1..kMaxPartKeys), k x {committer u32, txid u64}.
constexpr uint32_t kCopyOneShot = 1u << 0;  // the owner decides the part alone (a one-shot commit)
// The owner applied the part but pushed it to fewer than N nodes: the copy is kept until the pages are back at N
// copies, and a node taking the chunk over completes the part from it (sent again, with this flag, to the holders).
constexpr uint32_t kCopyApplied = 1u << 1;
// The part is frozen (its committer was declared dead or forgotten and a participant asked about the commit): a node
// taking the chunk over adopts it frozen, so its committer's APPLY stays refused (sent again, with this flag, to the
// holders before the owner answers COMMIT_STATE). kCopyApplied wins over it.
constexpr uint32_t kCopyFrozen = 1u << 2;
// The copy carries the membership epoch its committer stamped on the part's PREPARE (set by the encoder from
// sender_epoch): a node that adopts the part keeps it, so a question about the commit still freezes the part only
// once the committer is known dead at that epoch or later.
constexpr uint32_t kCopyEpoch = 1u << 3;
// The copy carries releases (set by the encoder from `releases`): parts of the sender whose copies the receiver holds
// and drops before it logs this one, as RELEASE_COPIES would. A busy owner's releases ride on its next copy to the
// same node, so they never lag behind its commits there (a holder's redo log filled up with copies whose releases
// were still queued behind a slow call, and a commit failed "redo log full"). Not part of the copy kept.
constexpr uint32_t kCopyReleases = 1u << 4;
struct PartCopy {
  uint32_t committer = 0;
  uint64_t txid = 0;
  uint64_t dataset = 0;
  uint64_t commit_id = 0;
  uint32_t flags = 0;
  std::vector<PushRange> ranges;
  std::vector<uint64_t> versions;
  uint64_t sender_epoch = 0;  // 0 = not known
  std::vector<std::pair<uint32_t, uint64_t>> releases;  // kCopyReleases: at most kMaxPartKeys
};
void EncodePartCopy(const PartCopy& c, std::vector<uint8_t>* out);
// Adds `keys` (1..kMaxPartKeys) as releases to `encoded`, a PartCopy encoded without any: the copy is encoded once
// for every node it goes to, and each node's releases are added to its own request.
void AppendCopyReleases(const std::vector<std::pair<uint32_t, uint64_t>>& keys, std::vector<uint8_t>* encoded);
// Checks: at least one range, each in one page, no two overlapping, one version (> 0) per distinct page, no other
// flag bits, committer and txid not 0, an epoch stamp (kCopyEpoch) not 0, releases (kCopyReleases) 1..kMaxPartKeys
// keys, none 0.
Status DecodePartCopy(const uint8_t* p, size_t n, PartCopy* out);
// LIST_COPIES answer: count u32, count x {owner u32, len u32, PartCopy[len]}.
struct OwnedCopy {
  uint32_t owner = 0;
  PartCopy copy;
};
void EncodeCopyList(const std::vector<OwnedCopy>& copies, std::vector<uint8_t>* out);
Status DecodeCopyList(const uint8_t* p, size_t n, std::vector<OwnedCopy>* out);
// LIST_COPIES request.
struct CopyQuery {
  uint64_t dataset = 0;
  uint64_t first_page = 0;
  uint32_t count = 0;
};
void EncodeCopyQuery(const CopyQuery& q, std::vector<uint8_t>* out);
Status DecodeCopyQuery(const uint8_t* p, size_t n, CopyQuery* out);
// (committer, txid) pairs: count u32, count x {committer u32, txid u64}; 1..kMaxPartKeys of them.
constexpr uint32_t kMaxPartKeys = 4096;
void EncodePartKeys(const std::vector<std::pair<uint32_t, uint64_t>>& keys, std::vector<uint8_t>* out);
Status DecodePartKeys(const uint8_t* p, size_t n, std::vector<std::pair<uint32_t, uint64_t>>* out);

Status DecodeDone(const uint8_t* p, size_t n, uint64_t* commit_id, bool* check);
}  // namespace msg
}  // namespace engine
}  // namespace hotpot
