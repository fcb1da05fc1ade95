//! `iis-tagger`: the command-line front end (see `iis-tagger --help`).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cli::command::{Cli, Command};
use cli::common::Failure;

fn main() -> ExitCode {
    // `--config FILE`: its options are put into the command line, then everything is
    // parsed by the one set of definitions; an error in a value the file gave names the
    // file's line.
    let expanded = match cli::config::expand(std::env::args_os().collect()) {
        Ok(expanded) => expanded,
        Err(e) => {
            eprintln!("iis-tagger: {e}");
            return ExitCode::from(2);
        }
    };
    let args = match Cli::try_parse_from(&expanded.argv) {
        Ok(args) => args,
        Err(e) => match cli::config::attributed(&e, &expanded.origins) {
            Some(config) => {
                eprintln!("iis-tagger: {config}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
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
        Some(Command::Consume(consume)) => cli::consume::run(consume, &args.tag.rules),
        Some(Command::Config(config)) => match &config.action {
            cli::command::ConfigAction::Check { file } => cli::config::check(file)
                .map_err(Failure::setup)
                .and_then(|summary| cli::config::check_rules(file).map(|rules| (summary, rules)))
                .and_then(|(summary, rules)| {
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(format!("{summary}{rules}config ok\n").as_bytes())
                        .and_then(|()| stdout.flush())
                        .map_err(|e| Failure::io(format!("writing output: {e}")))
                }),
        },
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
