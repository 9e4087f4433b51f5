// Unit tests of the wire protocol codec used by the edge node, and of its frame
// reader and handshake over a buffer (no sockets; tests/test_edge_node.py runs
// the node against the Python server over TCP).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "golden.hpp"
#include "node.hpp"
#include "protocol.hpp"

using edgert::wire::Bytes;
using edgert::wire::FrameType;
namespace wire = edgert::wire;

TEST(WireProtocol, FrameHeaderRoundTripAndLimits) {
  const Bytes frame = wire::encode_frame(FrameType::kAck, wire::encode_u64(42));
  ASSERT_EQ(frame.size(), wire::kHeaderBytes + 8);
  FrameType type;
  uint32_t len = 0;
  std::string error;
  ASSERT_TRUE(wire::parse_header(frame.data(), 1024, &type, &len, &error)) << error;
  EXPECT_EQ(type, FrameType::kAck);
  EXPECT_EQ(len, 8u);
  uint64_t v = 0;
  ASSERT_TRUE(wire::parse_u64(Bytes(frame.begin() + 6, frame.end()), &v, &error));
  EXPECT_EQ(v, 42u);

  EXPECT_FALSE(wire::parse_header(frame.data(), 7, &type, &len, &error));  // longer than the limit
  EXPECT_EQ(error, "frame longer than the limit");
  Bytes bad = frame;
  bad[0] = 0;
  EXPECT_FALSE(wire::parse_header(bad.data(), 1024, &type, &len, &error));
  bad[0] = 12;
  EXPECT_FALSE(wire::parse_header(bad.data(), 1024, &type, &len, &error));
  EXPECT_EQ(error, "unknown frame type");
  bad = frame;
  bad[1] = 1;
  EXPECT_FALSE(wire::parse_header(bad.data(), 1024, &type, &len, &error));
  // A length of 2^32 - 1 is refused before any allocation.
  const uint8_t huge[6] = {5, 0, 0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(wire::parse_header(huge, wire::kDefaultMaxFrame, &type, &len, &error));
}

TEST(WireProtocol, HelloRoundTripAndEveryTruncation) {
  wire::Hello hello;
  hello.device_id = "drone-7";
  hello.active_version = 0x0102030405060708ull;
  for (size_t i = 0; i < wire::kNonceBytes; ++i) hello.client_nonce[i] = static_cast<uint8_t>(i * 3);
  hello.model_id[0] = 0xab;
  hello.max_packet_format = 2;
  const Bytes body = wire::encode_hello(hello);
  EXPECT_EQ(body.size(), 4u + 2 + 2 + 7 + 16 + 8 + 2 + 16);
  wire::Hello parsed;
  std::string error;
  ASSERT_TRUE(wire::parse_hello(body, &parsed, &error)) << error;
  EXPECT_EQ(parsed.device_id, "drone-7");
  EXPECT_EQ(parsed.active_version, hello.active_version);
  EXPECT_EQ(0, std::memcmp(parsed.client_nonce, hello.client_nonce, wire::kNonceBytes));
  EXPECT_EQ(parsed.model_id[0], 0xab);
  EXPECT_EQ(parsed.max_packet_format, 2);
  for (size_t cut = 0; cut < body.size(); ++cut) {
    EXPECT_FALSE(wire::parse_hello(Bytes(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(cut)), &parsed, &error))
        << "cut " << cut;
  }
  Bytes longer = body;
  longer.push_back(0);
  EXPECT_FALSE(wire::parse_hello(longer, &parsed, &error));
  EXPECT_EQ(error, "HELLO: trailing bytes");
  Bytes future = body;
  future[4] = 4;  // protocol version 4
  EXPECT_FALSE(wire::parse_hello(future, &parsed, &error));
  Bytes old = body;
  old[4] = 2;  // protocol 2: its HELLO was not covered by the proofs
  EXPECT_FALSE(wire::parse_hello(old, &parsed, &error));
  EXPECT_EQ(error, "HELLO: unsupported protocol version");
  Bytes no_format = body;
  no_format[4 + 2 + 2 + 7 + 16 + 8] = 0;  // max_packet_format 0
  no_format[4 + 2 + 2 + 7 + 16 + 8 + 1] = 0;
  EXPECT_FALSE(wire::parse_hello(no_format, &parsed, &error));
  EXPECT_EQ(error, "HELLO: max packet format 0");
}

namespace {

Bytes from_hex(const std::string& hex) {
  Bytes out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

TEST(WireProtocol, ProofsBindKeyNonceAndEveryHelloByte) {
  const Bytes key(32, 7), other_key(32, 8);
  wire::Hello hello;
  hello.device_id = "dev";
  hello.active_version = 5;
  hello.max_packet_format = 3;
  const Bytes body = wire::encode_hello(hello);
  uint8_t nonce[wire::kNonceBytes] = {2};
  uint8_t other_nonce[wire::kNonceBytes] = {3};
  uint8_t p[32], q[32];
  wire::server_proof(key, nonce, body, p);
  wire::server_proof(other_key, nonce, body, q);
  EXPECT_NE(0, std::memcmp(p, q, 32));
  wire::server_proof(key, other_nonce, body, q);
  EXPECT_NE(0, std::memcmp(p, q, 32));
  wire::device_proof(key, nonce, body, q);
  EXPECT_NE(0, std::memcmp(p, q, 32));  // server and device proofs are domain-separated
  // A flipped bit anywhere in HELLO (the version, the model id, the packet format...) changes both proofs.
  uint8_t d[32], e[32];
  wire::device_proof(key, nonce, body, d);
  for (size_t bit = 0; bit < body.size() * 8; ++bit) {
    Bytes flipped = body;
    flipped[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    wire::server_proof(key, nonce, flipped, q);
    wire::device_proof(key, nonce, flipped, e);
    EXPECT_NE(0, std::memcmp(p, q, 32)) << "bit " << bit;
    EXPECT_NE(0, std::memcmp(d, e, 32)) << "bit " << bit;
  }
  wire::server_proof(key, nonce, body, q);
  EXPECT_EQ(0, std::memcmp(p, q, 32));
}

// The golden handshake of tests/data/wire/handshake_v3.txt, which tests/test_protocol.py checks too.
TEST(WireProtocol, GoldenHandshakeProofs) {
  const Bytes text = edgert_test::read_test_data("wire", "handshake_v3.txt");
  std::istringstream lines(std::string(text.begin(), text.end()));
  std::map<std::string, Bytes> golden;
  std::string name, hex;
  while (lines >> name >> hex) golden[name] = from_hex(hex);
  ASSERT_EQ(golden.size(), 5u);
  wire::Hello hello;
  std::string error;
  ASSERT_TRUE(wire::parse_hello(golden["hello"], &hello, &error)) << error;
  EXPECT_EQ(hello.device_id, "golden-dev");
  EXPECT_EQ(hello.active_version, 0x0102030405060708ull);
  EXPECT_EQ(hello.max_packet_format, 3);
  EXPECT_EQ(wire::encode_hello(hello), golden["hello"]);
  ASSERT_EQ(golden["server_nonce"].size(), wire::kNonceBytes);
  uint8_t proof[32];
  wire::server_proof(golden["key"], golden["server_nonce"].data(), golden["hello"], proof);
  EXPECT_EQ(Bytes(proof, proof + 32), golden["server_proof"]);
  wire::device_proof(golden["key"], golden["server_nonce"].data(), golden["hello"], proof);
  EXPECT_EQ(Bytes(proof, proof + 32), golden["device_proof"]);
}

TEST(WireProtocol, ChallengeAndNackAndError) {
  Bytes challenge = {2, 0};  // protocol 2: the node speaks 3 and refuses it
  challenge.resize(2 + wire::kNonceBytes + wire::kProofBytes, 9);
  wire::Challenge c;
  std::string error;
  EXPECT_FALSE(wire::parse_challenge(challenge, &c, &error));
  challenge[0] = 3;
  ASSERT_TRUE(wire::parse_challenge(challenge, &c, &error)) << error;
  EXPECT_EQ(c.server_nonce[0], 9);
  challenge.pop_back();
  EXPECT_FALSE(wire::parse_challenge(challenge, &c, &error));
  wire::Nack nack;
  nack.active_version = 3;
  nack.status = 103;
  nack.message = std::string(300, 'x');
  EXPECT_EQ(wire::encode_nack(nack).size(), 8u + 4u + 255u);  // message capped
  wire::ErrorMessage e;
  EXPECT_FALSE(wire::parse_error(Bytes{1, 2}, &e, &error));
  ASSERT_TRUE(wire::parse_error(Bytes{2, 0, 0, 0, 'n', 'o'}, &e, &error));
  EXPECT_EQ(e.code, 2u);
  EXPECT_EQ(e.message, "no");
}

// ---- frames over a ByteStream (the node's reader; tests/fuzz/fuzz_node.cpp drives the same code) ----

TEST(WireStream, ReadsFramesInOrderAndStopsAtTheEnd) {
  Bytes data = wire::encode_frame(FrameType::kPing, wire::encode_u64(5));
  const Bytes second = wire::encode_frame(FrameType::kPong, {});
  data.insert(data.end(), second.begin(), second.end());
  wire::BufferStream in(data);
  FrameType type;
  Bytes body;
  std::string error;
  ASSERT_TRUE(wire::read_frame(in, 1024, 1.0, 1.0, &type, &body, &error)) << error;
  EXPECT_EQ(type, FrameType::kPing);
  EXPECT_EQ(body, wire::encode_u64(5));
  ASSERT_TRUE(wire::read_frame(in, 1024, 1.0, 1.0, &type, &body, &error)) << error;
  EXPECT_EQ(type, FrameType::kPong);
  EXPECT_TRUE(body.empty());
  EXPECT_FALSE(wire::read_frame(in, 1024, 1.0, 1.0, &type, &body, &error));
  EXPECT_EQ(error, "");  // the stream ended: not a protocol error
  EXPECT_EQ(in.wait_readable(0), -1);
}

TEST(WireStream, EveryTruncationEndsTheStreamAndBadHeadersSayWhy) {
  const Bytes frame = wire::encode_frame(FrameType::kAck, wire::encode_u64(9));
  for (size_t cut = 0; cut < frame.size(); ++cut) {
    wire::BufferStream in(Bytes(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(cut)));
    FrameType type;
    Bytes body;
    std::string error;
    EXPECT_FALSE(wire::read_frame(in, 1024, 1.0, 1.0, &type, &body, &error)) << "cut " << cut;
    EXPECT_EQ(error, "") << "cut " << cut;
  }
  Bytes bad = frame;
  bad[0] = 99;
  wire::BufferStream in(bad);
  FrameType type;
  Bytes body;
  std::string error;
  EXPECT_FALSE(wire::read_frame(in, 1024, 1.0, 1.0, &type, &body, &error));
  EXPECT_EQ(error, "unknown frame type");
}

TEST(WireStream, ALyingLengthCostsNoMemoryBeyondWhatArrives) {
  // A header announcing 64 MiB followed by 10 bytes: the read fails without allocating the announced size.
  Bytes data = {static_cast<uint8_t>(FrameType::kPacket), 0, 0, 0, 0, 4};
  data.resize(data.size() + 10, 1);
  wire::BufferStream in(data);
  FrameType type;
  Bytes body;
  std::string error;
  EXPECT_FALSE(wire::read_frame(in, wire::kDefaultMaxFrame, 1.0, 1.0, &type, &body, &error));
  EXPECT_LE(body.capacity(), size_t{1} << 20);
}

namespace {

edgert::node::NodeConfig buffer_config() {
  edgert::node::NodeConfig config;
  config.device_id = "drone-7";
  config.key = Bytes(32, 7);
  return config;
}

// The frames the node wrote (each header must parse).
std::vector<FrameType> written(const Bytes& out) {
  std::vector<FrameType> types;
  wire::BufferStream back(out);
  FrameType type;
  Bytes body;
  std::string error;
  while (wire::read_frame(back, wire::kDefaultMaxFrame, 0, 0, &type, &body, &error)) types.push_back(type);
  EXPECT_EQ(back.pos, out.size()) << error;
  return types;
}

}  // namespace

TEST(NodeSession, RefusedOrUnprovenServersGetNoAuth) {
  std::vector<std::string> lines;
  auto log = [&](const std::string& line) { lines.push_back(line); };
  {  // ERROR instead of CHALLENGE: the node reports the refusal and disconnects.
    edgert::node::EdgeNode node(buffer_config(), log);
    Bytes error_body = {1, 0, 0, 0, 'n', 'o'};
    wire::BufferStream io(wire::encode_frame(FrameType::kError, error_body));
    EXPECT_FALSE(node.session(io));
    EXPECT_EQ(written(io.output), std::vector<FrameType>{FrameType::kHello});
    EXPECT_EQ(lines.back(), "server refused: no");
  }
  {  // A CHALLENGE whose proof was not made with this device's key.
    edgert::node::EdgeNode node(buffer_config(), log);
    Bytes body = {3, 0};
    body.resize(2 + wire::kNonceBytes + wire::kProofBytes, 3);
    wire::BufferStream io(wire::encode_frame(FrameType::kChallenge, body));
    EXPECT_FALSE(node.session(io));
    EXPECT_EQ(written(io.output), std::vector<FrameType>{FrameType::kHello});
    EXPECT_NE(lines.back().find("does not know this device's key"), std::string::npos) << lines.back();
  }
  {  // Before the server is authenticated a frame may not be large: refused from its header alone.
    edgert::node::EdgeNode node(buffer_config(), log);
    wire::BufferStream io(Bytes{static_cast<uint8_t>(FrameType::kChallenge), 0, 0x89, 0x13, 0, 0});  // 5001 bytes
    EXPECT_FALSE(node.session(io));
    EXPECT_EQ(lines.back(), "bad frame from server: frame longer than the limit");
    EXPECT_EQ(io.pos, wire::kHeaderBytes);
  }
}
