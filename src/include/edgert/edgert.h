/*
 * edgert.h — the C API of libedgert, the embeddable edgert runtime.
 *
 * Conventions
 * - Every fallible call returns an edgert_status. On failure a thread-local
 *   message describing the problem is available from edgert_last_error() until
 *   the next failing call on the same thread. Nothing aborts on bad input.
 * - Objects are opaque handles created by edgert_<noun>_create() and released
 *   by edgert_<noun>_free(); free(NULL) is a no-op.
 * - Buffers are owned by the caller unless a function says otherwise.
 * - Thread safety is documented per handle. Free functions that take no handle
 *   are thread-safe.
 * - Every enum ends in a *_MAX_ENUM member (0x7fffffff) that is not a value:
 *   it keeps the enum 32-bit and makes any non-negative int a representable
 *   value in C++, so an unknown value from a C caller is rejected with an
 *   error instead of being undefined behaviour.
 */
#ifndef EDGERT_EDGERT_H
#define EDGERT_EDGERT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define EDGERT_API __declspec(dllexport)
#elif defined(__GNUC__)
#define EDGERT_API __attribute__((visibility("default")))
#else
#define EDGERT_API
#endif

#if defined(__cplusplus) && __cplusplus >= 201703L
#define EDGERT_NODISCARD [[nodiscard]]
#else
#define EDGERT_NODISCARD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes, grouped by range:
 *   0        success
 *   1..99    argument errors (the caller passed something malformed)
 *   100..199 update-packet and stream errors (what arrived is bad)
 *   200..299 resource and I/O errors
 *   300..399 backend errors (CUDA missing or failing)
 *   900..    internal errors (a bug in edgert: please report) */
typedef enum edgert_status {
  EDGERT_OK = 0,

  EDGERT_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad enum, bad option */
  EDGERT_ERR_SHAPE = 2,            /* dimensions inconsistent or unsupported */
  EDGERT_ERR_DTYPE = 3,            /* element type unsupported */
  EDGERT_ERR_INDEX_OUT_OF_RANGE = 4,
  EDGERT_ERR_INDEX_UNSORTED = 5, /* indices not strictly increasing */
  EDGERT_ERR_BUFFER_TOO_SMALL = 6,

  EDGERT_ERR_PACKET_TRUNCATED = 100,
  EDGERT_ERR_PACKET_BAD_MAGIC = 101,
  EDGERT_ERR_PACKET_UNSUPPORTED_VERSION = 102,
  EDGERT_ERR_PACKET_BAD_CRC = 103,
  EDGERT_ERR_PACKET_BAD_MAC = 104,
  EDGERT_ERR_PACKET_WRONG_MODEL = 105,
  EDGERT_ERR_PACKET_VERSION_MISMATCH = 106, /* base version != active version */
  EDGERT_ERR_PACKET_STALE = 107,            /* target version not newer */
  EDGERT_ERR_PACKET_MALFORMED = 108,        /* inconsistent lengths/counts/codings */
  EDGERT_ERR_PACKET_BAD_TENSOR = 109,       /* unknown or duplicate tensor id, size mismatch */
  EDGERT_ERR_PACKET_MAC_REQUIRED = 110,     /* slot has a key but packet is unauthenticated */
  EDGERT_ERR_PACKET_UNSIGNED = 111,         /* slot requires release signatures, packet has none */
  EDGERT_ERR_PACKET_BAD_SIGNATURE = 112,    /* a delegation or packet signature does not verify */
  EDGERT_ERR_PACKET_UNKNOWN_KEY = 113,      /* signer is not the root / delegated key, or a revoked delegation */
  EDGERT_ERR_PACKET_EXPIRED = 114,          /* the delegation or the packet signature has expired */
  EDGERT_ERR_PACKET_BAD_ROTATION = 115,     /* a root rotation not signed by the current root */

  EDGERT_ERR_OUT_OF_MEMORY = 200,
  EDGERT_ERR_IO = 201,
  EDGERT_ERR_NOT_FOUND = 202,
  EDGERT_ERR_CORRUPT_FILE = 203,

  EDGERT_ERR_BACKEND_UNAVAILABLE = 300, /* backend not compiled in or no device */
  EDGERT_ERR_CUDA = 301,                /* a CUDA call failed; see last error */

  EDGERT_ERR_INTERNAL = 900,

  EDGERT_STATUS_MAX_ENUM = 0x7fffffff
} edgert_status;

