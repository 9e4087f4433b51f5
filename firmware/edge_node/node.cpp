#include "node.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

namespace edgert::node {

namespace {

using Clock = std::chrono::steady_clock;
using wire::Bytes;
using wire::FrameType;

constexpr uint32_t kMaxHandshakeFrame = 4096;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The server connection (a plain or TLS Link) as the ByteStream that the frame reader and the session use.
class LinkStream final : public wire::ByteStream {
 public:
  LinkStream(Link& link, double write_timeout_s) : link_(link), write_timeout_s_(write_timeout_s) {}
  bool read_exact(uint8_t* out, size_t len, double timeout_s) override { return link_.read_exact(out, len, timeout_s); }
  bool write_all(const uint8_t* data, size_t len) override { return link_.write_all(data, len, write_timeout_s_); }
  // A Link reports "ready" for data, end of stream and failure alike; the read that follows tells them apart.
  int wait_readable(int timeout_ms) override { return link_.wait_readable(timeout_ms) ? 1 : 0; }
  std::string last_error() const override { return link_.error(); }
  std::string describe() const override { return link_.describe(); }

 private:
  Link& link_;
  double write_timeout_s_;
};

int connect_to(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

bool read_file(const std::string& path, Bytes* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  Bytes data;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.insert(data.end(), buf, buf + n);
  const bool ok = !std::ferror(f);
  std::fclose(f);
  if (ok) out->swap(data);
  return ok;
}

// temp file + fsync + rename, like edgert_slot_save.
bool write_file_atomic(const std::string& path, const Bytes& data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return false;
  bool ok = true;
  size_t off = 0;
  while (ok && off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    off += ok ? static_cast<size_t>(n) : 0;
  }
  ok = ok && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return false;
  }
  // The rename is durable only once the folder is synced (a power loss could otherwise bring the old file back).
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd < 0) return false;
  ok = ::fsync(dfd) == 0;
  ::close(dfd);
  return ok;
}

// trust.bin (docs/spec/update-packet.md, "Saved trust"; edgert.updates.signing writes the same file):
// "ERTT", root key (32), root version (u64 LE), delegation floor (u64 LE), CRC32C of the 52 bytes before (u32 LE).
constexpr size_t kTrustFileBytes = 56;
constexpr uint8_t kTrustMagic[4] = {'E', 'R', 'T', 'T'};

uint64_t load_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void store_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void random_bytes(uint8_t* out, size_t n) {
  std::random_device rd;
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(rd());
}

}  // namespace

struct EdgeNode::SlotHandle {
  edgert_slot* slot = nullptr;
  edgert_receiver* receiver = nullptr;  // hashes PACKET bodies as they arrive (null: apply hashes them)
  bool received = false;                // the receiver holds the body of the frame being read
  ~SlotHandle() {
    edgert_receiver_free(receiver);
    edgert_slot_free(slot);
  }
};

// Feeds PACKET frame bodies to the current slot's receiver while they arrive, so that the SHA-256 of the release
// signature and the HMAC are done when the last byte is in (docs/spec/update-packet.md, "Hashing on arrival").
class EdgeNode::PacketHasher final : public wire::BodySink {
 public:
  explicit PacketHasher(const EdgeNode& node) : node_(node) {}
  void begin(FrameType type) override {
    if (slot_) slot_->received = false;
    slot_ = type == FrameType::kPacket ? node_.current_slot() : nullptr;
    if (slot_ && slot_->receiver == nullptr) slot_ = nullptr;
    if (slot_) {
      edgert_receiver_reset(slot_->receiver);
      slot_->received = true;
    }
  }
  void piece(const uint8_t* data, size_t len) override {
    if (slot_) edgert_receiver_update(slot_->receiver, data, len);
  }

 private:
  const EdgeNode& node_;
  std::shared_ptr<SlotHandle> slot_;
};

EdgeNode::EdgeNode(NodeConfig config, LogFn log)
    : config_(std::move(config)), log_(std::move(log)), trust_(config_.trust) {}

