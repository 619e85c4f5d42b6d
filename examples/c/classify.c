/* classify.c: run a neocompile package from C through its C API (include/neocompile_rt.h, lib/libneocompile_rt.so).
 *
 *   classify <package-folder> [threads]
 *
 * Fills every float input with a fixed pattern (element i = (i % 7) * 0.25 - 0.5; other dtypes: i % 7), runs the
 * model once and prints each output's name, dtype and shape, then the values of float32 outputs, one per line.
 *
 * Build on the device (or for it with its cross compiler), against the package itself:
 *   cc -std=c99 -O2 classify.c -I pkg/include -L pkg/lib -lneocompile_rt -Wl,-rpath,"$PWD/pkg/lib" -o classify
 *   aarch64-linux-gnu-gcc ... (the same flags) for a 64-bit ARM board; arm-linux-gnueabihf-gcc for armv7.
 */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neocompile_rt.h"

static int fail(const char* what) {
  fprintf(stderr, "classify: %s: %s\n", what, nrt_last_error());
  return 1;
}

static size_t dtype_bytes(const char* dtype) {
  if (strcmp(dtype, "bool") == 0) return 1;
  while (*dtype && (*dtype < '0' || *dtype > '9')) ++dtype;
  return (size_t)atoi(dtype) / 8;
}

static void fill(void* data, const char* dtype, size_t count) {
  size_t i;
  for (i = 0; i < count; ++i) {
    double v = (double)(i % 7);
    if (strcmp(dtype, "float32") == 0) ((float*)data)[i] = (float)(v * 0.25 - 0.5);
    else if (strcmp(dtype, "float64") == 0) ((double*)data)[i] = v * 0.25 - 0.5;
    else if (strcmp(dtype, "int64") == 0) ((int64_t*)data)[i] = (int64_t)v;
    else if (strcmp(dtype, "int32") == 0) ((int32_t*)data)[i] = (int32_t)v;
    else ((uint8_t*)data)[i * dtype_bytes(dtype)] = (uint8_t)v;
  }
}

int main(int argc, char** argv) {
  nrt_model* model = NULL;
  int n_in = 0, n_out = 0, i, d;
  void** buffers;
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s <package-folder> [threads]\n", argv[0]);
    return 2;
  }
  if (nrt_abi_version() != NRT_ABI_VERSION) {
    fprintf(stderr, "classify: built for C API %d, the package's library is %d\n", NRT_ABI_VERSION, nrt_abi_version());
    return 1;
  }
  if (nrt_load(argv[1], argc == 3 ? atoi(argv[2]) : 0, &model) != 0) return fail("load");
  printf("runtime: %s\n", nrt_version());
  if (nrt_num_inputs(model, &n_in) != 0) return fail("inputs");
  buffers = calloc((size_t)n_in, sizeof(void*));
  for (i = 0; i < n_in; ++i) {
    const char *name, *dtype;
    const int64_t* shape;
    int ndim;
    size_t count = 1;
    if (nrt_input_name(model, i, &name) || nrt_input_dtype(model, i, &dtype) || nrt_input_shape(model, i, &ndim, &shape))
      return fail("input");
    for (d = 0; d < ndim; ++d) count *= (size_t)(shape[d] < 0 ? 1 : shape[d]); /* any-size dimension: 1 */
    /* 64-byte aligned memory is borrowed by the runtime, not copied. */
    if (posix_memalign(&buffers[i], 64, count * dtype_bytes(dtype) + 64) != 0) return 1;
    fill(buffers[i], dtype, count);
    {
      int64_t given[16];
      for (d = 0; d < ndim && d < 16; ++d) given[d] = shape[d] < 0 ? 1 : shape[d];
      if (nrt_set_input(model, i, buffers[i], dtype, ndim, given) != 0) return fail("set_input");
    }
    printf("input %d: %s %s ndim %d\n", i, name, dtype, ndim);
  }
  if (nrt_run(model) != 0) return fail("run");
  if (nrt_num_outputs(model, &n_out) != 0) return fail("outputs");
  for (i = 0; i < n_out; ++i) {
    const char *name, *dtype;
    int64_t shape[16];
    int ndim;
    size_t bytes, k;
    const void* data;
    if (nrt_output_name(model, i, &name) || nrt_output_dtype(model, i, &dtype) || nrt_output_shape(model, i, &ndim, NULL) ||
        ndim > 16 || nrt_output_shape(model, i, &ndim, shape) || nrt_output_bytes(model, i, &bytes) ||
        nrt_output_data(model, i, &data))
      return fail("output");
    printf("output %d: %s %s shape", i, name, dtype);
    for (d = 0; d < ndim; ++d) printf(" %lld", (long long)shape[d]);
    printf("\n");
    if (strcmp(dtype, "float32") == 0)
      for (k = 0; k < bytes / 4; ++k) printf("%.9g\n", ((const float*)data)[k]);
  }
  for (i = 0; i < n_in; ++i) free(buffers[i]);
  free(buffers);
  nrt_free(model);
  return 0;
}
