use clap::Parser;
use loadgen::cli::{Args, MergeArgs};
use loadgen::run::{UsageError, EXIT_USAGE};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let result = if argv.get(1).map(String::as_str) == Some("merge") {
        let m = MergeArgs::parse_from(argv.iter().skip(1));
        loadgen::merge::run_merge(&m.inputs, &m.out, argv.clone()).map(|()| 0)
    } else {
        let args = Args::parse_from(&argv);
        loadgen::run::run(args, argv.clone())
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
