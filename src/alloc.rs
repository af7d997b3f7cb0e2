//! The binary's memory allocator: mimalloc for the many small, short-lived
//! allocations of the proxy path, and the C library's `mmap`-backed malloc
//! for blocks of 1 MiB and more (argon2's 19 MiB working memory, a 1 MiB
//! request body), which go back to the OS when freed. mimalloc alone keeps
//! a freed 19 MiB argon2 block resident on the idle hashing thread; and its
//! arenas ask for transparent huge pages, which made every touched 2 MiB
//! resident (`bench/memory.sh`: 22 MiB after three logins instead of 5).

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Allocations at least this large bypass mimalloc.
pub const LARGE: usize = 1 << 20;

/// mimalloc below [`LARGE`], `System` (glibc) from it on. Call
/// [`SidecarAlloc::init`] first thing in `main`.
pub struct SidecarAlloc;

impl SidecarAlloc {
    /// Fixes glibc's `mmap` threshold at [`LARGE`] (by default it rises to
    /// the size of the largest block freed, after which argon2's block would
    /// come from, and stay in, the heap) and turns transparent huge pages off
    /// for the process (a sidecar's heap is small; resident memory counts).
    pub fn init() {
        // SAFETY: mallopt only changes a malloc tunable and prctl only sets
        // this process's THP flag; both are called before any thread exists
        // and take no pointers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

// SAFETY: every block is freed or resized by the allocator that made it: the
// routing depends only on the layout's size, which `GlobalAlloc` callers pass
// unchanged to `dealloc`/`realloc`, and a resize across `LARGE` moves the
// bytes to a block of the other allocator.
unsafe impl GlobalAlloc for SidecarAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (non-zero size).
        unsafe {
            if layout.size() >= LARGE {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.size() >= LARGE {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator the same size selects.
        unsafe {
            if layout.size() >= LARGE {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same-side resizes are forwarded; a crossing allocates on
        // the other side, copies the smaller size and frees the old block.
        unsafe {
            match (layout.size() >= LARGE, new_size >= LARGE) {
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                (true, true) => System.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `len` bytes with a pattern ([`kept`] checks it).
    unsafe fn fill(ptr: *mut u8, len: usize) {
        for i in 0..len {
            unsafe { *ptr.add(i) = (i % 251) as u8 };
        }
    }

    unsafe fn kept(ptr: *const u8, len: usize) -> bool {
        (0..len).all(|i| unsafe { *ptr.add(i) } == (i % 251) as u8)
    }

    #[test]
    fn resizes_across_the_threshold_keep_the_bytes() {
        let a = SidecarAlloc;
        for align in [8usize, 64, 4096] {
            let small = Layout::from_size_align(4096, align).unwrap();
            // SAFETY: every pointer is used within its layout and freed once
            // with the layout it has at that point.
            unsafe {
                let p = a.alloc(small);
                assert!(!p.is_null());
                fill(p, small.size());
                let big = a.realloc(p, small, 3 * LARGE);
                assert!(!big.is_null() && (big as usize).is_multiple_of(align));
                assert!(kept(big, small.size()));
                fill(big, 3 * LARGE);
                let big_layout = Layout::from_size_align(3 * LARGE, align).unwrap();
                let bigger = a.realloc(big, big_layout, 4 * LARGE);
                assert!(kept(bigger, 3 * LARGE));
                let bigger_layout = Layout::from_size_align(4 * LARGE, align).unwrap();
                let back = a.realloc(bigger, bigger_layout, 1000);
                assert!(!back.is_null() && (back as usize).is_multiple_of(align));
                assert!(kept(back, 1000));
                a.dealloc(back, Layout::from_size_align(1000, align).unwrap());
            }
        }
    }

    #[test]
    fn large_zeroed_blocks_are_zero() {
        let a = SidecarAlloc;
        let layout = Layout::from_size_align(2 * LARGE, 64).unwrap();
        // SAFETY: read within the layout, freed once with it.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert!((0..layout.size()).step_by(4093).all(|i| *p.add(i) == 0));
            a.dealloc(p, layout);
        }
    }
}
