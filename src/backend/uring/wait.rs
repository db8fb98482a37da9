//! How a ring's loop turn waits: `--uring-wait` and `--uring-min-wait`.

use std::time::Duration;

use crate::ring::Wait;
use crate::serve::config::UringWait;

/// The longest a loop turn waits for one more completion than its quiet
/// sends (see [`plan_wait`]); it bounds the delay in the rare case where a
/// send's completion needs a follow-up after all (a partial send, or
/// `EAGAIN`: the client is not reading fast, so it is not waiting on us).
pub const INLINE_WAIT_BOUND: Duration = Duration::from_millis(1);

/// How a ring's loop waits: `--uring-wait` and `--uring-min-wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    pub mode: UringWait,
    /// 0: off.
    pub min_wait_usec: u32,
}

/// The general timeout of a min_wait wait that has no deadline of its own.
/// The kernel ends a wait that has a min_wait but no timeout as soon as the
/// min_wait has passed, completions or not, so without one an idle ring
/// would wake every min_wait; with it the kernel, once the min_wait has
/// passed with nothing there, sleeps on until one completion (or this). An
/// idle ring therefore wakes once an hour, to wait again.
pub const MIN_WAIT_IDLE_BOUND: Duration = Duration::from_secs(3600);

/// Plans a turn's wait: one completion, with the caller's timeout
/// (`UringWait::One`, the default).
///
/// `UringWait::Quiet` (`--uring-wait quiet`, kept for A/B measurement) tries
/// to save an enter. Sends carry `MSG_DONTWAIT`, so each one the enter
/// submits has completed (or failed with `EAGAIN`) before the enter starts
/// waiting; waiting for one completion then returns at once with nothing but
/// their bookkeeping to do, and the loop enters again only to sleep: two
/// enters per echo at low concurrency. Quiet asks for one completion more
/// than the `quiet_sends` (sends whose completion needs no follow-up for
/// anyone to make progress), bounded by [`INLINE_WAIT_BOUND`]; when anything
/// needs its completion handled at once (`prompt`: bytes queued behind a
/// send, an EOF, a cancel, a ring out of buffers), it waits for one. The
/// bound is a timer armed on every such enter, and at matched load over TCP
/// (100 and 1,000 connections) quiet cost 1.14 to 1.27x one's server CPU
/// per message (results/uring-ab): the timer costs more than the enter.
///
/// `min_wait_usec > 0` (`--uring-min-wait`, which the server refuses to
/// combine with quiet) batches wake-ups instead: each one is expensive here
/// (arming timers and IPIs trap to the hypervisor), so a ring that wakes for
/// one message waits a little for more. The turn asks for its quiet sends'
/// completions plus `batch` (the caller's guess at how many receives can
/// complete before it answers: the stream ring's connections, each of which
/// sends at most one message before it waits for its echo in a closed loop);
/// once `min_wait_usec` has passed the kernel returns as soon as one
/// completion is there, and if none is, sleeps on as for one. Its costs: an
/// hrtimer armed on every enter that sleeps, and up to `min_wait_usec` of
/// delay for what completes early in a wait. Where a batch cannot be more
/// than one completion, or something is `prompt`, it waits for one, as
/// `One` does, and arms nothing.
pub fn plan_wait(
    policy: WaitPolicy,
    quiet_sends: usize,
    batch: usize,
    prompt: bool,
    timeout: Option<Duration>,
) -> Wait {
    if prompt {
        return Wait::one(timeout);
    }
    if policy.min_wait_usec > 0 {
        let want = quiet_sends + batch;
        if want <= 1 {
            return Wait::one(timeout);
        }
        return Wait {
            want,
            min_wait_usec: policy.min_wait_usec,
            timeout: Some(timeout.unwrap_or(MIN_WAIT_IDLE_BOUND)),
        };
    }
    if policy.mode == UringWait::One || quiet_sends == 0 {
        return Wait::one(timeout);
    }
    Wait {
        want: quiet_sends + 1,
        min_wait_usec: 0,
        timeout: Some(timeout.map_or(INLINE_WAIT_BOUND, |t| t.min(INLINE_WAIT_BOUND))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring's back-off (`ring::backoff_delay`) is retried well inside the
    /// server's stop deadline: a stop request is checked every loop turn.
    #[test]
    fn back_off_stays_well_inside_the_stop_deadline() {
        assert!(crate::ring::backoff_delay(u32::MAX) * 4 < crate::serve::STOP_DEADLINE);
    }

    const QUIET: WaitPolicy = WaitPolicy {
        mode: UringWait::Quiet,
        min_wait_usec: 0,
    };
    const ONE: WaitPolicy = WaitPolicy {
        mode: UringWait::One,
        min_wait_usec: 0,
    };
    const MIN_WAIT_50: WaitPolicy = WaitPolicy {
        mode: UringWait::One,
        min_wait_usec: 50,
    };

    #[test]
    fn a_turn_waits_past_its_own_sends_only_when_nothing_needs_them_at_once() {
        let none = None;
        // The batch is for min_wait only: quiet ignores it.
        for batch in [0, 1, 100] {
            assert_eq!(plan_wait(QUIET, 0, batch, false, none), Wait::one(none));
            assert_eq!(plan_wait(QUIET, 3, batch, true, none), Wait::one(none));
            let w = plan_wait(QUIET, 3, batch, false, none);
            assert_eq!((w.want, w.min_wait_usec, w.timeout), (4, 0, Some(INLINE_WAIT_BOUND)));
        }
        // A shorter deadline of the caller's own (the --max-conns recheck) still holds.
        let short = Some(Duration::from_micros(100));
        assert_eq!(plan_wait(QUIET, 1, 0, false, short).timeout, short);
        assert_eq!(
            plan_wait(QUIET, 1, 0, false, Some(Duration::from_secs(1))).timeout,
            Some(INLINE_WAIT_BOUND)
        );
    }

    /// `--uring-wait one`: one completion, with the caller's own deadline
    /// (or none) untouched, whatever the turn's sends.
    #[test]
    fn wait_one_always_waits_for_one_completion() {
        for quiet_sends in [0, 1, 3, 1000] {
            for prompt in [false, true] {
                for batch in [0, 1, 100] {
                    assert_eq!(plan_wait(ONE, quiet_sends, batch, prompt, None), Wait::one(None));
                    let recheck = Some(Duration::from_millis(50));
                    assert_eq!(plan_wait(ONE, quiet_sends, batch, prompt, recheck), Wait::one(recheck));
                }
            }
        }
    }

    /// `--uring-min-wait`: the turn's quiet sends plus the batch, with the
    /// min_wait, and always a general timeout (the caller's, or the idle
    /// bound), without which the kernel would end the wait at the min_wait.
    #[test]
    fn min_wait_asks_for_a_batch_with_a_general_timeout() {
        let w = plan_wait(MIN_WAIT_50, 3, 10, false, None);
        assert_eq!(
            w,
            Wait {
                want: 13,
                min_wait_usec: 50,
                timeout: Some(MIN_WAIT_IDLE_BOUND)
            }
        );
        // Idle connections: no sends, a batch of one message each.
        assert_eq!(plan_wait(MIN_WAIT_50, 0, 2, false, None).want, 2);
        let recheck = Some(Duration::from_millis(50));
        assert_eq!(plan_wait(MIN_WAIT_50, 1, 1, false, recheck).timeout, recheck);
        assert!(MIN_WAIT_IDLE_BOUND > Duration::from_micros(crate::serve::config::MAX_MIN_WAIT_USEC as u64));
    }

    /// Where a batch is one completion at most, a min_wait changes nothing
    /// but arms a timer; where something needs handling at once, it waits.
    #[test]
    fn min_wait_waits_for_one_when_a_batch_cannot_form_or_something_is_prompt() {
        for (quiet_sends, batch) in [(0, 0), (1, 0), (0, 1)] {
            assert_eq!(plan_wait(MIN_WAIT_50, quiet_sends, batch, false, None), Wait::one(None));
        }
        let recheck = Some(Duration::from_millis(50));
        assert_eq!(plan_wait(MIN_WAIT_50, 5, 100, true, recheck), Wait::one(recheck));
    }
}
