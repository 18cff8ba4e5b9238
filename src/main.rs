use clap::Parser;
use moat::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Exec(args) => moat::exec::run(args, cli.verbose),
        Command::Doctor(args) => moat::doctor::run(args),
        Command::Runs => {
            match moat::exec::Caller::current().and_then(|c| moat::runs::list(&c.home)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("moat: {e:#}");
                    moat::exec::EXIT_MOAT_ERROR
                }
            }
        }
        Command::Log(args) => report(moat::proxy::log::command(args)),
        Command::Proxy(cmd) => report(moat::proxy::serve::command(cmd)),
        Command::Grant(cmd) => report(moat::grants::command::run(cmd)),
        Command::Audit(cmd) => report(moat::audit::command::run(cmd)),
        Command::Profile(cmd) => match moat::profile::run(cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("moat: {e:#}");
                moat::exec::EXIT_MOAT_ERROR
            }
        },
    };
    std::process::exit(code);
}

/// The exit code of a command, or 125 after printing its error.
fn report(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moat: {e:#}");
            moat::exec::EXIT_MOAT_ERROR
        }
    }
}
