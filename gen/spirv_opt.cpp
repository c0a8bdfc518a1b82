// spirv_opt.cpp - spirv-opt's performance recipe (the passes of
// `spirv-opt -O`) in-process: SPIRV-Tools has no C interface to its
// optimizer, so this is the project's one C++ file.  Exceptions never leave
// it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <spirv-tools/optimizer.hpp>
#include <string>
#include <vector>

extern "C" int tqg_spirv_optimize(const uint32_t *in, size_t n, uint32_t **out,
                                  size_t *out_n, char *err, size_t errn) {
  *out = nullptr;
  *out_n = 0;
  try {
    spvtools::Optimizer opt(SPV_ENV_VULKAN_1_1);
    std::string first;
    opt.SetMessageConsumer([&first](spv_message_level_t level, const char *,
                                    const spv_position_t &, const char *m) {
      if (level <= SPV_MSG_ERROR && first.empty()) first = m ? m : "";
    });
    opt.RegisterPerformancePasses();
    std::vector<uint32_t> result;
    if (!opt.Run(in, n, &result)) {
      std::snprintf(err, errn, "spirv-opt: %s",
                    first.empty() ? "failed" : first.c_str());
      return 0;
    }
    uint32_t *words =
        static_cast<uint32_t *>(std::malloc(result.size() * sizeof(uint32_t)));
    if (!words) {
      std::snprintf(err, errn, "spirv-opt: out of memory");
      return 0;
    }
    std::memcpy(words, result.data(), result.size() * sizeof(uint32_t));
    *out = words;
    *out_n = result.size();
    return 1;
  } catch (...) {
    std::snprintf(err, errn, "spirv-opt: out of memory");
    return 0;
  }
}
