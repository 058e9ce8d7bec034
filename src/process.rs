//! Process-wide protections that must hold before any secret is read.
//!
//! A core dump would hold every unsealed private key and every KEK, so the
//! process forbids them: `RLIMIT_CORE` 0 (soft and hard, so nothing it runs
//! can raise it again) and not dumpable (`PR_SET_DUMPABLE` 0, which also keeps
//! other processes of the same user from attaching a debugger or reading its
//! memory through /proc).

use std::io;

/// Turns core dumps off for this process. Call it first thing in `main`.
///
/// # Errors
///
/// What `setrlimit(2)` says when it refuses.
pub fn forbid_core_dumps() -> io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes plain integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
