/*
 * IEEE-754 binary format conversions used by TVM's sort and random kernels (libtvm_runtime_extra.so), which
 * include compiler-rt's builtin_fp16.h; the apache-tvm wheel does not ship that header. Written for neocompile:
 * generic over the bit layout (sign, exponent, significand), exact when widening, round-to-nearest-even when
 * narrowing, with infinities, NaNs and subnormals handled.
 */
#ifndef NEOCOMPILE_BUILTIN_FP16_H_
#define NEOCOMPILE_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace neocompile_fp {

template <typename T, typename Rep>
inline Rep BitsOf(T value) {
  static_assert(sizeof(T) == sizeof(Rep), "value and representation differ in size");
  Rep rep;
  std::memcpy(&rep, &value, sizeof(rep));
  return rep;
}

template <typename T, typename Rep>
inline T FromBits(Rep rep) {
  T value;
  std::memcpy(&value, &rep, sizeof(value));
  return value;
}

// Decoded finite value: (-1)^sign * sig * 2^exp2, with sig an integer (or a special: inf / nan).
struct Decoded {
  bool sign, inf, nan;
  uint64_t sig;
  int exp2;
  uint64_t nan_payload;  // significand bits of a NaN, left-aligned to 52 bits
};

template <typename Rep, int SigBits>
inline Decoded Decode(Rep rep) {
  constexpr int kBits = sizeof(Rep) * 8;
  constexpr int kExpBits = kBits - SigBits - 1;
  constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  constexpr uint64_t kSigMask = (uint64_t(1) << SigBits) - 1;
  uint64_t bits = static_cast<uint64_t>(rep);
  Decoded d{};
  d.sign = (bits >> (kBits - 1)) & 1;
  int exp = static_cast<int>((bits >> SigBits) & ((uint64_t(1) << kExpBits) - 1));
  uint64_t frac = bits & kSigMask;
  if (exp == (1 << kExpBits) - 1) {
    d.inf = frac == 0;
    d.nan = frac != 0;
    d.nan_payload = frac << (52 - SigBits);
    return d;
  }
  if (exp == 0) {  // zero or subnormal
    d.sig = frac;
    d.exp2 = 1 - kBias - SigBits;
  } else {
    d.sig = frac | (uint64_t(1) << SigBits);
    d.exp2 = exp - kBias - SigBits;
  }
  return d;
}

template <typename Rep, int SigBits>
inline Rep Encode(const Decoded& d) {
  constexpr int kBits = sizeof(Rep) * 8;
  constexpr int kExpBits = kBits - SigBits - 1;
  constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  constexpr int kMaxExp = (1 << kExpBits) - 1;
  const uint64_t sign = uint64_t(d.sign) << (kBits - 1);
  if (d.nan) {  // quiet NaN, keeping what fits of the payload
    uint64_t payload = d.nan_payload >> (52 - SigBits);
    payload |= uint64_t(1) << (SigBits - 1);
    return static_cast<Rep>(sign | (uint64_t(kMaxExp) << SigBits) | payload);
  }
  if (d.inf) return static_cast<Rep>(sign | (uint64_t(kMaxExp) << SigBits));
  if (d.sig == 0) return static_cast<Rep>(sign);
  // Normalise sig to exactly SigBits+1 bits (or fewer for subnormals), rounding to nearest, ties to even.
  uint64_t sig = d.sig;
  int exp2 = d.exp2;
  int width = 64 - __builtin_clzll(sig);
  int shift = width - (SigBits + 1);  // > 0: drop bits; < 0: add bits
  int biased = exp2 + shift + SigBits + kBias;
  if (biased < 1) shift += 1 - biased;  // subnormal: keep fewer bits
  if (shift > 64) {  // everything is below half of the smallest step: rounds to zero
    sig = 0;
  } else if (shift > 0) {
    uint64_t dropped = shift == 64 ? sig : sig & ((uint64_t(1) << shift) - 1);
    uint64_t half = uint64_t(1) << (shift - 1);
    sig = shift == 64 ? 0 : sig >> shift;
    exp2 += shift;
    if (dropped > half || (dropped == half && (sig & 1))) {
      sig += 1;
      if (sig == (uint64_t(1) << (SigBits + 1))) {  // carried into a new bit
        sig >>= 1;
        exp2 += 1;
      }
    }
  } else if (shift < 0) {
    sig <<= -shift;
    exp2 += shift;
  }
  if (sig == 0) return static_cast<Rep>(sign);
  biased = exp2 + SigBits + kBias;
  if (!(sig >> SigBits)) biased = 0;  // subnormal (or rounded up into the smallest normal below)
  if (biased >= kMaxExp) return static_cast<Rep>(sign | (uint64_t(kMaxExp) << SigBits));  // overflow: inf
  uint64_t frac = sig & ((uint64_t(1) << SigBits) - 1);
  return static_cast<Rep>(sign | (uint64_t(biased) << SigBits) | frac);
}

}  // namespace neocompile_fp

// The two entry points the TVM sources call, with compiler-rt's template signature.
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T, int DST_SIG_BITS>
inline DST_T __extendXfYf2__(SRC_T a) {
  using namespace neocompile_fp;
  Decoded d = Decode<SRC_REP_T, SRC_SIG_BITS>(BitsOf<SRC_T, SRC_REP_T>(a));
  return FromBits<DST_T, DST_REP_T>(Encode<DST_REP_T, DST_SIG_BITS>(d));
}

template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T, int DST_SIG_BITS>
inline DST_T __truncXfYf2__(SRC_T a) {
  using namespace neocompile_fp;
  Decoded d = Decode<SRC_REP_T, SRC_SIG_BITS>(BitsOf<SRC_T, SRC_REP_T>(a));
  return FromBits<DST_T, DST_REP_T>(Encode<DST_REP_T, DST_SIG_BITS>(d));
}

#endif  // NEOCOMPILE_BUILTIN_FP16_H_
