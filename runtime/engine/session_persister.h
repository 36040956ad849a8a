// Durable sessions: one file per session in a directory (--session-dir), written atomically
// (temp file, fsync, rename) by a background writer thread so that the engine thread never waits
// for the disk. The file's modification time records the session's last use (Touch), so that
// idle-TTL refreshes survive a restart without rewriting the K/V.
//
// Files are "<session id>.session" (session_file.h). Loading skips, with a warning, files that are
// corrupt, of another model (fingerprint) or otherwise unusable; it never fails the server.
//
// Thread rules: Save/Touch/Remove/Flush may be called from any thread; operations on one id are
// applied in call order. LoadAll runs before the engine starts.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/session_file.h"

namespace funnel {

class SessionPersister {
 public:
  // Creates `dir` if needed and checks that it is writable.
  static absl::StatusOr<std::unique_ptr<SessionPersister>> Open(const std::string& dir);
  ~SessionPersister();  // finishes the queued writes

  // Every valid session of `fingerprint` in the directory; `expires` is the later of the file's
  // own and last use (mtime) + ttl. Unusable files are skipped with a warning and left in place.
  std::vector<SessionRecord> LoadAll(const std::string& fingerprint);

  void Save(const std::string& id, std::string bytes);  // (re)writes the session's file
  void Touch(const std::string& id);                    // records a use now
  void Remove(const std::string& id);
  // Waits until every operation queued so far is on disk.
  void Flush();

  std::string PathOf(const std::string& id) const;

 private:
  struct Op {
    enum Kind { kSave, kTouch, kRemove } kind;
    std::string id;
    std::string bytes;
  };

  explicit SessionPersister(std::string dir);
  void Run();
  void Apply(const Op& op);

  const std::string dir_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  int64_t queued_ = 0, done_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace funnel