void EdgeNode::save_trust(edgert_slot* slot) {
  if (!config_.require_signatures || edgert_slot_get_trust(slot, &trust_) != EDGERT_OK) return;
  if (config_.state_dir.empty()) return;
  Bytes data(kTrustFileBytes);
  std::memcpy(data.data(), kTrustMagic, 4);
  std::memcpy(data.data() + 4, trust_.root_key, 32);
  store_le(data.data() + 36, trust_.root_version, 8);
  store_le(data.data() + 44, trust_.min_release_version, 8);
  store_le(data.data() + 52, edgert_crc32c(0, data.data(), kTrustFileBytes - 4), 4);
  if (!write_file_atomic(config_.state_dir + "/trust.bin", data)) log("warning: could not save trust.bin");
}

EdgeNode::~EdgeNode() = default;

void EdgeNode::log(const std::string& line) const {
  if (log_) log_(line);
}

std::shared_ptr<EdgeNode::SlotHandle> EdgeNode::current_slot() const {
  std::lock_guard<std::mutex> lock(slot_mutex_);
  return slot_;
}

uint64_t EdgeNode::version() const {
  const auto s = current_slot();
  return s ? edgert_slot_version(s->slot) : 0;
}

bool EdgeNode::load_trust() {
  const std::string path = config_.state_dir + "/trust.bin";
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return true;  // first start: the pinned root
  // A file that exists but does not decode must not fall back to the pinned root: that could re-admit a
  // rotated-out root or a revoked delegation. Refuse to start; the operator restores or re-provisions it.
  const std::string refuse = "; refusing to start (a fall-back to the pinned root could re-admit a rotated-out root "
                             "or a revoked delegation): restore the file or re-provision the device";
  Bytes saved;
  if (!read_file(path, &saved)) {
    log(path + ": cannot be read (" + std::strerror(errno) + ")" + refuse);
    return false;
  }
  if (saved.size() != kTrustFileBytes) {
    log(path + ": " + std::to_string(saved.size()) + " bytes, expected " + std::to_string(kTrustFileBytes) +
        " (truncated or not a trust state)" + refuse);
    return false;
  }
  if (std::memcmp(saved.data(), kTrustMagic, 4) != 0) {
    log(path + ": bad magic (expected 'ERTT')" + refuse);
    return false;
  }
  if (edgert_crc32c(0, saved.data(), kTrustFileBytes - 4) != load_le(saved.data() + 52, 4)) {
    log(path + ": checksum mismatch (corrupted)" + refuse);
    return false;
  }
  const uint64_t root_version = load_le(saved.data() + 36, 8);
  const uint64_t floor = load_le(saved.data() + 44, 8);
  if (root_version < config_.trust.root_version) {
    log(path + ": root version " + std::to_string(root_version) + " is older than the pinned " +
        std::to_string(config_.trust.root_version) + "; using the pinned root");
    return true;
  }
  std::memcpy(trust_.root_key, saved.data() + 4, 32);
  trust_.root_version = root_version;
  trust_.min_release_version = floor > config_.trust.min_release_version ? floor : config_.trust.min_release_version;
  log("resumed trust: root version " + std::to_string(root_version) + ", delegations >= " +
      std::to_string(trust_.min_release_version));
  return true;
}

bool EdgeNode::load_state() {
  if (config_.state_dir.empty()) return true;
  ::mkdir(config_.state_dir.c_str(), 0755);
  if (config_.require_signatures && !load_trust()) return false;
  Bytes manifest;
  if (!read_file(config_.state_dir + "/manifest.bin", &manifest)) return true;
  if (!handle_manifest(manifest)) return true;
  const auto s = current_slot();
  const std::string snap = config_.state_dir + "/slot.snap";
  if (edgert_slot_load(s->slot, snap.c_str()) == EDGERT_OK) {
    log("resumed from " + snap + " at version " + std::to_string(edgert_slot_version(s->slot)));
  } else {
    log(std::string("no usable snapshot (") + edgert_last_error() + "), starting at version 0");
  }
  return true;
}

