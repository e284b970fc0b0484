//! The kernel's NTP discipline state, read with adjtimex(2) in read-only mode (`modes = 0`).
//!
//! No maintained safe wrapper for adjtimex exists among the crates this workspace uses (nix
//! has none), so this is the one place the agent calls into libc directly.
use nodehealth_proto::node::Clock;

use crate::host::now_unix_ms;

/// STA_* status bits (include/uapi/linux/timex.h).
const STATUS_FLAGS: &[(i32, &str)] = &[
    (0x0001, "STA_PLL"),
    (0x0002, "STA_PPSFREQ"),
    (0x0004, "STA_PPSTIME"),
    (0x0008, "STA_FLL"),
    (0x0010, "STA_INS"),
    (0x0020, "STA_DEL"),
    (0x0040, "STA_UNSYNC"),
    (0x0080, "STA_FREQHOLD"),
    (0x0100, "STA_PPSSIGNAL"),
    (0x0200, "STA_PPSJITTER"),
    (0x0400, "STA_PPSWANDER"),
    (0x0800, "STA_PPSERROR"),
    (0x1000, "STA_CLOCKERR"),
    (0x2000, "STA_NANO"),
    (0x4000, "STA_MODE"),
    (0x8000, "STA_CLK"),
];
const STA_UNSYNC: i32 = 0x0040;
const STA_NANO: i32 = 0x2000;
const TIME_ERROR: i32 = 5;

/// Raw adjtimex result: (return value, status, offset, maxerror µs, esterror µs).
#[allow(unsafe_code)]
fn adjtimex_read() -> Result<(i32, i32, i64, i64, i64), std::io::Error> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are a valid value; with
    // `modes == 0` adjtimex only reads the kernel's state into the struct we own, and the
    // pointer is valid for the duration of the call.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: see above; `tx` outlives the call.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((rc, tx.status, tx.offset, tx.maxerror, tx.esterror))
}

pub fn state_name(rc: i32) -> &'static str {
    match rc {
        0 => "TIME_OK",
        1 => "TIME_INS",
        2 => "TIME_DEL",
        3 => "TIME_OOP",
        4 => "TIME_WAIT",
        5 => "TIME_ERROR",
        _ => "unknown",
    }
}

/// Reads the clock state (no privileges needed for a read).
pub fn collect() -> Clock {
    let mut c = Clock {
        node_unix_ms: now_unix_ms(),
        ..Default::default()
    };
    match adjtimex_read() {
        Ok((rc, status, offset, maxerror, esterror)) => {
            c.clock_state = state_name(rc).to_string();
            c.ntp_synchronized = status & STA_UNSYNC == 0 && rc != TIME_ERROR;
            c.status_flags = STATUS_FLAGS
                .iter()
                .filter(|(bit, _)| status & bit != 0)
                .map(|(_, name)| name.to_string())
                .collect();
            // offset is in ns when STA_NANO is set, else µs.
            c.offset_us = if status & STA_NANO != 0 {
                offset / 1000
            } else {
                offset
            };
            c.max_error_us = maxerror;
            c.est_error_us = esterror;
        }
        Err(e) => c.error = Some(format!("adjtimex: {e}")),
    }
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_real_clock_state() {
        let c = super::collect();
        assert!(c.error.is_none(), "{c:?}");
        assert_ne!(c.clock_state, "unknown");
        // Consistent with the flag list whatever this machine's NTP state is.
        assert_eq!(
            c.ntp_synchronized,
            !c.status_flags.iter().any(|f| f == "STA_UNSYNC") && c.clock_state != "TIME_ERROR"
        );
    }
}
