#include "engine/peers.h"

#include "engine/messages.h"

namespace hotpot {
namespace engine {

Status Peers::Call(uint32_t node, uint16_t type, const std::vector<uint8_t>& payload, std::vector<uint8_t>* response,
                   Deadline deadline) {
  return ctx_->transport->Call(node, type, payload.data(), payload.size(), response, deadline, observe::CurrentTrace());
}

Status Peers::CallLoaded(uint32_t node, uint16_t type, const std::vector<uint8_t>& payload,
                         std::vector<uint8_t>* response, Deadline deadline) {
  Backoff backoff(ctx_->time, std::chrono::microseconds(500), std::chrono::microseconds(32000), deadline);
  for (;;) {
    Status st = Call(node, type, payload, response, deadline);
    // Not loaded there yet, or the receiver has not seen this node's rejoin yet: both pass within moments.
    const bool transient = st.reason() == msg::kReasonDatasetNotLoaded || st.reason() == msg::kReasonEpochAhead;
    if (!transient || !backoff.Wait()) return st;
  }
}

}  // namespace engine
}  // namespace hotpot
