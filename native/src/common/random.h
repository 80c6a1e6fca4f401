// Cryptographic random bytes from the kernel (getrandom(2)), for handshake nonces.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace hotpot {

// Fills `out` with `len` bytes from the kernel CSPRNG. Retries on EINTR and short reads; never falls back to
// a weaker source (a predictable nonce would let a recorded handshake be replayed).
Status RandomBytes(uint8_t* out, size_t len);

}  // namespace hotpot
