// One bit per chunk or page, in 64-bit words: bit i is bit i % 64 of word
// i / 64, which is also how KVM's dirty log and the wire carry a bitmap, so
// words() goes to either as it is. Bits past size() are always clear.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace vmm {

class Bitmap {
 public:
  Bitmap() = default;
  explicit Bitmap(uint64_t bits, bool value = false) : words_(words_for(bits), value ? ~0ULL : 0), bits_(bits) {
    clear_tail();
  }
  // Takes words as they came (from the kernel, from the wire): as many as
  // `bits` needs, no bit set past it.
  static Bitmap from_words(std::vector<uint64_t> words, uint64_t bits) {
    if (words.size() != words_for(bits)) throw std::invalid_argument("bitmap words do not match its size");
    Bitmap b;
    b.words_ = std::move(words);
    b.bits_ = bits;
    if (b.tail_mask() && (b.words_.back() & ~b.tail_mask()))
      throw std::invalid_argument("bitmap has bits set past its end");
    return b;
  }
  static uint64_t words_for(uint64_t bits) { return (bits + 63) / 64; }

  uint64_t size() const { return bits_; }
  const std::vector<uint64_t>& words() const { return words_; }

  bool test(uint64_t i) const { return words_[i / 64] >> (i % 64) & 1; }
  void set(uint64_t i) { words_[i / 64] |= bit(i); }
  void reset(uint64_t i) { words_[i / 64] &= ~bit(i); }
  void assign(uint64_t i, bool value) { value ? set(i) : reset(i); }
  // [first, last): set or clear every bit, or ask whether any / all are set.
  void set(uint64_t first, uint64_t last) { for_range(words_, first, last, [](uint64_t& w, uint64_t m) { w |= m; }); }
  void reset(uint64_t first, uint64_t last) {
    for_range(words_, first, last, [](uint64_t& w, uint64_t m) { w &= ~m; });
  }
  bool any(uint64_t first, uint64_t last) const {
    bool found = false;
    for_range(words_, first, last, [&](uint64_t w, uint64_t m) { found |= (w & m) != 0; });
    return found;
  }
  bool all(uint64_t first, uint64_t last) const {
    bool every = true;
    for_range(words_, first, last, [&](uint64_t w, uint64_t m) { every &= (w & m) == m; });
    return every;
  }

  uint64_t count() const {
    uint64_t n = 0;
    for (uint64_t w : words_) n += static_cast<uint64_t>(std::popcount(w));
    return n;
  }
  // The first set (or clear) bit at or after `from`; size() when there is none.
  uint64_t find_next(uint64_t from) const { return find(from, 0); }
  uint64_t find_next_clear(uint64_t from) const { return find(from, ~0ULL); }

  // Word by word, over bitmaps of one size.
  Bitmap& operator|=(const Bitmap& o) { return combine(o, [](uint64_t a, uint64_t b) { return a | b; }); }
  Bitmap& operator&=(const Bitmap& o) { return combine(o, [](uint64_t a, uint64_t b) { return a & b; }); }
  bool intersects(const Bitmap& o) const {
    for (size_t i = 0; i < std::min(words_.size(), o.words_.size()); i++)
      if (words_[i] & o.words_[i]) return true;
    return false;
  }
  Bitmap& flip() {
    for (uint64_t& w : words_) w = ~w;
    clear_tail();
    return *this;
  }
  // Bits [first, first + n) as a bitmap of n bits; `first` is a multiple of 64.
  Bitmap slice(uint64_t first, uint64_t n) const {
    if (first % 64 || first > bits_ || n > bits_ - first) throw std::invalid_argument("bitmap slice out of range");
    std::vector<uint64_t> w(words_.begin() + static_cast<long>(first / 64),
                            words_.begin() + static_cast<long>(first / 64 + words_for(n)));
    Bitmap b;
    b.words_ = std::move(w);
    b.bits_ = n;
    b.clear_tail();
    return b;
  }
  bool operator==(const Bitmap&) const = default;

 private:
  static uint64_t bit(uint64_t i) { return 1ULL << (i % 64); }
  uint64_t tail_mask() const { return bits_ % 64 ? (1ULL << (bits_ % 64)) - 1 : 0; }
  void clear_tail() {
    if (tail_mask()) words_.back() &= tail_mask();
  }
  // Calls f(word, mask) for each word that [first, last) touches, mask
  // holding the range's bits in it.
  template <typename Words, typename F>
  static void for_range(Words& words, uint64_t first, uint64_t last, F f) {
    while (first < last) {
      uint64_t w = first / 64, lo = first % 64, hi = std::min<uint64_t>(64, lo + (last - first));
      uint64_t mask = (hi == 64 ? ~0ULL : (1ULL << hi) - 1) & ~((1ULL << lo) - 1);
      f(words[w], mask);
      first += hi - lo;
    }
  }
  uint64_t find(uint64_t from, uint64_t invert) const {
    for (uint64_t w = from / 64; from < bits_ && w < words_.size(); w++) {
      uint64_t bits = (words_[w] ^ invert) & (~0ULL << (w == from / 64 ? from % 64 : 0));
      if (bits) return std::min(bits_, w * 64 + static_cast<uint64_t>(std::countr_zero(bits)));
    }
    return bits_;
  }
  template <typename Op>
  Bitmap& combine(const Bitmap& o, Op op) {
    if (o.bits_ != bits_) throw std::invalid_argument("bitmaps of different sizes");
    for (size_t i = 0; i < words_.size(); i++) words_[i] = op(words_[i], o.words_[i]);
    return *this;
  }

  std::vector<uint64_t> words_;
  uint64_t bits_ = 0;
};

}  // namespace vmm
