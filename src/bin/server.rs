//! `server`: an echo server with interchangeable I/O backends. See docs/server.md.

use clap::Parser;
use sockbench::server::{self, ServerArgs, ServerConfig};

fn main() {
    let args = ServerArgs::parse();
    if let Err(err) = ServerConfig::from_args(args)
        .map_err(server::ServerError::from)
        .and_then(server::run)
    {
        eprintln!("server: error: {err}");
        std::process::exit(err.exit_code());
    }
}
