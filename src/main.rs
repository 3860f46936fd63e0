//! `distill-edge`: parse arguments, run the command, map errors to exit codes
//! (0 ok, 1 bad input or a failed check, 2 unexpected failure).

use std::process::ExitCode;

use clap::Parser;
use distill_edge::cli::{Cli, Command};
use distill_edge::commands;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    distill_edge::runtime::init_threads(cli.global.threads);
    let result = std::panic::catch_unwind(|| match &cli.command {
        Command::Train(args) => commands::train::run(args, &cli.global),
        Command::Eval(args) => commands::eval::run(args, &cli.global),
        Command::Distill(args) => commands::distill::run(args, &cli.global),
        Command::Compare(args) => commands::distill::compare(args, &cli.global),
        Command::Export(args) => commands::export::run(args, &cli.global),
        Command::Check(args) => commands::check::run(args, &cli.global),
        Command::Build(args) => commands::build::run(args, &cli.global),
        Command::Bench(args) => commands::bench::run(args, &cli.global),
        Command::Data { command } => commands::data::run(command, &cli.global),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
        // The panic message was already printed by the default hook.
        Err(_) => {
            eprintln!("error: internal failure (a bug in distill-edge; please report it)");
            ExitCode::from(2)
        }
    }
}

/// The error chain on one line, skipping causes whose text the message already contains
/// (typed errors often print their source themselves).
fn one_line(e: &anyhow::Error) -> String {
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
