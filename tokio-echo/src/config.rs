//! The command line: the flags `tokio-echo` shares with `server`, with the
//! same names, grammar and error messages.

use clap::Parser;
use sockbench::cpu::CpuList;
use sockbench::net::{AddrError, Endpoint, Transport};
use sockbench::server::config::ListenArgs;

/// `tokio-echo`: the reference echo server, written the idiomatic tokio way.
#[derive(Debug, Parser)]
#[command(name = "tokio-echo", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Runtime worker threads: give one per CPU the server may use.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
}

/// What the user asked for, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub transport: Transport,
    /// As requested (port 0 not yet resolved).
    pub endpoint: Endpoint,
    pub threads: usize,
    pub pin: Option<CpuList>,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, AddrError> {
        Ok(Config {
            transport: args.listen.transport,
            endpoint: args.listen.endpoint()?,
            threads: args.threads as usize,
            pin: args.listen.pin,
        })
    }
}
