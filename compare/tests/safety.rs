//! Issue 29, items 1–3: compare touches only files it wrote. It removes or
//! replaces a file only while its own manifest lists it and it is still the
//! file compare wrote; it never writes through a link or outside
//! `--out-dir`; and `--report-only` with a result file that does not read
//! names the file and fails. Every test here is bounded: no test starts a
//! server, and `--report-only` over a committed comparison of 100 runs takes
//! well under a second.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use compare::publish::Staging;
use compare::record::{Manifest, Method, MANIFEST_SCHEMA, RUNS_DIR};
use compare::render::plots::PLOT_FILES;

/// A fresh directory of the test's own (mkdtemp), removed by the test.
fn temp_dir(tag: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("sockbench-compare-safety-{tag}-"))
        .tempdir()
        .unwrap()
        .keep()
}

fn manifest() -> Manifest {
    Manifest {
        schema: MANIFEST_SCHEMA.into(),
        started_utc: String::new(),
        finished_utc: String::new(),
        git_commit: "test".into(),
        command: vec!["compare".into()],
        quick: true,
        server_cpus: "0".into(),
        loadgen_cpus: "1".into(),
        duration_s: 1.0,
        warmup_s: 0.1,
        method: Method::default(),
        open_loop_rate: None,
        open_loop_note: String::new(),
        matched_load: vec![],
        notes: vec![],
        machine: sockbench::machine::Machine::probe(),
        platform_stalls: vec![],
        runs: vec![],
        files: vec![],
    }
}

/// A committed comparison (flat layout, 100 runs) copied into a fresh
/// directory; `None` (the test skips) when it is not in this checkout.
fn committed_copy(tag: &str) -> Option<(PathBuf, PathBuf)> {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/loadgen-after");
    if !committed.join("compare.json").is_file() {
        eprintln!("skipped: no committed results/loadgen-after");
        return None;
    }
    let root = temp_dir(tag);
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(&committed).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
        }
    }
    Some((root, out))
}

fn report_only(out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compare"))
        .arg("--report-only")
        .arg("--out-dir")
        .arg(out)
        .output()
        .unwrap()
}

/// Item 1: in a directory without a manifest, the user's files that carry
/// compare's plot names survive a new run that does not draw them, and a
/// README of theirs makes compare refuse, not replace.
#[test]
fn a_directory_without_a_manifest_loses_nothing() {
    let out = temp_dir("foreign-plots");
    for plot in ["latency_spectrum.svg", "cost_at_matched_load.svg"] {
        assert!(PLOT_FILES.contains(&plot));
        std::fs::write(out.join(plot), b"the user's drawing").unwrap();
    }
    let staging = Staging::create(&out).unwrap();
    std::fs::create_dir(staging.path().join(RUNS_DIR)).unwrap();
    std::fs::write(
        staging.path().join(RUNS_DIR).join("closed-epoll-tcp-c1-s128.json"),
        b"{}",
    )
    .unwrap();
    std::fs::write(staging.path().join("README.md"), b"generated").unwrap();
    std::fs::write(staging.path().join("throughput_vs_conns.svg"), b"<svg/>").unwrap();
    let mut m = manifest();
    staging.publish(&out, &mut m).unwrap();
    for plot in ["latency_spectrum.svg", "cost_at_matched_load.svg"] {
        assert_eq!(std::fs::read(out.join(plot)).unwrap(), b"the user's drawing", "{plot}");
    }
    assert!(out.join("runs/closed-epoll-tcp-c1-s128.json").is_file());
    let listed: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        listed,
        [
            "README.md",
            "runs/closed-epoll-tcp-c1-s128.json",
            "throughput_vs_conns.svg"
        ]
    );
    assert_eq!(Manifest::load(&out).unwrap().files, m.files);

    // The next run owns what this one wrote, and still not the user's plots.
    let staging = Staging::create(&out).unwrap();
    std::fs::write(staging.path().join("README.md"), b"generated again").unwrap();
    staging.publish(&out, &mut manifest()).unwrap();
    assert!(
        !out.join("throughput_vs_conns.svg").exists(),
        "compare's own old plot is left"
    );
    assert!(
        !out.join("runs/closed-epoll-tcp-c1-s128.json").exists(),
        "compare's own old run file is left"
    );
    assert_eq!(
        std::fs::read(out.join("latency_spectrum.svg")).unwrap(),
        b"the user's drawing"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Item 2: `--report-only` never writes through a link: a README or a plot
/// that links to a file outside `--out-dir` leaves that file as it was, and
/// compare fails naming the entry.
#[test]
fn report_only_never_writes_through_a_link() {
    for name in ["README.md", "server_cpu_vs_conns.svg"] {
        let Some((root, out)) = committed_copy("link") else {
            return;
        };
        let victim = root.join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::remove_file(out.join(name)).unwrap();
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
        let output = report_only(&out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: a link was accepted:\n{stderr}");
        assert!(stderr.contains(name) && stderr.contains("link"), "{stderr}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}: written through");
        assert!(out.join(name).symlink_metadata().unwrap().file_type().is_symlink());
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// Item 2: a `runs` entry that is a link to a directory elsewhere is refused:
/// nothing is written outside `--out-dir`.
#[test]
fn a_runs_folder_that_is_a_link_is_refused() {
    let root = temp_dir("runs-link");
    let (out, elsewhere) = (root.join("out"), root.join("elsewhere"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join(RUNS_DIR)).unwrap();
    let staging = Staging::create(&out).unwrap();
    std::fs::create_dir(staging.path().join(RUNS_DIR)).unwrap();
    std::fs::write(staging.path().join(RUNS_DIR).join("a.json"), b"{}").unwrap();
    let err = staging.publish(&out, &mut manifest()).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written outside --out-dir"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Item 3: `--report-only` with a result file that does not read fails,
/// names the file, and leaves the old report as it was.
#[test]
fn report_only_with_an_unreadable_result_names_it_and_fails() {
    let Some((root, out)) = committed_copy("corrupt") else {
        return;
    };
    let m = Manifest::load(&out).unwrap();
    let victim = m.runs[3].result_file.in_dir(&out);
    std::fs::write(&victim, b"{ not json").unwrap();
    let before: Vec<(String, Vec<u8>)> = ["README.md", "throughput_vs_conns.svg"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(out.join(n)).unwrap()))
        .collect();
    let output = report_only(&out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(name), "the file is not named:\n{stderr}");
    for (n, data) in &before {
        assert_eq!(&std::fs::read(out.join(n)).unwrap(), data, "{n} changed");
    }
    // A missing file is named the same way.
    std::fs::remove_file(&victim).unwrap();
    let output = report_only(&out);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(name));
    let _ = std::fs::remove_dir_all(&root);
}

/// A report redrawn by `--report-only` stays compare's: the manifest's list
/// is brought up to date, so the next redraw may replace it again.
#[test]
fn a_redrawn_report_is_still_compare_s() {
    let Some((root, out)) = committed_copy("redraw") else {
        return;
    };
    assert!(report_only(&out).status.success());
    // Make it a manifest that lists its files, as a new run writes.
    let mut m = Manifest::load(&out).unwrap();
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "compare.json")
        .collect();
    m.files = files
        .iter()
        .map(|n| compare::record::WrittenFile::of(&out, n).unwrap())
        .collect();
    m.save(&out).unwrap();
    for _ in 0..2 {
        let output = report_only(&out);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let readme = Manifest::load(&out).unwrap();
    let entry = readme.files.iter().find(|f| f.path == "README.md").unwrap();
    assert!(entry.is_intact(&out));
    let _ = std::fs::remove_dir_all(&root);
}
