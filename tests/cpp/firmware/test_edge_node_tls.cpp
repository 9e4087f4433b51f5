// The edge node's TLS link (firmware/edge_node/tls.cpp) against a real OpenSSL TLS 1.3 server on loopback:
// session tickets while idle, megabyte frames through full socket buffers (WANT_WRITE, partial writes),
// close_notify, a server that vanishes mid-stream (an error, not SIGPIPE), read timeouts, another host name,
// a server without TLS 1.3.
// Certificate validation and mutual authentication against the Python server: tests/test_edge_node_tls.py.
#include <gtest/gtest.h>

#include <string>

#include "tls.hpp"

namespace {

edgert::node::TlsConfig trusting(const std::string& ca_file) {
  edgert::node::TlsConfig config;
  config.ca_file = ca_file;
  return config;
}

}  // namespace

#ifndef EDGERT_NODE_TLS

TEST(EdgeNodeTls, BuiltWithoutTls) {
  std::string error;
  EXPECT_FALSE(edgert::node::tls_available());
  EXPECT_EQ(edgert::node::TlsClient::create(trusting("ca.pem"), &error), nullptr);
  EXPECT_NE(error.find("without TLS"), std::string::npos) << error;
}

#else

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

namespace {

using edgert::node::Link;
using edgert::node::TlsClient;
using edgert::node::TlsConfig;

// A self-signed P-256 certificate for 127.0.0.1 (its own CA) and its key, as PEM files in a temp folder.
struct TestPki {
  std::string dir, cert, key;
  ~TestPki() {
    std::remove(cert.c_str());
    std::remove(key.c_str());
    ::rmdir(dir.c_str());
  }
  TestPki() {
    char tmpl[] = "/tmp/edgert-tls-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) std::abort();
    dir = tmpl;
    cert = dir + "/server.pem";
    key = dir + "/server.key";
    EVP_PKEY* pkey = EVP_EC_gen("P-256");
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("edgert test"), -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
    for (const auto& [nid, value] : {std::pair<int, const char*>{NID_subject_alt_name, "IP:127.0.0.1"},
                                     {NID_basic_constraints, "critical,CA:TRUE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      X509_add_ext(x, ext, -1);
      X509_EXTENSION_free(ext);
    }
    X509_sign(x, pkey, EVP_sha256());
    FILE* f = std::fopen(cert.c_str(), "w");
    PEM_write_X509(f, x);
    std::fclose(f);
    f = std::fopen(key.c_str(), "w");
    PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
  }
};

const TestPki& pki() {
  static const TestPki p;
  return p;
}

// A TLS 1.3 server on 127.0.0.1 for one connection: accepts it (blocking), runs script, closes it.
class TestServer {
 public:
  // max_version: the newest TLS version the server offers (TLS1_3_VERSION, or older to test the refusal).
  explicit TestServer(std::function<void(SSL*, int)> script, int max_version = TLS1_3_VERSION) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(listen_fd_, 1) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::abort();
    }
    port_ = ntohs(addr.sin_port);
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx_, max_version);
    SSL_CTX_set_max_proto_version(ctx_, max_version);
    if (SSL_CTX_use_certificate_file(ctx_, pki().cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, pki().key.c_str(), SSL_FILETYPE_PEM) != 1) {
      std::abort();
    }
    thread_ = std::thread([this, script] {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) script(ssl, fd);
      SSL_free(ssl);
      ::close(fd);
    });
  }
  ~TestServer() {
    thread_.join();
    ::close(listen_fd_);
    SSL_CTX_free(ctx_);
  }
  uint16_t port() const { return port_; }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  SSL_CTX* ctx_ = nullptr;
  std::thread thread_;
};

std::unique_ptr<Link> connect_tls(uint16_t port, std::string* error) {
  const auto client = TlsClient::create(trusting(pki().cert), error);
  if (!client) return nullptr;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    *error = "connect failed";
    return nullptr;
  }
  return client->connect(fd, "127.0.0.1", 5.0, error);
}

bool ssl_read_all(SSL* ssl, uint8_t* out, size_t len) {
  while (len > 0) {
    size_t n = 0;
    if (SSL_read_ex(ssl, out, len, &n) != 1) return false;
    out += n;
    len -= n;
  }
  return true;
}