/* Short constant name of a status ("EDGERT_ERR_SHAPE"); never NULL. */
EDGERT_API const char* edgert_status_name(edgert_status status);

/* Message of the last failing call on this thread ("" if none). The pointer is
 * valid until the next edgert call on this thread. */
EDGERT_API const char* edgert_last_error(void);

/* Library version, e.g. "0.1.0", and its parts. */
EDGERT_API const char* edgert_version_string(void);
EDGERT_API void edgert_version(int* major, int* minor, int* patch);

/* ---- Backends ----------------------------------------------------------
 * Every hot path runs on a backend: the CPU (always compiled in) or CUDA
 * (compiled in when the library was built with a CUDA compiler; usable when a
 * driver and a device are present). The library holds a registry of the
 * backends it was built with; hot-path calls take an edgert_backend and, for
 * CUDA, a stream:
 *
 *   EDGERT_BACKEND_CPU   host buffers; runs synchronously on the calling
 *                        thread (and the kernel thread pool).
 *   EDGERT_BACKEND_CUDA  device-accessible buffers on the calling thread's
 *                        current device; enqueued on `stream`. Fails with
 *                        EDGERT_ERR_BACKEND_UNAVAILABLE when the CUDA kernels
 *                        are not compiled in or no device is usable.
 *   EDGERT_BACKEND_AUTO  CUDA when it is compiled in and usable and the
 *                        buffers are CUDA device (or managed) memory, else the
 *                        CPU: the same choice edgert's Python ops make. Host
 *                        and device buffers mixed in one call are rejected
 *                        (EDGERT_ERR_INVALID_ARGUMENT). Telling them apart
 *                        asks the CUDA runtime (cudaPointerGetAttributes),
 *                        which initialises it on first use when a device is
 *                        usable; pass EDGERT_BACKEND_CPU to avoid that.
 *
 * A `stream` argument is a cudaStream_t (NULL: the legacy default stream) and
 * is ignored by the CPU. CUDA calls are asynchronous unless a function says
 * otherwise: buffers must stay valid until the stream has finished them, and
 * errors of the running kernel surface at the next synchronisation. */

typedef enum edgert_backend {
  EDGERT_BACKEND_CPU = 0,
  EDGERT_BACKEND_CUDA = 1,
  EDGERT_BACKEND_AUTO = 2, /* a choice resolved per call, not a backend of its own */
  EDGERT_BACKEND_MAX_ENUM = 0x7fffffff
} edgert_backend;

typedef struct edgert_backend_info {
  int compiled;     /* 1 if this backend's kernels are in the library */
  int usable;       /* 1 if it can run now (CUDA: driver and device present) */
  int device_count; /* CPU: 1; CUDA: devices visible */
  int num_threads;  /* CPU: worker threads used by kernels; CUDA: 0 */
  char detail[160]; /* human-readable, e.g. "openmp, 2 threads" or the CUDA error */
} edgert_backend_info;

/* Fills *info for one backend (CPU or CUDA). Never fails for those two:
 * a CUDA backend that is not compiled in reports compiled = 0. AUTO is not a
 * backend (EDGERT_ERR_INVALID_ARGUMENT, as for unknown values and info NULL;
 * *info is then unchanged). Probing CUDA may initialise the CUDA runtime. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_backend_query(edgert_backend backend,
                                                               edgert_backend_info* info);

/* Constant name of a backend value ("EDGERT_BACKEND_CUDA"); "?" for unknown
 * values; never NULL. */
EDGERT_API const char* edgert_backend_name(edgert_backend backend);

/* Resolves `requested` for a call over buffers[0..count) without running
 * anything: *chosen receives EDGERT_BACKEND_CPU or EDGERT_BACKEND_CUDA, the
 * backend a hot-path call with these buffers would run on (rules above).
 * buffers: count pointers (NULL entries are skipped; buffers may be NULL when
 *   count is 0); only inspected, never dereferenced.
 * Fails, leaving *chosen unchanged, with EDGERT_ERR_INVALID_ARGUMENT (unknown
 * backend, chosen NULL, buffers NULL with count > 0, host and device buffers
 * mixed under AUTO, pageable host memory or another device's memory under
 * CUDA) or EDGERT_ERR_BACKEND_UNAVAILABLE (CUDA requested, not compiled in or
 * no usable device). Thread-safe. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_backend_select(edgert_backend requested,
                                                                const void* const* buffers, size_t count,
                                                                edgert_backend* chosen);

/* Compile-time flags as a string ("build=Release openmp=1 arch=x86_64 sanitize="). */
EDGERT_API const char* edgert_build_flags(void);

