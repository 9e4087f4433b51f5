// The node's connection to the model server as a byte stream: a plain TCP socket, or TLS 1.3 over one
// (tls.hpp). The frame reader and writer in node.cpp see only this interface, so framing, limits and the
// HELLO/CHALLENGE/AUTH handshake are the same on both.
//
// Threading: a Link is used by one thread at a time (the node's session loop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace edgert::node {

class Link {
 public:
  virtual ~Link() = default;

  // Writes all len bytes. False when the connection fails or the peer takes none of them for
  // timeout_s; error() then says why. A failed write leaves the stream unusable (close it).
  virtual bool write_all(const uint8_t* data, size_t len, double timeout_s) = 0;

  // Reads exactly len bytes into out (caller-owned, len bytes), waiting at most timeout_s for each
  // chunk. False on end of stream, failure or timeout (error() says which); out is then partly written.
  virtual bool read_exact(uint8_t* out, size_t len, double timeout_s) = 0;

  // Waits at most timeout_ms for the next application byte; true when a read would not block (data,
  // end of stream or a failure to report), false on timeout. Protocol records that carry no
  // application data (TLS 1.3 session tickets, key updates) are consumed here without returning.
  virtual bool wait_readable(int timeout_ms) = 0;

  // Why the last call failed ("" if none did).
  virtual const std::string& error() const = 0;

  // "plain TCP", or the TLS version and cipher suite.
  virtual std::string describe() const = 0;
};

// Takes ownership of a connected TCP socket (closed by the Link's destructor).
std::unique_ptr<Link> plain_link(int fd);

// The same on a raw socket (the node's local Unix-socket server uses these too). send_all_fd never raises
// SIGPIPE (MSG_NOSIGNAL) and waits at most timeout_s for the socket to take each chunk.
bool send_all_fd(int fd, const uint8_t* data, size_t len, double timeout_s);
bool recv_exact_fd(int fd, uint8_t* out, size_t len, double timeout_s);

// Waits until fd is ready for events (POLLIN/POLLOUT) or timeout_ms passes (retrying on EINTR with the
// time left). True when ready (or in an error state that the next call reports), false on timeout.
bool wait_fd(int fd, short events, int timeout_ms);

}  // namespace edgert::node
