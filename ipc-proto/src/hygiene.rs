//! What a process holding tokens does at start so that they do not end up on disk: no core
//! dump (a crash would write the heap, tokens included, to a file other tools collect).

/// Sets the core-dump size limit to 0, hard and soft, so that neither this process nor its
/// children write a core file. With `undumpable` (Linux), also `PR_SET_DUMPABLE` 0: no
/// core even through a `core_pattern` pipe, and other processes of the same user cannot
/// ptrace it or read its memory through /proc. Failures are returned for the caller to
/// log; they do not stop the program.
pub fn disable_core_dumps(undumpable: bool) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct we pass; lowering a limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &raw const zero) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[cfg(target_os = "linux")]
        if undumpable {
            // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes no pointers.
            if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    let _ = undumpable;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn no_core_limit_and_not_dumpable() {
        super::disable_core_dumps(true).unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &raw mut limit) };
        assert_eq!(got, 0);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
        // SAFETY: PR_GET_DUMPABLE takes no pointers.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }
}