bool EdgeNode::handle_manifest(const Bytes& body) {
  if (body == manifest_ && current_slot()) return true;  // same model: keep weights and version
  auto handle = std::make_shared<SlotHandle>();
  if (edgert_slot_create(body.data(), body.size(), &handle->slot) != EDGERT_OK) {
    log(std::string("rejected manifest: ") + edgert_last_error());
    return false;
  }
  if (!config_.key.empty() && edgert_slot_set_key(handle->slot, config_.key.data(), config_.key.size()) != EDGERT_OK) {
    log(std::string("cannot set key: ") + edgert_last_error());
    return false;
  }
  if (config_.require_signatures && edgert_slot_set_trust(handle->slot, &trust_) != EDGERT_OK) {
    log(std::string("cannot require release signatures: ") + edgert_last_error());
    return false;
  }
  if (edgert_slot_receiver_create(handle->slot, &handle->receiver) != EDGERT_OK) {
    handle->receiver = nullptr;  // packets are then hashed after they arrive
  }
  {
    std::lock_guard<std::mutex> lock(slot_mutex_);
    slot_ = handle;
    manifest_ = body;
  }
  if (!config_.state_dir.empty() && !write_file_atomic(config_.state_dir + "/manifest.bin", body)) {
    log("warning: could not save the manifest");
  }
  log("model manifest installed (" + std::to_string(edgert_slot_tensor_count(handle->slot)) + " tensors)");
  return true;
}

bool EdgeNode::handle_packet(wire::ByteStream& io, const Bytes& body) {
  const auto s = current_slot();
  if (!s) return wire::write_frame(io, FrameType::kResync, wire::encode_u64(0));
  const bool received = s->received;
  s->received = false;
  const edgert_status st = received ? edgert_slot_apply_received(s->slot, s->receiver, body.data(), body.size())
                                    : edgert_slot_apply(s->slot, body.data(), body.size());
  const uint64_t v = edgert_slot_version(s->slot);
  if (st == EDGERT_OK || st == EDGERT_ERR_PACKET_STALE) {
    if (st == EDGERT_OK) {
      log("applied version " + std::to_string(v));
      save_trust(s->slot);
      if (!config_.state_dir.empty()) {
        const std::string snap = config_.state_dir + "/slot.snap";
        if (edgert_slot_save(s->slot, snap.c_str()) != EDGERT_OK) log(std::string("save failed: ") + edgert_last_error());
      }
    }
    return wire::write_frame(io, FrameType::kAck, wire::encode_u64(v));
  }
  const std::string message = std::string(edgert_status_name(st)) + ": " + edgert_last_error();
  log("rejected packet: " + message);
  if (st == EDGERT_ERR_PACKET_VERSION_MISMATCH) return wire::write_frame(io, FrameType::kResync, wire::encode_u64(v));
  wire::Nack nack;
  nack.active_version = v;
  nack.status = static_cast<uint32_t>(st);
  nack.message = message;
  return wire::write_frame(io, FrameType::kNack, wire::encode_nack(nack));
}

