#include "runtime/sample/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace funnel {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// top-p buckets candidates by how far below the maximum their logit is: bucket b holds
// (max - logit) in [b, b + 1) / kTopPBucketsPerNat, the last bucket everything further below.
// Only the bucket holding the cut gets sorted.
constexpr size_t kTopPBuckets = 2048;
constexpr float kTopPBucketsPerNat = 100.0f;

size_t TopPBucket(float logit, float max_logit) {
  const float scaled = (max_logit - logit) * kTopPBucketsPerNat;
  return scaled < static_cast<float>(kTopPBuckets - 1) ? static_cast<size_t>(scaled)
                                                       : kTopPBuckets - 1;
}

// Uniform in [0, 1) from the top 53 bits of one engine output.
double UniformDouble(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Strict total order: higher logit first, then lower id.
struct MoreLikely {
  const std::vector<float>* logits;
  bool operator()(int32_t a, int32_t b) const {
    const float la = (*logits)[a];
    const float lb = (*logits)[b];
    return la > lb || (la == lb && a < b);
  }
};

}  // namespace

Sampler::Sampler(const SamplingParams& params, uint64_t default_seed)
    : params_(params), rng_(params.seed.value_or(default_seed)) {}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> prompt,
                        std::span<const int32_t> generated) {
  logits_.assign(logits.begin(), logits.end());
  if (logits_.empty()) return chosen_ = -1;
  ApplyPenalties(prompt, generated);
  const auto best = std::max_element(logits_.begin(), logits_.end());
  chosen_ = static_cast<int32_t>(best - logits_.begin());
  max_logit_ = *best;
  if (params_.temperature == 0.0f || max_logit_ == kMinusInf) return chosen_;
  // Dividing by a positive temperature keeps `best` a maximum.
  for (float& logit : logits_) logit /= params_.temperature;
  max_logit_ = *best;
  return chosen_ = SampleScaled(max_logit_);
}

float Sampler::last_logprob() const {
  if (chosen_ < 0) return 0.0f;
  if (max_logit_ == kMinusInf) return kMinusInf;
  double sum = 0.0;
  for (float logit : logits_) sum += std::exp(static_cast<double>(logit) - max_logit_);
  return static_cast<float>(static_cast<double>(logits_[chosen_]) - max_logit_ - std::log(sum));
}

void Sampler::ApplyPenalties(std::span<const int32_t> prompt, std::span<const int32_t> generated) {
  if (counts_.size() != logits_.size()) counts_.assign(logits_.size(), 0);
  const float repetition = params_.repetition_penalty;
  if (repetition != 1.0f) {
    CountTokens(prompt);
    CountTokens(generated);
    for (int32_t id : touched_) {
      float& logit = logits_[id];
      logit = logit > 0.0f ? logit / repetition : logit * repetition;
    }
    ResetCounts();
  }
  const float presence = params_.presence_penalty;
  const float frequency = params_.frequency_penalty;
  if (presence != 0.0f || frequency != 0.0f) {
    CountTokens(generated);
    for (int32_t id : touched_) {
      logits_[id] -= static_cast<float>(counts_[id]) * frequency + presence;
    }
    ResetCounts();
  }
}

void Sampler::CountTokens(std::span<const int32_t> ids) {
  const int64_t vocab = static_cast<int64_t>(counts_.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) continue;
    if (counts_[id]++ == 0) touched_.push_back(id);
  }
}

void Sampler::ResetCounts() {
  for (int32_t id : touched_) counts_[id] = 0;
  touched_.clear();
}

int32_t Sampler::SampleScaled(float max_logit) {
  const double total_weight = SelectTopK(max_logit);
  if (params_.top_p < 1.0f) candidates_.resize(TopPPrefixLength(total_weight));
  ApplyMinP();
  return Draw();
}

double Sampler::SelectTopK(float max_logit) {
  const size_t vocab = logits_.size();
  const size_t k = params_.top_k > 0 ? std::min<size_t>(params_.top_k, vocab) : vocab;
  candidates_.resize(k);
  std::iota(candidates_.begin(), candidates_.end(), 0);
  if (k < vocab) {
    // Heap of the k most likely so far, least likely on top. Later ids lose ties, so only a
    // strictly larger logit displaces the top.
    const MoreLikely more_likely{&logits_};
    std::make_heap(candidates_.begin(), candidates_.end(), more_likely);
    for (size_t id = k; id < vocab; ++id) {
      if (logits_[id] <= logits_[candidates_.front()]) continue;
      std::pop_heap(candidates_.begin(), candidates_.end(), more_likely);
      candidates_.back() = static_cast<int32_t>(id);
      std::push_heap(candidates_.begin(), candidates_.end(), more_likely);
    }
  }
  weights_.resize(vocab);
  double total = 0.0;
  for (int32_t id : candidates_) {
    weights_[id] = std::exp(logits_[id] - max_logit);
    total += weights_[id];
  }
  return total;
}

size_t Sampler::TopPPrefixLength(double total_weight) {
  const double target = static_cast<double>(params_.top_p) * total_weight;
  const auto bucket_of = [this](int32_t id) { return TopPBucket(logits_[id], max_logit_); };
  bucket_mass_.assign(kTopPBuckets, 0.0);
  for (int32_t id : candidates_) bucket_mass_[bucket_of(id)] += weights_[id];
  // The cut falls in bucket `cut`; all more likely buckets are kept whole.
  double mass = 0.0;
  size_t cut = 0;
  for (; cut + 1 < kTopPBuckets && mass + bucket_mass_[cut] < target; ++cut) {
    mass += bucket_mass_[cut];
  }
  const auto cut_begin = std::partition(candidates_.begin(), candidates_.end(),
                                        [&](int32_t id) { return bucket_of(id) < cut; });
  const auto cut_end = std::partition(cut_begin, candidates_.end(),
                                      [&](int32_t id) { return bucket_of(id) == cut; });
  std::sort(cut_begin, cut_end, MoreLikely{&logits_});
  for (auto it = cut_begin; it != cut_end; ++it) {
    mass += weights_[*it];
    if (mass >= target) return static_cast<size_t>(it + 1 - candidates_.begin());
  }
  return static_cast<size_t>(cut_end - candidates_.begin());  // Only reached through rounding.
}

void Sampler::ApplyMinP() {
  // Weights are relative to the most likely token, which top-k and top-p always keep, so the
  // min-p threshold on renormalized probabilities is min_p on the weights.
  const float min_p = params_.min_p;
  if (min_p <= 0.0f) return;
  std::erase_if(candidates_, [&](int32_t id) { return weights_[id] < min_p; });
}

int32_t Sampler::Draw() {
  double mass = 0.0;
  for (int32_t id : candidates_) mass += weights_[id];
  const double target = UniformDouble(rng_) * mass;
  double cumulative = 0.0;
  int32_t last = candidates_.front();
  for (int32_t id : candidates_) {
    if (weights_[id] <= 0.0f) continue;
    cumulative += weights_[id];
    last = id;
    if (target < cumulative) return id;
  }
  return last;  // Only reached through rounding.
}

}  // namespace funnel
