// Model slots: three weight buffers, a lock-free reader protocol and a
// verified, atomic apply path. Design notes in docs/spec/update-packet.md ("Slots").
//
// Buffers. One buffer is active; readers pin it (per-buffer pin counts). The
// writer builds each new version in a non-active buffer whose pin count is 0,
// so readers never wait and never see a partly written model. With three
// buffers a writer finds a free one unless readers still hold pins on both
// older versions; then it yields until one pin drops (readers are never
// blocked, only the writer waits).
//
// Catch-up. The buffer the writer picks holds an older generation. Instead of
// copying the whole model it replays the coordinates changed by the last two
// packets (kept in change sets owned by the slot) from the active buffer, and
// falls back to a full copy when the history does not reach back far enough.
// A change set keeps the values its packet left at its sparse coordinates, so a
// replay streams (index, value) pairs instead of gathering from the active
// buffer (whose lines would all come from memory a second time). The last
// packet's sparse coordinates in a tensor that the new packet also updates
// sparsely are replayed interleaved with the apply (Pending): each run of 512
// new coordinates is preceded by the replayed coordinates up to its last index,
// so the weights' cache lines come from memory once, not once for the replay
// and again for the apply (both index sets are sorted).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core/error.hpp"
#include "core/half.hpp"
#include "kernels/sparse_apply.hpp"
#include "packet/bytes.hpp"
#include "packet/crc32c.hpp"
#include "packet/file_ops.hpp"
#include "packet/format.hpp"
#include "packet/receiver.hpp"
#include "packet/signature.hpp"

using edgert::detail::fail;
namespace pk = edgert::packet;

namespace {

constexpr int kBuffers = 3;
constexpr size_t kMaxKeyBytes = 64;
constexpr size_t kMinKeyBytes = 16;
constexpr size_t kHugePage = size_t{2} << 20;

struct Change {
  uint32_t tensor_id;
  bool dense;
  uint64_t stored_at;  // into ChangeSet::indices, or kNotStored
  uint64_t count;
};

// Coordinates written by one applied packet (generation from_gen -> to_gen).
struct ChangeSet {
  bool valid = false;
  bool complete = false;  // every sparse change has its indices stored
  uint64_t from_gen = 0;
  uint64_t to_gen = 0;
  std::vector<Change> changes;
  size_t n_changes = 0;
  std::vector<uint32_t> indices;
  std::vector<uint32_t> values;  // the weight bits at indices[j] after the packet (fp16: low 16 bits)
};

// The last packet's coordinates of one tensor still to be replayed into the buffer
// being built during this apply: weight bits vals[j] at idx[j], j < left, ascending.
struct Pending {
  const uint32_t* idx = nullptr;
  const uint32_t* vals = nullptr;
  uint64_t left = 0;
};

struct Buffer {
  uint8_t* data = nullptr;
  std::atomic<int32_t> pins{0};
  uint64_t version = 0;
  uint64_t gen = 0;  // identifies the content: equal gens hold equal bytes; 0 = unknown
};

}  // namespace

struct edgert_slot {
  pk::Manifest manifest;
  std::mutex writer;
  Buffer buffers[kBuffers];
  std::atomic<int> active{0};
  std::atomic<uint64_t> active_version{0};
  uint64_t next_gen = 2;
  uint8_t key[kMaxKeyBytes] = {0};
  size_t key_len = 0;
  uint64_t key_gen = 0;  // counts edgert_slot_set_key calls: a receiver's MAC is used only under its key
  bool trusted = false;  // release signatures required (edgert_slot_set_trust)
  pk::Trust trust{};
  pk::Trust trust_after{};  // what a packet being applied leaves
  edgert_slot_hook hook = nullptr;
  void* hook_user = nullptr;
  std::vector<pk::Entry> entries;
  std::vector<uint8_t> seen;
  std::vector<uint32_t> changed_ids;
  std::vector<uint16_t> probs16;  // format 2 value models (reset per packet)
  std::vector<uint16_t> probs8;
  std::vector<pk::RansTable> rans_tables;  // format 3 decode tables (rebuilt per packet)
  std::vector<uint8_t> value_store;  // format 2/3 values decoded while verifying
  std::vector<Pending> pending;  // per tensor: replay deferred into the apply (see "Catch-up")
  std::vector<uint8_t> sparse_now;  // per tensor: the packet being applied updates it sparsely
  ChangeSet sets[kBuffers];
  int fill_set = 0;  // the set the next packet records into
  std::mutex saver;  // one save at a time: saves of a slot share the temp file
  edgert::detail::FileOps file_ops = edgert::detail::system_file_ops();

  ~edgert_slot() {
    for (Buffer& b : buffers) ::operator delete(b.data, std::align_val_t(buffer_alignment()), std::nothrow);
  }
  uint64_t alloc_bytes() const { return manifest.weights_bytes ? manifest.weights_bytes : pk::kTensorAlignment; }
  // Buffers of 2 MiB or more start on a 2 MiB boundary so that they can be backed by huge pages
  // (see edgert_slot_create): a sparse apply touches most 4 KiB pages of the model.
  size_t buffer_alignment() const { return alloc_bytes() >= kHugePage ? kHugePage : pk::kTensorAlignment; }
};

