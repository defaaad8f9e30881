// A cache of large CPU blocks for the forwards of deblur(): freed activations are kept and
// handed to the next request of about the same size, instead of going back to the C library
// and coming back as fresh pages.
//
// Why: a CPU forward allocates and frees tens to hundreds of activation tensors of a few sizes
// (a 720p frame's 32-channel bfloat16 activations are 59 MiB each). Fresh pages cost a page
// fault and zeroing each (on the 2-core VMs measured: ~1-2 GB/s), and glibc's heap, which can
// keep pages, fragments under this pattern: a 720p forward grew it to 620 MiB for 180 MiB of
// live tensors, and tiled forwards of large photos (many sizes) more. Blocks matched by size
// do not fragment: each is its own mapping, reused whole.
//
// The cache is installed as torch's CPU allocator the first time it is enabled, and passes
// every request through to the allocator it replaced unless it is active (between begin and
// end) and the request is at least kMinBytes. Blocks it made are recognized by their deleter
// (raw pointers by its table of blocks in use; others go to the allocator they came from), so
// they can be freed at any time, active or not: a block freed from begin until the next trim()
// is kept for reuse (tensors that outlive a forward, such as its output, are freed after end:
// unmapped then, their blocks had to be made again, and faulted in, by every next forward:
// ~7,200 page faults per back-to-back 720p frame), otherwise it is unmapped. The bytes mapped
// (in use and kept) stay under the limit unless the blocks in use alone exceed it, and then
// nothing is kept. trim() unmaps the kept blocks. Thread-safe; fork-safe (a child starts
// inactive with no kept blocks).
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#if defined(__unix__) || defined(__APPLE__)  // mmap, madvise, pthread_atfork; elsewhere no cache
#include <pthread.h>
#include <strings.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fastdeblur {
namespace {

constexpr size_t kMinBytes = size_t{2} << 20;  // smaller requests go to the C library
constexpr size_t kHuge = size_t{2} << 20;      // block sizes are multiples of a huge page

// torch's allocator madvises its blocks of 2 MiB or more for transparent huge pages when
// THP_MEM_ALLOC_ENABLE is set (by the user: fastdeblur leaves it alone, _heap.py); do the same
bool huge_pages_wanted() {
  const char* v = std::getenv("THP_MEM_ALLOC_ENABLE");
  return v != nullptr && (std::strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "on") == 0 ||
                          strcasecmp(v, "yes") == 0);
}

// A mapping of `size` bytes (a multiple of kHuge) aligned to kHuge, or nullptr.
void* map_block(size_t size, bool huge) {
  void* raw = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  auto start = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = (start + kHuge - 1) & ~(kHuge - 1);
  if (aligned > start) munmap(raw, aligned - start);
  uintptr_t tail = start + size + kHuge - (aligned + size);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
  void* p = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  if (huge) madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
}

class BlockCache final : public c10::Allocator {
 public:
  // The one instance: never destroyed (tensors may outlive static destruction order).
  static BlockCache& get() {
    static auto* cache = new BlockCache();
    return *cache;
  }

  void begin(int64_t limit) {
    install();
    std::lock_guard<std::mutex> g(mu_);
    limit_ = limit > 0 ? static_cast<size_t>(limit) : 0;
    huge_ = huge_pages_wanted();
    keeping_ = true;
    active_.store(true);
  }

  void end() { active_.store(false); }

  void trim() {
    std::lock_guard<std::mutex> g(mu_);
    keeping_ = active_.load();  // blocks freed from now until the next begin are unmapped
    while (!free_by_age_.empty()) evict_oldest_locked();
  }

