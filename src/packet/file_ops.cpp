// The real file-system calls behind edgert::detail::FileOps (see file_ops.hpp).
#include "packet/file_ops.hpp"

#include <cerrno>
#include <cstdio>

#if defined(_WIN32)
#include <io.h>
#else
#include <fcntl.h>
#include <unistd.h>
#endif

namespace edgert::detail {
namespace {

#if defined(_WIN32)
int sys_open(void*, const char* path, int flags, unsigned mode) { return ::_open(path, flags, static_cast<int>(mode)); }
int64_t sys_write(void*, int fd, const void* data, size_t n) {
  return ::_write(fd, data, static_cast<unsigned>(n > 0x40000000u ? 0x40000000u : n));
}
int sys_fsync(void*, int fd) { return ::_commit(fd); }
int sys_close(void*, int fd) { return ::_close(fd); }
int sys_fsync_dir(void*, const char*) { return 0; }  // NTFS journals renames; there is no directory handle to sync
#else
int sys_open(void*, const char* path, int flags, unsigned mode) {
  return ::open(path, flags | O_CLOEXEC, static_cast<mode_t>(mode));
}
int64_t sys_write(void*, int fd, const void* data, size_t n) { return ::write(fd, data, n); }
int sys_fsync(void*, int fd) { return ::fsync(fd); }
int sys_close(void*, int fd) { return ::close(fd); }
int sys_fsync_dir(void*, const char* dir) {
  const int fd = ::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  const int r = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return r;
}
#endif
int sys_rename(void*, const char* from, const char* to) { return std::rename(from, to); }
int sys_unlink(void*, const char* path) { return std::remove(path); }

}  // namespace

const FileOps& system_file_ops() {
  static const FileOps ops{sys_open, sys_write, sys_fsync, sys_close, sys_rename, sys_fsync_dir, sys_unlink, nullptr};
  return ops;
}

}  // namespace edgert::detail
