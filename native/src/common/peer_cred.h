// Who is at the other end of a connected unix socket: SO_PEERCRED (pid, uid, primary gid, fixed at connect) and
// SO_PEERGROUPS (the supplementary groups), so a dataset's group bits count for every group an app is in.
#pragma once

#include <sys/types.h>

#include <vector>

#include "common/status.h"

namespace hotpot {

struct SocketPeer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (may include gid), at most kMaxPeerGroups
};

// NGROUPS_MAX on Linux.
constexpr size_t kMaxPeerGroups = 65536;

// Fills *out for a connected AF_UNIX socket; an errno status naming the option that failed otherwise.
Status ReadSocketPeer(int fd, SocketPeer* out);

}  // namespace hotpot
