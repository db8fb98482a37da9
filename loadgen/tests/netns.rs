//! `scale/netns.sh`: two load hosts in their own network namespaces against a
//! server in a third, merged into one exact result, and nothing left behind,
//! also when interrupted. Needs root and `ip`; elsewhere it prints "skipped: ...".

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use loadgen::result::{decode_histogram, RunResult};
use support::*;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scale/netns.sh")
}

/// Why this machine cannot run the script, if it cannot.
fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("sbprobe{}-{n}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    let _ = Command::new("ip").args(["netns", "delete", &probe]).output();
    match made {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip netns add` failed: {e}")),
    }
}

/// Namespaces and links whose names carry the script's tag `sb<pid>`.
fn leftovers(pid: u32) -> Vec<String> {
    let tag = format!("sb{pid}");
    let mut left = Vec::new();
    for args in [&["netns", "list"][..], &["-o", "link", "show"][..]] {
        let out = Command::new("ip").args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // `sb12` must not match `sb123`: the tag is followed by a letter or '-'.
        left.extend(
            text.lines()
                .filter(|l| {
                    l.match_indices(&tag)
                        .any(|(i, _)| l[i + tag.len()..].starts_with(|c: char| c == '-' || c.is_ascii_alphabetic()))
                })
                .map(str::to_string),
        );
    }
    left
}

fn read(p: &Path) -> RunResult {
    loadgen::result::read(p).unwrap()
}

fn bin_dir() -> PathBuf {
    Path::new(loadgen_bin()).parent().unwrap().to_path_buf()
}

#[test]
fn two_client_namespaces_merge_into_one_exact_result_and_leave_nothing() {
    let _serial = one_at_a_time();
    if let Some(why) = cannot_run() {
        println!("skipped: {why}");
        return;
    }
    assert!(
        project_server_bin().is_some(),
        "the server binary is built with the workspace"
    );
    let dir = temp_dir("netns");
    let child = Command::new("bash")
        .arg(script())
        .args([
            "2",
            dir.to_str().unwrap(),
            "--",
            "--conns",
            "20",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
        ])
        .env("BIN", bin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skew"), "the merge reports the skew: {stderr}");
    let (a, b, m) = (
        read(&dir.join("client-1.json")),
        read(&dir.join("client-2.json")),
        read(&dir.join("merged.json")),
    );
    assert_eq!(m.messages, a.messages + b.messages);
    assert_eq!(m.bytes, a.bytes + b.bytes);
    assert_eq!(m.settings.conns, 40);
    let count = |r: &RunResult| decode_histogram(&r.histogram).unwrap().len();
    assert_eq!(count(&m), count(&a) + count(&b));
    assert!(a.messages > 0 && b.messages > 0);
    assert_eq!(m.errors.total(), 0, "{:?}", m.errors);
    assert!(m.extra.window_skew_ns.unwrap() < 100_000_000);
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind");
}

#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    let _serial = one_at_a_time();
    if let Some(why) = cannot_run() {
        println!("skipped: {why}");
        return;
    }
    let dir = temp_dir("netns-int");
    let mut child = Command::new("bash")
        .arg(script())
        .args(["2", dir.to_str().unwrap(), "--", "--conns", "10", "--duration", "20s"])
        .env("BIN", bin_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Mid-run: the namespaces exist and the loadgens wait for --start-at.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!leftovers(pid).is_empty(), "the script made its namespaces");
    // SAFETY: kill has no memory-safety preconditions; pid is our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind after SIGTERM");
}
