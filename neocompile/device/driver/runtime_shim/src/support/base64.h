// neocompile: base64 streams (stand-in for src/support/base64.h, left out of the wheel).
#ifndef TVM_SUPPORT_BASE64_H_
#define TVM_SUPPORT_BASE64_H_
#include <tvm/support/io.h>

#include <string>

namespace tvm {
namespace support {
namespace b64detail {
inline const char* Alphabet() { return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"; }
inline int Decode(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace b64detail

/*! Decodes base64 text read from another stream. */
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* in) : in_(in) {}
  void InitPosition() {}
  using Stream::Read;
  using Stream::Write;
  size_t Read(void* ptr, size_t size) final {
    unsigned char* out = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (nbits_ >= 8) {
        nbits_ -= 8;
        out[n++] = static_cast<unsigned char>((acc_ >> nbits_) & 0xFF);
        continue;
      }
      char c;
      if (done_ || in_->Read(&c, 1) != 1) break;
      if (c == '=') {
        done_ = true;
        break;
      }
      int v = b64detail::Decode(c);
      if (v < 0) continue;  // whitespace and the like
      acc_ = ((acc_ << 6) | static_cast<unsigned>(v)) & 0xFFFFFF;
      nbits_ += 6;
    }
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }

 private:
  Stream* in_;
  unsigned acc_ = 0;
  int nbits_ = 0;
  bool done_ = false;
};

/*! Encodes bytes as base64 text into another stream; call Finish() at the end. */
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;
  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* in = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      buf_[nbuf_++] = in[i];
      if (nbuf_ == 3) Flush();
    }
    return size;
  }
  size_t Read(void*, size_t) final { return 0; }
  void Finish() {
    if (nbuf_ != 0) Flush();
  }

 private:
  void Flush() {
    const char* a = b64detail::Alphabet();
    unsigned v = (buf_[0] << 16) | ((nbuf_ > 1 ? buf_[1] : 0) << 8) | (nbuf_ > 2 ? buf_[2] : 0);
    char text[4] = {a[(v >> 18) & 63], a[(v >> 12) & 63], nbuf_ > 1 ? a[(v >> 6) & 63] : '=',
                    nbuf_ > 2 ? a[v & 63] : '='};
    out_->Write(static_cast<const void*>(text), 4);
    nbuf_ = 0;
  }
  Stream* out_;
  unsigned char buf_[3] = {0, 0, 0};
  int nbuf_ = 0;
};
}  // namespace support
}  // namespace tvm
#endif
