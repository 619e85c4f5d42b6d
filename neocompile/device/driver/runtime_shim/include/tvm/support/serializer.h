// neocompile: stand-in for tvm/support/serializer.h (left out of the apache-tvm wheel).
// Binary format: little-endian scalars, containers as a uint64 count then the elements.
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

static_assert(TVM_FFI_IO_NO_ENDIAN_SWAP, "this runtime build supports little-endian hosts only");

namespace tvm {
namespace support {

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) { s->Write(static_cast<const void*>(&v), sizeof(T)); }
  static bool Read(Stream* s, T* v) { return s->Read(static_cast<void*>(v), sizeof(T)) == sizeof(T); }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using U = std::underlying_type_t<T>;
  static void Write(Stream* s, const T& v) { Serializer<U>::Write(s, static_cast<U>(v)); }
  static bool Read(Stream* s, T* v) {
    U u;
    if (!Serializer<U>::Read(s, &u)) return false;
    *v = static_cast<T>(u);
    return true;
  }
};

namespace detail {
inline void WriteCount(Stream* s, size_t n) { Serializer<uint64_t>::Write(s, static_cast<uint64_t>(n)); }
inline bool ReadCount(Stream* s, size_t* n) {
  uint64_t v;
  if (!Serializer<uint64_t>::Read(s, &v)) return false;
  *n = static_cast<size_t>(v);
  return true;
}
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::string& v) {
    detail::WriteCount(s, v.size());
    if (!v.empty()) s->Write(static_cast<const void*>(v.data()), v.size());
  }
  static bool Read(Stream* s, std::string* v) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->resize(n);
    return n == 0 || s->Read(static_cast<void*>(&(*v)[0]), n) == n;
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::String& v) { Serializer<std::string>::Write(s, std::string(v)); }
  static bool Read(Stream* s, ffi::String* v) {
    std::string tmp;
    if (!Serializer<std::string>::Read(s, &tmp)) return false;
    *v = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::vector<T>& v) {
    detail::WriteCount(s, v.size());
    for (const T& e : v) Serializer<T>::Write(s, e);
  }
  static bool Read(Stream* s, std::vector<T>* v) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->resize(n);
    for (size_t i = 0; i < n; ++i) {
      T e;
      if (!Serializer<T>::Read(s, &e)) return false;
      (*v)[i] = std::move(e);
    }
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::pair<A, B>& v) {
    Serializer<A>::Write(s, v.first);
    Serializer<B>::Write(s, v.second);
  }
  static bool Read(Stream* s, std::pair<A, B>* v) {
    return Serializer<A>::Read(s, &v->first) && Serializer<B>::Read(s, &v->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::unordered_map<K, V>& m) {
    detail::WriteCount(s, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, std::unordered_map<K, V>* m) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    m->clear();
    for (size_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(s, &k) || !Serializer<V>::Read(s, &v)) return false;
      m->emplace(std::move(k), std::move(v));
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Array<T>& a) {
    detail::WriteCount(s, a.size());
    for (const T& e : a) Serializer<T>::Write(s, e);
  }
  static bool Read(Stream* s, ffi::Array<T>* a) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    ffi::Array<T> out;
    for (size_t i = 0; i < n; ++i) {
      T e;
      if (!Serializer<T>::Read(s, &e)) return false;
      out.push_back(std::move(e));
    }
    *a = std::move(out);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Map<K, V>& m) {
    detail::WriteCount(s, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, ffi::Map<K, V>* m) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    ffi::Map<K, V> out;
    for (size_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(s, &k) || !Serializer<V>::Read(s, &v)) return false;
      out.Set(std::move(k), std::move(v));
    }
    *m = std::move(out);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDataType& t) {
    Serializer<uint8_t>::Write(s, t.code);
    Serializer<uint8_t>::Write(s, t.bits);
    Serializer<uint16_t>::Write(s, t.lanes);
  }
  static bool Read(Stream* s, DLDataType* t) {
    return Serializer<uint8_t>::Read(s, &t->code) && Serializer<uint8_t>::Read(s, &t->bits) &&
           Serializer<uint16_t>::Read(s, &t->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDevice& d) {
    Serializer<int32_t>::Write(s, static_cast<int32_t>(d.device_type));
    Serializer<int32_t>::Write(s, d.device_id);
  }
  static bool Read(Stream* s, DLDevice* d) {
    int32_t type;
    if (!Serializer<int32_t>::Read(s, &type) || !Serializer<int32_t>::Read(s, &d->device_id)) return false;
    d->device_type = static_cast<DLDeviceType>(type);
    return true;
  }
};

}  // namespace support
}  // namespace tvm
#endif
