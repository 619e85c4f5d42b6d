// neocompile: small helpers (stand-in for src/support/utils.h, left out of the wheel).
#ifndef TVM_SUPPORT_UTILS_H_
#define TVM_SUPPORT_UTILS_H_
#include <cctype>
#include <cstdlib>
#include <string>

namespace tvm {
namespace support {
inline bool IsNumber(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}
inline bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}
inline bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
template <typename T>
inline T GetEnv(const char* key, T default_value);
template <>
inline int GetEnv<int>(const char* key, int default_value) {
  const char* v = std::getenv(key);
  return v ? std::atoi(v) : default_value;
}
template <>
inline std::string GetEnv<std::string>(const char* key, std::string default_value) {
  const char* v = std::getenv(key);
  return v ? std::string(v) : default_value;
}
inline size_t HashCombine(size_t key, size_t value) {
  return key ^ (value + 0x9e3779b9 + (key << 6) + (key >> 2));
}
}  // namespace support
}  // namespace tvm
#endif
