//! Issue 28, item 2: compare refuses nonsense. A run whose figures are
//! impossible (server CPU per message below one system call, or errors
//! where a peer at the same point had none) is marked invalid, redone once,
//! left out of the statistics and listed; the closing line gives the result
//! and the counts. Also: `--peers` knobs the server refuses and `--conns`
//! values exit 2 at planning, naming the flag.
//!
//! Bounded: stand-in `server` and `loadgen` scripts, one point, five runs of
//! under a second each, after compare's 2 s pause measurement.

use std::path::{Path, PathBuf};
use std::process::Command;

use compare::analyse;
use compare::record::Manifest;

fn temp_dir(tag: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("sockbench-compare-invalid-{tag}-"))
        .tempdir()
        .unwrap()
        .keep()
}

fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A real loadgen result (from the committed results) at `msgs_per_s` with `timeouts`.
fn template(dir: &Path, name: &str, msgs_per_s: f64, timeouts: u64) -> Option<PathBuf> {
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/loadgen-after/closed-uring-tcp-c100-s128-r1.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(committed).ok()?).unwrap();
    json["throughput"]["msgs_per_s"] = msgs_per_s.into();
    json["errors"]["timeout"] = timeouts.into();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    Some(path)
}

#[test]
fn impossible_runs_are_redone_once_left_out_and_counted() {
    let dir = temp_dir("runs");
    let (Some(good), Some(errors), Some(fast)) = (
        template(&dir, "good.json", 1_000.0, 0),
        template(&dir, "errors.json", 1_000.0, 121),
        template(&dir, "fast.json", 1e12, 0),
    ) else {
        eprintln!("skipped: no committed results/loadgen-after to take a result from");
        return;
    };
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    // A server whose tree uses CPU (a busy child), so every run has a server
    // CPU figure; loadgen picks its result by label.
    script(
        &bins.join("server"),
        "( while :; do :; done ) &\n\
         kid=$!\n\
         trap 'kill $kid; echo summary backend=stand-in; exit 0' TERM\n\
         echo listening addr=127.0.0.1:9 transport=tcp\n\
         while :; do sleep 0.05; done",
    );
    script(
        &bins.join("loadgen"),
        &format!(
            "while [ $# -gt 0 ]; do case \"$1\" in --out) out=$2;; --label) label=$2;; esac; shift; done\n\
             sleep 0.6\n\
             case \"$label\" in *@errors) cp '{}' \"$out\";; *@fast) cp '{}' \"$out\";; *) cp '{}' \"$out\";; esac",
            errors.display(),
            fast.display(),
            good.display()
        ),
    );
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args([
            "--quick",
            "--repetitions",
            "1",
            "--peers",
            "epoll,epoll@errors,epoll@fast",
            "--transports",
            "tcp",
            "--conns",
            "1",
            "--duration",
            "400ms",
            "--warmup",
            "100ms",
        ])
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let manifest = Manifest::load(&out).unwrap();
    let names: Vec<(&str, bool, bool)> = manifest
        .runs
        .iter()
        .map(|r| (r.spec.label.as_str(), r.redo, r.invalid.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            ("epoll", false, false),
            ("epoll@errors", false, true),
            ("epoll@fast", false, true),
            ("epoll@errors", true, true),
            ("epoll@fast", true, true),
        ],
        "{stderr}"
    );
    let why = |label: &str| {
        manifest
            .runs
            .iter()
            .find(|r| r.spec.label == label)
            .unwrap()
            .invalid
            .clone()
            .unwrap()
    };
    assert!(
        why("epoll@errors").contains("121 errors where epoll had none"),
        "{}",
        why("epoll@errors")
    );
    assert!(
        why("epoll@fast").contains("below one system call"),
        "{}",
        why("epoll@fast")
    );
    assert!(manifest.method.cpu_floor_us_per_msg.is_some_and(|f| f > 0.0));
    // Each try keeps its own files.
    assert!(out.join("runs/closed-epoll@errors-tcp-c1-s128-redo.json").is_file());
    assert!(out.join("runs/closed-epoll@errors-tcp-c1-s128.json").is_file());

    let runs = analyse::load_runs(&manifest, &out);
    assert_eq!(runs.len(), 1, "invalid runs entered the statistics");
    let invalid = analyse::invalid_runs(&manifest);
    assert_eq!(invalid.len(), 4);
    assert!(invalid.iter().all(|r| !r.replaced));
    let counts = analyse::run_counts(&manifest, &runs);
    assert_eq!(
        (counts.total, counts.invalid, counts.redone, counts.failed),
        (5, 4, 2, 0)
    );

    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("compare: 5 runs (0 failed, ")
            && last.contains(" 4 invalid)")
            && last.contains("epoll cheapest"),
        "{last}"
    );
    assert!(stderr.contains("INVALID closed-epoll@fast-tcp-c1-s128"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 29.14 and 28: what cannot be planned exits 2 before anything runs,
/// naming the flag; any `--conns` count is planned.
#[test]
fn refused_requests_exit_2_naming_the_flag() {
    let dir = temp_dir("refused");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_compare"))
            .args(args)
            .arg("--bin-dir")
            .arg(dir.join("no-such-bin"))
            .arg("--out-dir")
            .arg(dir.join("out"))
            .output()
            .unwrap()
    };
    for (knob, flag) in [
        ("uring@a:buf-count=3", "--buf-count"),
        ("uring@a:ring-entries=2", "--ring-entries"),
        ("uring@a:buf-size=1", "--buf-size"),
        ("uring@a:uring-min-wait=10001", "--uring-min-wait"),
        ("uring@a:uring-wait=quiet:uring-min-wait=10", "--uring-min-wait"),
    ] {
        let out = run(&["--quick", "--peers", &format!("epoll,{knob}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{knob}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(knob), "{knob}: {stderr}");
    }
    let zero = run(&["--quick", "--conns", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--conns"));
    assert!(!dir.join("out").exists(), "a refused request wrote something");
    let _ = std::fs::remove_dir_all(&dir);
}
