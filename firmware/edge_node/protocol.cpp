#include "protocol.hpp"

#include <cstring>

#include "edgert/edgert.h"

namespace edgert::wire {
namespace {

void put_u16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
void put_u32(Bytes& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(Bytes& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Bounds-checked reader over a frame body.
struct Reader {
  const Bytes& b;
  size_t pos = 0;
  bool take(size_t n, const uint8_t** p) {
    if (b.size() - pos < n) return false;
    *p = b.data() + pos;
    pos += n;
    return true;
  }
  bool done() const { return pos == b.size(); }
};

bool fail(std::string* error, const char* what) {
  if (error) *error = what;
  return false;
}

void proof(const Bytes& key, const char* label, const uint8_t server_nonce[kNonceBytes], const Bytes& hello,
           uint8_t out[kProofBytes]) {
  Bytes msg(label, label + std::strlen(label));
  msg.insert(msg.end(), server_nonce, server_nonce + kNonceBytes);
  uint8_t digest[32];
  if (edgert_sha256(hello.data(), hello.size(), digest) != EDGERT_OK) {
    std::memset(out, 0, kProofBytes);
    return;
  }
  msg.insert(msg.end(), digest, digest + sizeof(digest));
  if (edgert_hmac_sha256(key.data(), key.size(), msg.data(), msg.size(), out) != EDGERT_OK) {
    std::memset(out, 0, kProofBytes);
  }
}

}  // namespace

const char* frame_name(FrameType type) {
  switch (type) {
    case FrameType::kHello: return "HELLO";
    case FrameType::kChallenge: return "CHALLENGE";
    case FrameType::kAuth: return "AUTH";
    case FrameType::kManifest: return "MANIFEST";
    case FrameType::kPacket: return "PACKET";
    case FrameType::kAck: return "ACK";
    case FrameType::kNack: return "NACK";
    case FrameType::kResync: return "RESYNC";
    case FrameType::kPing: return "PING";
    case FrameType::kPong: return "PONG";
    case FrameType::kError: return "ERROR";
  }
  return "UNKNOWN";
}

bool parse_header(const uint8_t* header, uint32_t max_length, FrameType* type, uint32_t* length, std::string* error) {
  const uint8_t t = header[0];
  if (t < static_cast<uint8_t>(FrameType::kHello) || t > static_cast<uint8_t>(FrameType::kError)) {
    return fail(error, "unknown frame type");
  }
  if (header[1] != 0) return fail(error, "reserved header byte is not zero");
  const uint32_t len = static_cast<uint32_t>(get_le(header + 2, 4));
  if (len > max_length) return fail(error, "frame longer than the limit");
  *type = static_cast<FrameType>(t);
  *length = len;
  return true;
}

Bytes encode_frame(FrameType type, const Bytes& body) {
  Bytes out;
  out.reserve(kHeaderBytes + body.size());
  out.push_back(static_cast<uint8_t>(type));
  out.push_back(0);
  put_u32(out, static_cast<uint32_t>(body.size()));
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Bytes encode_hello(const Hello& m) {
  Bytes b = {'E', 'R', 'T', 'W'};
  put_u16(b, kProtocolVersion);
  put_u16(b, static_cast<uint16_t>(m.device_id.size()));
  b.insert(b.end(), m.device_id.begin(), m.device_id.end());
  b.insert(b.end(), m.model_id, m.model_id + kModelIdBytes);
  put_u64(b, m.active_version);
  put_u16(b, m.max_packet_format);
  b.insert(b.end(), m.client_nonce, m.client_nonce + kNonceBytes);
  return b;
}

Bytes encode_auth(const uint8_t proof_bytes[kProofBytes]) { return Bytes(proof_bytes, proof_bytes + kProofBytes); }

Bytes encode_u64(uint64_t v) {
  Bytes b;
  put_u64(b, v);
  return b;
}

Bytes encode_nack(const Nack& m) {
  Bytes b;
  put_u64(b, m.active_version);
  put_u32(b, m.status);
  const size_t n = m.message.size() < 255 ? m.message.size() : 255;
  b.insert(b.end(), m.message.begin(), m.message.begin() + static_cast<std::ptrdiff_t>(n));
  return b;
}

bool parse_hello(const Bytes& body, Hello* out, std::string* error) {
  Reader r{body};
  const uint8_t* p;
  if (!r.take(4, &p) || std::memcmp(p, "ERTW", 4) != 0) return fail(error, "HELLO: bad magic");
  if (!r.take(2, &p)) return fail(error, "HELLO: truncated");
  if (get_le(p, 2) != kProtocolVersion) return fail(error, "HELLO: unsupported protocol version");
  if (!r.take(2, &p)) return fail(error, "HELLO: truncated");
  const size_t id_len = static_cast<size_t>(get_le(p, 2));
  if (id_len == 0 || id_len > kMaxDeviceId) return fail(error, "HELLO: device id must be 1..64 bytes");
  if (!r.take(id_len, &p)) return fail(error, "HELLO: truncated");
  out->device_id.assign(reinterpret_cast<const char*>(p), id_len);
  if (!r.take(kModelIdBytes, &p)) return fail(error, "HELLO: truncated");
  std::memcpy(out->model_id, p, kModelIdBytes);
  if (!r.take(8, &p)) return fail(error, "HELLO: truncated");
  out->active_version = get_le(p, 8);
  if (!r.take(2, &p)) return fail(error, "HELLO: truncated");
  out->max_packet_format = static_cast<uint16_t>(get_le(p, 2));
  if (out->max_packet_format == 0) return fail(error, "HELLO: max packet format 0");
  if (!r.take(kNonceBytes, &p)) return fail(error, "HELLO: truncated");
  std::memcpy(out->client_nonce, p, kNonceBytes);
  if (!r.done()) return fail(error, "HELLO: trailing bytes");
  return true;
}

bool parse_challenge(const Bytes& body, Challenge* out, std::string* error) {
  if (body.size() != 2 + kNonceBytes + kProofBytes) return fail(error, "CHALLENGE: wrong length");
  out->protocol = static_cast<uint16_t>(get_le(body.data(), 2));
  if (out->protocol != kProtocolVersion) return fail(error, "CHALLENGE: unsupported protocol version");
  std::memcpy(out->server_nonce, body.data() + 2, kNonceBytes);
  std::memcpy(out->server_proof, body.data() + 2 + kNonceBytes, kProofBytes);
  return true;
}

bool parse_u64(const Bytes& body, uint64_t* out, std::string* error) {
  if (body.size() != 8) return fail(error, "expected an 8-byte body");
  *out = get_le(body.data(), 8);
  return true;
}

bool parse_error(const Bytes& body, ErrorMessage* out, std::string* error) {
  if (body.size() < 4) return fail(error, "ERROR: truncated");
  out->code = static_cast<uint32_t>(get_le(body.data(), 4));
  out->message.assign(body.begin() + 4, body.end());
  return true;
}

bool read_frame(ByteStream& in, uint32_t max_length, double first_byte_timeout_s, double timeout_s, FrameType* type,
                Bytes* body, std::string* error, BodySink* on_body) {
  error->clear();
  uint8_t header[kHeaderBytes];
  uint32_t len = 0;
  if (!in.read_exact(header, 1, first_byte_timeout_s) || !in.read_exact(header + 1, kHeaderBytes - 1, timeout_s)) {
    return false;
  }
  if (!parse_header(header, max_length, type, &len, error)) return false;
  constexpr size_t kChunk = 64 << 10;
  body->clear();
  if (on_body != nullptr) on_body->begin(*type);
  while (body->size() < len) {
    const size_t have = body->size();
    const size_t n = len - have < kChunk ? len - have : kChunk;
    body->resize(have + n);
    if (!in.read_exact(body->data() + have, n, timeout_s)) return false;
    if (on_body != nullptr) on_body->piece(body->data() + have, n);
  }
  return true;
}

bool write_frame(ByteStream& out, FrameType type, const Bytes& body) {
  const Bytes frame = encode_frame(type, body);
  return out.write_all(frame.data(), frame.size());
}

bool BufferStream::read_exact(uint8_t* out, size_t len, double) {
  if (input.size() - pos < len) {
    pos = input.size();  // a short read ends the stream, as a closed socket does
    return false;
  }
  if (len) std::memcpy(out, input.data() + pos, len);
  pos += len;
  return true;
}

bool BufferStream::write_all(const uint8_t* data, size_t len) {
  output.insert(output.end(), data, data + len);
  return true;
}

void server_proof(const Bytes& key, const uint8_t server_nonce[kNonceBytes], const Bytes& hello,
                  uint8_t out[kProofBytes]) {
  proof(key, "edgert-server-v3", server_nonce, hello, out);
}

void device_proof(const Bytes& key, const uint8_t server_nonce[kNonceBytes], const Bytes& hello,
                  uint8_t out[kProofBytes]) {
  proof(key, "edgert-device-v3", server_nonce, hello, out);
}

}  // namespace edgert::wire
