//! The descriptor limit (RLIMIT_NOFILE). Each guest holds a listener and,
//! while it is being served, a connection or two; the control socket and
//! metrics hold up to their caps. The soft limit is raised to the hard one
//! at start (the hard limit is the operator's decision: `LimitNOFILE=` in
//! the unit), and a fleet that cannot fit is refused before anything
//! starts, with the number it needs.

/// Descriptors the daemon needs besides its guests: standard streams, the
/// runtime, D-Bus, the control socket's and metrics' connection caps, and
/// room for the guests' notification connections.
pub const BASE_DESCRIPTORS: u64 = 256;
/// Descriptors per guest: its listener and one request connection.
pub const PER_GUEST_DESCRIPTORS: u64 = 2;

/// What `guests` guests need.
pub fn needed(guests: usize) -> u64 {
    BASE_DESCRIPTORS + PER_GUEST_DESCRIPTORS * guests as u64
}

/// The limit could not be made large enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{guests} guest(s) need {needed} file descriptors but the limit is {limit}; \
     raise it (LimitNOFILE= in the systemd unit, ulimit -n) or serve fewer guests"
)]
pub struct DescriptorLimitError {
    pub guests: usize,
    pub needed: u64,
    pub limit: u64,
}

/// Raises the soft limit to the hard limit and checks it covers `guests`.
/// Platforms without the limit always pass.
pub fn ensure(guests: usize) -> Result<(), DescriptorLimitError> {
    let needed = needed(guests);
    match raise() {
        Some(limit) if limit < needed => Err(DescriptorLimitError {
            guests,
            needed,
            limit,
        }),
        _ => Ok(()),
    }
}

/// Raises the soft limit as far as the hard one allows; returns the soft
/// limit in force, `None` where there is none to read.
#[cfg(unix)]
fn raise() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read the struct given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = limit.rlim_cur,
                to = raised.rlim_cur,
                "raised the descriptor limit"
            );
            limit = raised;
        } else {
            // A seccomp filter (systemd's @resources) may forbid it; the
            // check below still says what is missing.
            tracing::debug!(
                "cannot raise the descriptor limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    // rlim_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let soft = u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX);
    Some(soft)
}

#[cfg(not(unix))]
fn raise() -> Option<u64> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_past_the_hard_limit_is_refused_with_the_number_needed() {
        let mut hard = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
            0
        );
        if hard.rlim_max == libc::RLIM_INFINITY {
            println!("SKIPPED: no hard descriptor limit to exceed");
            return;
        }
        let guests = (hard.rlim_max as usize) / 2 + 1;
        let e = ensure(guests).unwrap_err();
        assert_eq!(e.needed, needed(guests));
        assert!(e.to_string().contains("LimitNOFILE"), "{e}");
        assert!(ensure(1).is_ok());
    }
}
