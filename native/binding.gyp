{
  "target_defaults": {
    "sources": ["<!@(find src -name '*.cc' | sort)"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "include", "src"],
    "defines": ["NAPI_VERSION=9", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_DISABLE_CPP_EXCEPTIONS"],
    "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2", "-fno-exceptions"],
    "cflags_cc!": ["-std=gnu++17", "-std=gnu++20", "-fno-rtti"],
    "libraries": ["-lpthread", "-lcrypto"]
  },
  "targets": [
    {
      "target_name": "hotpot_native"
    },
    {
      "target_name": "hotpot_native_test",
      "defines": ["HOTPOT_TEST_BUILD"]
    }
  ]
}
