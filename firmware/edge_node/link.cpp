#include "link.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace edgert::node {

namespace {

int to_ms(double seconds) { return seconds <= 0 ? 0 : static_cast<int>(seconds * 1000.0); }

class PlainLink final : public Link {
 public:
  explicit PlainLink(int fd) : fd_(fd) {}
  ~PlainLink() override { ::close(fd_); }

  bool write_all(const uint8_t* data, size_t len, double timeout_s) override {
    return record(send_all_fd(fd_, data, len, timeout_s), "send");
  }
  bool read_exact(uint8_t* out, size_t len, double timeout_s) override {
    return record(recv_exact_fd(fd_, out, len, timeout_s), "receive");
  }
  bool wait_readable(int timeout_ms) override { return wait_fd(fd_, POLLIN, timeout_ms); }
  const std::string& error() const override { return error_; }
  std::string describe() const override { return "plain TCP"; }

 private:
  bool record(bool ok, const char* op) {
    if (!ok) {
      error_ = std::string(op) + ": " +
               (errno == 0 ? "the server closed the connection" : errno == ETIMEDOUT ? "timed out" : std::strerror(errno));
    }
    return ok;
  }
  int fd_;
  std::string error_;
};

}  // namespace

bool wait_fd(int fd, short events, int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, left > 0 ? static_cast<int>(left) : 0);
    if (r > 0) return true;
    if (r == 0) {
      errno = ETIMEDOUT;
      return false;
    }
    if (errno != EINTR) return true;  // the next read or write reports the error
  }
}

bool send_all_fd(int fd, const uint8_t* data, size_t len, double timeout_s) {
  while (len > 0) {
    const ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(fd, POLLOUT, to_ms(timeout_s))) return false;
      continue;
    }
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool recv_exact_fd(int fd, uint8_t* out, size_t len, double timeout_s) {
  while (len > 0) {
    if (!wait_fd(fd, POLLIN, to_ms(timeout_s))) return false;
    const ssize_t n = ::recv(fd, out, len, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n == 0) errno = 0;  // orderly end of stream
    if (n <= 0) return false;
    out += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

std::unique_ptr<Link> plain_link(int fd) { return std::make_unique<PlainLink>(fd); }

}  // namespace edgert::node
