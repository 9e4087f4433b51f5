#include "tls.hpp"

#include <unistd.h>

#ifdef EDGERT_NODE_TLS
#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstring>
#endif

namespace edgert::node {

#ifndef EDGERT_NODE_TLS

bool tls_available() { return false; }

struct TlsClient::Impl {};
TlsClient::TlsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsClient::~TlsClient() = default;

std::unique_ptr<TlsClient> TlsClient::create(const TlsConfig&, std::string* error) {
  *error = "this edge node was built without TLS (EDGERT_TLS=OFF or OpenSSL 3 not found)";
  return nullptr;
}

std::unique_ptr<Link> TlsClient::connect(int fd, const std::string&, double, std::string* error) const {
  ::close(fd);
  *error = "this edge node was built without TLS";
  return nullptr;
}

#else

namespace {

using Clock = std::chrono::steady_clock;

int ms_until(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}
int to_ms(double seconds) { return seconds <= 0 ? 0 : static_cast<int>(seconds * 1000.0); }

// Drains OpenSSL's error queue of this thread into one line ("" when it is empty).
std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : buf;
  }
  return out;
}

// OpenSSL's socket BIO writes with write(2), which raises SIGPIPE when the server has gone. While one is
// alive, SIGPIPE is blocked in this thread and one it raised is discarded, so a closed connection is an
// error return and never a signal, whatever the embedding program's SIGPIPE disposition.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{0, 0};
        while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

bool is_ip_address(const std::string& name) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, name.c_str(), buf) == 1 || ::inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// One TLS connection over a non-blocking socket; every wait is a poll() with the caller's timeout, so a
// stalled server costs a bounded wait, as on the plain link.
class TlsLink final : public Link {
 public:
  TlsLink(SSL* ssl, int fd) : ssl_(ssl), fd_(fd) {}
  ~TlsLink() override {
    if (!failed_) {
      // close_notify, best effort and without waiting for the server's: the connection ends either way.
      const SigpipeGuard guard;
      ERR_clear_error();
      SSL_shutdown(ssl_);
    }
    ERR_clear_error();
    SSL_free(ssl_);
    ::close(fd_);
  }

  bool write_all(const uint8_t* data, size_t len, double timeout_s) override {
    if (failed_) return false;
    const SigpipeGuard guard;
    while (len > 0) {
      size_t n = 0;
      ERR_clear_error();
      const int r = SSL_write_ex(ssl_, data, len, &n);
      if (r == 1) {  // SSL_MODE_ENABLE_PARTIAL_WRITE: n may be less than len
        data += n;
        len -= n;
        continue;
      }
      if (!wait_for(r, timeout_s, "send")) return false;
    }
    return true;
  }

  bool read_exact(uint8_t* out, size_t len, double timeout_s) override {
    if (failed_) return false;
    const SigpipeGuard guard;  // a read may write too (an alert, a key update answer)
    while (len > 0) {
      size_t n = 0;
      ERR_clear_error();
      const int r = SSL_read_ex(ssl_, out, len, &n);
      if (r == 1) {
        out += n;
        len -= n;
        continue;
      }
      if (!wait_for(r, timeout_s, "receive")) return false;
    }
    return true;
  }

  bool wait_readable(int timeout_ms) override {
    if (failed_ || SSL_pending(ssl_) > 0) return true;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (!wait_fd(fd_, POLLIN, ms_until(deadline))) return false;
      // Let OpenSSL process what arrived without consuming application data: a session ticket or a key
      // update leaves nothing to read, and we keep waiting.
      uint8_t byte = 0;
      size_t n = 0;
      const SigpipeGuard guard;
      ERR_clear_error();
      const int r = SSL_peek_ex(ssl_, &byte, 1, &n);
      if (r == 1) return true;
      const int e = SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_WANT_READ) {
        if (e != SSL_ERROR_WANT_WRITE) fail(e, "receive");
        return true;  // the next read reports it (or completes the pending write)
      }
    }
  }

  const std::string& error() const override { return error_; }

  std::string describe() const override {
    return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
  }

 private:
  // After an SSL_read_ex/SSL_write_ex that returned r != 1: waits for the socket when OpenSSL asks to
  // (true: retry the same call), or records why the connection failed (false).
  bool wait_for(int r, double timeout_s, const char* op) {
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (wait_fd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, to_ms(timeout_s))) return true;
      failed_ = true;
      error_ = std::string(op) + ": timed out";
      return false;
    }
    fail(e, op);
    return false;
  }

  void fail(int e, const char* op) {
    const std::string ssl_reason = openssl_errors();
    if (e == SSL_ERROR_ZERO_RETURN) {
      error_ = std::string(op) + ": the server closed the TLS connection (close_notify)";
      // A clean close: answering with our close_notify is correct.
    } else {
      failed_ = true;  // SSL_shutdown must not be called after a fatal error
      if (!ssl_reason.empty()) {
        error_ = std::string(op) + ": TLS: " + ssl_reason;
      } else if (e == SSL_ERROR_SYSCALL && errno != 0) {
        error_ = std::string(op) + ": " + std::strerror(errno);
      } else {
        error_ = std::string(op) + ": the server closed the connection without close_notify";
      }
    }
  }

  SSL* ssl_;
  int fd_;
  bool failed_ = false;
  std::string error_;
};

}  // namespace

