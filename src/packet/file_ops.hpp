// Internal (not in the public API): the file-system calls of the snapshot save
// path, replaceable per slot so that tests can fail or cut short any one of
// them and check that a crash at that point leaves the last complete snapshot
// loadable (tests/cpp/test_snapshot_crash.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

struct edgert_slot;

namespace edgert::detail {

// POSIX semantics: -1 with errno set on failure. `user` is FileOps::user.
struct FileOps {
  int (*open)(void* user, const char* path, int flags, unsigned mode);
  int64_t (*write)(void* user, int fd, const void* data, size_t n);  // may write fewer than n bytes
  int (*fsync)(void* user, int fd);
  int (*close)(void* user, int fd);
  int (*rename)(void* user, const char* from, const char* to);
  int (*fsync_dir)(void* user, const char* dir);  // makes a rename in `dir` durable
  int (*unlink)(void* user, const char* path);
  void* user;
};

// The real calls (open(2), write(2), fsync(2), ...).
const FileOps& system_file_ops();

// Makes `slot`'s saves go through `ops` (copied); nullptr restores the real calls.
// Not thread-safe against a save of the same slot in progress.
void slot_set_file_ops(edgert_slot* slot, const FileOps* ops);

}  // namespace edgert::detail
