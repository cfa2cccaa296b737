//! Gives memory freed after a config change back to the operating system. Building a
//! Snapshot allocates much that is freed at once (parsed manifests, the previous
//! Snapshot); glibc keeps such memory in its arenas, so the process would stay as large
//! as its largest config load.

/// Returns free heap memory to the OS (glibc's `malloc_trim`; a no-op elsewhere).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no
    // preconditions and may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
