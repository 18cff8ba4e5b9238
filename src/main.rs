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