  // {bytes kept for reuse, bytes mapped in all (kept and in use), blocks made, requests served}
  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> g(mu_);
    return {static_cast<int64_t>(kept_), static_cast<int64_t>(held_), static_cast<int64_t>(made_),
            static_cast<int64_t>(served_)};
  }

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinBytes || !active_.load()) return base_->allocate(n);
    size_t size = (n + kHuge - 1) / kHuge * kHuge;
    void* p = nullptr;
    size_t in_use = 0, held = 0;
    {
      std::lock_guard<std::mutex> g(mu_);
      ++served_;
      // the smallest kept block that holds the request and is at most twice its size
      auto it = free_by_size_.lower_bound(size);
      if (it != free_by_size_.end() && it->first <= 2 * size) {
        p = it->second.ptr;
        size = it->first;
        free_by_age_.erase(it->second.age);
        free_by_size_.erase(it);
        kept_ -= size;
      } else {
        // the oldest kept blocks make room, so kept and used bytes stay under the limit
        while (!free_by_age_.empty() && held_ + size > limit_) evict_oldest_locked();
        p = map_block(size, huge_);
        if (p == nullptr) {  // out of address space or memory: give back what is kept, try once more
          while (!free_by_age_.empty()) evict_oldest_locked();
          p = map_block(size, huge_);
        }
        if (p == nullptr) {
          --served_;
          return base_->allocate(n);  // the C library's error (torch's out-of-memory message)
        }
        held_ += size;
        ++made_;
      }
      live_[p] = size;
      in_use = held_ - kept_;
      held = held_;
    }
    report(p, static_cast<int64_t>(size), in_use, held);
    return {p, p, &BlockCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &BlockCache::release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Kept {
    void* ptr;
    uint64_t age;
  };

  BlockCache() = default;

  void install() {
    std::call_once(installed_, [this] {
      base_ = c10::GetCPUAllocator();
      // above the default allocator's priority (0), so torch's CPU tensors come from here
      c10::SetCPUAllocator(this, /*priority=*/1);
      pthread_atfork(&BlockCache::before_fork, &BlockCache::after_fork_parent, &BlockCache::after_fork_child);
    });
  }

  static void release(void* p) { get().free_block(p); }

  void free_block(void* p) {
    size_t size = 0, in_use = 0, held = 0;
    bool ours = false;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = live_.find(p);
      ours = it != live_.end();
      if (ours) {
        size = it->second;
        live_.erase(it);
        keep_or_unmap_locked(p, size);
        in_use = held_ - kept_;
        held = held_;
      }
    }
    if (!ours) {
      // not a block of ours: raw_allocate() passed the request through to the base allocator,
      // and raw_deallocate() calls our raw_deleter (oneDNN's scratchpads take this path)
      base_->raw_deleter()(p);
      return;
    }
    report(p, -static_cast<int64_t>(size), in_use, held);
  }

  void keep_or_unmap_locked(void* p, size_t size) {
    if (keeping_ && held_ <= limit_) {  // kept only while in use and kept fit the limit
      uint64_t age = next_age_++;
      free_by_size_.emplace(size, Kept{p, age});
      free_by_age_.emplace(age, std::make_pair(size, p));
      kept_ += size;
    } else {
      munmap(p, size);
      held_ -= size;
    }
  }

  // torch.profiler's memory events, as torch's own CPU allocator reports them (block sizes)
  static void report(void* p, int64_t bytes, size_t in_use, size_t held) {
    if (c10::memoryProfilingEnabled()) {
      c10::reportMemoryUsageToProfiler(p, bytes, in_use, held, c10::Device(c10::DeviceType::CPU));
    }
  }

  void evict_oldest_locked() {
    auto oldest = free_by_age_.begin();
    auto [size, p] = oldest->second;
    auto range = free_by_size_.equal_range(size);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.ptr == p) {
        free_by_size_.erase(it);
        break;
      }
    }
    free_by_age_.erase(oldest);
    munmap(p, size);
    kept_ -= size;
    held_ -= size;
  }

  static void before_fork() { get().mu_.lock(); }
  static void after_fork_parent() { get().mu_.unlock(); }
  static void after_fork_child() {
    BlockCache& c = get();
    c.mu_.unlock();
    c.active_.store(false);  // the child's kept blocks are copies nobody uses: unmap them
    c.keeping_ = false;
    while (!c.free_by_age_.empty()) c.evict_oldest_locked();
  }

  c10::Allocator* base_ = nullptr;
  std::once_flag installed_;
  std::mutex mu_;
  std::atomic<bool> active_{false};
  bool huge_ = false;
  bool keeping_ = false;  // freed blocks are kept: from begin until a trim (mu_)
  size_t limit_ = 0;
  size_t kept_ = 0;  // bytes in kept (free) blocks
  size_t held_ = 0;  // bytes in all blocks made here and not unmapped
  uint64_t made_ = 0, served_ = 0, next_age_ = 0;
  std::unordered_map<void*, size_t> live_;
  std::multimap<size_t, Kept> free_by_size_;
  std::map<uint64_t, std::pair<size_t, void*>> free_by_age_;
};

void cache_begin(int64_t limit) { BlockCache::get().begin(limit); }
void cache_end() { BlockCache::get().end(); }
void cache_trim() { BlockCache::get().trim(); }
std::vector<int64_t> cache_stats() { return BlockCache::get().stats(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // The block cache (above): serve CPU requests of >= 2 MiB from blocks kept for reuse, holding at
  // most `limit` bytes of blocks (in use and kept), until block_cache_end; blocks freed until
  // block_cache_trim are kept, and trim unmaps them.
  m.def("block_cache_begin(int limit) -> ()", &cache_begin);
  m.def("block_cache_end() -> ()", &cache_end);
  m.def("block_cache_trim() -> ()", &cache_trim);
  // [bytes kept, bytes mapped (in use and kept), blocks made, requests served]
  m.def("block_cache_stats() -> int[]", &cache_stats);
}

}  // namespace fastdeblur
#endif
