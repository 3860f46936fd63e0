//! How a command ended, as a process exit code a CI can branch on.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success: the command did what it was asked and every check passed |
//! | 1 | bad input or usage: a config, file, flag or device that is wrong or missing |
//! | 2 | internal failure: a bug in distill-edge (a caught panic) |
//! | 3 | a check ran and failed: parity, accuracy drop, latency budget |

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Process exit status of `distill-edge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what it was asked and every check passed.
    Success = 0,
    /// Bad input or usage: a config, file, flag or device that is wrong or missing.
    BadInput = 1,
    /// Internal failure: a bug in distill-edge (a caught panic).
    Internal = 2,
    /// The command ran fine but a check failed: parity, accuracy drop, latency budget.
    CheckFailed = 3,
}

/// A check that ran and failed (parity, accuracy drop, latency budget, baseline regression).
/// Anywhere in an error chain, it makes the process exit with [`ExitStatus::CheckFailed`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

impl ExitStatus {
    /// The status an error maps to: [`ExitStatus::CheckFailed`] when a [`CheckFailed`] is in
    /// its chain, else [`ExitStatus::BadInput`].
    pub fn of_error(e: &anyhow::Error) -> Self {
        if e.chain().any(|c| c.is::<CheckFailed>()) {
            Self::CheckFailed
        } else {
            Self::BadInput
        }
    }

    /// The numeric exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        Self::from(status.code())
    }
}

/// The `EXIT CODES` block of `distill-edge --help`.
pub const HELP: &str = "\
EXIT CODES:
  0  success: done, and every check passed
  1  bad input or usage (config, file, flag, device)
  2  internal failure (a bug in distill-edge)
  3  a check ran and failed (parity, accuracy drop, latency budget)";

/// Runs a command: its error is printed on stderr as one `error: ...` line and mapped with
/// [`ExitStatus::of_error`]; a panic (whose message the panic hook already printed) becomes
/// [`ExitStatus::Internal`].
pub fn run_command(f: impl FnOnce() -> anyhow::Result<()>) -> ExitStatus {
    // Nothing the closure touched is used after a panic: unwind safety does not matter.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ExitStatus::Success,
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitStatus::of_error(&e)
        }
        Err(_) => {
            eprintln!("error: internal failure (a bug in distill-edge; please report it)");
            ExitStatus::Internal
        }
    }
}

/// The error chain on one line, skipping causes whose text the message already contains
/// (typed errors often print their source themselves).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes() {
        assert_eq!(ExitStatus::Success.code(), 0);
        assert_eq!(ExitStatus::BadInput.code(), 1);
        assert_eq!(ExitStatus::Internal.code(), 2);
        assert_eq!(ExitStatus::CheckFailed.code(), 3);
        assert_eq!(
            std::process::ExitCode::from(ExitStatus::CheckFailed),
            std::process::ExitCode::from(3)
        );
    }

    #[test]
    fn check_failed_anywhere_in_the_chain_is_3() {
        let plain = anyhow::anyhow!("no such file");
        assert_eq!(ExitStatus::of_error(&plain), ExitStatus::BadInput);
        let direct = anyhow::Error::new(CheckFailed("parity".into()));
        assert_eq!(ExitStatus::of_error(&direct), ExitStatus::CheckFailed);
        let wrapped = Err::<(), _>(CheckFailed("latency".into()))
            .context("device rpi4")
            .unwrap_err();
        assert_eq!(ExitStatus::of_error(&wrapped), ExitStatus::CheckFailed);
    }

    #[test]
    fn run_command_maps_results_and_panics() {
        assert_eq!(run_command(|| Ok(())), ExitStatus::Success);
        assert_eq!(
            run_command(|| anyhow::bail!("bad flag")),
            ExitStatus::BadInput
        );
        assert_eq!(
            run_command(|| Err(CheckFailed("accuracy".into()).into())),
            ExitStatus::CheckFailed
        );
        assert_eq!(
            run_command(|| panic!("a bug (this panic is expected by the test)")),
            ExitStatus::Internal
        );
    }

    #[test]
    fn one_line_skips_repeated_causes_and_newlines() {
        let e = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing a.json")
            .unwrap_err();
        assert_eq!(one_line(&e), "writing a.json: disk full");
        let repeated = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing a.json: disk full")
            .unwrap_err();
        assert_eq!(one_line(&repeated), "writing a.json: disk full");
        assert_eq!(one_line(&anyhow::anyhow!("two\nlines")), "two lines");
    }
}
