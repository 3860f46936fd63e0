//! Human progress output on stderr: indicatif bars with ETA when stderr is a terminal, plain
//! lines otherwise. Machine output (`--json`) goes to stdout and is never mixed with this.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress and status lines go.
#[derive(Clone, Debug)]
pub struct Reporter {
    quiet: bool,
    /// Status lines also go to the terminal (off: only to the log, bars still shown).
    echo: bool,
    log: Option<Arc<Mutex<std::fs::File>>>,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A reporter; `quiet` suppresses everything but errors.
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            echo: true,
            log: None,
            bar: None,
        }
    }

    /// A reporter that appends every status line to `log`, and echoes them to the terminal
    /// only when `echo` (progress bars are shown unless `quiet`).
    pub fn with_log(quiet: bool, echo: bool, log: std::fs::File) -> Self {
        Self {
            quiet,
            echo,
            log: Some(Arc::new(Mutex::new(log))),
            bar: None,
        }
    }

    /// A reporter that prints nothing (tests, library use).
    pub fn silent() -> Self {
        Self::new(true)
    }

    /// Whether status lines are printed.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Starts a bar of `len` steps; hidden when quiet or when stderr is not a terminal.
    pub fn start_bar(&mut self, len: u64, prefix: &str) {
        self.finish_bar();
        let target = if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14.bold} [{bar:30}] {pos}/{len} {per_sec:>9} eta {eta:>4} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    /// Advances the bar by `n` and sets its message (e.g. running loss/accuracy).
    pub fn advance(&self, n: u64, message: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            if !bar.is_hidden() {
                bar.set_message(message());
            }
        }
    }

    /// Removes the bar.
    pub fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Prints one status line (above the bar, if any).
    pub fn line(&self, text: impl AsRef<str>) {
        if let Some(log) = &self.log
            && let Ok(mut f) = log.lock()
        {
            let _ = writeln!(f, "{}", text.as_ref());
        }
        if self.quiet || !self.echo {
            return;
        }
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| eprintln!("{}", text.as_ref())),
            _ => eprintln!("{}", text.as_ref()),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish_bar();
    }
}