bool EdgeNode::session(wire::ByteStream& io) {
  wire::Hello hello;
  hello.device_id = config_.device_id;
  hello.max_packet_format = edgert_packet_max_format();
  if (const auto s = current_slot()) {
    edgert_slot_model_id(s->slot, hello.model_id);
    hello.active_version = edgert_slot_version(s->slot);
  }
  random_bytes(hello.client_nonce, wire::kNonceBytes);
  const Bytes hello_body = wire::encode_hello(hello);  // the proofs cover these exact bytes
  if (!wire::write_frame(io, FrameType::kHello, hello_body)) return false;

  std::string error;
  PacketHasher hasher(*this);
  auto read_frame = [&](FrameType* type, Bytes* body, uint32_t max_length) -> bool {
    if (wire::read_frame(io, max_length, config_.drop_after_s, config_.drop_after_s, type, body, &error, &hasher)) {
      return true;
    }
    if (!error.empty()) {
      log("bad frame from server: " + error);
    } else if (const std::string why = io.last_error(); !why.empty()) {
      log("connection lost: " + why);
    }
    return false;
  };

  FrameType type;
  Bytes body;
  // Until the server has proved it knows the key, frames are small (CHALLENGE or ERROR).
  if (!read_frame(&type, &body, std::min(config_.max_frame, kMaxHandshakeFrame))) {
    if (config_.tls.enabled() && config_.tls.cert_file.empty()) {
      // TLS 1.3 completes on our side before the server checks our (absent) certificate, so its refusal
      // arrives as an alert or a closed connection here.
      log("the server ended the connection before CHALLENGE: it may require a device certificate "
          "(--tls-cert, --tls-key), which this node does not present");
    }
    return false;
  }
  if (type == FrameType::kError) {
    wire::ErrorMessage e;
    std::string err;
    if (wire::parse_error(body, &e, &err)) log("server refused: " + e.message);
    return false;
  }
  wire::Challenge challenge;
  if (type != FrameType::kChallenge || !wire::parse_challenge(body, &challenge, &error)) {
    log("handshake: expected CHALLENGE, got " + std::string(wire::frame_name(type)) + " " + error);
    return false;
  }
  uint8_t expected[wire::kProofBytes];
  wire::server_proof(config_.key, challenge.server_nonce, hello_body, expected);
  if (!edgert_mac_equal(expected, challenge.server_proof, wire::kProofBytes)) {
    log("handshake: the server does not know this device's key, or our HELLO changed on the way; disconnecting");
    return false;
  }
  uint8_t proof[wire::kProofBytes];
  wire::device_proof(config_.key, challenge.server_nonce, hello_body, proof);
  if (!wire::write_frame(io, FrameType::kAuth, wire::encode_auth(proof))) return false;
  log("connected and authenticated (" + io.describe() + ")");

  auto last_traffic = Clock::now();
  auto last_ping = Clock::now();
  while (!stopping_) {
    const int r = io.wait_readable(200);
    if (r < 0) return true;
    if (r == 0) {
      if (seconds_since(last_traffic) > config_.drop_after_s) {
        log("server silent; dropping the connection");
        return true;
      }
      if (seconds_since(last_traffic) > config_.ping_after_s && seconds_since(last_ping) > config_.ping_after_s) {
        last_ping = Clock::now();
        if (!wire::write_frame(io, FrameType::kPing, wire::encode_u64(0))) return true;
      }
      continue;
    }
    if (!read_frame(&type, &body, config_.max_frame)) return true;
    last_traffic = Clock::now();
    bool ok = true;
    switch (type) {
      case FrameType::kManifest:
        ok = handle_manifest(body);  // a manifest we cannot parse: drop and retry later
        break;
      case FrameType::kPacket:
        ok = handle_packet(io, body);
        break;
      case FrameType::kPing: {
        uint64_t nonce = 0;
        ok = wire::parse_u64(body, &nonce, &error) && wire::write_frame(io, FrameType::kPong, wire::encode_u64(nonce));
        break;
      }
      case FrameType::kPong:
        break;
      case FrameType::kError: {
        wire::ErrorMessage e;
        if (wire::parse_error(body, &e, &error)) log("server error " + std::to_string(e.code) + ": " + e.message);
        return true;
      }
      default:
        log(std::string("unexpected ") + wire::frame_name(type) + " from the server");
        return true;
    }
    if (!ok) return true;
  }
  return true;
}

