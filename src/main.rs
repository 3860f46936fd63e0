//! `distill-edge`: parse arguments, run the command, map how it ended to an exit code
//! (0 ok, 1 bad input or usage, 2 internal failure, 3 a check that ran and failed; see
//! [`distill_edge::exit`]).

use std::process::ExitCode;

use clap::Parser;
use distill_edge::cli::{Cli, Command};
use distill_edge::commands;
use distill_edge::exit::{self, ExitStatus};

fn main() -> ExitCode {
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