/* ---- Sparse delta patching -------------------------------------------- */

typedef enum edgert_dtype {
  EDGERT_F32 = 0,
  EDGERT_F16 = 1,
  EDGERT_I32 = 2,
  EDGERT_U32 = 3,
  EDGERT_C64 = 4,
  EDGERT_DTYPE_MAX_ENUM = 0x7fffffff
} edgert_dtype;

typedef enum edgert_patch_mode {
  EDGERT_PATCH_ADD = 0,
  EDGERT_PATCH_SET = 1,
  EDGERT_PATCH_MODE_MAX_ENUM = 0x7fffffff
} edgert_patch_mode;

/* Applies weights[indices[i]] (+)= values[i] for i < count on the CPU.
 * weights: n_weights elements of weights_dtype (F32 or F16), contiguous.
 * indices: count elements of index_dtype (I32 or U32), strictly increasing.
 * values:  count elements of values_dtype (F32 or F16).
 * All indices are checked before anything is written: on any failure the
 * weights are unchanged (EDGERT_ERR_INDEX_OUT_OF_RANGE, _UNSORTED, _DTYPE,
 * _INVALID_ARGUMENT for a null buffer or bad mode). ADD sums in fp32 and
 * rounds once to the weights' dtype (nearest even). The model slot applies
 * update packets with this same arithmetic. Equivalent to
 * edgert_sparse_patch_on(EDGERT_BACKEND_CPU, NULL, ...). */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_sparse_patch(void* weights, edgert_dtype weights_dtype,
                                                              size_t n_weights, const void* indices,
                                                              edgert_dtype index_dtype, const void* values,
                                                              edgert_dtype values_dtype, size_t count,
                                                              edgert_patch_mode mode);

/* Reads out[i] = weights[indices[i]] converted to out_dtype (F32 or F16), for
 * i < count: the values a patch is about to overwrite (undo) or has written
 * (verification). Same index rules as edgert_sparse_patch; on failure `out`
 * is unchanged. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_sparse_gather(const void* weights, edgert_dtype weights_dtype,
                                                               size_t n_weights, const void* indices,
                                                               edgert_dtype index_dtype, size_t count, void* out,
                                                               edgert_dtype out_dtype);

/* edgert_sparse_patch on a chosen backend (see "Backends"). Same arguments,
 * checks and rounding; the buffers live where the backend needs them.
 * CUDA: synchronous (the indices are validated on the device and the patch is
 * applied only if all are valid; the call returns when it is done), ordered
 * after the work already queued on `stream`.
 * On any failure, including EDGERT_ERR_BACKEND_UNAVAILABLE, the weights are
 * unchanged. Not safe against concurrent writers of the same weights. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_sparse_patch_on(edgert_backend backend, void* stream, void* weights,
                                                                 edgert_dtype weights_dtype, size_t n_weights,
                                                                 const void* indices, edgert_dtype index_dtype,
                                                                 const void* values, edgert_dtype values_dtype,
                                                                 size_t count, edgert_patch_mode mode);

/* edgert_sparse_gather on a chosen backend. CUDA: the indices are validated
 * synchronously, the gather itself is enqueued on `stream` (`out` is ready
 * when the stream is). On failure `out` is unchanged. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_sparse_gather_on(edgert_backend backend, void* stream,
                                                                  const void* weights, edgert_dtype weights_dtype,
                                                                  size_t n_weights, const void* indices,
                                                                  edgert_dtype index_dtype, size_t count, void* out,
                                                                  edgert_dtype out_dtype);

/* ---- MMNet detector ------------------------------------------------------
 * A detector holds the trained parameters for G channel groups and detects
 * batches of received vectors y = H x + n. Complex numbers are interleaved
 * (re, im) float pairs (C99 float _Complex layout).
 * Thread safety: one handle may be used by one thread at a time. */

