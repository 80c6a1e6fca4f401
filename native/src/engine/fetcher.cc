#include "engine/fetcher.h"

#include "common/crc32c.h"

namespace hotpot {
namespace engine {

Status Fetcher::EnsurePages(uint64_t ds, uint64_t first, uint32_t count, std::chrono::milliseconds owner_wait) {
  DatasetState d;
  HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));
  if (count == 0 || first >= d.store->page_count() || count > d.store->page_count() - first)
    return Status(Code::kOutOfRange, "pages " + std::to_string(first) + "+" + std::to_string(count) +
                                         " beyond dataset " + std::to_string(ds));
  const uint64_t end = first + count;
  const uint32_t self = ctx_->self();
  Backoff wait_owner(ctx_->time, std::chrono::milliseconds(5), std::chrono::milliseconds(200),
                     ctx_->time->Now() + owner_wait, false);
  Backoff rerouting(ctx_->time, std::chrono::milliseconds(5), std::chrono::milliseconds(100),
                    ctx_->time->Now() + std::max<std::chrono::milliseconds>(
                                            owner_wait, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                            ctx_->opt.request_timeout)),
                    false);
  bool waited = false;
  uint64_t p = first;
  while (p < end) {
    if (d.store->GetMeta(p).state != PageState::kAbsent) {
      ctx_->counters.faults_local++;
      p++;
      continue;
    }
    uint32_t owner = 0;
    if (!ChunkOwner(d, p, &owner))
      return Status(Code::kFailedPrecondition, PageName(ds, p) + ": chunk has no owner in the chunk map");
    if (owner == self) {
      HOTPOT_RETURN_IF_ERROR(owner_->EnsurePresent(d, p));
      ctx_->counters.faults_local++;
      p++;
      continue;
    }
    if (!view_->IsAlive(owner) && owner_wait.count() > 0 && wait_owner.Wait()) {
      // The owner is down: wait for it (or for a new owner) rather than failing the fault at once.
      if (!waited) ctx_->counters.fetch_retries++;
      waited = true;
      HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));  // the chunk map may name another owner now
      continue;
    }
    // A run of absent pages with the same owner, at most 64.
    uint64_t q = p + 1;
    while (q < end && q - p < msg::kMaxFetchPages && d.store->GetMeta(q).state == PageState::kAbsent) {
      uint32_t o2 = 0;
      if (!ChunkOwner(d, q, &o2) || o2 != owner) break;
      q++;
    }
    Status st = FetchRun(d, owner, p, uint32_t(q - p));
    if (msg::Rerouted(st.reason()) || st.reason() == msg::kReasonChunkRecovering) {
      // The chunk is being handed off, moved since this node's map was loaded, or being taken over by its new owner:
      // re-read the map and retry (within the owner wait, at least one request timeout).
      if (!rerouting.Wait()) return st;
      ctx_->counters.fetch_retries++;
      HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));
      continue;
    }
    if (st.code() == Code::kUnavailable &&
        st.reason() != msg::kReasonPageLocked && owner_wait.count() > 0 && wait_owner.Wait()) {
      // The owner could not be reached: killed and not declared dead yet (its lease runs for a while), restarting,
      // or cut off. Wait for it, or for the owner the chunk map names next, within the owner wait, as for an owner
      // known to be down. Before, the fault failed at once (an app got SIGBUS a second after the owner was killed:
      // chaos). A fetch that timed out (DEADLINE_EXCEEDED) is still answered at once: a slow owner may have served
      // it, and retrying those made simulation seeds 1709 and 9587 fail (not yet understood).
      if (!waited) ctx_->counters.fetch_retries++;
      waited = true;
      HOTPOT_RETURN_IF_ERROR(view_->FindDataset(ds, &d));
      continue;
    }
    HOTPOT_RETURN_IF_ERROR(st);
    p = q;
  }
  return Status::Ok();
}

