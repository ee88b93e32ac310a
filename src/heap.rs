//! Giving freed heap back to the operating system after a (re)load. Parsing a large config
//! allocates far more than the registry keeps (about 6.5 KB per consumer at the peak, against
//! about 300 B kept); glibc keeps the freed pages mapped, so without a trim the parse peak
//! stays resident for the life of the process.
//!
//! The one place keygate uses `unsafe` (the crate denies it everywhere else): a call into
//! glibc that takes no pointer.

/// Returns free pages of the heap to the OS. Cheap when there is little to free; at a million
/// consumers it walks a few GB of arena, so callers on a runtime run it as blocking work.
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas and takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}
