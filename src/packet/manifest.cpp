#include <algorithm>
#include <cstring>
#include <new>

#include "core/error.hpp"
#include "packet/bytes.hpp"
#include "packet/crc32c.hpp"
#include "packet/format.hpp"
#include "packet/sha256.hpp"

namespace edgert::packet {

using detail::fail;

edgert_status parse_manifest(const uint8_t* data, size_t len, Manifest* out) {
  if (data == nullptr && len > 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "manifest: null data");
  if (len < kManifestHeaderBytes + kCrcBytes) {
    return fail(EDGERT_ERR_PACKET_TRUNCATED, "manifest: %zu bytes, a manifest has at least %zu", len,
                kManifestHeaderBytes + kCrcBytes);
  }
  if (std::memcmp(data, kManifestMagic, 4) != 0) return fail(EDGERT_ERR_PACKET_BAD_MAGIC, "manifest: bad magic");
  const uint16_t version = load_u16(data + 4);
  if (version == 0 || version > kContainerVersion) {
    return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "manifest: format version %u, this decoder reads 1..%u",
                version, kContainerVersion);
  }
  const uint16_t flags = load_u16(data + 6);
  if (flags != 0) {
    return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "manifest: flags 0x%04x not known to this decoder", flags);
  }
  const uint32_t crc = load_u32(data + len - kCrcBytes);
  if (crc32c(data, len - kCrcBytes) != crc) return fail(EDGERT_ERR_PACKET_BAD_CRC, "manifest: CRC32C mismatch");

  const uint32_t count = load_u32(data + 40);
  if (count > kMaxTensors) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: %u tensors, at most %u supported", count, kMaxTensors);
  }
  // Each entry needs at least 3 bytes: bound the count before allocating.
  const size_t table_end = len - kCrcBytes;
  if (static_cast<uint64_t>(count) * 3 > table_end - kManifestHeaderBytes) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: %u tensors cannot fit in %zu table bytes", count,
                table_end - kManifestHeaderBytes);
  }
  Manifest m;
  std::memcpy(m.model_id, data + 8, EDGERT_MODEL_ID_BYTES);
  std::memcpy(m.table_hash, data + 24, kHashBytes);
  try {
    m.tensors.resize(count);
  } catch (const std::bad_alloc&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "manifest: cannot allocate %u tensor descriptors", count);
  }
  size_t pos = kManifestHeaderBytes;
  uint64_t offset = 0;
  for (uint32_t t = 0; t < count; ++t) {
    TensorDesc& d = m.tensors[t];
    if (table_end - pos < 1) return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor %u runs past the table", t);
    const size_t name_len = data[pos++];
    if (name_len == 0 || name_len > kMaxNameBytes) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor %u name length %zu not in [1, %zu]", t, name_len,
                  kMaxNameBytes);
    }
    if (table_end - pos < name_len + 2) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor %u runs past the table", t);
    }
    std::memcpy(d.name, data + pos, name_len);
    d.name[name_len] = '\0';
    if (std::memchr(d.name, '\0', name_len) != nullptr) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor %u name contains a NUL byte", t);
    }
    pos += name_len;
    const uint8_t dtype = data[pos++];
    const uint8_t ndim = data[pos++];
    if (dtype != EDGERT_F32 && dtype != EDGERT_F16) {
      return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "manifest: tensor '%s' has dtype code %u (known: 0 f32, 1 f16)",
                  d.name, dtype);
    }
    if (ndim > EDGERT_MAX_DIMS) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor '%s' has %u dims, at most %d", d.name, ndim,
                  EDGERT_MAX_DIMS);
    }
    if (table_end - pos < static_cast<size_t>(ndim) * 8) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor '%s' shape runs past the table", d.name);
    }
    d.dtype = static_cast<edgert_dtype>(dtype);
    d.ndim = ndim;
    d.numel = 1;
    for (int i = 0; i < EDGERT_MAX_DIMS; ++i) d.shape[i] = 0;
    for (uint8_t i = 0; i < ndim; ++i) {
      const uint64_t dim = load_u64(data + pos);
      pos += 8;
      if (dim > kMaxTensorNumel || (dim != 0 && d.numel > kMaxTensorNumel / dim)) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: tensor '%s' has more than %llu elements", d.name,
                    static_cast<unsigned long long>(kMaxTensorNumel));
      }
      d.shape[i] = static_cast<int64_t>(dim);
      d.numel *= dim;
    }
    d.elem_bytes = dtype == EDGERT_F32 ? 4 : 2;
    d.bytes = d.numel * d.elem_bytes;
    d.offset = offset;
    offset += (d.bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
    if (offset > kMaxWeightsBytes) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: weights exceed %llu bytes",
                  static_cast<unsigned long long>(kMaxWeightsBytes));
    }
  }
  if (pos != table_end) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: %zu bytes after the last tensor", table_end - pos);
  }
  uint8_t digest[Sha256::kDigestBytes];
  sha256(data + 40, table_end - 40, digest);
  if (std::memcmp(digest, m.table_hash, kHashBytes) != 0) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: table hash does not match the tensor table");
  }
  // Names identify tensors for the server and for humans: they must be unique.
  std::vector<const char*> names;
  try {
    names.reserve(count);
  } catch (const std::bad_alloc&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "manifest: out of memory");
  }
  for (const TensorDesc& d : m.tensors) names.push_back(d.name);
  std::sort(names.begin(), names.end(), [](const char* a, const char* b) { return std::strcmp(a, b) < 0; });
  for (size_t i = 1; i < names.size(); ++i) {
    if (std::strcmp(names[i - 1], names[i]) == 0) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "manifest: duplicate tensor name '%s'", names[i]);
    }
  }
  m.weights_bytes = offset;
  *out = std::move(m);
  return EDGERT_OK;
}

}  // namespace edgert::packet
