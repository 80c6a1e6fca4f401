// Placeholder until the shim binding lands (owned by the shim work).
#include "addon/bindings.h"

namespace hotpot {
namespace addon {
void InitShimBinding(Napi::Env, Napi::Object) {}
}  // namespace addon
}  // namespace hotpot