Status Fetcher::FetchRun(const DatasetState& d, uint32_t owner, uint64_t first, uint32_t count) {
  const uint64_t ds = d.info.id;
  const std::string what = "fetch of " + PageName(ds, first) + " from owner node " + std::to_string(owner);
  if (!view_->IsAlive(owner))
    return Status(Code::kUnavailable,
                  "owner node " + std::to_string(owner) + " of " + PageName(ds, first) + " is not alive");
  const uint64_t mono0 = observe::MonoNowNs(), unix0 = observe::UnixNowNs();
  std::vector<uint8_t> payload, resp, read;
  // Transport rdma: ask for the pages' location and READ them; after a failed or changed READ, the bytes come inline.
  bool locate = ctx_->rdma != nullptr;
  const Deadline dl = ctx_->NewDeadline();
  Backoff backoff(ctx_->time, std::chrono::microseconds(200), std::chrono::microseconds(12800), dl);
  bool saw_locked = false;
  const std::string locked_msg = what + ": still locked by a commit at the deadline";
  for (;;) {
    msg::EncodeFetchRequest(
        msg::FetchRequest{ds, first, count, msg::kFetchCoherent | (locate ? msg::kFetchLocate : 0u), d.info.generation},
        &payload);
    cache_->BeginFetch(ds, first, count);
    Status st = peers_->CallLoaded(owner, msg::kFetchPages, payload, &resp, dl);
    std::vector<msg::FetchedPage> meta;
    const uint8_t* pages = nullptr;
    Status decoded;
    if (st.ok() && msg::IsFetchLocated(resp.data(), resp.size(), count)) {
      // Pushes refused until EndFetch below include any that raced with the READ (they make the install stale).
      msg::FetchLocation at;
      Status rs = msg::DecodeFetchLocated(resp.data(), resp.size(), count, &meta, &at);
      if (rs.ok()) rs = ReadLocated(owner, at, count, dl, &read);
      if (!rs.ok()) {
        (void)cache_->EndFetch(ds, first, count);
        ctx_->counters.rdma_read_fallbacks++;
        if (rs.code() != Code::kAborted) ctx_->Log("engine: " + what + ": " + rs.ToString() + "; fetched with the bytes");
        locate = false;  // again, with the bytes in the answer
        continue;
      }
      pages = read.data();
      ctx_->counters.bytes_in += read.size();
    } else if (st.ok()) {
      decoded = msg::DecodeFetchResponse(resp.data(), resp.size(), count, false, &meta, &pages);
    }
    const std::vector<uint64_t> refused = cache_->EndFetch(ds, first, count);
    if (locate && st.code() == Code::kInvalidArgument) {
      // An owner from before kFetchLocate refuses the flag as malformed: ask it again for the bytes (a cluster
      // moving to rdma while some nodes still run the older engine).
      ctx_->counters.rdma_read_fallbacks++;
      locate = false;
      continue;
    }
    HOTPOT_RETURN_IF_ERROR(decoded);
    if (st.ok()) {
      ctx_->counters.bytes_in += resp.size();
      std::vector<uint64_t> installed;
      bool stale = false;
      HOTPOT_RETURN_IF_ERROR(cache_->InstallFetched(d, first, meta, pages, refused, &installed, &stale));
      ctx_->counters.faults_remote += installed.size();
      NoteFetch(ds, owner, first, count, installed.size(), mono0, unix0);
      if (!installed.empty()) HOTPOT_RETURN_IF_ERROR(d.store->Persist(installed));
      if (!stale) return Status::Ok();
      // A push of a newer version was refused while the fetch was in flight: retry the pages still absent.
      bool any_absent = false;
      for (uint32_t i = 0; i < count; i++) any_absent = any_absent || d.store->GetMeta(first + i).state == PageState::kAbsent;
      if (!any_absent) return Status::Ok();
    } else if (st.reason() == msg::kReasonPageLocked) {
      saw_locked = true;  // the owner serves it once the commit is released
    } else if (saw_locked && st.code() == Code::kDeadlineExceeded) {
      return Status(Code::kUnavailable, msg::kReasonPageLocked, locked_msg);  // the budget ran out while it stayed locked
    } else {
      return st.Prefixed(what + ": ");
    }
    // Leave the last retry some time to complete instead of sending it with a nearly expired deadline.
    if (!backoff.Wait()) return Status(Code::kUnavailable, msg::kReasonPageLocked, locked_msg);
    ctx_->counters.fetch_retries++;
  }
}

Status Fetcher::ReadLocated(uint32_t owner, const msg::FetchLocation& at, uint32_t count, Deadline deadline,
                            std::vector<uint8_t>* out) {
  out->resize(size_t(count) * kPageSize);
  HOTPOT_RETURN_IF_ERROR(ctx_->rdma->ReadRemote(owner, at.region, at.offset, out->data(), out->size(), deadline));
  for (uint32_t i = 0; i < count; i++)
    if (Crc32c(out->data() + size_t(i) * kPageSize, kPageSize) != at.crc[i])
      return Status(Code::kAborted, "rdma read of node " + std::to_string(owner) + "'s page changed since its answer");
  ctx_->counters.rdma_page_reads += count;
  return Status::Ok();
}

