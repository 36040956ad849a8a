#include "runtime/engine/session_persister.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace fs = std::filesystem;
namespace {

constexpr char kSuffix[] = ".session";

// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename, fsync of the dir.
absl::Status WriteAtomically(const std::string& dir, const std::string& path,
                             const std::string& bytes) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    at += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot commit ", path, ": ", std::strerror(errno)));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream s;
  s << in.rdbuf();
  return std::move(s).str();
}

absl::Time ModificationTime(const fs::path& path) {
  std::error_code ec;
  const auto t = fs::last_write_time(path, ec);
  if (ec) return absl::InfinitePast();
  const auto sys = std::chrono::file_clock::to_sys(t);
  return absl::FromChrono(std::chrono::time_point_cast<std::chrono::system_clock::duration>(sys));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SessionPersister>> SessionPersister::Open(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create session dir ", dir, ": ", ec.message()));
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("session dir ", dir, " is not writable"));
  }
  return std::unique_ptr<SessionPersister>(new SessionPersister(dir));
}

SessionPersister::SessionPersister(std::string dir) : dir_(std::move(dir)) {
  thread_ = std::thread([this] { Run(); });
}

SessionPersister::~SessionPersister() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string SessionPersister::PathOf(const std::string& id) const {
  return (fs::path(dir_) / absl::StrCat(id, kSuffix)).string();
}

std::vector<SessionRecord> SessionPersister::LoadAll(const std::string& fingerprint) {
  std::vector<SessionRecord> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const fs::path& path = e.path();
    if (path.extension() != kSuffix || !e.is_regular_file(ec)) continue;
    absl::StatusOr<std::string> bytes = ReadFile(path);
    absl::StatusOr<SessionRecord> r =
        bytes.ok() ? DecodeSessionRecord(*bytes) : absl::StatusOr<SessionRecord>(bytes.status());
    if (r.ok() && r->fingerprint != fingerprint) {
      r = absl::FailedPreconditionError("it belongs to another model or cache layout");
    }
    if (r.ok() && path.filename().string() != absl::StrCat(r->id, kSuffix)) {
      r = absl::FailedPreconditionError("its name does not match the session id it holds");
    }
    if (!r.ok()) {
      spdlog::warn("session file {} skipped: {}", path.string(), r.status().ToString());
      continue;
    }
    r->expires = std::max(r->expires, ModificationTime(path) + r->ttl);
    out.push_back(std::move(*r));
  }
  if (ec) spdlog::warn("cannot list session dir {}: {}", dir_, ec.message());
  return out;
}

void SessionPersister::Save(const std::string& id, std::string bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({Op::kSave, id, std::move(bytes)});
    ++queued_;
  }
  cv_.notify_all();
}

void SessionPersister::Touch(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({Op::kTouch, id, {}});
    ++queued_;
  }
  cv_.notify_all();
}

void SessionPersister::Remove(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({Op::kRemove, id, {}});
    ++queued_;
  }
  cv_.notify_all();
}

void SessionPersister::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t target = queued_;
  cv_.wait(lock, [&] { return done_ >= target; });
}

void SessionPersister::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything is written
    Op op = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Apply(op);
    lock.lock();
    ++done_;
    cv_.notify_all();
  }
}

void SessionPersister::Apply(const Op& op) {
  const std::string path = PathOf(op.id);
  std::error_code ec;
  switch (op.kind) {
    case Op::kSave:
      if (absl::Status s = WriteAtomically(dir_, path, op.bytes); !s.ok()) {
        spdlog::error("session {} not persisted: {}", op.id, s.ToString());
      }
      return;
    case Op::kTouch:
      fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
      return;  // a missing file (not yet written, or removed) is fine
    case Op::kRemove:
      fs::remove(path, ec);
      if (ec) spdlog::warn("cannot remove session file {}: {}", path, ec.message());
      return;
  }
}

}  // namespace funnel