typedef enum edgert_modulation {
  EDGERT_QAM4 = 4,
  EDGERT_QAM16 = 16,
  EDGERT_QAM64 = 64,
  EDGERT_MODULATION_MAX_ENUM = 0x7fffffff
} edgert_modulation;

typedef struct edgert_mmnet_params {
  int32_t n_layers;    /* T */
  int32_t n_rx;        /* Nr */
  int32_t n_tx;        /* Nt */
  int32_t n_groups;    /* G: channels held at once */
  edgert_modulation modulation;
  int32_t iid_form;    /* 1: A_t = theta1_t H^H (theta1 [T, G]); 0: full A_t [T, G, Nt, Nr] */
} edgert_mmnet_params;

typedef struct edgert_mmnet edgert_mmnet;

EDGERT_API edgert_mmnet_params edgert_mmnet_default_params(void);

/* Creates a detector; parameters are zero until set. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_mmnet_create(const edgert_mmnet_params* params,
                                                              edgert_mmnet** out);
EDGERT_API void edgert_mmnet_free(edgert_mmnet* det);

/* Copies in the channels H [G, Nr, Nt], noise variances sigma2 [G] (complex
 * noise power per receive antenna), the linear operators (A [T, G, Nt, Nr]
 * complex, or theta1 [T, G] real for the iid form) and theta2 [T, G, Nt].
 * On failure the detector keeps its previous parameters. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_mmnet_set(edgert_mmnet* det, const float* H,
                                                           const float* sigma2, const float* A_or_theta1,
                                                           const float* theta2);

/* Detects y [G, B, Nr] into x_hat [G, B, Nt] (soft, complex) and, if
 * decisions != NULL, constellation indices [G, B, Nt] (row-major QAM index:
 * (real level) * sqrt(M) + (imag level), levels ascending). */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_mmnet_detect(edgert_mmnet* det, const float* y,
                                                              int64_t batch, float* x_hat,
                                                              int32_t* decisions);

/* ---- Vision and detection kernels on a chosen backend ---------------------
 * Buffers are caller-owned, contiguous, row-major float32 (complex: interleaved
 * (re, im) pairs), placed where `backend` needs them (see "Backends"); outputs
 * must not overlap inputs. Shapes are int64 element counts; a call with no
 * output elements succeeds without touching any buffer (which may then be
 * NULL). Every argument is checked before any output is written: on failure
 * the outputs are unchanged. EDGERT_ERR_SHAPE: a negative dimension or a shape
 * the backend cannot run; EDGERT_ERR_INVALID_ARGUMENT: a NULL buffer for a
 * non-empty problem, a bad enum value, or misplaced buffers; the backend errors
 * of edgert_backend_select. CUDA calls are asynchronous on `stream`.
 * Thread safety: free functions; concurrent calls are safe when their outputs
 * are distinct. */

typedef enum edgert_activation {
  EDGERT_ACTIVATION_NONE = 0,
  EDGERT_ACTIVATION_RELU = 1,
  EDGERT_ACTIVATION_MAX_ENUM = 0x7fffffff
} edgert_activation;

/* Spatially-adaptive convolution (SRVC): the frame is tiled into patch x patch
 * tiles (grid Ph = ceil(height / patch) rows, Pw = ceil(width / patch)
 * columns); tile (i, j) of image b has its own 3x3 kernel and bias, and the
 * convolution sees zeros outside its own tile (and outside the frame).
 *   x       [n, c_in, height, width]
 *   kernels [n, Ph, Pw, f_out, c_in, 3, 3] (conv2d weight layout per tile)
 *   bias    [n, Ph, Pw, f_out]
 *   out     [n, f_out, height, width] = activation(conv3x3(tile) + bias)
 * patch: 1..256 (the CUDA kernel needs (patch + 2)^2 * c_in <= 1296 and the
 * tile plus the f_out * c_in * 9 weights within 48 KiB of shared memory;
 * EDGERT_ERR_SHAPE otherwise). activation: NONE or RELU. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_adaptive_conv(edgert_backend backend, void* stream, const float* x,
                                                               const float* kernels, const float* bias, int64_t n,
                                                               int64_t c_in, int64_t height, int64_t width,
                                                               int64_t f_out, int64_t patch,
                                                               edgert_activation activation, float* out);

/* DNNGrad block averaging (OneAdapt):
 *   grad [n, c, height, width] -> out [n, ceil(height / block), ceil(width / block)],
 * the mean of |grad| over the channels and each block x block block; partial
 * edge blocks average their valid pixels; c = 0 gives zeros (grad may then be
 * NULL). block > 0 (EDGERT_ERR_INVALID_ARGUMENT otherwise). */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_block_average(edgert_backend backend, void* stream,
                                                               const float* grad, int64_t n, int64_t c,
                                                               int64_t height, int64_t width, int64_t block,
                                                               float* out);

