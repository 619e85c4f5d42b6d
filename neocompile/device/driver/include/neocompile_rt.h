/*
 * neocompile_rt.h: the C API of a neocompile package's runtime (lib/libneocompile_rt.so).
 *
 * Load a package folder, ask for its inputs and outputs, set inputs from your memory, run, read outputs.
 * Plain C (C89 types plus <stdint.h>/<stddef.h>); no C++ type crosses this boundary.
 *
 *     nrt_model* m;
 *     if (nrt_load("/opt/models/resnet", 0, &m) != 0) { fprintf(stderr, "%s\n", nrt_last_error()); return 1; }
 *     nrt_set_input(m, 0, pixels, "float32", 4, shape);    // 64-byte aligned: borrowed, not copied
 *     nrt_run(m);
 *     nrt_get_output(m, 0, scores, sizeof scores);       // copied out; or nrt_output_data() to read in place
 *     nrt_free(m);
 *
 * Build: cc app.c -I<package>/include -L<package>/lib -lneocompile_rt -Wl,-rpath,<package>/lib
 *
 * Conventions
 *   - Every function but nrt_last_error/nrt_version/nrt_abi_version returns 0 on success and -1 on failure; on
 *     failure nrt_last_error() gives the reason as text (per calling thread, valid until that thread's next call).
 *   - Indexes are 0-based, in the order of the package's compiled.meta "Model.Inputs" / "Model.Outputs".
 *   - dtypes are spelled as numpy and TVM spell them: "float32", "float16", "int64", "uint8", "bool", ...
 *   - A dimension the model takes at any size (a named dimension such as an XGBoost model's rows "N") is reported
 *     as -1 by nrt_input_shape; nrt_output_shape reports the shapes of the last run.
 *
 * Memory
 *   - nrt_set_input borrows the caller's buffer when it is 64-byte aligned (the alignment TVM's kernels assume)
 *     and copies it otherwise. A borrowed buffer must stay valid and unchanged until the input is set again or the
 *     handle is freed; nrt_input_borrowed() says which happened.
 *   - Outputs belong to the handle: nrt_output_data pointers stay valid until the next nrt_run or nrt_free.
 *
 * Threads
 *   - A handle runs the model with its own thread count: nrt_load's num_threads, else $NEOCOMPILE_NUM_THREADS,
 *     else $TVM_NUM_THREADS, else every CPU the process may run on (its affinity mask); nrt_set_num_threads
 *     changes it. The worker threads are not pinned to CPUs unless TVM_BIND_THREADS is set.
 *   - Handles are independent: two threads may run two handles at the same time.
 *   - One handle is safe to share: its calls are serialized by a lock in the handle, never run at once. A
 *     set-run-read sequence from two threads can still interleave between calls; call nrt_lock/nrt_unlock around
 *     the sequence (a recursive lock: the calls inside take it again) or give each thread its own handle.
 *
 * Versions: NRT_ABI_VERSION changes only when an existing function's meaning or signature changes; functions may
 * be added within an ABI version. nrt_abi_version() is the ABI of the library actually loaded.
 */
#ifndef NEOCOMPILE_RT_H_
#define NEOCOMPILE_RT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NRT_ABI_VERSION 1

#if defined(__GNUC__)
#define NRT_API __attribute__((visibility("default")))
#else
#define NRT_API
#endif

/* A loaded package. Opaque. */
typedef struct nrt_model nrt_model;

/* The ABI version of the loaded library (compare with NRT_ABI_VERSION). */
NRT_API int nrt_abi_version(void);
/* "neocompile-rt <abi> (apache-tvm <version>, apache-tvm-ffi <version>)". Static storage. */
NRT_API const char* nrt_version(void);
/* Why the calling thread's last failed call failed ("" if none). Valid until this thread's next nrt_ call. */
NRT_API const char* nrt_last_error(void);

/* Load a package: its folder (holding compiled.meta, compiled.so, compiled.params), or the path of its compiled.so.
 * Checks, before any model code loads: the package's device type is "cpu", it was compiled for this process's CPU
 * architecture, this system's glibc is not older than the package's MinGlibc. num_threads: 0 = the default (see
 * Threads above), else the count. */
NRT_API int nrt_load(const char* path, int num_threads, nrt_model** out);
/* Free a handle (NULL is allowed). No other call on the handle may be running or follow. */
NRT_API int nrt_free(nrt_model* model);

NRT_API int nrt_num_inputs(nrt_model* model, int* out);
NRT_API int nrt_num_outputs(nrt_model* model, int* out);
/* Name, dtype and shape of an input. *name and *dtype are owned by the handle. *shape points to *ndim values owned
 * by the handle (-1: any size). Without compiled.meta (a bare compiled.so), dtype is "" and ndim -1: unknown. */
NRT_API int nrt_input_name(nrt_model* model, int index, const char** name);
NRT_API int nrt_input_dtype(nrt_model* model, int index, const char** dtype);
NRT_API int nrt_input_shape(nrt_model* model, int index, int* ndim, const int64_t** shape);
/* The index of the input called name (fails naming the inputs there are). */
NRT_API int nrt_input_index(nrt_model* model, const char* name, int* index);
/* Name and dtype of an output as compiled.meta declares them (a run checks the model's outputs against them);
 * without compiled.meta, "output_<i>" and the dtype of the last run. */
NRT_API int nrt_output_name(nrt_model* model, int index, const char** name);
NRT_API int nrt_output_dtype(nrt_model* model, int index, const char** dtype);

/* Set input `index` from `data`: a C-contiguous array of dtype `dtype` and shape shape[0..ndim). The dtype and shape
 * must be the ones the package declares (any size for a -1 dimension); the error names both. Borrowed when data is
 * 64-byte aligned, else copied (see Memory). */
NRT_API int nrt_set_input(nrt_model* model, int index, const void* data, const char* dtype, int ndim,
                          const int64_t* shape);
/* 1 if input `index` currently borrows the caller's memory, 0 if the handle holds a copy. */
NRT_API int nrt_input_borrowed(nrt_model* model, int index, int* out);

/* Run the model on the inputs set. Every input must have been set. */
NRT_API int nrt_run(nrt_model* model);

/* After a run: the rank, shape, size in bytes and data of output `index`. nrt_output_shape: with shape NULL, sets
 * *ndim to the rank; else *ndim is how many values shape holds (fails if fewer than the rank), the shape is written
 * and *ndim set to the rank. */
NRT_API int nrt_output_shape(nrt_model* model, int index, int* ndim, int64_t* shape);
NRT_API int nrt_output_bytes(nrt_model* model, int index, size_t* nbytes);
NRT_API int nrt_output_data(nrt_model* model, int index, const void** data);
/* Copy output `index` into dst, which holds nbytes bytes (fails if that is less than the output's size). */
NRT_API int nrt_get_output(nrt_model* model, int index, void* dst, size_t nbytes);

/* The handle's thread count: set (n >= 1) or read. */
NRT_API int nrt_set_num_threads(nrt_model* model, int n);
NRT_API int nrt_get_num_threads(nrt_model* model, int* out);

/* The handle's recursive lock, for a set-run-read sequence shared between threads (see Threads). */
NRT_API int nrt_lock(nrt_model* model);
NRT_API int nrt_unlock(nrt_model* model);

#ifdef __cplusplus
}
#endif

#endif /* NEOCOMPILE_RT_H_ */
