// TLS 1.3 with mutual authentication for the edge node, on OpenSSL 3 (built when EDGERT_TLS finds it;
// EDGERT_NODE_TLS is then defined). The node verifies the server's certificate against a CA bundle and a
// host name, presents its own device certificate, and accepts nothing older than TLS 1.3. The edgert
// handshake (HELLO/CHALLENGE/AUTH) then runs inside the TLS stream unchanged (docs/spec/wire-protocol.md).
//
// A server that closes mid-write is an error return, never a SIGPIPE: every OpenSSL call that may write
// blocks SIGPIPE in the calling thread and discards the one it raised (the embedding program's SIGPIPE
// handling is left as it is).
#pragma once

#include <memory>
#include <string>

#include "link.hpp"

namespace edgert::node {

struct TlsConfig {
  std::string ca_file;      // PEM bundle of the CAs a server certificate must chain to; "" = no TLS
  std::string cert_file;    // this device's certificate (PEM, chain allowed); "" = present none
  std::string key_file;     // its private key (PEM, unencrypted); given exactly when cert_file is
  std::string crl_file;     // PEM CRLs of the CAs in ca_file; "" = no revocation check
  std::string server_name;  // name (or IP address) the server certificate must carry; "" = the host dialled

  bool enabled() const { return !ca_file.empty(); }
};

// Whether this build has TLS (EDGERT_TLS found OpenSSL 3).
bool tls_available();

// The TLS client settings (an SSL_CTX), loaded once and shared by every connection of a node.
// Thread safety: connect() may be called from several threads.
class TlsClient {
 public:
  // Loads the files in config. nullptr with *error set (which file, and OpenSSL's reason) when one does
  // not load, a key does not match its certificate, or the build has no TLS.
  static std::unique_ptr<TlsClient> create(const TlsConfig& config, std::string* error);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // Runs the TLS handshake on the connected socket fd (always taken over: closed on failure) to a server
  // dialled as host, within timeout_s. Returns the TLS link, or nullptr with *error set: the server's
  // certificate does not verify (wrong CA, expired, revoked, another host name), the server refused
  // this device's certificate, TLS 1.3 is not offered, or the handshake timed out. Nothing of the edgert
  // protocol has been sent or read then.
  std::unique_ptr<Link> connect(int fd, const std::string& host, double timeout_s, std::string* error) const;

 private:
  struct Impl;
  explicit TlsClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgert::node