namespace {

using ull = unsigned long long;

int pick_buffer(edgert_slot* s) {
  for (;;) {
    const int a = s->active.load();
    int best = -1;
    for (int i = 0; i < kBuffers; ++i) {
      if (i == a || s->buffers[i].pins.load() != 0) continue;
      if (best < 0 || s->buffers[i].gen > s->buffers[best].gen) best = i;
    }
    if (best >= 0) return best;
    std::this_thread::yield();
  }
}

const ChangeSet* find_set(const edgert_slot* s, uint64_t to_gen) {
  for (const ChangeSet& c : s->sets) {
    if (c.valid && c.complete && c.to_gen == to_gen) return &c;
  }
  return nullptr;
}

// Writes weight bits vals[j] at tensor elements idx[j], j < n.
void copy_coordinates(const pk::TensorDesc& d, const uint32_t* idx, const uint32_t* vals, uint64_t n,
                      uint8_t* to_tensor) {
  if (d.elem_bytes == 4) {
    uint32_t* to = reinterpret_cast<uint32_t*>(to_tensor);
    for (uint64_t j = 0; j < n; ++j) to[idx[j]] = vals[j];
  } else {
    uint16_t* to = reinterpret_cast<uint16_t*>(to_tensor);
    for (uint64_t j = 0; j < n; ++j) to[idx[j]] = static_cast<uint16_t>(vals[j]);
  }
}

// Replays change set c into dst (dense changes are copied from src). With defer, the sparse
// changes of tensors that s->sparse_now marks are left in s->pending for the apply.
void replay(edgert_slot* s, const ChangeSet& c, const uint8_t* src, uint8_t* dst, bool defer) {
  for (size_t i = 0; i < c.n_changes; ++i) {
    const Change& ch = c.changes[i];
    const pk::TensorDesc& d = s->manifest.tensors[ch.tensor_id];
    if (ch.dense) {
      std::memcpy(dst + d.offset, src + d.offset, d.bytes);
      continue;
    }
    const uint32_t* idx = c.indices.data() + ch.stored_at;
    const uint32_t* vals = c.values.data() + ch.stored_at;
    if (defer && s->sparse_now[ch.tensor_id]) {
      s->pending[ch.tensor_id] = Pending{idx, vals, ch.count};
      continue;
    }
    copy_coordinates(d, idx, vals, ch.count, dst + d.offset);
  }
}

// Brings buffer x to the active buffer's content, except for what it leaves in s->pending
// (replayed by the apply, then by flush_pending).
void catch_up(edgert_slot* s, int x, int a) {
  Buffer& bx = s->buffers[x];
  const Buffer& ba = s->buffers[a];
  if (bx.gen != 0 && bx.gen == ba.gen) return;
  const ChangeSet* last = find_set(s, ba.gen);
  if (bx.gen != 0 && last != nullptr) {
    if (last->from_gen == bx.gen) {
      replay(s, *last, ba.data, bx.data, true);
      return;
    }
    const ChangeSet* before = find_set(s, last->from_gen);
    if (before != nullptr && before->from_gen == bx.gen) {
      replay(s, *before, ba.data, bx.data, false);
      replay(s, *last, ba.data, bx.data, true);
      return;
    }
  }
  std::memcpy(bx.data, ba.data, s->manifest.weights_bytes);
}

// Replays a tensor's pending coordinates up to and including index `limit` (all of them for
// kReplayAll) into the tensor `to`.
constexpr uint64_t kReplayAll = ~0ull;
void replay_pending(Pending* p, const pk::TensorDesc& d, uint64_t limit, uint8_t* to) {
  if (p->left == 0) return;
  uint64_t n = p->left;
  if (limit != kReplayAll) {
    n = 0;
    while (n < p->left && p->idx[n] <= limit) ++n;
  }
  copy_coordinates(d, p->idx, p->vals, n, to);
  p->idx += n;
  p->vals += n;
  p->left -= n;
}

// Replays whatever the apply left pending (coordinates past a tensor's last new index).
void flush_pending(edgert_slot* s, uint8_t* dst) {
  for (size_t t = 0; t < s->pending.size(); ++t) {
    const pk::TensorDesc& d = s->manifest.tensors[t];
    replay_pending(&s->pending[t], d, kReplayAll, dst + d.offset);
  }
}

// What apply_run does around a sparse run besides applying it: replay the tensor's pending
// coordinates before each stage, and record the weight bits it leaves into the change set
// (record[j] for the run's coordinate j; null: the set does not keep this entry).
struct RunLog {
  Pending* pending;
  const pk::TensorDesc* desc;
  uint32_t* record;
};

// ---- value application: the device-side arithmetic of docs/spec/update-packet.md.
// Values go through the sparse-patch kernel's apply step (detail::sparse_apply),
// the same code as edgert_sparse_patch and ops.sparse_patch; the slot only
// stages them from the wire in native form.

// Stages values b .. b+m-1 of a run as fp32 (any coding but FP16; see apply_run).
void stage_f32(float* f32, uint8_t coding, const uint8_t* values, uint64_t b, size_t m, uint64_t first, float scale,
               const uint8_t* scales) {
  if (coding == pk::kValueF32) {
    for (size_t j = 0; j < m; ++j) f32[j] = pk::load_f32(values + 4 * (b + j));
  } else if (coding == pk::kValueQ4Block || coding == pk::kValueQ8Block) {
    for (size_t j = 0; j < m; ++j) {
      const uint64_t c = first + b + j;
      int32_t q;
      if (coding == pk::kValueQ8Block) {
        q = static_cast<int8_t>(values[b + j]);
      } else {
        const uint32_t nibble = (values[c >> 1] >> ((c & 1) * 4)) & 0xFu;
        q = static_cast<int32_t>(nibble ^ 8u) - 8;
      }
      f32[j] = static_cast<float>(q) * edgert::detail::half_to_float(pk::load_u16(scales + 2 * (c / pk::kQuantBlock)));
    }
  } else {
    for (size_t j = 0; j < m; ++j) f32[j] = static_cast<float>(static_cast<int8_t>(values[b + j])) * scale;
  }
}

// Applies n raw values of `coding` (format 1 codings) at idx[0..n), or densely
// from element 0 of w when idx is null. int8 values are dequantised here, each
// q * scale one fp32 product rounded once (built with -ffp-contract=off), and
// then added or set like any fp32 value. Block codings multiply by the fp16 scale
// of coordinate first + j's block (scales[(first + j) / 64]; exact in fp32).
// `values` points at the value of coordinate `first`, except for packed 4-bit q
// (kValueQ4Block), where it points at the nibbles of coordinate 0. `log`: see RunLog
// (sparse runs only).
void apply_run(uint8_t* w, edgert_dtype dtype, const uint32_t* idx, uint8_t coding, const uint8_t* values,
               uint64_t n, float scale, edgert_patch_mode mode, const uint8_t* scales = nullptr, uint64_t first = 0,
               const RunLog* log = nullptr) {
  constexpr uint64_t kStage = 512;
  float f32[kStage];
  uint16_t f16[kStage];
  const uint64_t elem_bytes = dtype == EDGERT_F16 ? 2 : 4;
  for (uint64_t b = 0; b < n; b += kStage) {
    const size_t m = static_cast<size_t>(std::min(kStage, n - b));
    uint8_t* wb = idx ? w : w + b * elem_bytes;
    const uint32_t* ib = idx ? idx + b : nullptr;
    if (log != nullptr && ib != nullptr) replay_pending(log->pending, *log->desc, ib[m - 1], w);
    if (coding == pk::kValueF16) {
      for (size_t j = 0; j < m; ++j) f16[j] = pk::load_u16(values + 2 * (b + j));
      edgert::detail::sparse_apply(wb, dtype, ib, f16, EDGERT_F16, m, mode);
    } else {
      stage_f32(f32, coding, values, b, m, first, scale, scales);
      edgert::detail::sparse_apply(wb, dtype, ib, f32, EDGERT_F32, m, mode);
    }
    if (log != nullptr && log->record != nullptr && ib != nullptr) {  // just written: the lines are in cache
      uint32_t* rec = log->record + b;
      if (elem_bytes == 4) {
        const uint32_t* wv = reinterpret_cast<const uint32_t*>(w);
        for (size_t j = 0; j < m; ++j) rec[j] = wv[ib[j]];
      } else {
        const uint16_t* wv = reinterpret_cast<const uint16_t*>(w);
        for (size_t j = 0; j < m; ++j) rec[j] = wv[ib[j]];
      }
    }
  }
}

edgert_patch_mode patch_mode(uint8_t mode) { return mode == pk::kModeSet ? EDGERT_PATCH_SET : EDGERT_PATCH_ADD; }

uint64_t value_size(uint8_t coding) { return coding == pk::kValueF32 ? 4 : coding == pk::kValueF16 ? 2 : 1; }

// Format 2 and 3 codings carry the raw values of a format 1 coding (both streams yield 4-bit block q
// as sign-extended bytes).
uint8_t raw_coding(uint8_t coding) {
  if (coding == pk::kValueF16Ac || coding == pk::kValueF16Rans) return pk::kValueF16;
  if (coding == pk::kValueQ8Ac || coding == pk::kValueQ8Rans) return pk::kValueQ8;
  if (coding == pk::kValueQ4BlockAc || coding == pk::kValueQ8BlockAc || coding == pk::kValueQ4BlockRans ||
      coding == pk::kValueQ8BlockRans) {
    return pk::kValueQ8Block;
  }
  return coding;
}

// Writes one verified entry into buffer `w` (cannot fail: verify_packet ran). Format 2 entries
// come here only when verify kept their indices and values (VerifyScratch::stream_stored).
// The change set being filled receives the indices (`stored`, from verify) and the values it leaves.
void apply_entry(edgert_slot* s, const pk::Entry& e, ChangeSet& set, uint8_t* base) {
  const pk::TensorDesc& d = s->manifest.tensors[e.tensor_id];
  uint8_t* w = base + d.offset;
  const uint32_t* stored = set.indices.data();
  RunLog log{&s->pending[e.tensor_id], &d, nullptr};
  const edgert_patch_mode mode = patch_mode(e.mode);
  const uint8_t coding = raw_coding(e.value_coding);
  if (e.index_coding == pk::kIndexDense) {
    apply_run(w, d.dtype, nullptr, coding, e.values, e.count, e.scale, mode, e.scales);
  } else if (e.stored_at != pk::kNotStored) {
    log.record = set.values.data() + e.stored_at;
    apply_run(w, d.dtype, stored + e.stored_at, coding, e.values, e.count, e.scale, mode, e.scales, 0, &log);
  } else {
    uint64_t done = 0;
    const uint64_t vsize = coding == pk::kValueQ4Block ? 0 : value_size(coding);  // packed nibbles: by `first`
    const edgert_status st =
        pk::decode_rice(e.index, e.index_bytes, e.rice_k, e.count, d.numel, [&](const uint32_t* idx, size_t n) {
          apply_run(w, d.dtype, idx, coding, e.values + done * vsize, n, e.scale, mode, e.scales, done, &log);
          done += n;
        });
    (void)st;  // verified before: decoding the same bytes again succeeds
  }
}

// Writes a verified format 2 or 3 packet into buffer `base`: decodes its stream a second time and
// applies each chunk with the format 1 arithmetic of the same values (cannot fail).
void apply_stream(edgert_slot* s, const pk::VerifyScratch& scratch, uint16_t format, uint32_t count,
                  ChangeSet& set, uint8_t* base) {
  auto sink = [&](uint32_t e, const uint32_t* idx, uint64_t first, const uint8_t* raw, size_t n) {
    const pk::Entry& en = s->entries[e];
    const pk::TensorDesc& d = s->manifest.tensors[en.tensor_id];
    const bool dense = idx == nullptr;
    uint8_t* w = base + d.offset + (dense ? first * d.elem_bytes : 0);
    const RunLog log{&s->pending[en.tensor_id], &d,
                     en.stored_at != pk::kNotStored ? set.values.data() + en.stored_at + first : nullptr};
    apply_run(w, d.dtype, idx, raw_coding(en.value_coding), raw, n, en.scale, patch_mode(en.mode), en.scales,
              first, &log);
  };
  const edgert_status st =
      format == pk::kRansFormat
          ? pk::decode_stream_v3(s->entries.data(), count, s->manifest, scratch.stream, scratch.stream_bytes,
                                 s->rans_tables.data(), scratch.rans_hi_delta, sink)
          : pk::decode_stream_v2(s->entries.data(), count, s->manifest, scratch.stream, scratch.stream_bytes,
                                 s->probs16.data(), s->probs8.data(), sink);
  (void)st;  // verified before: decoding the same bytes again succeeds
}

void publish(edgert_slot* s, int x, uint64_t version) {
  Buffer& b = s->buffers[x];
  b.version = version;
  b.gen = s->next_gen++;
  s->active.store(x);
  s->active_version.store(version);
}

bool valid_slot(const edgert_slot* s, const char* op) {
  if (s == nullptr) {
    fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null slot", op);
    return false;
  }
  return true;
}

// Writes all n bytes, resuming after short writes and EINTR; false with errno set otherwise.
bool write_all(const edgert::detail::FileOps& io, int fd, const uint8_t* p, uint64_t n) {
  while (n > 0) {
    const size_t chunk = n > (uint64_t{1} << 30) ? size_t{1} << 30 : static_cast<size_t>(n);
    const int64_t written = io.write(io.user, fd, p, chunk);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      if (written == 0) errno = ENOSPC;  // no progress and no error: the device is full
      return false;
    }
    p += written;
    n -= static_cast<uint64_t>(written);
  }
  return true;
}

}  // namespace