/* The Gaussian (QAM posterior) denoiser of MMNet: for z = x + w with x uniform
 * over unit-energy square M-QAM and w ~ CN(0, var), the posterior mean
 * E[x | z] and variance E|x - E[x | z]|^2, element-wise.
 *   z       [n] complex (2n floats)
 *   var     [n] real, finite and >= 0 (floored at 1e-9); the CPU rejects
 *           non-finite z or var with EDGERT_ERR_INVALID_ARGUMENT
 *   mean    [n] complex (2n floats), written
 *   var_out [n] real, written; NULL to skip the variance
 * modulation: EDGERT_QAM4, _QAM16 or _QAM64 (EDGERT_ERR_INVALID_ARGUMENT
 * otherwise). */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_gaussian_denoise(edgert_backend backend, void* stream,
                                                                  const float* z, const float* var, int64_t n,
                                                                  edgert_modulation modulation, float* mean,
                                                                  float* var_out);

/* ---- Model manifests, update packets and model slots ----------------------
 * The binary formats are specified in docs/spec/update-packet.md. A manifest names
 * a model (128-bit id) and its tensor table (names, dtypes, shapes, and a hash
 * of the table); an update packet moves a model from a base version to a
 * target version by sparse, dense or full-snapshot tensor updates.
 *
 * A slot holds one model on the device: the manifest plus two weight buffers
 * (active and shadow). edgert_slot_apply() verifies a whole packet (magic,
 * format version, model id, version chain, sizes, bounds, CRC32C, and the
 * HMAC-SHA256 when a key is set) before touching memory, decodes it into the
 * shadow buffer and swaps atomically; readers never see a torn model. On any
 * failure the active weights and version are byte-identical to before.
 *
 * Thread safety: edgert_slot_apply/_load/_set_key/_set_trust/_set_hook are serialised by
 * the slot (one writer at a time); readers (_acquire/_release, _read_tensor,
 * _version) may run concurrently with a writer from any thread. */

#define EDGERT_MODEL_ID_BYTES 16
#define EDGERT_MAX_DIMS 8

typedef struct edgert_tensor_info {
  char name[128];      /* NUL-terminated, truncated if longer */
  edgert_dtype dtype;  /* F32 or F16 */
  int32_t ndim;
  int64_t shape[EDGERT_MAX_DIMS];
  uint64_t numel;
  uint64_t byte_offset; /* offset of this tensor inside the slot's weight buffer */
  uint64_t byte_size;
} edgert_tensor_info;

typedef struct edgert_packet_header {
  uint16_t format_version;
  uint16_t flags;
  uint8_t model_id[EDGERT_MODEL_ID_BYTES];
  uint64_t base_version;
  uint64_t target_version;
  uint32_t tensor_count;
  uint64_t payload_length;
  int full_snapshot; /* 1 if the packet replaces every tensor (resync) */
  int authenticated; /* 1 if the packet carries an HMAC-SHA256 */
  int has_signature; /* 1 if the packet carries a release signature block */
  uint32_t signature_length; /* bytes of that block (0 without) */
} edgert_packet_header;

/* HMAC-SHA256 (RFC 2104) of data under key, written to out[32]; the same
 * primitive that authenticates packets, for transports' handshakes. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_hmac_sha256(const uint8_t* key, size_t key_len, const void* data,
                                                             size_t len, uint8_t out[32]);
/* SHA-256 of data, written to out[32] (the transports' handshake hashes the
 * HELLO body with it). Fails only on a null buffer; out is then unchanged. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_sha256(const void* data, size_t len, uint8_t out[32]);
/* Constant-time comparison of two n-byte MAC tags: 1 if equal. */
EDGERT_API int edgert_mac_equal(const uint8_t* a, const uint8_t* b, size_t n);

