#include "common/random.h"

#include <sys/random.h>

#include <cerrno>

namespace hotpot {

Status RandomBytes(uint8_t* out, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::getrandom(out + done, len - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "getrandom(" + std::to_string(len - done) + " bytes)");
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace hotpot
