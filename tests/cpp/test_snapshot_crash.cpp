// Crash consistency of edgert_slot_save: after a failure or a crash at any
// point of a save, a fresh load returns the last complete snapshot or the new
// one, never a torn file. (a) Every file-system call of a save is failed, cut
// short, interrupted or turned into a crash in turn through the test-only
// FileOps hook (packet/file_ops.hpp); (b) a forked child saving in a loop is
// killed with SIGKILL at random times and every restart loads and verifies.
// A process kill keeps the page cache; losing unsynced data on power loss is
// covered by the order of the calls (fsync before rename, then the directory),
// which (a) checks call by call.
#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "edgert/edgert.h"
#include "golden.hpp"
#include "packet/file_ops.hpp"

namespace {

using namespace edgert_test;  // NOLINT: golden files and slot helpers
using edgert::detail::FileOps;

// A slot at version v of the golden chain.
void make_slot(SlotPtr& slot, int v) {
  const Bytes m = read_golden("manifest.bin");
  const Bytes key = read_golden("key.bin");
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK);
  for (int i = 1; i <= v; ++i) {
    if (i == 5) ASSERT_EQ(edgert_slot_set_key(slot.s, key.data(), key.size()), EDGERT_OK);
    const Bytes p = read_golden(kChain[i - 1]);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << kChain[i - 1] << ": " << edgert_last_error();
  }
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// A fresh directory for one test's snapshot files, removed with them afterwards.
struct StateDir {
  std::string path;
  explicit StateDir(const std::string& name) : path(::testing::TempDir() + name + "_" + std::to_string(::getpid())) {
    clear();
    ::mkdir(path.c_str(), 0755);
  }
  ~StateDir() {
    clear();
    ::rmdir(path.c_str());
  }
  void clear() const {
    for (const char* f : {"/slot.snap", "/slot.snap.tmp"}) std::remove((path + f).c_str());
  }
};

std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.insert(e->d_name);
    }
    ::closedir(d);
  }
  return names;
}

// Loads `path` into a fresh slot: its version, or 0 if the load fails; the weights must be the golden ones.
uint64_t load_and_verify(const std::string& path, const std::string& what) {
  SlotPtr fresh;
  const Bytes m = read_golden("manifest.bin");
  EXPECT_EQ(edgert_slot_create(m.data(), m.size(), &fresh.s), EDGERT_OK);
  const edgert_status st = edgert_slot_load(fresh.s, path.c_str());
  if (st != EDGERT_OK) {
    ADD_FAILURE() << what << ": load failed: " << edgert_status_name(st) << ": " << edgert_last_error();
    return 0;
  }
  const uint64_t v = edgert_slot_version(fresh.s);
  EXPECT_EQ(weights_of(fresh.s), read_golden("weights_v" + std::to_string(v) + ".bin"))
      << what << ": version " << v << " with other weights";
  return v;
}

// ---- (a) injected failures at every call ---------------------------------------------

enum class Fault {
  kNone,       // count the calls
  kFail,       // call N fails with EIO
  kShort,      // write N writes half its bytes and reports it (a legal short write)
  kInterrupt,  // write N fails with EINTR before writing anything
  kCrash,      // the process dies at call N: a write there lands half, nothing after it reaches the disk
};

struct Injector {
  Fault fault = Fault::kNone;
  int target = 0;  // 1-based call number
  int calls = 0;
  bool dead = false;
  int at_target_op = -1;  // which op call N was: 0 open, 1 write, 2 fsync, 3 close, 4 rename, 5 fsync_dir, 6 unlink

  enum Action { kRun, kRefuse, kCut };
  Action next(int op) {
    ++calls;
    if (dead) {
      errno = EIO;
      return kRefuse;
    }
    if (calls != target) return kRun;
    at_target_op = op;
    switch (fault) {
      case Fault::kFail:
        errno = EIO;
        return kRefuse;
      case Fault::kShort:
        return op == 1 ? kCut : kRun;
      case Fault::kInterrupt:
        if (op != 1) return kRun;
        errno = EINTR;
        return kRefuse;
      case Fault::kCrash:
        dead = true;
        errno = EIO;
        return op == 1 ? kCut : kRefuse;
      case Fault::kNone:
        break;
    }
    return kRun;
  }
};

Injector& inj(void* user) { return *static_cast<Injector*>(user); }
const FileOps& sys() { return edgert::detail::system_file_ops(); }

