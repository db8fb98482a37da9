//! `compare`: runs the backend comparison and writes results/ (see `loadgen::compare`).

use clap::Parser;
use loadgen::compare::{run, CompareArgs};

fn main() {
    let args = CompareArgs::parse();
    if let Err(e) = run(args) {
        eprintln!("compare: error: {e:#}");
        std::process::exit(1);
    }
}
