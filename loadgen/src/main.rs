use clap::Parser;
use loadgen::cli::{Cli, Command, UsageError, EXIT_USAGE};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cli = Cli::parse_from(&argv);
    let result = match cli.command {
        Some(Command::Merge(m)) => loadgen::merge::run_merge(&m, argv),
        None => loadgen::run::run(cli.run, argv),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            let code = if e.downcast_ref::<UsageError>().is_some() {
                EXIT_USAGE
            } else {
                1
            };
            std::process::exit(code);
        }
    }
}
