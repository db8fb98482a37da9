//! Issue 26, item 2: the results layout. The report (README, plots,
//! findings) and the manifest sit at the top of an output directory, each
//! run's `.json` and `.hgrm` under `runs/`; comparisons of the older, flat
//! layout (the focused A/B folders) are read as they are.

use std::path::Path;

use compare::analyse;
use compare::record::{Manifest, Outcome, RUNS_DIR};

/// The committed results/ keeps its top level short, and every run file its
/// manifest lists is under runs/ and loads.
#[test]
fn committed_results_keep_run_files_under_runs() {
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
    if !results.join("compare.json").is_file() {
        eprintln!("skipped: no committed results/compare.json");
        return;
    }
    let top = std::fs::read_dir(&results).unwrap().count();
    assert!(top < 100, "results/ lists {top} entries at its top level");
    let manifest = Manifest::load(&results).unwrap();
    let ok: Vec<_> = manifest.runs.iter().filter(|r| r.outcome == Outcome::Ok).collect();
    for r in &ok {
        assert!(
            !results.join(r.result_file.as_str()).exists(),
            "{} is at the top",
            r.result_file
        );
        let path = r.result_file.in_dir(&results);
        assert_eq!(path, results.join(RUNS_DIR).join(r.result_file.as_str()));
        assert!(
            r.result_file.hgrm().in_dir(&results).is_file(),
            "no {}",
            r.result_file.hgrm()
        );
    }
    assert_eq!(analyse::load_runs_strict(&manifest, &results).unwrap().len(), ok.len());
}

/// A flat comparison (run files beside the manifest) still loads whole.
#[test]
fn a_flat_comparison_still_reads() {
    let flat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/uring-ab");
    if !flat.join("compare.json").is_file() {
        eprintln!("skipped: no committed results/uring-ab");
        return;
    }
    assert!(!flat.join(RUNS_DIR).exists(), "the A/B folders stay flat");
    let manifest = Manifest::load(&flat).unwrap();
    let runs = analyse::load_runs_strict(&manifest, &flat).unwrap();
    assert!(!runs.is_empty());
    for r in &manifest.runs {
        assert_eq!(r.result_file.in_dir(&flat), flat.join(r.result_file.as_str()));
    }
}
