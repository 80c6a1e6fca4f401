#include "version.h"

namespace hotpot {

const char* engineVersion() { return "0.1.0"; }

const char* engineBuildInfo() {
  return "hotpot-engine 0.1.0; g++ " __VERSION__ "; c++" 
#if __cplusplus >= 201703L
         "17"
#endif
         "; built " __DATE__ " " __TIME__;
}

}  // namespace hotpot
