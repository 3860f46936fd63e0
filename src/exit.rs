//! How a command ended, as a process exit code a CI can branch on.

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
