//! `iis-tagger`: the command-line front end (see `iis-tagger --help`).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cli::command::{Cli, Command};
use cli::common::Failure;

fn main() -> ExitCode {
    let args = Cli::parse();
    let result = match &args.command {
        Some(Command::Rules(rules)) => cli::rules_cmd::run(&args.tag.rules, rules).and_then(|(text, failed)| {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(Failure::io(format!("writing output: {e}")));
                }
                _ => {}
            }
            if failed { Err(Failure::check("some rules were refused (--strict)")) } else { Ok(()) }
        }),
        Some(Command::Shapes(shapes)) => cli::rules_cmd::shapes(&args.tag.rules, shapes).and_then(|text| {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(Failure::io(format!("writing output: {e}")))
                }
                _ => Ok(()),
            }
        }),
        Some(Command::Serve(serve)) => cli::serve::run(serve, &args.tag.rules),
        Some(Command::Mmexternal(mm)) => cli::mmexternal::run(mm, &args.tag.rules),
        None => cli::run::tag(&args.tag),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("iis-tagger: {failure}");
            ExitCode::from(match failure {
                Failure::Setup(_) => 2,
                Failure::Io(_) | Failure::Check(_) => 1,
            })
        }
    }
}
