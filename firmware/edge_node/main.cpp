// edgert_edge_node: keeps a device's model in sync with an edgert model server.
//   edgert_edge_node --server HOST:PORT --device-id ID --key-file FILE
//                    [--state-dir DIR] [--serve SOCKET] [--max-frame BYTES]
//                    [--tls-ca BUNDLE [--tls-cert CERT --tls-key KEY] [--tls-crl CRL] [--tls-server-name NAME]]
//                    [--root-key FILE [--root-version N] [--min-release-version N]]
// With --tls-ca the connection is TLS 1.3: the server certificate must chain to BUNDLE and carry NAME
// (default: the HOST dialled), and the node presents CERT (mutual authentication); the HMAC handshake
// with the key file then runs inside TLS.
//   --root-key: the pinned Ed25519 root public key (32 raw bytes, `edgert release keygen`); with it the node
//   applies only packets with a valid release signature (libedgert built with EDGERT_SIGNATURES).
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "node.hpp"

namespace {

edgert::node::EdgeNode* g_node = nullptr;

void on_signal(int) {
  if (g_node != nullptr) g_node->stop();
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --server HOST:PORT --device-id ID --key-file FILE [--state-dir DIR] [--serve SOCKET] "
               "[--max-frame BYTES]\n"
               "          [--tls-ca BUNDLE [--tls-cert CERT --tls-key KEY] [--tls-crl CRL] [--tls-server-name NAME]]\n"
               "          [--root-key FILE [--root-version N] [--min-release-version N]]%s\n",
               argv0, edgert::node::tls_available() ? "" : "\n          (this build has no TLS: EDGERT_TLS=OFF)");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  edgert::node::NodeConfig config;
  std::string key_file;
  std::string root_key_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const std::string value = argv[++i];
    if (arg == "--server") {
      const size_t colon = value.rfind(':');
      if (colon == std::string::npos) return usage(argv[0]);
      config.host = value.substr(0, colon);
      const long port = std::strtol(value.c_str() + colon + 1, nullptr, 10);
      if (port <= 0 || port > 65535) return usage(argv[0]);
      config.port = static_cast<uint16_t>(port);
    } else if (arg == "--device-id") {
      config.device_id = value;
    } else if (arg == "--key-file") {
      key_file = value;
    } else if (arg == "--state-dir") {
      config.state_dir = value;
    } else if (arg == "--serve") {
      config.serve_path = value;
    } else if (arg == "--tls-ca") {
      config.tls.ca_file = value;
    } else if (arg == "--tls-cert") {
      config.tls.cert_file = value;
    } else if (arg == "--tls-key") {
      config.tls.key_file = value;
    } else if (arg == "--tls-crl") {
      config.tls.crl_file = value;
    } else if (arg == "--tls-server-name") {
      config.tls.server_name = value;
    } else if (arg == "--root-key") {
      root_key_file = value;
    } else if (arg == "--root-version") {
      config.trust.root_version = std::strtoull(value.c_str(), nullptr, 10);
    } else if (arg == "--min-release-version") {
      config.trust.min_release_version = std::strtoull(value.c_str(), nullptr, 10);
    } else if (arg == "--max-frame") {
      config.max_frame = static_cast<uint32_t>(std::strtoul(value.c_str(), nullptr, 10));
    } else {
      return usage(argv[0]);
    }
  }
  if (config.port == 0 || config.device_id.empty() || config.device_id.size() > edgert::wire::kMaxDeviceId ||
      key_file.empty()) {
    return usage(argv[0]);
  }
  const edgert::node::TlsConfig& tls = config.tls;
  if (!tls.enabled() && (!tls.cert_file.empty() || !tls.key_file.empty() || !tls.crl_file.empty() ||
                         !tls.server_name.empty())) {
    std::fprintf(stderr, "--tls-cert, --tls-key, --tls-crl and --tls-server-name need --tls-ca\n");
    return 2;
  }
  FILE* f = std::fopen(key_file.c_str(), "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot read key file %s\n", key_file.c_str());
    return 2;
  }
  uint8_t key[65];
  const size_t key_len = std::fread(key, 1, sizeof(key), f);
  std::fclose(f);
  if (key_len < 16 || key_len > 64) {
    std::fprintf(stderr, "key file %s must hold 16..64 bytes, has %zu\n", key_file.c_str(), key_len);
    return 2;
  }
  config.key.assign(key, key + key_len);
  if (!root_key_file.empty()) {
    FILE* rf = std::fopen(root_key_file.c_str(), "rb");
    uint8_t root[33];
    const size_t root_len = rf ? std::fread(root, 1, sizeof(root), rf) : 0;
    if (rf) std::fclose(rf);
    if (root_len != sizeof(config.trust.root_key)) {
      std::fprintf(stderr, "root key file %s must hold a 32-byte Ed25519 public key\n", root_key_file.c_str());
      return 2;
    }
    if (!edgert_signatures_available()) {
      std::fprintf(stderr, "--root-key: this libedgert was built without EDGERT_SIGNATURES\n");
      return 2;
    }
    std::memcpy(config.trust.root_key, root, sizeof(config.trust.root_key));
    config.require_signatures = true;
  }

  edgert::node::EdgeNode node(config, [](const std::string& line) {
    std::fprintf(stderr, "[edge_node %ld] %s\n", static_cast<long>(std::time(nullptr)), line.c_str());
    std::fflush(stderr);
  });
  g_node = &node;
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  return node.run() ? 0 : 2;
}
