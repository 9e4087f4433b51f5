// The edgert wire protocol (docs/spec/wire-protocol.md): frame header checks,
// message encoding/decoding on byte buffers, and frame reading/writing over a
// ByteStream. No sockets here: the node's network loop passes a socket stream,
// the unit tests and the libFuzzer target (tests/fuzz/fuzz_node.cpp) a buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace edgert::wire {

enum class FrameType : uint8_t {
  kHello = 1,
  kChallenge = 2,
  kAuth = 3,
  kManifest = 4,
  kPacket = 5,
  kAck = 6,
  kNack = 7,
  kResync = 8,
  kPing = 9,
  kPong = 10,
  kError = 11,
};

constexpr uint16_t kProtocolVersion = 3;  // 3: the proofs cover the HELLO body; 2: HELLO carries max_packet_format
constexpr size_t kHeaderBytes = 6;
constexpr uint32_t kDefaultMaxFrame = 64u << 20;
constexpr size_t kNonceBytes = 16;
constexpr size_t kProofBytes = 32;
constexpr size_t kModelIdBytes = 16;
constexpr size_t kMaxDeviceId = 64;

using Bytes = std::vector<uint8_t>;

// Checks a 6-byte frame header: known type, reserved byte 0, length <= max_length.
// On failure returns false and says why in *error.
bool parse_header(const uint8_t* header, uint32_t max_length, FrameType* type, uint32_t* length, std::string* error);
Bytes encode_frame(FrameType type, const Bytes& body);
const char* frame_name(FrameType type);

struct Hello {
  std::string device_id;
  uint8_t model_id[kModelIdBytes] = {};
  uint64_t active_version = 0;
  uint16_t max_packet_format = 1;  // newest update-packet format this device decodes
  uint8_t client_nonce[kNonceBytes] = {};
};
struct Challenge {
  uint16_t protocol = kProtocolVersion;
  uint8_t server_nonce[kNonceBytes] = {};
  uint8_t server_proof[kProofBytes] = {};
};
struct Nack {
  uint64_t active_version = 0;
  uint32_t status = 0;
  std::string message;
};
struct ErrorMessage {
  uint32_t code = 0;
  std::string message;
};

Bytes encode_hello(const Hello& m);
Bytes encode_auth(const uint8_t proof[kProofBytes]);
Bytes encode_u64(uint64_t v);  // ACK, RESYNC, PING, PONG bodies
Bytes encode_nack(const Nack& m);

// Parsers: strict (exact lengths, no trailing bytes); false + *error on malformed input.
bool parse_hello(const Bytes& body, Hello* out, std::string* error);
bool parse_challenge(const Bytes& body, Challenge* out, std::string* error);
bool parse_u64(const Bytes& body, uint64_t* out, std::string* error);
bool parse_error(const Bytes& body, ErrorMessage* out, std::string* error);

// A source and sink of bytes: a socket in the node (node.cpp), a buffer in tests and the fuzzer.
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Reads exactly len bytes, waiting at most timeout_s for each chunk; false when the stream ends,
  // fails or times out first.
  virtual bool read_exact(uint8_t* out, size_t len, double timeout_s) = 0;
  virtual bool write_all(const uint8_t* data, size_t len) = 0;
  // 1 when bytes are ready to read, 0 after timeout_ms without any, -1 when the stream ended or failed.
  virtual int wait_readable(int timeout_ms) = 0;
  // Why the last read or write failed ("" when the stream does not know or nothing failed), for the log.
  virtual std::string last_error() const { return {}; }
  // What carries the bytes (e.g. "plain TCP", the TLS version and cipher suite), for the log.
  virtual std::string describe() const { return "buffer"; }
};

// Reads one frame: the first header byte within first_byte_timeout_s, then everything else within
// timeout_s per chunk. The header is checked (parse_header, length <= max_length) before any of the
// body is read, and the body grows only as its bytes arrive, so a length that lies costs no memory.
// False when the stream ends or times out (*error empty) or the header is bad (*error says why).
// `on_body` (optional) sees the frame type once its header is checked, then each piece of the body as it arrives
// (the node hashes a packet while it is received: edgert_slot_receiver_create).
struct BodySink {
  virtual ~BodySink() = default;
  virtual void begin(FrameType type) = 0;
  virtual void piece(const uint8_t* data, size_t len) = 0;
};
bool read_frame(ByteStream& in, uint32_t max_length, double first_byte_timeout_s, double timeout_s, FrameType* type,
                Bytes* body, std::string* error, BodySink* on_body = nullptr);
bool write_frame(ByteStream& out, FrameType type, const Bytes& body);

// A ByteStream over a byte buffer: reads consume `input` (never wait), writes append to `output`.
class BufferStream : public ByteStream {
 public:
  explicit BufferStream(Bytes input) : input(std::move(input)) {}
  bool read_exact(uint8_t* out, size_t len, double timeout_s) override;
  bool write_all(const uint8_t* data, size_t len) override;
  int wait_readable(int) override { return pos < input.size() ? 1 : -1; }

  Bytes input;
  size_t pos = 0;  // bytes of input consumed
  Bytes output;
};

// The handshake proofs of protocol 3 (see the spec): HMAC-SHA256 under the device key of
// label ‖ server_nonce ‖ SHA-256(hello), with `hello` the HELLO body exactly as sent (encode_hello), so
// its device id, model id, active version, packet format and client nonce are all authenticated.
void server_proof(const Bytes& key, const uint8_t server_nonce[kNonceBytes], const Bytes& hello,
                  uint8_t out[kProofBytes]);
void device_proof(const Bytes& key, const uint8_t server_nonce[kNonceBytes], const Bytes& hello,
                  uint8_t out[kProofBytes]);

}  // namespace edgert::wire