/* Parses and checks only the fixed header (magic, format version, lengths);
 * does not verify CRC or MAC. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_packet_inspect(const uint8_t* packet, size_t len,
                                                                edgert_packet_header* out);

/* The newest update-packet format this library decodes (it decodes every
 * format from 1 up to it). Devices announce it to servers (wire protocol 2)
 * so that servers only send formats the device understands. */
EDGERT_API uint16_t edgert_packet_max_format(void);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (0 to start), as used
 * by packets, manifests and snapshot files; exposed for transports that frame
 * packets. crc32c("123456789") == 0xE3069283. Thread-safe. */
EDGERT_API uint32_t edgert_crc32c(uint32_t crc, const void* data, size_t len);

typedef struct edgert_slot edgert_slot;

/* Called after a new version became active, on the applying thread, with the
 * ids of the tensors the packet changed (valid only during the call). */
typedef void (*edgert_slot_hook)(void* user, uint64_t version, const uint32_t* changed_tensor_ids,
                                 size_t changed_count);

/* Creates a slot for the model described by a serialized manifest. Weights
 * start as zeros at version 0 (a device normally loads a snapshot or receives
 * a full-snapshot packet first). */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_create(const uint8_t* manifest, size_t manifest_len,
                                                             edgert_slot** out);
EDGERT_API void edgert_slot_free(edgert_slot* slot);

/* Requires every later packet to carry a valid HMAC-SHA256 under `key`
 * (per-device key, 16..64 bytes). key_len 0 removes the requirement. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_set_key(edgert_slot* slot, const uint8_t* key, size_t key_len);
/* Release signatures (docs/spec/update-packet.md, "Release signatures"). A device
 * pins the Ed25519 public key of the offline root and its version; packets carry
 * a signature block: root rotations (each signed by the root before it), the
 * root's delegation to an online release key (with a version and an expiry), and
 * the release key's signature over the packet with an expiry.
 *   root_key             raw Ed25519 public key (32 bytes) of root version root_version
 *   min_release_version  delegations below this version are refused as revoked
 *   fixed_time           the clock for expiry checks in Unix seconds; 0 reads the
 *                        wall clock (time()) at each packet */
typedef struct edgert_trust {
  uint8_t root_key[32];
  uint64_t root_version;
  uint64_t min_release_version;
  uint64_t fixed_time;
} edgert_trust;

/* 1 if this build verifies release signatures (CMake EDGERT_SIGNATURES: OpenSSL 3 or libsodium). */
EDGERT_API int edgert_signatures_available(void);
/* The Ed25519 implementation this build verifies with (CMake EDGERT_SIGNATURES_BACKEND): "sodium"
 * (libsodium), "openssl" (OpenSSL 3), or "" without signatures. A static string; thread-safe. */
EDGERT_API const char* edgert_signatures_backend(void);

/* Requires every later packet to carry a valid release signature under *trust
 * (copied); NULL removes the requirement. With trust set a packet is refused with
 * EDGERT_ERR_PACKET_UNSIGNED (no block), _BAD_SIGNATURE, _UNKNOWN_KEY (signer not
 * the root / the delegated key, or a delegation below the floor: revoked),
 * _EXPIRED (delegation or packet), _BAD_ROTATION (a root rotation not signed by
 * the current root), and a rolled-back target with _STALE, all before memory is
 * written. Each applied packet advances the trust: root rotations it carries are
 * adopted and the delegation floor rises to its delegation's version (read it
 * back with edgert_slot_get_trust and pin that on the next start). Fails with
 * EDGERT_ERR_BACKEND_UNAVAILABLE (trust unchanged) in a build without signatures. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_set_trust(edgert_slot* slot, const edgert_trust* trust);
/* The slot's current trust (after the rotations and delegations it applied);
 * EDGERT_ERR_NOT_FOUND when none is set. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_get_trust(edgert_slot* slot, edgert_trust* out);

EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_set_hook(edgert_slot* slot, edgert_slot_hook hook, void* user);

/* Verifies and applies one update packet (see above). The packet's base
 * version must equal the active version, except for full snapshots, which
 * only need a target version newer than the active one. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_apply(edgert_slot* slot, const uint8_t* packet, size_t len);

/* Hashing a packet while it arrives (docs/spec/update-packet.md, "Hashing on arrival"). A device that
 * receives a packet in pieces feeds each piece, in order, to a receiver of its slot; the receiver computes
 * the SHA-256 a release signature covers and, with the slot's key, the HMAC-SHA256, so that
 * edgert_slot_apply_received after the last byte costs the CRC32C, the Ed25519 verification(s) and the
 * apply instead of two more SHA-256 passes. Nothing is trusted from the receiver alone: the slot compares
 * its own CRC32C of the packet with the receiver's and refuses a mismatch (EDGERT_ERR_INVALID_ARGUMENT),
 * and every other check runs as in edgert_slot_apply.
 *
 * A receiver belongs to one slot and copies the slot's key when created (after an edgert_slot_set_key the
 * MAC is computed at apply time again). It allocates only when created. Not thread-safe: one thread feeds
 * and applies (the slot's own locking is unchanged). */
