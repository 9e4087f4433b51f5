// libFuzzer target: arbitrary bytes as everything the model server sends to the
// firmware edge node (firmware/edge_node) over one connection. The node runs
// its real session (HELLO, CHALLENGE or ERROR, AUTH, then MANIFEST / PACKET /
// PING / PONG / ERROR frames) over a buffer-backed ByteStream. It must never
// crash, hang or leak, and what it writes back must be well-formed frames of
// the device's types, HELLO first, AUTH only after a CHALLENGE carrying the
// right proof. The same bytes also go straight to each body parser, whose
// accepted inputs must re-encode to themselves (the parsers are strict).
//
// Input: one control byte, then the stream. Control bit 0: the harness puts
// the correct server proof for the node's (random) client nonce into a leading
// CHALLENGE frame, so mutations get past the handshake into the frame loop
// (the seed corpus, tests/fuzz/corpus/fuzz_node, holds real server streams).
// Bit 1: a 4 KiB frame limit instead of the default 64 MiB.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "node.hpp"
#include "protocol.hpp"

namespace wire = edgert::wire;
using wire::Bytes;
using wire::FrameType;

namespace {

const char kDevice[] = "fuzz-device";

// The golden key: the handshake key is also the slot's packet key, so the seed's keyed packets apply.
const Bytes& key() {
  static const Bytes k = [] {
    std::ifstream f(std::string(EDGERT_TEST_DATA_DIR) + "/packets/key.bin", std::ios::binary);
    Bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (b.size() != 32) std::abort();
    return b;
  }();
  return k;
}

// The server side of the harness: the fuzz input, with the proof fixed up once the HELLO is out.
class ServerBytes final : public wire::BufferStream {
 public:
  ServerBytes(Bytes input, bool fix_proof) : BufferStream(std::move(input)), fix_proof_(fix_proof) {}
  bool write_all(const uint8_t* data, size_t len) override {
    const bool first = output.empty();
    BufferStream::write_all(data, len);
    if (first) on_hello();
    return true;
  }
  uint8_t expected_proof[wire::kProofBytes] = {};
  bool have_hello = false;

 private:
  void on_hello() {
    wire::Hello hello;
    std::string error;
    const Bytes hello_body = output.size() < wire::kHeaderBytes ? Bytes()
                                                                 : Bytes(output.begin() + wire::kHeaderBytes, output.end());
    if (output.size() < wire::kHeaderBytes || output[0] != static_cast<uint8_t>(FrameType::kHello) ||
        !wire::parse_hello(hello_body, &hello, &error)) {
      std::abort();  // the node's own HELLO must parse
    }
    have_hello = true;
    constexpr size_t kProofAt = wire::kHeaderBytes + 2 + wire::kNonceBytes;
    if (input.size() < kProofAt + wire::kProofBytes) return;
    const size_t challenge_body = 2 + wire::kNonceBytes + wire::kProofBytes;
    const uint8_t* server_nonce = input.data() + wire::kHeaderBytes + 2;
    wire::server_proof(key(), server_nonce, hello_body, expected_proof);
    if (fix_proof_ && input[0] == static_cast<uint8_t>(FrameType::kChallenge) && input[1] == 0 &&
        input[2] == challenge_body && input[3] == 0 && input[4] == 0 && input[5] == 0) {
      std::memcpy(input.data() + kProofAt, expected_proof, wire::kProofBytes);
    }
  }
  bool fix_proof_;
};

// Every body parser on the raw bytes; an accepted body must re-encode to itself.
void parse_bodies(const Bytes& body) {
  std::string error;
  wire::Hello hello;
  if (wire::parse_hello(body, &hello, &error) && wire::encode_hello(hello) != body) std::abort();
  wire::Challenge challenge;
  if (wire::parse_challenge(body, &challenge, &error)) {
    Bytes again = {static_cast<uint8_t>(challenge.protocol), static_cast<uint8_t>(challenge.protocol >> 8)};
    again.insert(again.end(), challenge.server_nonce, challenge.server_nonce + wire::kNonceBytes);
    again.insert(again.end(), challenge.server_proof, challenge.server_proof + wire::kProofBytes);
    if (again != body) std::abort();
  }
  uint64_t v = 0;
  if (wire::parse_u64(body, &v, &error) && wire::encode_u64(v) != body) std::abort();
  wire::ErrorMessage e;
  if (wire::parse_error(body, &e, &error) && e.message.size() + 4 != body.size()) std::abort();
  FrameType type;
  uint32_t len = 0;
  if (body.size() >= wire::kHeaderBytes && wire::parse_header(body.data(), wire::kDefaultMaxFrame, &type, &len, &error)) {
    const uint32_t announced = body[2] | body[3] << 8 | body[4] << 16 | static_cast<uint32_t>(body[5]) << 24;
    if (static_cast<uint8_t>(type) != body[0] || len != announced || body[1] != 0) std::abort();
  }
}

// What the node wrote: well-formed device frames, HELLO first, AUTH only after the right proof.
void check_output(const ServerBytes& io) {
  const Bytes& out = io.output;
  size_t pos = 0;
  int frames = 0;
  while (pos < out.size()) {
    FrameType type;
    uint32_t len = 0;
    std::string error;
    if (out.size() - pos < wire::kHeaderBytes || !wire::parse_header(out.data() + pos, wire::kDefaultMaxFrame, &type, &len, &error) ||
        out.size() - pos - wire::kHeaderBytes < len) {
      std::abort();
    }
    switch (type) {
      case FrameType::kHello:
        if (frames != 0) std::abort();
        break;
      case FrameType::kAuth:
        if (frames != 1 || len != wire::kProofBytes) std::abort();
        // The node answers only a CHALLENGE whose proof is right for this device's key and nonces.
        if (std::memcmp(io.input.data() + wire::kHeaderBytes + 2 + wire::kNonceBytes, io.expected_proof,
                        wire::kProofBytes) != 0) {
          std::abort();
        }
        break;
      case FrameType::kAck: case FrameType::kNack: case FrameType::kResync: case FrameType::kPing:
      case FrameType::kPong:
        if (frames < 2) std::abort();  // nothing but HELLO and AUTH before the handshake is done
        break;
      default:
        std::abort();  // a server frame type from the device
    }
    pos += wire::kHeaderBytes + len;
    ++frames;
  }
  if (frames == 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  Bytes stream(data + 1, data + size);
  parse_bodies(stream);

  edgert::node::NodeConfig config;
  config.device_id = kDevice;
  config.key = key();
  config.drop_after_s = 0.0;  // a buffer never waits
  if (control & 2) config.max_frame = 4096;
  edgert::node::EdgeNode node(config, nullptr);
  ServerBytes io(std::move(stream), (control & 1) != 0);
  (void)node.session(io);
  if (!io.have_hello) std::abort();
  check_output(io);
  return 0;
}
