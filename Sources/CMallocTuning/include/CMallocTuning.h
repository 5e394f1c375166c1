#ifndef CMALLOC_TUNING_H
#define CMALLOC_TUNING_H

#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif

/// Raises glibc's trim threshold: freed memory at the top of a heap is kept for reuse up to
/// `bytes` instead of being handed back to the kernel (madvise) and faulted in again.
/// Returns 1 on success, 0 where there is no glibc (the call does nothing there).
static inline int crebitos_set_malloc_trim_threshold(int bytes) {
#if defined(__GLIBC__)
    return mallopt(M_TRIM_THRESHOLD, bytes);
#else
    (void)bytes;
    return 0;
#endif
}

#endif
