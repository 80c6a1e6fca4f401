#include "common/peer_cred.h"

#include <errno.h>
#include <sys/socket.h>

#include <cstring>
#include <string>

namespace hotpot {

Status ReadSocketPeer(int fd, SocketPeer* out) {
  struct ucred uc {};
  socklen_t len = sizeof(uc);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0 || len != sizeof(uc))
    return Status(Code::kFailedPrecondition, std::string("getsockopt SO_PEERCRED: ") + std::strerror(errno));
  out->pid = uc.pid;
  out->uid = uc.uid;
  out->gid = uc.gid;
  // The kernel answers ERANGE with the size it needs when the buffer is too small: grow once to that size.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; attempt++) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      out->groups = std::move(groups);
      return Status::Ok();
    }
    if (errno != ERANGE || glen / sizeof(gid_t) > kMaxPeerGroups) break;
    groups.resize(glen / sizeof(gid_t));
  }
  return Status(Code::kFailedPrecondition, std::string("getsockopt SO_PEERGROUPS: ") + std::strerror(errno));
}

}  // namespace hotpot
