// CPU tensors for the kernels' outputs (shuffle_attention.cpp,
// block_end_cpu.cpp).
#pragma once

#include <ATen/EmptyTensor.h>
#include <torch/extension.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

// A new contiguous CPU tensor, made directly rather than through the
// dispatcher (at::empty): right after a pass over a large tensor the
// dispatcher's first calls run with cold caches, and a forward+backward
// allocates ten tensors.
inline at::Tensor new_tensor(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::Tensor(at::detail::empty_cpu(sizes, dtype));
}

// new_tensor like x, with transparent huge pages asked for when large.
// glibc serves blocks of 32 MiB and more by a fresh mmap on every call, so
// each call takes a page fault per 4 KiB page on first touch; 2 MiB pages
// take a 512th of them. The hint dies with the mapping; smaller blocks
// come from the heap, already faulted in.
inline at::Tensor empty_output(const at::Tensor& x) {
  auto out = new_tensor(x.sizes(), x.scalar_type());
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = out.nbytes();
  if (bytes >= (size_t(32) << 20)) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t lo = (p + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t hi = (p + bytes) & ~(kHuge - 1);
    // Only a hint: with THP off or unsupported the call fails harmlessly.
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
#endif
  return out;
}

