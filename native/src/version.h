// Engine identity: reported through the N-API boundary and the C ABI.
#pragma once

namespace hotpot {

// Bumped when the data-plane wire format or the pool layout changes incompatibly.
constexpr int kEngineProtocolVersion = 1;

const char* engineVersion();
const char* engineBuildInfo();

}  // namespace hotpot