void Fetcher::NoteFetch(uint64_t ds, uint32_t owner, uint64_t first, uint32_t count, uint64_t installed,
                        uint64_t mono0, uint64_t unix0) {
  observe::Observer* obs = ctx_->obs;
  const uint64_t ns = observe::MonoNowNs() - mono0;
  observe::ThreadFetchRuns()++;
  obs->fetch_latency().Add(ns);
  if (obs->events().enabled(observe::EventKind::kFaultRemote)) {
    observe::Event e;
    e.kind = observe::EventKind::kFaultRemote;
    e.node = owner;
    e.dataset = ds;
    e.page = first;
    e.count = installed;
    e.latency_ns = ns;
    obs->Emit(e);
  }
  if (obs->SampleFault()) {
    // A sampled remote fault is a root span of its own trace (faults carry no app context).
    observe::SpanRecord r;
    r.name = "hotpot.fault.remote";
    observe::NewTraceId(r.trace_id);
    observe::NewSpanId(r.span_id);
    r.start_unix_ns = unix0;
    r.end_unix_ns = unix0 + ns;
    r.int_attrs = {{"hotpot.dataset", int64_t(ds)},         {"hotpot.page", int64_t(first)},
                   {"hotpot.pages", int64_t(count)},        {"hotpot.owner", int64_t(owner)},
                   {"hotpot.node", int64_t(ctx_->self())}, {"hotpot.latency_us", int64_t(ns / 1000)}};
    obs->AddSpan(std::move(r));
  }
}

size_t Fetcher::RefreshFromOwners(const DatasetState& d, const std::vector<uint64_t>& pages,
                                  std::vector<uint64_t>* unchecked, std::vector<uint64_t>* failed,
                                  bool wait_unlocked, bool pass) {
  const uint64_t ds = d.info.id;
  size_t total = 0;
  auto cached = [&](uint64_t pg) {
    const PageState st = d.store->GetMeta(pg).state;
    return st == PageState::kCommitted || st == PageState::kRedundant;
  };
  for (size_t i = 0; i < pages.size() && !ctx_->shut.load();) {
    uint32_t owner = 0;
    if (pages[i] >= d.store->page_count() || !cached(pages[i]) || !ChunkOwner(d, pages[i], &owner) ||
        owner == ctx_->self()) {
      i++;  // absent, owned here, or unknown: nothing to compare with
      continue;
    }
    // A run of consecutive cached pages of one owner, at most one FETCH message.
    size_t j = i + 1;
    uint32_t o2 = 0;
    while (j < pages.size() && j - i < msg::kMaxFetchPages && pages[j] == pages[j - 1] + 1 &&
           pages[j] < d.store->page_count() && cached(pages[j]) && ChunkOwner(d, pages[j], &o2) && o2 == owner)
      j++;
    const uint32_t count = uint32_t(j - i);
    if (!view_->IsAlive(owner)) {
      // Nobody can commit to these pages while their owner is down, and nobody else can say whether our copy is
      // current: keep it (it may be the last copy) and check it once the owner is back.
      unchecked->insert(unchecked->end(), pages.begin() + long(i), pages.begin() + long(j));
      i = j;
      continue;
    }
    std::vector<uint8_t> payload, resp;
    const bool revalidate = !wait_unlocked;
    uint32_t flags = msg::kFetchCoherent;
    if (revalidate) flags |= msg::kFetchRevalidate | (pass ? msg::kFetchPass : 0u);
    msg::EncodeFetchRequest(msg::FetchRequest{ds, pages[i], count, flags}, &payload);
    const Deadline dl = ctx_->NewDeadline();
    Backoff backoff(ctx_->time, std::chrono::microseconds(200), std::chrono::microseconds(51200), dl);
    Status st;
    for (;;) {
      st = peers_->CallLoaded(owner, msg::kFetchPages, payload, &resp, dl);
      if (revalidate || st.reason() != msg::kReasonPageLocked || !backoff.Wait()) break;
    }
    std::vector<msg::FetchedPage> meta;
    const uint8_t* data = nullptr;
    if (st.ok()) st = msg::DecodeFetchResponse(resp.data(), resp.size(), count, revalidate, &meta, &data);
    std::vector<uint64_t> installed;
    if (st.ok()) st = cache_->InstallChecked(d, pages[i], meta, data, &installed);
    if (!st.ok()) {
      failed->insert(failed->end(), pages.begin() + long(i), pages.begin() + long(j));
      i = j;
      continue;
    }
    if (!installed.empty()) (void)d.store->Persist(installed);
    total += installed.size();
    i = j;
  }
  return total;
}

}  // namespace engine
}  // namespace hotpot