bool tls_available() { return true; }

struct TlsClient::Impl {
  SSL_CTX* ctx = nullptr;
  std::string server_name;
  ~Impl() { SSL_CTX_free(ctx); }
};

TlsClient::TlsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsClient::~TlsClient() = default;

std::unique_ptr<TlsClient> TlsClient::create(const TlsConfig& config, std::string* error) {
  auto fail = [&](const std::string& what) -> std::unique_ptr<TlsClient> {
    const std::string reason = openssl_errors();
    *error = reason.empty() ? what : what + ": " + reason;
    return nullptr;
  };
  if (config.ca_file.empty()) return fail("TLS needs a CA bundle (--tls-ca)");
  if (config.cert_file.empty() != config.key_file.empty()) {
    return fail("TLS: a device certificate and its key go together (--tls-cert and --tls-key)");
  }
  ERR_clear_error();
  auto impl = std::make_unique<Impl>();
  impl->ctx = SSL_CTX_new(TLS_client_method());
  if (impl->ctx == nullptr) return fail("TLS: cannot create a context");
  SSL_CTX* ctx = impl->ctx;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) return fail("TLS: cannot require TLS 1.3");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) != 1) {
    return fail("TLS CA bundle " + config.ca_file + " does not load");
  }
  if (!config.crl_file.empty()) {
    // The store reads CRLs as well as certificates from a PEM file; every chain is then checked against them.
    if (SSL_CTX_load_verify_locations(ctx, config.crl_file.c_str(), nullptr) != 1) {
      return fail("TLS CRL file " + config.crl_file + " does not load");
    }
    X509_STORE_set_flags(SSL_CTX_get_cert_store(ctx), X509_V_FLAG_CRL_CHECK);
  }
  if (!config.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) != 1) {
      return fail("TLS device certificate " + config.cert_file + " does not load");
    }
    const bool key_loaded = SSL_CTX_use_PrivateKey_file(ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) == 1;
    if (!key_loaded && ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
      return fail("TLS device key " + config.key_file + " does not load");
    }
    if (!key_loaded || SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return fail("TLS device key " + config.key_file + " does not match the certificate " + config.cert_file);
    }
  }
  impl->server_name = config.server_name;
  return std::unique_ptr<TlsClient>(new TlsClient(std::move(impl)));
}

std::unique_ptr<Link> TlsClient::connect(int fd, const std::string& host, double timeout_s, std::string* error) const {
  ERR_clear_error();
  SSL* ssl = SSL_new(impl_->ctx);
  auto fail = [&](const std::string& what) -> std::unique_ptr<Link> {
    const std::string reason = openssl_errors();
    *error = reason.empty() ? what : what + ": " + reason;
    SSL_free(ssl);
    ::close(fd);
    return nullptr;
  };
  if (ssl == nullptr) return fail("TLS: cannot create a connection");
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return fail("TLS: cannot make the socket non-blocking");
  if (SSL_set_fd(ssl, fd) != 1) return fail("TLS: cannot attach the socket");
  const std::string& name = impl_->server_name.empty() ? host : impl_->server_name;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (is_ip_address(name)) {
    // An address is checked against the certificate's IP SANs (and not sent as SNI, which names hosts only).
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) return fail("TLS: bad server address " + name);
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, name.c_str()) != 1 || SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
      return fail("TLS: bad server name " + name);
    }
  }

  const auto deadline = Clock::now() + std::chrono::milliseconds(to_ms(timeout_s));
  const SigpipeGuard guard;
  for (;;) {
    ERR_clear_error();
    const int r = SSL_connect(ssl);
    if (r == 1) break;
    const int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, ms_until(deadline))) {
        return fail("TLS handshake with " + name + " timed out");
      }
      continue;
    }
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      ERR_clear_error();
      return fail("TLS: the server certificate of " + name + " is refused: " +
                  X509_verify_cert_error_string(verify));
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
      return fail("TLS handshake with " + name + ": the server closed the connection" +
                  (errno != 0 ? std::string(" (") + std::strerror(errno) + ")" : std::string()));
    }
    return fail("TLS handshake with " + name + " failed");
  }
  return std::make_unique<TlsLink>(ssl, fd);
}

#endif  // EDGERT_NODE_TLS

}  // namespace edgert::node
