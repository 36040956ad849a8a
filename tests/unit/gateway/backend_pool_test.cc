// BackendPool routing and health with a scripted probe (no network, no clock: ProbeDue is called
// with explicit times): least outstanding requests, session ids to their owning replica, model
// filtering, down marking and probe backoff.
#include "server/gateway/backend_pool.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "server/gateway/api_error.h"

namespace funnel {
namespace {

// What each backend answers to its next probes (UNAVAILABLE until scripted otherwise).
class ScriptedProbe {
 public:
  void Up(size_t index, const std::string& replica, const std::string& model) {
    std::lock_guard<std::mutex> lock(mu_);
    v1::ServerInfo info;
    info.set_replica_id(replica);
    info.mutable_model()->set_id(model);
    answers_[index] = info;
  }
  void Fail(size_t index, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[index] = status;
  }
  BackendPool::ProbeFn Fn() {
    return [this](size_t index) -> absl::StatusOr<v1::ServerInfo> {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_[index];
      auto it = answers_.find(index);
      if (it == answers_.end()) return absl::UnavailableError("connection refused");
      return it->second;
    };
  }
  int calls(size_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[index];
  }

 private:
  std::mutex mu_;
  std::map<size_t, absl::StatusOr<v1::ServerInfo>> answers_;
  std::map<size_t, int> calls_;
};

BackendPool::Options TestOptions() {
  BackendPool::Options o;
  o.probe_interval = absl::Seconds(2);
  o.min_backoff = absl::Milliseconds(250);
  o.max_backoff = absl::Seconds(2);
  return o;
}

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(SessionIds, ReplicaOfSession) {
  EXPECT_EQ(ReplicaOfSession("sess-r0-0123456789abcdef"), "r0");
  EXPECT_EQ(ReplicaOfSession("sess-pod.a_1-0123456789ABCDEF"), "pod.a_1");
  EXPECT_FALSE(ReplicaOfSession("sess--0123456789abcdef").has_value());
  EXPECT_FALSE(ReplicaOfSession("sess-r0-0123456789abcdeg").has_value());  // not hex
  EXPECT_FALSE(ReplicaOfSession("sess-r0-0123456789abcde").has_value());   // 15 digits
  EXPECT_FALSE(ReplicaOfSession("ses-r0-0123456789abcdef").has_value());
  EXPECT_FALSE(ReplicaOfSession("").has_value());
}

TEST(BackendPool, EveryBackendStartsDownUntilProbed) {
  ScriptedProbe probe;
  BackendPool pool({"a:1", "b:2"}, TestOptions(), probe.Fn());
  EXPECT_FALSE(pool.AnyUp());
  EXPECT_TRUE(absl::IsUnavailable(pool.PickLeastLoaded("m", {}).status()));
  probe.Up(1, "r1", "m");
  pool.ProbeDue(kT0);
  EXPECT_EQ(pool.UpBackends(), std::vector<size_t>({1}));
  auto lease = pool.PickLeastLoaded("m", {});
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->index(), 1u);
}

TEST(BackendPool, PicksTheLeastOutstandingAndReleasesOnLeaseEnd) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  probe.Up(1, "r1", "m");
  probe.Up(2, "r2", "m");
  BackendPool pool({"a:1", "b:2", "c:3"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  std::vector<BackendPool::Lease> held;
  std::vector<int> per_backend(3, 0);
  for (int i = 0; i < 6; ++i) {
    auto lease = pool.PickLeastLoaded("m", {});
    ASSERT_TRUE(lease.ok());
    per_backend[lease->index()]++;
    held.push_back(*std::move(lease));
  }
  EXPECT_EQ(per_backend, std::vector<int>({2, 2, 2}));  // always the least loaded
  for (const BackendSnapshot& s : pool.Snapshot()) EXPECT_EQ(s.outstanding, 2);
  // Free backend 1's two requests: the next two picks both go there.
  std::vector<BackendPool::Lease> keep;
  for (auto& l : held) {
    if (l.index() != 1) keep.push_back(std::move(l));
  }
  held.clear();
  EXPECT_EQ(pool.Snapshot()[1].outstanding, 0);
  auto first = pool.PickLeastLoaded("m", {});
  auto second = pool.PickLeastLoaded("m", {});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->index(), 1u);
  EXPECT_EQ(second->index(), 1u);
}

TEST(BackendPool, ExcludedAndOtherModelBackendsAreSkipped) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "small");
  probe.Up(1, "r1", "large");
  probe.Up(2, "r2", "large");
  BackendPool pool({"a:1", "b:2", "c:3"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  for (int i = 0; i < 4; ++i) {
    auto lease = pool.PickLeastLoaded("small", {});
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->index(), 0u);
  }
  auto other = pool.PickLeastLoaded("large", {1});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->index(), 2u);
  EXPECT_TRUE(absl::IsUnavailable(pool.PickLeastLoaded("large", {1, 2}).status()));
  EXPECT_TRUE(pool.CheckModel("large").ok());
  const absl::Status missing = pool.CheckModel("nope");
  EXPECT_TRUE(absl::IsNotFound(missing));
  EXPECT_EQ(ApiErrorFromStatus(missing).code, "model_not_found");
}

