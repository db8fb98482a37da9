//! The scale/ scripts that need no root: `scale/multi-host.sh` with a local
//! stand-in for ssh, `scale/memory.sh` stopped by a signal, and the
//! Kubernetes example (`scale/k8s/loadgen-job.yaml`) checked against
//! loadgen's real flags. (`scale/netns.sh`, which needs root, is in netns.rs.)

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::result::{decode_histogram, RunResult};
use support::*;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &Path) -> RunResult {
    loadgen::result::read(p).unwrap()
}

/// An `ssh` for tests: `local-ssh HOST COMMAND` runs COMMAND here, as ssh
/// would on HOST; the host `down` fails as an unreachable host does (255).
fn local_ssh(dir: &Path) -> PathBuf {
    let path = dir.join("local-ssh");
    std::fs::write(
        &path,
        "#!/bin/sh\n[ \"$1\" = down ] && { echo 'ssh: connect to host down: No route to host' >&2; exit 255; }\nexec sh -c \"$2\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn multi_host(dir: &Path, hosts: &[&str], lg_args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(project_root().join("scale/multi-host.sh"))
        .args(["--ssh-cmd", local_ssh(dir).to_str().unwrap()])
        .args(["--remote-loadgen", loadgen_bin(), "--loadgen", loadgen_bin()])
        .args(["--start-in", "2", "--out-dir", "out"])
        .args(hosts)
        .arg("--")
        .args(lg_args)
        .current_dir(dir) // --out-dir out is the caller's, not the project's
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn multi_host_starts_every_host_at_one_instant_and_merges_them_exactly() {
    let _serial = one_at_a_time();
    let server = tcp_server(Fault::None);
    let dir = temp_dir("multi-host");
    let out = multi_host(
        &dir,
        &["hostA", "hostB"],
        &[&server.addr, "--conns", "4", "--duration", "1s", "--warmup", "200ms"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let merged_path = dir.join("out/merged.json");
    assert_eq!(
        stdout.lines().last(),
        Some(format!("merged {}", merged_path.display()).as_str())
    );
    let (a, b, m) = (
        read(&dir.join("out/client-1.json")),
        read(&dir.join("out/client-2.json")),
        read(&merged_path),
    );
    assert_eq!(m.messages, a.messages + b.messages);
    assert!(a.messages > 0 && b.messages > 0);
    assert_eq!(m.settings.conns, 8);
    let count = |r: &RunResult| decode_histogram(&r.histogram).unwrap().len();
    assert_eq!(count(&m), count(&a) + count(&b));
    // One --start-at: the measured windows start within the clock's reach.
    assert!(
        m.extra.window_skew_ns.unwrap() < 100_000_000,
        "{:?}",
        m.extra.window_skew_ns
    );
    let hosts = std::fs::read_to_string(dir.join("out/hosts.txt")).unwrap();
    assert_eq!(hosts, "client-1 hostA\nclient-2 hostB\n");
}

#[test]
fn multi_host_with_an_unreachable_host_merges_the_rest_and_exits_1() {
    let _serial = one_at_a_time();
    let server = tcp_server(Fault::None);
    let dir = temp_dir("multi-host-down");
    let out = multi_host(
        &dir,
        &["hostA", "down"],
        &[&server.addr, "--conns", "2", "--duration", "500ms", "--warmup", "100ms"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("down (client-2) exited 255"), "{stderr}");
    assert!(stderr.contains("down (client-2) wrote no result"), "{stderr}");
    assert!(
        !dir.join("out/client-2.json").exists(),
        "an empty result is not left behind"
    );
    let a = read(&dir.join("out/client-1.json"));
    assert_eq!(read(&dir.join("out/merged.json")).messages, a.messages);
}

#[test]
fn multi_host_refuses_what_it_sets_and_files_it_did_not_write() {
    let dir = temp_dir("multi-host-refuse");
    for (args, says) in [
        (
            &["h", "--", "127.0.0.1:1", "--out", "x.json"][..],
            "--out is set by the script",
        ),
        (
            &["h", "--", "127.0.0.1:1", "--start-at", "1"][..],
            "--start-at is set by the script",
        ),
        (&["--", "127.0.0.1:1"][..], "no HOST given"),
        (&["h"][..], "no LOADGEN_ARGS"),
    ] {
        let out = multi_host(&dir, args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/merged.json"), "mine").unwrap();
    let out = multi_host(&dir, &["h", "--", "127.0.0.1:1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("merged.json exists"));
    assert_eq!(std::fs::read_to_string(dir.join("out/merged.json")).unwrap(), "mine");
}

/// Issue 29, item 18: a signal ends `scale/memory.sh` with 130 or 143 once it
/// has stopped its server and loadgen, instead of running on.
#[test]
fn memory_sh_stopped_by_a_signal_cleans_up_and_exits_128_plus_the_signal() {
    let _serial = one_at_a_time();
    // The script runs this checkout's release build, as its header says.
    if !project_root().join("target/release/server").is_file() {
        println!("skipped: target/release/server is not built (memory.sh runs the release build)");
        return;
    }
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let dir = temp_dir("memory-sh");
        let child = Command::new("bash")
            .arg(project_root().join("scale/memory.sh"))
            .args(["epoll", "20", "out"])
            .env("DURATION", "20s")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Until loadgen runs: the script's children then include the server
        // and loadgen, which the clean-up must stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut kids = Vec::new();
        while kids.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            kids = children(pid)
                .into_iter()
                .filter(|&k| matches!(comm(k).as_str(), "server" | "loadgen"))
                .collect();
        }
        assert_eq!(kids.len(), 2, "server and loadgen started: {kids:?}");
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        unsafe { libc::kill(pid as i32, signal) };
        let start = Instant::now();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "signal {signal}: {stderr}");
        assert!(start.elapsed() < Duration::from_secs(8), "stopped promptly");
        for k in kids {
            assert!(
                !Path::new(&format!("/proc/{k}")).exists() || is_zombie(k),
                "child {k} stopped"
            );
        }
        assert!(
            !dir.join("out/memory-epoll-c20.json").exists(),
            "no JSON from a stopped run"
        );
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// The long flags (and their aliases) that `loadgen [SUBCOMMAND] --help` lists.
fn help_flags(subcommand: Option<&str>) -> BTreeSet<String> {
    let mut cmd = Command::new(loadgen_bin());
    cmd.args(subcommand).arg("--help");
    let text = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .collect()
}

/// The manifest as JSON, through Python's YAML parser (PyYAML is part of the
/// project's machine image); None with the reason where it is missing.
fn manifest_documents() -> Result<Vec<serde_json::Value>, String> {
    let path = project_root().join("scale/k8s/loadgen-job.yaml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&path)
        .output()
        .map_err(|e| format!("python3 is not installed ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named 'yaml'") {
            return Err("python3 has no yaml module (PyYAML)".into());
        }
        panic!("{} does not parse as YAML: {err}", path.display());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// Every `--flag` in `args` is one loadgen lists, each flag given once.
fn check_flags(args: &[String], known: &BTreeSet<String>, what: &str) {
    let mut seen = BTreeSet::new();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap().to_string();
        assert!(
            known.contains(&flag),
            "{what}: {flag} is not a loadgen flag (known: {known:?})"
        );
        assert!(seen.insert(flag.clone()), "{what}: {flag} given twice");
    }
}

#[test]
fn the_kubernetes_example_runs_loadgen_with_real_flags_per_indexed_pod() {
    let docs = match manifest_documents() {
        Ok(d) => d,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["PersistentVolumeClaim", "Job", "Job"]);

    // The load hosts: an Indexed Job, one pod per node, all at once, no retries.
    let load = &docs[1]["spec"];
    assert_eq!(load["completionMode"], "Indexed");
    assert_eq!(load["completions"], load["parallelism"], "every load pod runs at once");
    assert_eq!(load["backoffLimit"], 0);
    let pod = &load["template"]["spec"];
    let anti = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname", "one pod per node");
    let c = &pod["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["loadgen"]));
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    check_flags(&args, &help_flags(None), "load pods");
    let value_of = |flag: &str| {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        args[i + 1].clone()
    };
    // The start time is passed in, and every pod writes its own file.
    assert_eq!(value_of("--start-at"), "$(START_AT)");
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"START_AT") && env.contains(&"INDEX"), "{env:?}");
    assert!(value_of("--out").contains("$(INDEX)"), "one result file per pod");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        docs[0]["metadata"]["name"]
    );

    // The gathering: a merge of every pod's file.
    let merge = &docs[2]["spec"]["template"]["spec"]["containers"][0];
    let script = merge["args"][0].as_str().unwrap();
    let words: Vec<String> = script.split_whitespace().map(str::to_string).collect();
    let at = words
        .windows(2)
        .position(|w| w[0] == "loadgen" && w[1] == "merge")
        .expect("loadgen merge");
    check_flags(&words[at + 2..], &help_flags(Some("merge")), "merge");
    assert!(words[at + 2..].iter().any(|w| w == "/results/load-*.json"), "{script}");
    let hosts = merge["env"][0]["value"].as_str().unwrap();
    assert_eq!(
        hosts,
        load["completions"].to_string(),
        "the merge waits for every load pod"
    );
}
