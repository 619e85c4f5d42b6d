// neocompile: minimal stand-in for the tvm/support/io.h header the apache-tvm wheel leaves out.
#ifndef TVM_SUPPORT_IO_H_
#define TVM_SUPPORT_IO_H_
#include <cstddef>
#include <cstdint>
namespace tvm {
namespace support {
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};
class Stream {
 public:
  virtual ~Stream() = default;
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;
  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "type is not serializable");
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool Read(T* value) {
    static_assert(Serializer<T>::enabled, "type is not serializable");
    return Serializer<T>::Read(this, value);
  }
  template <typename T>
  void WriteArray(const T* values, size_t n) {
    for (size_t i = 0; i < n; ++i) Write<T>(values[i]);
  }
  template <typename T>
  bool ReadArray(T* values, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (!Read<T>(values + i)) return false;
    }
    return true;
  }
};
}  // namespace support
}  // namespace tvm
#endif