void EdgeNode::serve_loop(int listen_fd) {
  while (!stopping_) {
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int client = ::accept(listen_fd, nullptr, nullptr);
    if (client < 0) continue;
    uint8_t request = 0;
    while (recv_exact_fd(client, &request, 1, 5.0)) {
      Bytes reply;
      const auto s = current_slot();
      if (request == 'V') {
        reply = wire::encode_u64(s ? edgert_slot_version(s->slot) : 0);
      } else if (request == 'W') {
        const void* weights = nullptr;
        uint64_t version = 0;
        uint64_t size = 0;
        if (s && edgert_slot_acquire(s->slot, &weights, &version) == EDGERT_OK) {
          size = edgert_slot_weights_size(s->slot);
          reply = wire::encode_u64(version);
          const Bytes sz = wire::encode_u64(size);
          reply.insert(reply.end(), sz.begin(), sz.end());
          const auto* w = static_cast<const uint8_t*>(weights);
          reply.insert(reply.end(), w, w + size);
          edgert_slot_release(s->slot, weights);
        } else {
          reply = wire::encode_u64(0);
          const Bytes sz = wire::encode_u64(0);
          reply.insert(reply.end(), sz.begin(), sz.end());
        }
      } else if (request == 'M') {
        Bytes manifest;
        {
          std::lock_guard<std::mutex> lock(slot_mutex_);
          manifest = manifest_;
        }
        reply = wire::encode_u64(manifest.size());
        reply.insert(reply.end(), manifest.begin(), manifest.end());
      } else {
        break;  // unknown request: close
      }
      if (!send_all_fd(client, reply.data(), reply.size(), 5.0)) break;
    }
    ::close(client);
  }
}

bool EdgeNode::run() {
  std::unique_ptr<TlsClient> tls;
  if (config_.tls.enabled()) {
    std::string error;
    tls = TlsClient::create(config_.tls, &error);
    if (!tls) {
      log(error);
      return false;
    }
    log("TLS 1.3 to " + (config_.tls.server_name.empty() ? config_.host : config_.tls.server_name) +
        (config_.tls.cert_file.empty() ? ", presenting no device certificate" : ", device certificate " +
         config_.tls.cert_file));
  }
  if (!load_state()) return false;
  int listen_fd = -1;
  std::thread server;
  if (!config_.serve_path.empty()) {
    listen_fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (config_.serve_path.size() >= sizeof(addr.sun_path)) {
      log("serve path too long");
    } else {
      std::strncpy(addr.sun_path, config_.serve_path.c_str(), sizeof(addr.sun_path) - 1);
      ::unlink(config_.serve_path.c_str());
      if (listen_fd >= 0 && ::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          ::listen(listen_fd, 8) == 0) {
        server = std::thread([this, listen_fd] { serve_loop(listen_fd); });
        log("serving weights on " + config_.serve_path);
      } else {
        log("cannot serve on " + config_.serve_path + ": " + std::strerror(errno));
      }
    }
  }
  std::mt19937 rng(std::random_device{}());
  double backoff = config_.backoff_min_s;
  while (!stopping_) {
    const int fd = connect_to(config_.host, config_.port);
    bool authenticated = false;
    if (fd >= 0) {
      std::unique_ptr<Link> link;  // owns fd from here on
      std::string error;
      if (tls) {
        link = tls->connect(fd, config_.host, config_.drop_after_s, &error);
        if (!link) log(error);
      } else {
        link = plain_link(fd);
      }
      if (link) {
        LinkStream io(*link, config_.drop_after_s);
        authenticated = session(io);
      }
    }
    if (stopping_) break;
    backoff = authenticated ? config_.backoff_min_s : std::min(backoff * 2, config_.backoff_max_s);
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    const double wait = backoff * jitter(rng);
    log("disconnected; retrying in " + std::to_string(wait).substr(0, 5) + " s (keeping version " +
        std::to_string(version()) + ")");
    const auto until = Clock::now() + std::chrono::duration<double>(wait);
    while (!stopping_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (server.joinable()) server.join();
  if (listen_fd >= 0) {
    ::close(listen_fd);
    ::unlink(config_.serve_path.c_str());
  }
  return true;
}

}  // namespace edgert::node
