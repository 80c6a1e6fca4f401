// Calls to other nodes over the engine's transport, carrying the current trace context. A leaf over the transport.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/core.h"

namespace hotpot {
namespace engine {

class Peers {
 public:
  explicit Peers(Context* ctx) : ctx_(ctx) {}
  Status Call(uint32_t node, uint16_t type, const std::vector<uint8_t>& payload, std::vector<uint8_t>* response,
              Deadline deadline);
  // The same, riding out a peer whose control plane has not loaded the dataset yet (it learns new datasets from the
  // dispatcher a moment after they are created) or has not yet seen this node rejoin (kReasonEpochAhead): those
  // answers are retried until the deadline.
  Status CallLoaded(uint32_t node, uint16_t type, const std::vector<uint8_t>& payload, std::vector<uint8_t>* response,
                    Deadline deadline);

 private:
  Context* ctx_;
};

}  // namespace engine
}  // namespace hotpot
