//! The file-descriptor limit: a server raises its soft limit to the hard one at start and
//! keeps its connection cap below it, so a flood is answered with `serverfull` instead of
//! failing accepts with EMFILE.

/// Descriptors kept free besides one per connection: the listener, the runtime, log
/// files, a refusal in flight.
pub(crate) const RESERVED: usize = 64;

/// Raises the soft limit on open files to the hard limit, and returns the soft limit now
/// in force (`None` where it cannot be known).
#[cfg(unix)]
pub(crate) fn raise() -> Option<usize> {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
    }
}

/// Not known on this platform.
#[cfg(not(unix))]
pub(crate) fn raise() -> Option<usize> {
    None
}

/// The connection cap to use under a soft limit of `soft` descriptors.
pub(crate) fn cap(max_connections: usize, soft: Option<usize>) -> usize {
    match soft {
        Some(soft) => max_connections.min(soft.saturating_sub(RESERVED).max(1)),
        None => max_connections,
    }
}