FileOps injecting_ops(Injector* injector) {
  FileOps ops{};
  ops.user = injector;
  ops.open = [](void* u, const char* path, int flags, unsigned mode) {
    return inj(u).next(0) == Injector::kRun ? sys().open(sys().user, path, flags, mode) : -1;
  };
  ops.write = [](void* u, int fd, const void* data, size_t n) -> int64_t {
    Injector& in = inj(u);
    const Injector::Action a = in.next(1);
    if (a == Injector::kRefuse) return -1;
    if (a == Injector::kRun) return sys().write(sys().user, fd, data, n);
    const int64_t half = sys().write(sys().user, fd, data, (n + 1) / 2);
    if (in.dead) {
      errno = EIO;
      return -1;
    }
    return half;
  };
  ops.fsync = [](void* u, int fd) { return inj(u).next(2) == Injector::kRun ? sys().fsync(sys().user, fd) : -1; };
  ops.close = [](void* u, int fd) {
    // The descriptor is released even when the call "fails" (as close(2) does), so nothing leaks.
    const bool run = inj(u).next(3) == Injector::kRun;
    const int saved = errno;
    const int r = sys().close(sys().user, fd);
    errno = saved;
    return run ? r : -1;
  };
  ops.rename = [](void* u, const char* from, const char* to) {
    return inj(u).next(4) == Injector::kRun ? sys().rename(sys().user, from, to) : -1;
  };
  ops.fsync_dir = [](void* u, const char* dir) {
    return inj(u).next(5) == Injector::kRun ? sys().fsync_dir(sys().user, dir) : -1;
  };
  ops.unlink = [](void* u, const char* path) {
    return inj(u).next(6) == Injector::kRun ? sys().unlink(sys().user, path) : -1;
  };
  return ops;
}