TEST(BackendPool, UnknownModelsCannotBeRefusedYet) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  BackendPool pool({"a:1", "b:2"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  // Backend 1 was never reached: its model may be the one asked for.
  EXPECT_TRUE(pool.CheckModel("other").ok());
}

TEST(BackendPool, SessionsGoToTheirOwningReplica) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  probe.Up(1, "r1", "m");
  BackendPool pool({"a:1", "b:2"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  for (int i = 0; i < 3; ++i) {
    auto lease = pool.PickForSession("sess-r1-00000000000000ff");
    ASSERT_TRUE(lease.ok()) << lease.status();
    EXPECT_EQ(lease->index(), 1u);  // not the least loaded: the owner
  }
  const absl::Status lost = pool.PickForSession("sess-r7-00000000000000ff").status();
  EXPECT_TRUE(absl::IsNotFound(lost)) << lost;
  EXPECT_EQ(ApiErrorFromStatus(lost).code, "session_not_found");
  EXPECT_TRUE(absl::IsNotFound(pool.PickForSession("garbage").status()));
}

TEST(BackendPool, SessionOfADownReplicaIsUnavailableNotNotFound) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  probe.Up(1, "r1", "m");
  BackendPool pool({"a:1", "b:2"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  pool.ReportUnavailable(1);
  EXPECT_TRUE(absl::IsUnavailable(pool.PickForSession("sess-r1-00000000000000ff").status()));
  // Plain requests avoid it meanwhile.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(pool.PickLeastLoaded("m", {})->index(), 0u);
}

TEST(BackendPool, UnreachedBackendsMakeUnknownSessionsUnavailable) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  BackendPool pool({"a:1", "b:2"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  // Backend 1 has never answered: the session may be its.
  EXPECT_TRUE(absl::IsUnavailable(pool.PickForSession("sess-r5-00000000000000ff").status()));
}

TEST(BackendPool, SessionIdsTeachReplicasWhenProbesCannotAuthenticate) {
  ScriptedProbe probe;
  probe.Fail(0, absl::UnauthenticatedError("invalid API key"));
  BackendPool pool({"a:1"}, TestOptions(), probe.Fn());
  pool.ProbeDue(kT0);
  EXPECT_TRUE(pool.AnyUp());  // it answered: reachable
  EXPECT_TRUE(absl::IsUnavailable(pool.PickForSession("sess-r3-00000000000000ff").status()));
  pool.LearnSession(0, "sess-r3-00000000000000aa");
  auto lease = pool.PickForSession("sess-r3-00000000000000ff");
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->index(), 0u);
}

TEST(BackendPool, DownBackendsAreReprobedWithExponentialBackoff) {
  ScriptedProbe probe;
  BackendPool pool({"a:1"}, TestOptions(), probe.Fn());
  absl::Time t = kT0;
  std::vector<absl::Duration> waits;
  for (int i = 0; i < 6; ++i) {
    const absl::Time next = pool.ProbeDue(t);
    waits.push_back(next - t);
    t = next;
  }
  EXPECT_EQ(waits, std::vector<absl::Duration>({absl::Milliseconds(250), absl::Milliseconds(500),
                                                absl::Seconds(1), absl::Seconds(2),
                                                absl::Seconds(2), absl::Seconds(2)}));
  EXPECT_EQ(probe.calls(0), 6);
  // Not due yet: no probe.
  pool.ProbeDue(t - absl::Milliseconds(1));
  EXPECT_EQ(probe.calls(0), 6);
  // It comes back: up, then probed every probe_interval.
  probe.Up(0, "r0", "m");
  const absl::Time next = pool.ProbeDue(t);
  EXPECT_TRUE(pool.AnyUp());
  EXPECT_EQ(next - t, absl::Seconds(2));
}

TEST(BackendPool, AFailedProbeMarksAnUpBackendDown) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  BackendPool pool({"a:1"}, TestOptions(), probe.Fn());
  absl::Time next = pool.ProbeDue(kT0);
  ASSERT_TRUE(pool.AnyUp());
  probe.Fail(0, absl::DeadlineExceededError("probe timed out"));
  next = pool.ProbeDue(next);
  EXPECT_FALSE(pool.AnyUp());
  // The replica id is remembered: its sessions are unavailable, not lost.
  EXPECT_TRUE(absl::IsUnavailable(pool.PickForSession("sess-r0-00000000000000ff").status()));
}

TEST(BackendPool, ProberThreadBringsBackendsUp) {
  ScriptedProbe probe;
  probe.Up(0, "r0", "m");
  BackendPool::Options o = TestOptions();
  BackendPool pool({"a:1"}, o, probe.Fn());
  pool.StartProber();
  // Bounded wait for the thread's first round (it probes at once).
  for (int i = 0; i < 5000 && !pool.AnyUp(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(pool.AnyUp());
  pool.StopProber();
}

}  // namespace
}  // namespace funnel
