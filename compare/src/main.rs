//! `compare`: runs the backend comparison and writes results/ (see the `compare` library).

use clap::Parser;
use compare::execute::Interrupted;
use compare::plan::PlanError;
use compare::{run, CompareArgs};

fn main() {
    let args = CompareArgs::parse();
    if let Err(e) = run(args) {
        eprintln!("compare: error: {e:#}");
        // 128 + SIGINT, as a shell reports a run stopped by Ctrl-C.
        let code = if e.chain().any(|c| c.is::<Interrupted>()) {
            130
        } else if e.chain().any(|c| c.is::<PlanError>()) {
            // A request that cannot be planned is a usage error, as clap's are.
            2
        } else {
            1
        };
        std::process::exit(code);
    }
}
