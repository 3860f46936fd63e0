//! `distill-edge`: parse arguments, run the command, map how it ended to an exit code
//! (0 ok, 1 bad input or usage, 2 internal failure, 3 a check that ran and failed; see
//! [`distill_edge::exit`]).

use std::process::ExitCode;

use clap::Parser;
use distill_edge::cli::{Cli, Command};
use distill_edge::commands;
use distill_edge::exit::{self, ExitStatus};

fn main() -> ExitCode {
    pin_burn_default_device();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print on stdout and succeed; usage errors are bad input
            return if e.use_stderr() {
                ExitStatus::BadInput.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    distill_edge::runtime::init_threads(cli.global.threads);
    exit::run_command(|| match &cli.command {
        Command::Train(args) => commands::train::run(args, &cli.global),
        Command::Eval(args) => commands::eval::run(args, &cli.global),
        Command::Distill(args) => commands::distill::run(args, &cli.global),
        Command::Compare(args) => commands::distill::compare(args, &cli.global),
        Command::Export(args) => commands::export::run(args, &cli.global),
        Command::Check(args) => commands::check::run(args, &cli.global),
        Command::Inspect(args) => commands::inspect::run(args, &cli.global),
        Command::Build(args) => commands::build::run(args, &cli.global),
        Command::Bench(args) => commands::bench::run(args, &cli.global),
        Command::Data { command } => commands::data::run(command, &cli.global),
    })
    .into()
}

/// Pins burn's *default* device to the CPU (`BURN_DEVICE=flex`) for this process.
///
/// distill-edge always names its device (`--backend`, [`distill_edge::runtime::Backend`]);
/// burn falls back on its default device in one place we reach, burn-optim 0.22's
/// `ModuleOptimizer::load_record` (resuming a run), which builds the optimizer state there
/// and moves it to each parameter's device at the next step. Left alone, that default is the
/// first GPU backend compiled in, so a `--features wgpu` binary resuming a CPU run would open
/// a GPU device (probing EGL and Wayland, or failing where there is no adapter). A
/// `BURN_DEVICE` from the environment is replaced too: burn panics on a value it does not
/// know, and `--backend` is the setting users have.
#[allow(unsafe_code)]
fn pin_burn_default_device() {
    // SAFETY: the first thing `main` does, before this process starts any thread (clap, the
    // rayon pool and every command come after), so nothing reads the environment meanwhile.
    unsafe { std::env::set_var("BURN_DEVICE", "flex") };
}
