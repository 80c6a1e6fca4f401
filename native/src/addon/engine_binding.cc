// Placeholder until the engine binding lands (owned by the engine work).
#include "addon/bindings.h"

namespace hotpot {
namespace addon {
void InitEngineBinding(Napi::Env, Napi::Object) {}
}  // namespace addon
}  // namespace hotpot