typedef struct edgert_receiver edgert_receiver;

/* A receiver for packets to `slot` (which must outlive it), ready for the first byte of a packet. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_receiver_create(edgert_slot* slot, edgert_receiver** out);
EDGERT_API void edgert_receiver_free(edgert_receiver* receiver);
/* Forgets the bytes fed so far: the next byte fed is a packet's first. */
EDGERT_API void edgert_receiver_reset(edgert_receiver* receiver);
/* The next `len` bytes of the packet (any split; bytes past the packet's MAC are counted, not hashed). */
EDGERT_API void edgert_receiver_update(edgert_receiver* receiver, const void* data, size_t len);
/* edgert_slot_apply of `packet`, which must be exactly the bytes fed to `receiver` since its last reset
 * (EDGERT_ERR_INVALID_ARGUMENT otherwise, nothing applied); a receiver whose bytes do not start with a packet
 * header gives the packet's own status. The receiver is reset afterwards, whatever the outcome. A null
 * receiver is edgert_slot_apply. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_apply_received(edgert_slot* slot, edgert_receiver* receiver,
                                                                     const uint8_t* packet, size_t len);

EDGERT_API uint64_t edgert_slot_version(const edgert_slot* slot);
EDGERT_API void edgert_slot_model_id(const edgert_slot* slot, uint8_t out[EDGERT_MODEL_ID_BYTES]);
EDGERT_API uint32_t edgert_slot_tensor_count(const edgert_slot* slot);
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_tensor_info(const edgert_slot* slot, uint32_t tensor_id,
                                                                  edgert_tensor_info* out);
/* Total bytes of the weight buffer (all tensors, packed as in tensor_info). */
EDGERT_API uint64_t edgert_slot_weights_size(const edgert_slot* slot);

/* Pins the active weights for reading: *weights points at the whole buffer
 * (edgert_slot_weights_size bytes), *version is its version. The buffer stays
 * valid and unchanged until edgert_slot_release(); appliers never write into
 * a pinned buffer. Pins are cheap; hold them for one inference. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_acquire(edgert_slot* slot, const void** weights,
                                                              uint64_t* version);
EDGERT_API void edgert_slot_release(edgert_slot* slot, const void* weights);

/* Copies one tensor of the active model (consistent with *version). */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_read_tensor(edgert_slot* slot, uint32_t tensor_id, void* dst,
                                                                  size_t dst_bytes, uint64_t* version);

/* Saves manifest hash, model id, version and weights atomically: writes
 * `path`.tmp completely, fsyncs it, renames it over `path` and fsyncs the
 * directory. Crash consistency: if the process dies or the power fails at any
 * point of a save, `path` afterwards holds the previous complete snapshot or
 * the new one, never a torn file (a leftover `path`.tmp is never read and is
 * truncated by the next save). On failure (EDGERT_ERR_IO) `path` is unchanged
 * and the temp file removed, except when only the final directory sync fails:
 * then `path` already holds the new snapshot (the message says so). Saves of
 * one slot are serialized; saving two slots, or two processes, to one path at
 * the same time is not supported. The slot itself is never changed by a save.
 * Load replaces the slot's state only if the file is intact and matches the
 * slot's manifest; otherwise the slot is unchanged. */
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_save(edgert_slot* slot, const char* path);
EDGERT_NODISCARD EDGERT_API edgert_status edgert_slot_load(edgert_slot* slot, const char* path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* EDGERT_EDGERT_H */
