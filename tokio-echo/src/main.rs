//! `tokio-echo`: the reference peer. A plain echo server written the way most
//! Rust services are, with tokio, so that every comparison can answer a
//! reader's first question: "should I just use tokio?"
//!
//! The design is deliberately the idiomatic one, not a tuned one:
//! - a multi-thread runtime (what `#[tokio::main]` gives), with `--threads`
//!   workers, one per server CPU; `--pin` pins worker *i* to the *i*-th CPU
//!   of the list, as `server` pins its workers;
//! - streams (TCP, Unix): one accept loop, and a task per connection that
//!   reads into its own buffer (allocated once, reused for every read) and
//!   `write_all`s it back. While it writes it does not read, so a client that
//!   never reads its echo fills its own socket buffers and holds nothing else;
//! - datagrams (UDP, Unix datagrams): per worker a `recv_from`/`send_to`
//!   loop; for UDP each loop has its own `SO_REUSEPORT` socket, so the kernel
//!   spreads senders across them. Echoes go out with `try_send_to`: one whose
//!   receiver's queue is full is dropped and counted, as a datagram may be
//!   lost, instead of stalling the loop for every other sender.
//!
//! Sockets are made exactly as `server` makes them (`sockbench::net`:
//! `TCP_NODELAY`, the fixed TCP receive buffer, datagram buffer sizes, stale
//! Unix socket files), so only the I/O model differs. What tokio costs
//! against the hand-written backends: a task wake-up and a trip through the
//! scheduler per readiness event, and a `read` that returns `EAGAIN` before
//! each wait, which is what an `async` read on a readiness model does.
//!
//! The command line shares `server`'s conventions (`--transport`, `--addr`,
//! `--path`, `--threads`, `--pin`), and so do its `listening` and `summary`
//! lines and its exit codes: 0 after SIGINT/SIGTERM, 2 for a bad flag or an
//! unusable address (the message names the flag), 1 for anything else.

mod config;
mod counts;
mod echo;
mod run;

use clap::Parser;

fn main() {
    let args = config::Args::parse();
    if let Err(err) = config::Config::from_args(args)
        .map_err(run::RunError::from)
        .and_then(run::run)
    {
        eprintln!("tokio-echo: error: {err}");
        std::process::exit(err.exit_code());
    }
}
