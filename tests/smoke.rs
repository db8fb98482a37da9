//! The server's command line: bad input is named and gives exit code 2.

mod common;

use std::process::Command;

fn run_server(args: &[&str]) -> (i32, String) {
    let out = Command::new(common::server_bin())
        .args(args)
        .output()
        .expect("run server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_and_addresses_are_named_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--backend", "nope"], "--backend"),
        (&["--backend", "epoll", "--addr", "1.2.3:99"], "--addr"),
        (&["--backend", "epoll", "--addr", "127.0.0.1"], "--addr"),
        (&["--backend", "epoll", "--transport", "unix"], "--path"),
        (
            &["--backend", "epoll", "--transport", "tcp", "--path", "/tmp/x.sock"],
            "--path",
        ),
        (&["--backend", "epoll", "--addr", "192.0.2.1:7000"], "--addr"),
        (&["--backend", "epoll", "--pin", "4096"], "--pin"),
        (&["--backend", "epoll", "--threads", "0"], "--threads"),
        (&["--backend", "uring", "--buf-count", "3"], "--buf-count"),
    ];
    for (args, names) in cases {
        let (code, stderr) = run_server(args);
        assert_eq!(code, 2, "{args:?}: exit {code}, stderr {stderr}");
        assert!(
            stderr.contains(names),
            "{args:?}: stderr does not name {names}: {stderr}"
        );
    }
}
