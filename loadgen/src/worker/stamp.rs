//! Receive timestamps: the kernel's `SCM_TIMESTAMPNS` on a multishot
//! `recvmsg` (open loop over TCP on the ring), parsed from the control
//! messages the kernel wrote beside the data.

use io_uring::types;

/// Room for one `SCM_TIMESTAMPNS` control message.
// SAFETY: CMSG_SPACE only computes a length.
pub(super) const STAMP_CONTROL_LEN: u32 = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::timespec>() as u32) };

/// CLOCK_REALTIME now, in nanoseconds since the epoch.
pub(super) fn realtime_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Splits what a multishot `recvmsg` with template `hdr` put in a buffer into
/// its data and its `SCM_TIMESTAMPNS` (CLOCK_REALTIME nanoseconds), if the
/// kernel gave one; `None` if the buffer does not hold the header it should.
pub(super) fn stamped_data<'b>(buf: &'b [u8], hdr: &libc::msghdr) -> Option<(&'b [u8], Option<i128>)> {
    let out = types::RecvMsgOut::parse(buf, hdr).ok()?;
    if out.is_payload_truncated() {
        return None;
    }
    // The data is the end of what the kernel wrote (`parse` borrows it only
    // as long as `out` lives).
    let data = &buf[buf.len() - out.payload_data().len()..];
    Some((data, realtime_stamp(out.control_data())))
}

/// The `SCM_TIMESTAMPNS` in control messages `control`, in nanoseconds.
fn realtime_stamp(control: &[u8]) -> Option<i128> {
    let head = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while at + head <= control.len() {
        // SAFETY: `head` bytes from `at` are in bounds (checked above);
        // read_unaligned copes with any alignment.
        let c: libc::cmsghdr = unsafe { control.as_ptr().add(at).cast::<libc::cmsghdr>().read_unaligned() };
        let len = c.cmsg_len;
        if len < head || at + len > control.len() {
            return None;
        }
        if c.cmsg_level == libc::SOL_SOCKET
            && c.cmsg_type == libc::SCM_TIMESTAMPNS
            && len >= head + std::mem::size_of::<libc::timespec>()
        {
            // SAFETY: a timespec's bytes follow the header (length checked above).
            let ts: libc::timespec = unsafe {
                control
                    .as_ptr()
                    .add(at + head)
                    .cast::<libc::timespec>()
                    .read_unaligned()
            };
            return Some(ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128);
        }
        at += len.next_multiple_of(std::mem::size_of::<usize>());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control messages as the kernel lays them out: each header, its data,
    /// padding to a word.
    fn control(msgs: &[(i32, i32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(level, kind, data) in msgs {
            let head = std::mem::size_of::<libc::cmsghdr>();
            // SAFETY: cmsghdr is plain old data.
            let mut c: libc::cmsghdr = unsafe { std::mem::zeroed() };
            c.cmsg_len = head + data.len();
            c.cmsg_level = level;
            c.cmsg_type = kind;
            // SAFETY: reads the header's own bytes.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&c as *const libc::cmsghdr).cast::<u8>(), head)
            });
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out
    }

    fn timespec_bytes(sec: i64, nsec: i64) -> Vec<u8> {
        [sec.to_ne_bytes(), nsec.to_ne_bytes()].concat()
    }

    #[test]
    fn finds_the_timestamp_among_control_messages() {
        let ts = timespec_bytes(1_796_000_000, 123_456_789);
        let c = control(&[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts)]);
        assert_eq!(
            c.len(),
            STAMP_CONTROL_LEN as usize,
            "one timestamp fills the room made for it"
        );
        assert_eq!(realtime_stamp(&c), Some(1_796_000_000_123_456_789));
        let other = control(&[
            (libc::SOL_IP, 1, &[7; 4]),
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts),
        ]);
        assert_eq!(realtime_stamp(&other), Some(1_796_000_000_123_456_789));
    }

    #[test]
    fn a_missing_or_cut_timestamp_is_none() {
        assert_eq!(realtime_stamp(&[]), None);
        let ts = timespec_bytes(5, 6);
        let c = control(&[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts)]);
        assert_eq!(realtime_stamp(&c[..c.len() - 8]), None, "cut short");
        let short = control(&[(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts[..8])]);
        assert_eq!(realtime_stamp(&short), None, "too short to hold a timespec");
        let mut bad = c.clone();
        bad[..8].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(realtime_stamp(&bad), None, "a length shorter than its header");
    }
}
