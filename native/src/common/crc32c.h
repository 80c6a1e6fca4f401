// CRC32C (Castagnoli): the checksum of wire frames, pool meta headers and redo records.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hotpot {

// CRC32C of data[0, len), continuing from `crc` (the value returned for the bytes before, 0 to start).
uint32_t Crc32c(const uint8_t* data, size_t len, uint32_t crc = 0);

}  // namespace hotpot
