//! The command line: the flags `tokio-echo` shares with `server`, with the
//! same names, grammar and error messages.

use std::path::PathBuf;

use clap::Parser;
use sockbench::cpu::CpuList;
use sockbench::net::{self, AddrError, Endpoint, Transport};
use sockbench::server::config::DEFAULT_ADDR;

/// `tokio-echo`: the reference echo server, written the idiomatic tokio way.
#[derive(Debug, Parser)]
#[command(name = "tokio-echo", version, about, long_about = None)]
pub struct Args {
    /// Socket kind to serve.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// HOST:PORT for tcp/udp (IPv6 as [::1]:7000). Port 0 picks a free port. [default: 127.0.0.1:7000]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Socket file for unix/unixgram. A stale file is replaced; it is removed on exit.
    #[arg(long, value_name = "SOCKET_PATH")]
    pub path: Option<PathBuf>,
    /// Runtime worker threads: give one per CPU the server may use.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// Pin workers to these CPUs, e.g. 0 or 0-1 or 0,2-3; worker i gets the i-th CPU, wrapping.
    #[arg(long, value_name = "CPU_LIST")]
    pub pin: Option<CpuList>,
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
        let endpoint =
            net::endpoint_from_flags(args.transport, args.addr.as_deref(), args.path.as_deref(), DEFAULT_ADDR)?;
        Ok(Config {
            transport: args.transport,
            endpoint,
            threads: args.threads as usize,
            pin: args.pin,
        })
    }
}