TEST(EdgeNodeTls, MegabyteFramesThroughFullBuffersAndTicketsWhileIdle) {
  constexpr size_t kBytes = 4u << 20;
  TestServer server([](SSL* ssl, int) {
    // The client first waits for application data while only session tickets arrive, then writes 4 MiB
    // before we read any: its socket buffer fills (WANT_WRITE, partial writes).
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::vector<uint8_t> data(kBytes);
    if (!ssl_read_all(ssl, data.data(), data.size())) return;
    size_t n = 0;
    SSL_write_ex(ssl, data.data(), data.size(), &n);
    SSL_shutdown(ssl);
  });
  std::string error;
  auto link = connect_tls(server.port(), &error);
  ASSERT_NE(link, nullptr) << error;
  EXPECT_EQ(link->describe().rfind("TLSv1.3 ", 0), 0u) << link->describe();
  EXPECT_FALSE(link->wait_readable(200)) << "a session ticket is not application data";

  std::vector<uint8_t> sent(kBytes);
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  ASSERT_TRUE(link->write_all(sent.data(), sent.size(), 5.0)) << link->error();
  ASSERT_TRUE(link->wait_readable(5000));
  std::vector<uint8_t> got(kBytes);
  ASSERT_TRUE(link->read_exact(got.data(), got.size(), 5.0)) << link->error();
  EXPECT_EQ(got, sent);
  // Then the server's close_notify: a clean end of stream, reported as such.
  uint8_t byte = 0;
  EXPECT_FALSE(link->read_exact(&byte, 1, 5.0));
  EXPECT_NE(link->error().find("close_notify"), std::string::npos) << link->error();
}

TEST(EdgeNodeTls, ServerThatVanishesIsAnErrorNotASignal) {
  std::signal(SIGPIPE, SIG_DFL);  // as in a program that never thought of SIGPIPE: a raised one would end it
  TestServer server([](SSL*, int fd) {
    ::shutdown(fd, SHUT_RDWR);  // gone without close_notify
  });
  std::string error;
  auto link = connect_tls(server.port(), &error);
  ASSERT_NE(link, nullptr) << error;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::vector<uint8_t> chunk(64 << 10, 7);
  bool failed = false;
  for (int i = 0; i < 100 && !failed; ++i) {
    failed = !link->write_all(chunk.data(), chunk.size(), 2.0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(failed);
  EXPECT_FALSE(link->error().empty());
  uint8_t byte = 0;
  EXPECT_FALSE(link->read_exact(&byte, 1, 1.0));  // the link stays failed
}

TEST(EdgeNodeTls, SilentServerTimesOut) {
  TestServer server([](SSL*, int) { std::this_thread::sleep_for(std::chrono::milliseconds(800)); });
  std::string error;
  auto link = connect_tls(server.port(), &error);
  ASSERT_NE(link, nullptr) << error;
  uint8_t header[6];
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(link->read_exact(header, sizeof(header), 0.2));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(link->error().find("timed out"), std::string::npos) << link->error();
  EXPECT_LT(waited, 0.7);
}

TEST(EdgeNodeTls, RefusesAServerCertificateForAnotherName) {
  TestServer server([](SSL*, int) {});
  std::string error;
  TlsConfig config = trusting(pki().cert);
  config.server_name = "model-server.example";
  const auto client = TlsClient::create(config, &error);
  ASSERT_NE(client, nullptr) << error;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(client->connect(fd, "127.0.0.1", 5.0, &error), nullptr);
  EXPECT_NE(error.find("hostname mismatch"), std::string::npos) << error;
}

TEST(EdgeNodeTls, RefusesAServerWithoutTls13) {
  TestServer server([](SSL*, int) {}, TLS1_2_VERSION);
  std::string error;
  EXPECT_EQ(connect_tls(server.port(), &error), nullptr);
  EXPECT_NE(error.find("TLS handshake with 127.0.0.1 failed"), std::string::npos) << error;
  EXPECT_NE(error.find("protocol"), std::string::npos) << error;  // OpenSSL: "... protocol version"
}

TEST(EdgeNodeTls, FilesThatDoNotLoadAreNamed) {
  std::string error;
  EXPECT_EQ(TlsClient::create(trusting("/nonexistent/ca.pem"), &error), nullptr);
  EXPECT_NE(error.find("/nonexistent/ca.pem"), std::string::npos) << error;
  TlsConfig config = trusting(pki().cert);
  config.cert_file = pki().cert;
  EXPECT_EQ(TlsClient::create(config, &error), nullptr);  // a certificate without its key
  EXPECT_NE(error.find("go together"), std::string::npos) << error;
}

}  // namespace

#endif  // EDGERT_NODE_TLS
