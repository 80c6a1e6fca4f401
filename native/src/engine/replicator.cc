#include "engine/replicator.h"

#include <algorithm>
#include <mutex>

#include "engine/commit_plan.h"
#include "engine/fan_out.h"

namespace hotpot {
namespace engine {
namespace {
constexpr uint8_t kUnknown = 2;  // SendPages: the message carrying this page failed
}  // namespace

Status Replicator::Push(const PushPlan& plan, PushResult* out) {
  const uint32_t self = ctx_->self();
  const std::vector<uint32_t> alive = view_->AliveNodes();
  const std::vector<uint64_t>& pages = *plan.pages;
  const std::vector<uint64_t>& versions = *plan.versions;
  const std::vector<uint64_t>& bases = *plan.bases;
  const size_t n = pages.size();
  const bool open = plan.commit_id != 0;
  out->holders.assign(n, std::set<uint32_t>{self});
  out->gone.assign(n, {});
  out->replicated.assign(n, {});
  out->marked = msg::MarkedNodes{};
  out->failed.clear();
  out->unknown.assign(n, {});
  std::vector<std::vector<msg::PushRange>> ranges(n);
  for (const msg::Range& r : *plan.ranges) {
    const size_t idx = size_t(std::lower_bound(pages.begin(), pages.end(), r.offset / kPageSize) - pages.begin());
    ranges[idx].push_back(msg::PushRange{r.offset, r.new_bytes});
  }
  // Post-commit bytes of a page (the owner holds it locked, so it cannot change): for replicas and for nodes that
  // answered a push "stale". Read once, on first need, by whichever send needs it (the sends run at once).
  std::vector<std::vector<uint8_t>> page_data(n);
  std::mutex page_mu;
  const WholePageFn whole = [&](size_t i, const std::vector<uint8_t>** page) {
    std::lock_guard<std::mutex> l(page_mu);
    if (page_data[i].empty()) {
      page_data[i].resize(kPageSize);
      PageMeta m;
      Status st = plan.store->ReadPage(pages[i], page_data[i].data(), &m);
      if (!st.ok()) {
        page_data[i].clear();
        return st;
      }
    }
    *page = &page_data[i];
    return Status::Ok();
  };
  // A multi-part commit's pushes carry its open mark (the committer sends DONE). A one-shot commit's pushes to a
  // node are one step when they fit one message; when they do not, they are marked open under this owner's own
  // key (self, txid) and this owner sends DONE after the last one.
  msg::PushBatch proto;
  proto.committer = open ? plan.key.committer : self;
  proto.flags = open ? msg::kPushOpen : 0;
  proto.commit_id = open ? plan.commit_id : plan.key.txid;
  proto.dataset = plan.ds;
  std::set<uint32_t> self_marked, self_missed;
  // One batch per node, built here (CheckFlag asks the owner), sent to every node at once (FanOut), the answers
  // recorded here in node order.
  struct Send {
    uint32_t node = 0;
    const std::vector<size_t>* idx = nullptr;  // indexes into pages
    msg::PushBatch b;
    Status st;
    std::vector<uint8_t> accepted;
    bool split = false;
  };
  const auto send_all = [&](std::vector<Send>& sends) {
    RunSteps(ctx_->fan(), sends.size(), [&](size_t k) {
      Send& x = sends[k];
      const WholePageFn of_node = [&](size_t j, const std::vector<uint8_t>** page) { return whole((*x.idx)[j], page); };
      x.st = SendPages(x.node, x.b, of_node, &x.accepted, &x.split);
    });
  };
  // A node that may hold part of the commit's pushes but not all (a message failed): told to check its copies.
  const auto missed = [&](const Send& x) {
    if (open) out->marked.marked.push_back(x.node);  // it may have applied the batch even if the answer is lost
    if (x.split && !open) self_marked.insert(x.node);
    if (x.st.ok()) return;
    out->failed.push_back(x.node);
    if (open) out->marked.missed.push_back(x.node);
    else if (x.split) self_missed.insert(x.node);
  };
  std::vector<Send> sends;
  for (const auto& kv : plan.targets) {
    const uint32_t node = kv.first;
    if (!view_->IsAlive(node)) {
      // Stays a cacher (its copy is fixed by the first push after it returns), but its copy missed this version.
      for (size_t i : kv.second) out->unknown[i].push_back(node);
      continue;
    }
    Send x;
    x.node = node;
    x.idx = &kv.second;
    x.b = proto;
    for (size_t i : kv.second) x.b.pages.push_back(msg::PushPage{versions[i], bases[i], ranges[i]});
    CheckFlag(plan, node, &x.b);
    sends.push_back(std::move(x));
  }
  send_all(sends);
  for (const Send& x : sends) {
    missed(x);
    ctx_->counters.coherence_pushes++;
    ctx_->Note(observe::EventKind::kCoherencePush, x.node, plan.ds, pages[x.idx->front()], x.idx->size());
    for (size_t j = 0; j < x.idx->size(); j++) {
      const size_t i = (*x.idx)[j];
      if (x.accepted[j] == msg::kPushHeld) {
        out->holders[i].insert(x.node);
        ctx_->counters.coherence_pages++;
      } else if (x.accepted[j] == msg::kPushNotHeld) {
        out->gone[i].push_back(x.node);  // answered "not held": no longer a cacher
      } else {
        out->unknown[i].push_back(x.node);
      }
      // A failed message leaves the node a cacher: the next commit's push fixes its copy by version.
    }
    if (!x.st.ok())
      ctx_->LogLimited("push " + std::to_string(x.node),
                       "engine: push of " + std::to_string(x.idx->size()) + " pages of dataset " +
                           std::to_string(plan.ds) + " to node " + std::to_string(x.node) + ": " + x.st.ToString());
  }
  // Top-up: whole post-commit pages to more alive nodes (node-id order, ones without a copy) until N holders; each
  // round sends one batch per node (every node of the round at once), a node that fails is not tried again for that
  // page.
  std::vector<std::set<uint32_t>> tried(n);
  // Not to a node whose coherence push failed: a replica of one page of the part next to copies that missed the
  // part's other pages would show part of it there (the push gets one step per node, or none).
  for (uint32_t node : out->failed)
    for (size_t i = 0; i < n; i++) tried[i].insert(node);
  proto.flags |= msg::kPushReplica;
  for (;;) {
    std::map<uint32_t, std::vector<size_t>> round;
    for (size_t i = 0; i < n; i++) {
      size_t need = out->holders[i].size() < plan.replicas ? plan.replicas - out->holders[i].size() : 0;
      for (uint32_t node : alive) {
        if (need == 0) break;
        if (out->holders[i].count(node) || tried[i].count(node)) continue;
        tried[i].insert(node);
        round[node].push_back(i);
        need--;
      }
    }
    if (round.empty()) break;
    sends.clear();
    for (const auto& kv : round) {
      Send x;
      x.node = kv.first;
      x.idx = &kv.second;
      x.b = proto;
      for (size_t i : kv.second) {
        const std::vector<uint8_t>* page = nullptr;
        HOTPOT_RETURN_IF_ERROR(whole(i, &page));
        x.b.pages.push_back(msg::PushPage{versions[i], bases[i], {msg::PushRange{pages[i] * kPageSize, *page}}});
      }
      CheckFlag(plan, x.node, &x.b);
      sends.push_back(std::move(x));
    }
    send_all(sends);
    for (const Send& x : sends) {
      missed(x);
      for (size_t j = 0; j < x.idx->size(); j++) {
        const size_t i = (*x.idx)[j];
        if (x.accepted[j] == msg::kPushHeld) {
          out->holders[i].insert(x.node);
          out->replicated[i].push_back(x.node);
          ctx_->counters.replicas_sent++;
        } else if (x.accepted[j] != msg::kPushNotHeld) {
          out->unknown[i].push_back(x.node);  // it may have installed the replica: a cacher from now on
        }
      }
      if (x.st.ok()) ctx_->Note(observe::EventKind::kReplicaSent, x.node, plan.ds, pages[x.idx->front()], x.idx->size());
      else
        ctx_->Log("engine: replica of " + std::to_string(x.idx->size()) + " pages of dataset " +
                  std::to_string(plan.ds) + " to node " + std::to_string(x.node) + ": " + x.st.ToString());
    }
  }
  if (!self_marked.empty()) SendDone(plan.key.txid, self_marked, self_missed);
  uint32_t min_copies = UINT32_MAX;
  for (size_t i = 0; i < n; i++) min_copies = std::min(min_copies, uint32_t(out->holders[i].size()));
  out->copies = min_copies == UINT32_MAX ? 1 : min_copies;
  return Status::Ok();
}

Status Replicator::SendReplicas(uint32_t node, uint64_t ds, bool check, const std::vector<uint64_t>& pages,
                                const std::vector<uint64_t>& versions, const std::vector<std::vector<uint8_t>>& data,
                                std::vector<uint8_t>* accepted) {
  if (pages.size() > kMaxReplicaPages || versions.size() != pages.size() || data.size() != pages.size())
    return Status(Code::kInvalidArgument, "SendReplicas: at most 256 pages with a version and data each");
  msg::PushBatch b;
  b.committer = ctx_->self();
  b.flags = msg::kPushReplica | (check ? msg::kPushCheck : 0);
  b.commit_id = 0;
  b.dataset = ds;
  for (size_t i = 0; i < pages.size(); i++)
    // The base is not known here: a holder below version - 1 (or a version between) is told it missed a commit,
    // which at worst makes it check its copies.
    b.pages.push_back(msg::PushPage{versions[i], versions[i] == 0 ? 0 : versions[i] - 1,
                                    {msg::PushRange{pages[i] * kPageSize, data[i]}}});
  const WholePageFn whole = [&](size_t i, const std::vector<uint8_t>** page) {
    *page = &data[i];
    return Status::Ok();
  };
  bool split = false;
  Status st = SendPages(node, b, whole, accepted, &split);
  if (split) SendDone(0, {node}, {});  // not reached within kMaxReplicaPages (one message); closes the mark if it were
  // The caller (Owner::Rereplicate) records the event ("rereplicated") with the copies it could record.
  if (st.ok()) ctx_->counters.replicas_sent += uint64_t(std::count(accepted->begin(), accepted->end(), msg::kPushHeld));
  return st;
}

void Replicator::CheckFlag(const PushPlan& plan, uint32_t node, msg::PushBatch* b) {
  if (plan.suspect && plan.suspect(node)) b->flags |= msg::kPushCheck;
  else b->flags &= ~msg::kPushCheck;
}

Status Replicator::SendPages(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole,
                             std::vector<uint8_t>* accepted, bool* split) {
  const std::vector<std::pair<size_t, size_t>> cuts = plan::CutBatches(b.pages);
  *split = cuts.size() > 1;
  if (!*split) {
    Status st = SendBatch(node, b, whole, 0, accepted);
    if (!st.ok()) accepted->assign(b.pages.size(), kUnknown);
    return st;
  }
  accepted->assign(b.pages.size(), kUnknown);
  Status first;
  msg::PushBatch part;
  part.committer = b.committer;
  part.flags = b.flags | msg::kPushOpen;
  part.commit_id = b.commit_id;
  part.dataset = b.dataset;
  std::vector<uint8_t> got;
  for (const auto& cut : cuts) {
    part.pages.assign(b.pages.begin() + long(cut.first), b.pages.begin() + long(cut.second));
    Status st = SendBatch(node, part, whole, cut.first, &got);
    if (st.ok()) std::copy(got.begin(), got.end(), accepted->begin() + long(cut.first));
    else if (first.ok()) first = st;
  }
  return first;
}

Status Replicator::SendBatch(uint32_t node, const msg::PushBatch& b, const WholePageFn& whole, size_t first,
                             std::vector<uint8_t>* accepted) {
  auto send = [&](const msg::PushBatch& batch) {
    std::vector<uint8_t> payload;
    msg::EncodePushBatch(batch, &payload);
    ctx_->counters.bytes_out += payload.size();
    Status st = peers_->CallLoaded(node, msg::kPushBatch, payload, accepted, ctx_->NewDeadline());
    if (st.ok() && accepted->size() != batch.pages.size())
      st = Status(Code::kInternal, "PUSH_BATCH answer of " + std::to_string(accepted->size()) + " bytes for " +
                                       std::to_string(batch.pages.size()) + " pages");
    return st;
  };
  Status st = send(b);
  if (!st.ok() || std::find(accepted->begin(), accepted->end(), msg::kPushStale) == accepted->end()) return st;
  // The node holds some pages at an older version (it missed a commit) and applied nothing: once more, with those
  // pages whole. A whole page is installed over any older copy, so this cannot answer stale again.
  msg::PushBatch again = b;
  for (size_t i = 0; i < b.pages.size(); i++) {
    if ((*accepted)[i] != msg::kPushStale) continue;
    const std::vector<uint8_t>* page = nullptr;
    HOTPOT_RETURN_IF_ERROR(whole(first + i, &page));
    again.pages[i].ranges = {msg::PushRange{b.pages[i].ranges[0].offset / kPageSize * kPageSize, *page}};
  }
  st = send(again);
  if (st.ok())
    for (uint8_t& a : *accepted)
      if (a == msg::kPushStale) a = msg::kPushNotHeld;
  return st;
}

void Replicator::SendDone(uint64_t id, const std::set<uint32_t>& nodes, const std::set<uint32_t>& check) {
  const std::vector<uint32_t> to(nodes.begin(), nodes.end());
  RunSteps(ctx_->fan(), to.size(), [&](size_t i) {  // to every node at once
    const uint32_t node = to[i];
    if (node == ctx_->self()) {
      cache_->CloseMark(MarkKey{ctx_->self(), id}, check.count(node) != 0);  // a push to this node may have failed
      return;
    }
    if (!view_->IsAlive(node)) return;
    std::vector<uint8_t> payload, resp;
    msg::EncodeDone(id, check.count(node) != 0, &payload);
    Status st = peers_->Call(node, msg::kDone, payload, &resp, ctx_->NewDeadline());
    if (!st.ok())
      ctx_->Log("engine: DONE of commit " + std::to_string(id) + " to node " + std::to_string(node) + ": " + st.ToString());
  });
}

}  // namespace engine
}  // namespace hotpot
