// The edge node: keeps one model slot in sync with a model server over the
// wire protocol and serves the active weights to a local inference process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "edgert/edgert.h"
#include "link.hpp"
#include "protocol.hpp"
#include "tls.hpp"

namespace edgert::node {

struct NodeConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string device_id;
  wire::Bytes key;           // per-device key (16..64 bytes)
  std::string state_dir;     // manifest.bin + slot.snap survive restarts
  std::string serve_path;    // Unix socket for the inference process ("" = none)
  uint32_t max_frame = wire::kDefaultMaxFrame;
  // Release signatures: with require_signatures every packet must be signed under a release key the
  // pinned root delegated (edgert_slot_set_trust); the trust reached (rotations, delegation floor) is
  // saved as state_dir/trust.bin and resumed from there when it is not older than the pinned one; a trust.bin
  // that exists but is truncated or corrupted makes run() refuse to start (no fall-back to the pinned root).
  bool require_signatures = false;
  edgert_trust trust{};
  double ping_after_s = 5.0;     // send PING after this much silence
  double drop_after_s = 15.0;    // give up on a silent connection
  double backoff_min_s = 0.1;
  double backoff_max_s = 5.0;
  TlsConfig tls;                 // TLS 1.3 to the server when tls.enabled(); plain TCP otherwise
};

using LogFn = std::function<void(const std::string&)>;

class EdgeNode {
 public:
  EdgeNode(NodeConfig config, LogFn log);
  ~EdgeNode();
  EdgeNode(const EdgeNode&) = delete;
  EdgeNode& operator=(const EdgeNode&) = delete;

  // Loads the saved state (if any), starts the local server and runs the
  // connect / sync / reconnect loop until stop() is called. Returns false at once (and logs why)
  // when the TLS settings cannot be used (a file that does not load, a build without TLS) or the saved
  // trust (state_dir/trust.bin) exists but cannot be read or decoded.
  bool run();
  void stop() { stopping_ = true; }

  uint64_t version() const;

  // One connection over `io` (a socket in run(), a buffer in tests and the fuzzer): HELLO, the
  // server's CHALLENGE, AUTH, then MANIFEST/PACKET/PING frames until the stream ends, fails, goes
  // silent or stop() is called. Returns whether the handshake authenticated the server.
  bool session(wire::ByteStream& io);

 private:
  struct SlotHandle;
  class PacketHasher;
  bool handle_manifest(const wire::Bytes& body);
  bool handle_packet(wire::ByteStream& io, const wire::Bytes& body);
  bool load_state();
  bool load_trust();
  void save_trust(edgert_slot* slot);
  void serve_loop(int listen_fd);
  std::shared_ptr<SlotHandle> current_slot() const;
  void log(const std::string& line) const;

  NodeConfig config_;
  LogFn log_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex slot_mutex_;  // guards the pointer; the slot itself is thread-safe for readers
  std::shared_ptr<SlotHandle> slot_;
  wire::Bytes manifest_;
  edgert_trust trust_{};  // the trust the next slot starts from (follows each applied packet)
};

}  // namespace edgert::node