void edgert::detail::slot_set_file_ops(edgert_slot* slot, const FileOps* ops) {
  slot->file_ops = ops ? *ops : system_file_ops();
}

extern "C" {

edgert_status edgert_slot_create(const uint8_t* manifest, size_t manifest_len, edgert_slot** out) {
  if (out == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_create: null output");
  *out = nullptr;
  if (manifest == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_create: null manifest");
  edgert_slot* s = new (std::nothrow) edgert_slot();
  if (s == nullptr) return fail(EDGERT_ERR_OUT_OF_MEMORY, "slot_create: out of memory");
  if (edgert_status st = pk::parse_manifest(manifest, manifest_len, &s->manifest); st != EDGERT_OK) {
    delete s;
    return st;
  }
  const size_t n = s->manifest.tensors.size();
  uint64_t total_numel = 0;
  for (const pk::TensorDesc& d : s->manifest.tensors) total_numel += d.numel;
  try {
    s->entries.resize(n);
    s->seen.resize(n);
    s->changed_ids.resize(n);
    s->probs16.resize(pk::kTree16Contexts);
    s->probs8.resize(pk::kTree8Contexts);
    s->rans_tables.resize(pk::kRansTables);
    // Sparse updates up to 25% dense keep their indices for catch-up; denser
    // ones fall back to copying (which then costs about as much).
    const uint64_t capacity = total_numel / 4 + 1024;
    for (ChangeSet& c : s->sets) {
      c.changes.resize(n);
      c.indices.resize(capacity);
      c.values.resize(capacity);
    }
    s->value_store.resize(2 * capacity);
    s->pending.resize(n);
    s->sparse_now.resize(n);
  } catch (const std::bad_alloc&) {
    delete s;
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "slot_create: out of memory for %zu tensors", n);
  }
  for (Buffer& b : s->buffers) {
    b.data = static_cast<uint8_t*>(
        ::operator new(s->alloc_bytes(), std::align_val_t(s->buffer_alignment()), std::nothrow));
    if (b.data == nullptr) {
      const ull bytes = s->manifest.weights_bytes;
      delete s;
      return fail(EDGERT_ERR_OUT_OF_MEMORY, "slot_create: cannot allocate 3 x %llu weight bytes", bytes);
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advisory (THP in "madvise" mode): fewer TLB misses for the apply's scattered writes.
    if (s->buffer_alignment() == kHugePage) (void)madvise(b.data, s->alloc_bytes() & ~(kHugePage - 1), MADV_HUGEPAGE);
#endif
    std::memset(b.data, 0, s->alloc_bytes());
    b.gen = 1;  // all three start as identical zeros
  }
  *out = s;
  edgert::detail::clear_error();
  return EDGERT_OK;
}

void edgert_slot_free(edgert_slot* slot) { delete slot; }

edgert_status edgert_slot_set_key(edgert_slot* slot, const uint8_t* key, size_t key_len) {
  if (!valid_slot(slot, "slot_set_key")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (key_len != 0 && (key == nullptr || key_len < kMinKeyBytes || key_len > kMaxKeyBytes)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_set_key: key must be %zu..%zu bytes, got %zu", kMinKeyBytes,
                kMaxKeyBytes, key_len);
  }
  std::lock_guard<std::mutex> lock(slot->writer);
  std::memset(slot->key, 0, sizeof(slot->key));
  if (key_len) std::memcpy(slot->key, key, key_len);
  slot->key_len = key_len;
  ++slot->key_gen;
  return EDGERT_OK;
}

edgert_status edgert_slot_set_trust(edgert_slot* slot, const edgert_trust* trust) {
  if (!valid_slot(slot, "slot_set_trust")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (trust != nullptr && !pk::signatures_available()) {
    return fail(EDGERT_ERR_BACKEND_UNAVAILABLE, "slot_set_trust: libedgert was built without EDGERT_SIGNATURES");
  }
  std::lock_guard<std::mutex> lock(slot->writer);
  slot->trusted = trust != nullptr;
  slot->trust = pk::Trust{};
  if (trust != nullptr) {
    std::memcpy(slot->trust.state.root_key, trust->root_key, pk::kPublicKeyBytes);
    slot->trust.state.root_version = trust->root_version;
    slot->trust.state.min_release_version = trust->min_release_version;
    slot->trust.fixed_time = trust->fixed_time;
  }
  return EDGERT_OK;
}

edgert_status edgert_slot_get_trust(edgert_slot* slot, edgert_trust* out) {
  if (!valid_slot(slot, "slot_get_trust")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (out == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_get_trust: null output");
  std::lock_guard<std::mutex> lock(slot->writer);
  if (!slot->trusted) return fail(EDGERT_ERR_NOT_FOUND, "slot_get_trust: the slot has no trust set");
  edgert_trust t{};
  std::memcpy(t.root_key, slot->trust.state.root_key, pk::kPublicKeyBytes);
  t.root_version = slot->trust.state.root_version;
  t.min_release_version = slot->trust.state.min_release_version;
  t.fixed_time = slot->trust.fixed_time;
  *out = t;
  return EDGERT_OK;
}

int edgert_signatures_available(void) { return pk::signatures_available() ? 1 : 0; }

const char* edgert_signatures_backend(void) { return pk::signatures_backend(); }

edgert_status edgert_slot_set_hook(edgert_slot* slot, edgert_slot_hook hook, void* user) {
  if (!valid_slot(slot, "slot_set_hook")) return EDGERT_ERR_INVALID_ARGUMENT;
  std::lock_guard<std::mutex> lock(slot->writer);
  slot->hook = hook;
  slot->hook_user = user;
  return EDGERT_OK;
}

namespace {

// received: what a receiver hashed (or null); its MAC counts only under the key generation it was made with.
edgert_status apply_packet(edgert_slot* slot, const uint8_t* packet, size_t len, const pk::Received* received,
                           uint64_t receiver_key_gen) {
  if (!valid_slot(slot, "slot_apply")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (packet == nullptr && len > 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_apply: null packet");
  std::lock_guard<std::mutex> lock(slot->writer);
  ChangeSet& set = slot->sets[slot->fill_set];
  set.valid = false;  // its storage is about to be overwritten
  pk::VerifyScratch scratch{slot->entries.data(), slot->seen.data(), set.indices.data(), set.indices.size(), 0,
                            slot->probs16.data(), slot->probs8.data(), slot->rans_tables.data(),
                            slot->value_store.data(),
                            slot->value_store.size()};
  edgert_packet_header h;
  const uint64_t active_version = slot->active_version.load();
  pk::Received keyed;
  if (received != nullptr && received->has_mac) {  // only under the key the slot holds now
    keyed = *received;
    keyed.has_mac = receiver_key_gen == slot->key_gen;
    received = &keyed;
  }
  if (edgert_status st = pk::verify_packet(packet, len, slot->manifest, active_version, slot->key, slot->key_len,
                                           slot->trusted ? &slot->trust : nullptr, &slot->trust_after, &scratch, &h,
                                           received);
      st != EDGERT_OK) {
    return st;
  }
  const int a = slot->active.load();
  const int x = pick_buffer(slot);
  for (uint32_t i = 0; i < h.tensor_count; ++i) {
    const pk::Entry& e = slot->entries[i];
    slot->sparse_now[e.tensor_id] = e.index_coding != pk::kIndexDense;
  }
  catch_up(slot, x, a);
  uint8_t* dst = slot->buffers[x].data;
  set.complete = true;
  set.n_changes = h.tensor_count;
  const bool decode_again = h.format_version >= pk::kCompactFormat && !scratch.stream_stored;
  if (decode_again) apply_stream(slot, scratch, h.format_version, h.tensor_count, set, dst);
  for (uint32_t i = 0; i < h.tensor_count; ++i) {
    const pk::Entry& e = slot->entries[i];
    if (!decode_again) apply_entry(slot, e, set, dst);
    slot->sparse_now[e.tensor_id] = 0;
    const bool dense = e.index_coding == pk::kIndexDense;
    set.changes[i] = Change{e.tensor_id, dense, e.stored_at, e.count};
    if (!dense && e.stored_at == pk::kNotStored) set.complete = false;
    slot->changed_ids[i] = e.tensor_id;
  }
  flush_pending(slot, dst);
  set.from_gen = slot->buffers[a].gen;
  publish(slot, x, h.target_version);
  if (slot->trusted) slot->trust = slot->trust_after;
  set.to_gen = slot->buffers[x].gen;
  set.valid = true;
  slot->fill_set = (slot->fill_set + 1) % kBuffers;
  edgert::detail::clear_error();
  if (slot->hook) slot->hook(slot->hook_user, h.target_version, slot->changed_ids.data(), h.tensor_count);
  return EDGERT_OK;
}

}  // namespace

struct edgert_receiver {
  edgert_slot* slot;
  uint64_t key_gen;  // the slot's key generation the receiver copied
  pk::Receiver impl;
};

edgert_status edgert_slot_apply(edgert_slot* slot, const uint8_t* packet, size_t len) {
  return apply_packet(slot, packet, len, nullptr, 0);
}

edgert_status edgert_slot_receiver_create(edgert_slot* slot, edgert_receiver** out) {
  if (!valid_slot(slot, "slot_receiver_create")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (out == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_receiver_create: null output");
  std::lock_guard<std::mutex> lock(slot->writer);
  *out = new (std::nothrow) edgert_receiver{slot, slot->key_gen, pk::Receiver(slot->key, slot->key_len)};
  if (*out == nullptr) return fail(EDGERT_ERR_OUT_OF_MEMORY, "slot_receiver_create: out of memory");
  return EDGERT_OK;
}

void edgert_receiver_free(edgert_receiver* receiver) { delete receiver; }

void edgert_receiver_reset(edgert_receiver* receiver) {
  if (receiver != nullptr) receiver->impl.reset();
}

void edgert_receiver_update(edgert_receiver* receiver, const void* data, size_t len) {
  if (receiver != nullptr) receiver->impl.update(static_cast<const uint8_t*>(data), len);
}

edgert_status edgert_slot_apply_received(edgert_slot* slot, edgert_receiver* receiver, const uint8_t* packet,
                                         size_t len) {
  if (receiver == nullptr) return apply_packet(slot, packet, len, nullptr, 0);
  if (receiver->slot != slot) {
    receiver->impl.reset();
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_apply_received: the receiver belongs to another slot");
  }
  if (receiver->impl.fed() != len) {
    const unsigned long long fed = receiver->impl.fed();
    receiver->impl.reset();
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_apply_received: the receiver was fed %llu bytes, the packet has %zu",
                fed, len);
  }
  pk::Received received;
  const bool ok = receiver->impl.finish(len, &received);
  receiver->impl.reset();
  if (!ok) return apply_packet(slot, packet, len, nullptr, 0);  // not a packet header: the slot says what is wrong
  return apply_packet(slot, packet, len, &received, receiver->key_gen);
}

uint64_t edgert_slot_version(const edgert_slot* slot) { return slot ? slot->active_version.load() : 0; }

void edgert_slot_model_id(const edgert_slot* slot, uint8_t out[EDGERT_MODEL_ID_BYTES]) {
  if (slot == nullptr || out == nullptr) return;
  std::memcpy(out, slot->manifest.model_id, EDGERT_MODEL_ID_BYTES);
}

uint32_t edgert_slot_tensor_count(const edgert_slot* slot) {
  return slot ? static_cast<uint32_t>(slot->manifest.tensors.size()) : 0;
}

edgert_status edgert_slot_tensor_info(const edgert_slot* slot, uint32_t tensor_id, edgert_tensor_info* out) {
  if (!valid_slot(slot, "slot_tensor_info")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (out == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_tensor_info: null output");
  if (tensor_id >= slot->manifest.tensors.size()) {
    return fail(EDGERT_ERR_INDEX_OUT_OF_RANGE, "slot_tensor_info: tensor id %u, the model has %zu tensors", tensor_id,
                slot->manifest.tensors.size());
  }
  const pk::TensorDesc& d = slot->manifest.tensors[tensor_id];
  edgert_tensor_info info{};
  std::memcpy(info.name, d.name, sizeof(info.name) < sizeof(d.name) ? sizeof(info.name) : sizeof(d.name));
  info.name[sizeof(info.name) - 1] = '\0';
  info.dtype = d.dtype;
  info.ndim = d.ndim;
  for (int i = 0; i < EDGERT_MAX_DIMS; ++i) info.shape[i] = d.shape[i];
  info.numel = d.numel;
  info.byte_offset = d.offset;
  info.byte_size = d.bytes;
  *out = info;
  return EDGERT_OK;
}

uint64_t edgert_slot_weights_size(const edgert_slot* slot) { return slot ? slot->manifest.weights_bytes : 0; }

edgert_status edgert_slot_acquire(edgert_slot* slot, const void** weights, uint64_t* version) {
  if (!valid_slot(slot, "slot_acquire")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (weights == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_acquire: null weights pointer");
  for (;;) {
    const int a = slot->active.load();
    Buffer& b = slot->buffers[a];
    b.pins.fetch_add(1);
    // Re-check after pinning: if the writer swapped meanwhile it may already be
    // rebuilding this buffer, so drop the pin and retry (seq_cst on both sides).
    if (slot->active.load() == a) {
      *weights = b.data;
      if (version) *version = b.version;
      return EDGERT_OK;
    }
    b.pins.fetch_sub(1);
  }
}

void edgert_slot_release(edgert_slot* slot, const void* weights) {
  if (slot == nullptr || weights == nullptr) return;
  for (Buffer& b : slot->buffers) {
    if (b.data != weights) continue;
    int32_t cur = b.pins.load();
    while (cur > 0 && !b.pins.compare_exchange_weak(cur, cur - 1)) {
    }
    return;
  }
}

edgert_status edgert_slot_read_tensor(edgert_slot* slot, uint32_t tensor_id, void* dst, size_t dst_bytes,
                                      uint64_t* version) {
  if (!valid_slot(slot, "slot_read_tensor")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (tensor_id >= slot->manifest.tensors.size()) {
    return fail(EDGERT_ERR_INDEX_OUT_OF_RANGE, "slot_read_tensor: tensor id %u, the model has %zu tensors", tensor_id,
                slot->manifest.tensors.size());
  }
  const pk::TensorDesc& d = slot->manifest.tensors[tensor_id];
  if (dst_bytes < d.bytes) {
    return fail(EDGERT_ERR_BUFFER_TOO_SMALL, "slot_read_tensor: tensor '%s' needs %llu bytes, got %zu", d.name,
                static_cast<ull>(d.bytes), dst_bytes);
  }
  if (dst == nullptr && d.bytes > 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_read_tensor: null destination");
  const void* w = nullptr;
  uint64_t v = 0;
  if (edgert_status st = edgert_slot_acquire(slot, &w, &v); st != EDGERT_OK) return st;
  if (d.bytes) std::memcpy(dst, static_cast<const uint8_t*>(w) + d.offset, d.bytes);
  edgert_slot_release(slot, w);
  if (version) *version = v;
  return EDGERT_OK;
}

// ---- snapshot files ---------------------------------------------------------

edgert_status edgert_slot_save(edgert_slot* slot, const char* path) {
  if (!valid_slot(slot, "slot_save")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (path == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_save: null path");
  // Crash consistency: the new snapshot is complete and durable in path.tmp
  // (every byte written, fsync, close) before the rename publishes it, and the
  // directory is synced so the rename survives a power loss. A crash at any
  // point leaves `path` holding the previous or the new snapshot, never a mix;
  // a leftover path.tmp is truncated by the next save and never read by load.
  std::lock_guard<std::mutex> saving(slot->saver);
  const edgert::detail::FileOps& io = slot->file_ops;
  std::string tmp, dir;
  try {
    tmp = std::string(path) + ".tmp";
    dir = path;
    const size_t slash = dir.find_last_of('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
  } catch (const std::bad_alloc&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "slot_save: out of memory");
  }
  const void* w = nullptr;
  uint64_t version = 0;
  if (edgert_status st = edgert_slot_acquire(slot, &w, &version); st != EDGERT_OK) return st;
  const uint64_t size = slot->manifest.weights_bytes;
  uint8_t header[pk::kSnapshotFileHeaderBytes] = {0};
  std::memcpy(header, pk::kSnapshotFileMagic, 4);
  pk::store_u16(header + 4, pk::kContainerVersion);
  std::memcpy(header + 8, slot->manifest.model_id, EDGERT_MODEL_ID_BYTES);
  std::memcpy(header + 24, slot->manifest.table_hash, pk::kHashBytes);
  pk::store_u64(header + 40, version);
  pk::store_u64(header + 48, size);
  uint8_t trailer[4];
  pk::store_u32(trailer, pk::crc32c_update(pk::crc32c(header, sizeof(header)), w, size));

  const int fd = io.open(io.user, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    const int err = errno;
    edgert_slot_release(slot, w);
    return fail(EDGERT_ERR_IO, "slot_save: cannot create '%s': %s; '%s' is unchanged", tmp.c_str(),
                std::strerror(err), path);
  }
  const char* step = "writing";
  bool ok = write_all(io, fd, header, sizeof(header)) && write_all(io, fd, static_cast<const uint8_t*>(w), size) &&
            write_all(io, fd, trailer, sizeof(trailer));
  edgert_slot_release(slot, w);
  if (ok && io.fsync(io.user, fd) != 0) {
    ok = false;
    step = "syncing";
  }
  int err = errno;
  if (io.close(io.user, fd) != 0 && ok) {  // a deferred write error (e.g. NFS) surfaces here
    ok = false;
    step = "closing";
    err = errno;
  }
  if (ok && io.rename(io.user, tmp.c_str(), path) != 0) {
    ok = false;
    step = "renaming";
    err = errno;
  }
  if (!ok) {
    (void)io.unlink(io.user, tmp.c_str());
    return fail(EDGERT_ERR_IO, "slot_save: %s '%s' failed: %s; '%s' is unchanged", step, tmp.c_str(),
                std::strerror(err), path);
  }
  // EINVAL: the file system cannot sync a directory (its renames are as durable as it gets).
  if (io.fsync_dir(io.user, dir.c_str()) != 0 && errno != EINVAL) {
    err = errno;
    return fail(EDGERT_ERR_IO,
                "slot_save: '%s' holds version %llu, but syncing directory '%s' failed (%s): the rename may not "
                "survive a power loss",
                path, static_cast<ull>(version), dir.c_str(), std::strerror(err));
  }
  edgert::detail::clear_error();
  return EDGERT_OK;
}

edgert_status edgert_slot_load(edgert_slot* slot, const char* path) {
  if (!valid_slot(slot, "slot_load")) return EDGERT_ERR_INVALID_ARGUMENT;
  if (path == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "slot_load: null path");
  std::lock_guard<std::mutex> lock(slot->writer);
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    return fail(errno == ENOENT ? EDGERT_ERR_NOT_FOUND : EDGERT_ERR_IO, "slot_load: cannot open '%s': %s", path,
                std::strerror(errno));
  }
  struct Closer {
    FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  uint8_t header[pk::kSnapshotFileHeaderBytes];
  if (std::fread(header, 1, sizeof(header), f) != sizeof(header)) {
    return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' is shorter than a snapshot header", path);
  }
  if (std::memcmp(header, pk::kSnapshotFileMagic, 4) != 0) {
    return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' is not an edgert snapshot (bad magic)", path);
  }
  const uint16_t format = pk::load_u16(header + 4);
  if (format == 0 || format > pk::kContainerVersion || pk::load_u16(header + 6) != 0) {
    return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' has snapshot format %u, this build reads 1..%u", path,
                format, pk::kContainerVersion);
  }
  const uint64_t version = pk::load_u64(header + 40);
  const uint64_t size = pk::load_u64(header + 48);
  if (size != slot->manifest.weights_bytes) {
    return fail(EDGERT_ERR_PACKET_WRONG_MODEL, "slot_load: '%s' holds %llu weight bytes, the model has %llu", path,
                static_cast<ull>(size), static_cast<ull>(slot->manifest.weights_bytes));
  }
  const int x = pick_buffer(slot);
  Buffer& b = slot->buffers[x];
  b.gen = 0;  // contents unknown from here until published
  uint8_t trailer[5];
  const bool read_ok = (size == 0 || std::fread(b.data, 1, size, f) == size) &&
                       std::fread(trailer, 1, sizeof(trailer), f) == 4;
  if (!read_ok) return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' has the wrong length", path);
  if (pk::crc32c_update(pk::crc32c(header, sizeof(header)), b.data, size) != pk::load_u32(trailer)) {
    return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' fails its CRC32C", path);
  }
  if (std::memcmp(header + 8, slot->manifest.model_id, EDGERT_MODEL_ID_BYTES) != 0 ||
      std::memcmp(header + 24, slot->manifest.table_hash, pk::kHashBytes) != 0) {
    return fail(EDGERT_ERR_PACKET_WRONG_MODEL, "slot_load: '%s' is a snapshot of another model or manifest", path);
  }
  // Padding between tensors must be zero so that equal models are equal bytes.
  uint64_t end = 0;
  for (const pk::TensorDesc& d : slot->manifest.tensors) {
    for (uint64_t i = end; i < d.offset; ++i) {
      if (b.data[i] != 0) return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' has non-zero padding", path);
    }
    end = d.offset + d.bytes;
  }
  for (uint64_t i = end; i < size; ++i) {
    if (b.data[i] != 0) return fail(EDGERT_ERR_CORRUPT_FILE, "slot_load: '%s' has non-zero padding", path);
  }
  for (ChangeSet& c : slot->sets) c.valid = false;
  publish(slot, x, version);
  edgert::detail::clear_error();
  return EDGERT_OK;
}

}  // extern "C"
