// The page: the unit of mapping, fetching, locking, versioning and pushing everywhere (the kernel's base page on
// x86-64, so a userfaultfd fault, a MAP_PRIVATE copy and a pool page are the same bytes).
#pragma once

#include <cstdint>

namespace hotpot {

constexpr uint64_t kPageSize = 4096;

}  // namespace hotpot
