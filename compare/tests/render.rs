//! Tests of what `compare` renders from the committed results: the README's
//! headline block is `results/headline.md`, the committed headline is what
//! the committed runs give, and no committed plot draws a lone point as a
//! line.

use std::path::{Path, PathBuf};

use compare::analyse;
use compare::record::Manifest;
use compare::render::headline::{self, END_MARKER, HEADLINE_FILE, START_MARKER};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `results/` and each of its folders that holds a comparison (the A/B runs).
fn comparisons() -> Vec<PathBuf> {
    let results = repo_root().join("results");
    let mut dirs = vec![results.clone()];
    let mut subs: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("compare.json").is_file())
        .collect();
    subs.sort();
    dirs.extend(subs);
    dirs
}

/// A fresh directory of the test's own.
fn scratch(name: &str) -> PathBuf {
    // Created here under a unique name, so nothing the test later removes
    // can be anyone else's directory.
    tempfile::Builder::new()
        .prefix(&format!("sockbench-render-{name}-"))
        .tempdir()
        .unwrap()
        .keep()
}

/// The README quotes `results/headline.md` between the markers: the text
/// between the marker lines, without the blank lines at either end, is the
/// file's, without its blank lines at either end.
#[test]
fn readme_headline_block_is_results_headline() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (Some(start), Some(end)) = (readme.find(START_MARKER), readme.find(END_MARKER)) else {
        eprintln!("skipped: README.md has no `{START_MARKER}` … `{END_MARKER}` block yet (the docs change adds it)");
        return;
    };
    assert!(start < end, "README.md's headline markers are out of order");
    let block = readme[start + START_MARKER.len()..end].trim_matches('\n');
    let headline = std::fs::read_to_string(repo_root().join("results").join(HEADLINE_FILE)).unwrap();
    assert!(
        block == headline.trim_matches('\n'),
        "README.md's headline block differs from results/{HEADLINE_FILE}; paste the file between the markers.\n\
         --- README.md\n{block}\n--- results/{HEADLINE_FILE}\n{headline}"
    );
}

/// Each committed `headline.md` is what its committed runs give, with links
/// from the repository root.
#[test]
fn committed_headlines_are_what_the_runs_give() {
    for dir in comparisons() {
        let manifest = Manifest::load(&dir).unwrap();
        let runs = analyse::load_runs(&manifest, &dir);
        let analysis = analyse::analyse(&manifest, &runs);
        let rel = dir.strip_prefix(repo_root()).unwrap();
        // Paths in the headline are as typed from the repository root.
        let text = headline::text(&manifest, &analysis, rel);
        let committed = std::fs::read_to_string(dir.join(HEADLINE_FILE))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(HEADLINE_FILE).display()));
        assert_eq!(
            text,
            committed,
            "{} is stale: re-render it with --report-only",
            rel.display()
        );
        assert!(text.contains(&format!("]({}/README.md)", rel.display())), "{text}");
        let findings = text.lines().filter(|l| l.starts_with("- ")).count();
        let labels = compare::render::verdict::columns(&analysis).len();
        if labels < 2 {
            assert!(findings == 0 && text.contains("No verdict"), "{text}");
        } else {
            assert!((1..=headline::MAX_FINDINGS).contains(&findings), "{text}");
        }
    }
}

/// No plot of a committed comparison has a series of one point: every line
/// the plots draw has at least two (a plot with nothing to join is not
/// drawn, and the README says why). The over-time plot is drawn from
/// loadgen's buckets when each run has enough, else left out with a note
/// (results from before loadgen's 100 ms buckets hold one a second).
#[test]
fn no_committed_plot_has_a_single_point_series() {
    for dir in comparisons() {
        let manifest = Manifest::load(&dir).unwrap();
        let runs = analyse::load_runs(&manifest, &dir);
        let out = scratch("plots");
        let files = compare::render::write_report(&manifest, &runs, &out).unwrap();
        assert!(!files.is_empty(), "{}: no plot drawn", dir.display());
        let closed_loop = runs
            .iter()
            .any(|r| !r.record.spec.is_open_loop() && r.record.spec.conn_msgs.is_none());
        let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
        match files.iter().find(|f| f.file == "throughput_over_time.svg") {
            Some(f) => assert!(
                f.series.iter().all(|s| s.points >= 3),
                "{}: over-time lines {:?}",
                dir.display(),
                f.series
            ),
            None if closed_loop => assert!(
                readme.contains("No throughput-over-time plot:"),
                "{}: the over-time plot is neither drawn nor said to be left out",
                dir.display()
            ),
            None => {}
        }
        for f in &files {
            let lone: Vec<&str> = f
                .series
                .iter()
                .filter(|s| s.points == 1)
                .map(|s| s.name.as_str())
                .collect();
            assert!(
                lone.is_empty(),
                "{}/{}: single-point series {lone:?}",
                dir.display(),
                f.file
            );
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
