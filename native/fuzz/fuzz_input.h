// Helpers shared by the fuzz targets (native/fuzz/*_fuzz.cc).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/fd.h"

namespace hotpot_fuzz {

// Longer inputs are cut before going on a socket: they stay below the socket buffer, so sending never blocks.
constexpr size_t kMaxSocketInput = 64 * 1024;

// A connected unix socket pair whose `peer` end has sent the input and shut down its writing side, so a reader on
// `local` gets the input and then EOF instead of waiting for more. `peer` stays open while the pair lives, so what
// the code under test writes back is accepted.
struct SocketInput {
  hotpot::UniqueFd local, peer;
};

// False when the sockets could not be set up (the input is then skipped).
inline bool PutOnSocket(const uint8_t* data, size_t size, SocketInput* out) {
  if (size > kMaxSocketInput) size = kMaxSocketInput;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  out->local.reset(sv[0]);
  out->peer.reset(sv[1]);
  for (size_t off = 0; off < size;) {
    ssize_t n = ::send(out->peer.get(), data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return ::shutdown(out->peer.get(), SHUT_WR) == 0;
}

// A seed for a target whose first input byte selects what it decodes.
inline std::vector<uint8_t> Selected(uint8_t selector, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> v{selector};
  v.insert(v.end(), body.begin(), body.end());
  return v;
}

}  // namespace hotpot_fuzz
