// Peer messages in (the transport's handler): decodes each request and hands it to the component that owns it.
#pragma once

#include "engine/committer.h"
#include "engine/core.h"
#include "engine/node_cache.h"
#include "engine/owner.h"
#include "engine/part_copies.h"
#include "engine/resolver.h"

namespace hotpot {
namespace engine {

class PeerDispatch {
 public:
  PeerDispatch(Context* ctx, ClusterView* view, NodeCache* cache, PartCopies* copies, Owner* owner,
               Committer* committer, Resolver* resolver)
      : ctx_(ctx), view_(view), cache_(cache), copies_(copies), owner_(owner), committer_(committer),
        resolver_(resolver) {}
  void Handle(const transport::Request& req, transport::Reply* reply);

 private:
  Status Prepare(uint32_t peer, const transport::Request& req, transport::Reply* reply);
  Status TxMessage(uint32_t peer, const transport::Request& req, transport::Reply* reply);
  Status PushBatch(const transport::Request& req, transport::Reply* reply);
  Status CopyPages(const transport::Request& req, transport::Reply* reply);

  Context* ctx_;
  ClusterView* view_;
  NodeCache* cache_;
  PartCopies* copies_;
  Owner* owner_;
  Committer* committer_;
  Resolver* resolver_;
};

}  // namespace engine
}  // namespace hotpot