TEST(SnapshotCrash, EveryFailingCallLeavesTheLastCompleteSnapshot) {
  SlotPtr old_slot, new_slot;
  make_slot(old_slot, 4);
  make_slot(new_slot, 5);
  const StateDir state("edgert_inject");
  const std::string& dir = state.path;
  const std::string path = dir + "/slot.snap";
  const std::string tmp = path + ".tmp";

  Injector counter;
  const FileOps counting = injecting_ops(&counter);
  edgert::detail::slot_set_file_ops(new_slot.s, &counting);
  ASSERT_EQ(edgert_slot_save(new_slot.s, path.c_str()), EDGERT_OK) << edgert_last_error();
  const int calls = counter.calls;
  ASSERT_EQ(calls, 8);  // open, write header, write weights, write trailer, fsync, close, rename, fsync_dir
  std::remove(path.c_str());

  int checked = 0;
  for (Fault fault : {Fault::kFail, Fault::kShort, Fault::kInterrupt, Fault::kCrash}) {
    for (int n = 1; n <= calls; ++n) {
      const std::string what = "fault " + std::to_string(static_cast<int>(fault)) + " at call " + std::to_string(n);
      ASSERT_EQ(edgert_slot_save(old_slot.s, path.c_str()), EDGERT_OK) << edgert_last_error();
      Injector injector;
      injector.fault = fault;
      injector.target = n;
      const FileOps ops = injecting_ops(&injector);
      edgert::detail::slot_set_file_ops(new_slot.s, &ops);
      const edgert_status st = edgert_slot_save(new_slot.s, path.c_str());
      const std::string message = edgert_last_error();
      edgert::detail::slot_set_file_ops(new_slot.s, nullptr);
      EXPECT_EQ(edgert_slot_version(new_slot.s), 5u) << what;  // a save never changes the slot

      const uint64_t loaded = load_and_verify(path, what);
      const bool interrupted_write = (fault == Fault::kShort || fault == Fault::kInterrupt) && injector.at_target_op == 1;
      if (fault == Fault::kShort || fault == Fault::kInterrupt) {
        // Short and interrupted writes are resumed; other calls ran normally.
        EXPECT_EQ(st, EDGERT_OK) << what << ": " << message;
        EXPECT_EQ(loaded, 5u) << what;
        EXPECT_EQ(injector.calls, calls + (interrupted_write ? 1 : 0)) << what;
      } else if (injector.at_target_op == 5) {
        // Only the directory sync failed: the new snapshot is in place and the caller is told it may not be durable.
        EXPECT_EQ(st, EDGERT_ERR_IO) << what;
        EXPECT_EQ(loaded, 5u) << what;
        EXPECT_NE(message.find("may not survive a power loss"), std::string::npos) << message;
      } else {
        EXPECT_EQ(st, EDGERT_ERR_IO) << what;
        EXPECT_EQ(loaded, 4u) << what << ": the previous snapshot must survive";
        EXPECT_NE(message.find("is unchanged"), std::string::npos) << message;
      }
      if (fault == Fault::kFail) EXPECT_FALSE(exists(tmp)) << what << ": temp file left behind";
      // Whatever was left (a crash leaves path.tmp), the next save succeeds and is the one loaded.
      ASSERT_EQ(edgert_slot_save(new_slot.s, path.c_str()), EDGERT_OK) << what << ": " << edgert_last_error();
      EXPECT_EQ(load_and_verify(path, what + ", then a clean save"), 5u);
      EXPECT_FALSE(exists(tmp)) << what;
      EXPECT_EQ(files_in(dir), std::set<std::string>{"slot.snap"}) << what;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * calls);
}

TEST(SnapshotCrash, DirectorySyncUnsupportedIsNotAnError) {
  SlotPtr slot;
  make_slot(slot, 3);
  const StateDir state("edgert_einval");
  const std::string path = state.path + "/slot.snap";
  FileOps ops = sys();
  ops.fsync_dir = [](void*, const char*) {
    errno = EINVAL;  // e.g. a file system that cannot sync directories
    return -1;
  };
  edgert::detail::slot_set_file_ops(slot.s, &ops);
  ASSERT_EQ(edgert_slot_save(slot.s, path.c_str()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(load_and_verify(path, "EINVAL from the directory sync"), 3u);
}

TEST(SnapshotCrash, ConcurrentSavesOfOneSlotNeverTearTheFile) {
  // Saves of a slot share path.tmp; they are serialized, so racing threads still leave a loadable file.
  SlotPtr slot;
  make_slot(slot, 6);
  const StateDir state("edgert_concurrent");
  const std::string path = state.path + "/slot.snap";
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (edgert_slot_save(slot.s, path.c_str()) != EDGERT_OK) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(load_and_verify(path, "after concurrent saves"), 6u);
}

// ---- (b) SIGKILL at random points -------------------------------------------------------

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

TEST(SnapshotCrash, SigkillAtRandomPointsOfSavesLeavesTheLastCompleteSnapshot) {
  // EDGERT_KILL_ROUNDS (default 200) kills, each after a random 0..EDGERT_KILL_MAX_US (default 20000) microseconds.
  const int rounds = env_int("EDGERT_KILL_ROUNDS", 200);
  const int max_delay_us = env_int("EDGERT_KILL_MAX_US", 20000);
  std::vector<SlotPtr> slots(kChainLength);
  for (int v = 1; v <= kChainLength; ++v) make_slot(slots[v - 1], v);
  auto version_of = [](uint64_t index) { return 1 + index % kChainLength; };  // save number -> version it writes

  const StateDir state("edgert_kill");
  const std::string& dir = state.path;
  const std::string path = dir + "/slot.snap";
  uint64_t on_disk = 0;  // the number of the save whose snapshot the file holds
  ASSERT_EQ(edgert_slot_save(slots[version_of(on_disk) - 1].s, path.c_str()), EDGERT_OK);
  const unsigned seed = static_cast<unsigned>(env_int("EDGERT_KILL_SEED", 0x5eed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay(0, max_delay_us);
  int rounds_new = 0, rounds_old = 0;
  uint64_t saves = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < rounds; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0) << std::strerror(errno);
    if (pid == 0) {
      ::close(fds[0]);
      for (uint64_t i = on_disk + 1;; ++i) {
        if (edgert_slot_save(slots[version_of(i) - 1].s, path.c_str()) != EDGERT_OK) ::_exit(3);
        if (::write(fds[1], &i, sizeof(i)) != static_cast<ssize_t>(sizeof(i))) ::_exit(4);  // "save i returned"
      }
    }
    ::close(fds[1]);
    std::this_thread::sleep_for(std::chrono::microseconds(delay(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "round " << round << ": the saving child exited with "
                                     << WEXITSTATUS(status) << " before the kill";
    uint64_t last = on_disk, i = 0;
    while (::read(fds[0], &i, sizeof(i)) == static_cast<ssize_t>(sizeof(i))) last = i;
    ::close(fds[0]);
    saves += last - on_disk;
    const std::string what = "round " + std::to_string(round) + " (seed " + std::to_string(seed) + ")";
    const uint64_t v = load_and_verify(path, what);
    // The file holds the last save that returned, or the one the kill interrupted (they differ in version).
    if (v == version_of(last)) {
      on_disk = last;
      ++rounds_old;
    } else {
      ASSERT_EQ(v, version_of(last + 1)) << what << ": loaded version " << v << ", last completed save wrote "
                                         << version_of(last);
      on_disk = last + 1;
      ++rounds_new;
    }
    const std::set<std::string> names = files_in(dir);
    EXPECT_TRUE(names == std::set<std::string>{"slot.snap"} ||
                names == (std::set<std::string>{"slot.snap", "slot.snap.tmp"}))
        << what << ": unexpected files in the state directory";
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ kill test ] %d SIGKILLs in %.1f s, %llu completed saves; the file held the interrupted save's "
              "snapshot after %d kills and the last completed one after %d\n",
              rounds, seconds, static_cast<unsigned long long>(saves), rounds_new, rounds_old);
}

}  // namespace
