//! `compare`: runs the whole backend comparison on this machine and leaves
//! loadgen's result files, the plots and a generated README in `results/`.
//!
//! Data flows one way, and each module imports only from those above it:
//!
//! - [`plan`]: which runs, with which typed [`plan::RunSpec`] and argv.
//! - [`cli`]: the command line, turned into a [`plan::Request`].
//! - [`record`]: the manifest on disk, one typed [`record::RunRecord`] per run.
//! - [`execute`]: runs the plan, writes loadgen's files and the manifest.
//! - [`analyse`]: pure functions over the records and results.
//! - [`render`]: the plots and README.
//! - [`publish`]: a finished run replaces the previous one in `--out-dir`.

pub mod analyse;
pub mod cli;
pub mod execute;
pub mod plan;
pub mod publish;
pub mod record;
pub mod render;

use std::path::Path;

use anyhow::{bail, Context};

pub use cli::CompareArgs;
use execute::binaries::Binaries;
use plan::Comparison;
use publish::Staging;
use record::{Manifest, Outcome};

/// The whole comparison: plan, execute, analyse, render, publish; or with
/// `--report-only`, analyse and render the last run again.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let out_dir = args.out_dir();
    if args.report_only {
        return report_only(&out_dir, args.reference.as_deref());
    }
    let plan = Comparison::from_request(&args.request())?;
    let adaptive = adaptive_method(&args, &plan)?;
    if args.bin_dir.is_none() {
        Binaries::build_with_cargo()?;
    }
    let peers: Vec<plan::Peer> = plan.matrix.peers.iter().map(|p| p.peer).collect();
    let bins = Binaries::locate(args.bin_dir.as_deref(), &peers)?;
    let next_round = analyse::undecided_runs;
    let extra = adaptive.map(|method| execute::ExtraRounds {
        method,
        next_round: &next_round,
    });
    let staging = Staging::create(&out_dir)?;
    let made = execute::run_comparison(&plan, bins, staging.path(), extra.as_ref()).and_then(|manifest| {
        let runs = analyse::load_runs(&manifest, staging.path());
        let plots = render::write_report(&manifest, &runs, staging.path())?;
        Ok((manifest, runs, plots.len()))
    });
    let (manifest, runs, plots) = match made {
        Ok(made) => made,
        Err(e) => {
            staging.discard();
            return Err(e.context(format!("the previous results in {} are unchanged", out_dir.display())));
        }
    };
    let mut manifest = manifest;
    staging.publish(&out_dir, &mut manifest)?;
    summarize(&manifest, &runs, plots, &out_dir)
}

/// `--decide-at`, `--max-repetitions` and `--budget` as the manifest
/// records them; `None` for the fixed design. The adaptive design is on by
/// default for the full run (at [`analyse::stats::Band::DEFAULT`], the cap
/// [`analyse::adaptive::DEFAULT_CAP`]) and off with `--quick`; `--decide-at
/// off` turns it off, and either flag turns it on.
fn adaptive_method(args: &CompareArgs, plan: &Comparison) -> anyhow::Result<Option<record::AdaptiveMethod>> {
    let off = args
        .decide_at
        .as_deref()
        .is_some_and(|d| d.trim().eq_ignore_ascii_case("off"));
    if off {
        if args.max_repetitions.is_some() || args.adaptive_points.is_some() {
            bail!("--max-repetitions and --adaptive-points need the adaptive design; drop them or --decide-at off");
        }
        return Ok(None);
    }
    let asked = args.decide_at.is_some() || args.max_repetitions.is_some() || args.adaptive_points.is_some();
    if !asked && (plan.quick || plan.repetitions < 2) {
        return Ok(None);
    }
    let band = match &args.decide_at {
        Some(typed) => typed.parse::<analyse::stats::Band>().context("--decide-at")?,
        None => analyse::stats::Band::DEFAULT,
    };
    if plan.repetitions < 2 {
        bail!("--decide-at/--max-repetitions: the first round needs --repetitions of at least 2");
    }
    Ok(Some(record::AdaptiveMethod {
        decide_at_permille: band.permille(),
        max_repetitions: args.max_repetitions.unwrap_or(analyse::adaptive::DEFAULT_CAP as u32),
        budget_s: plan.budget.map(|b| b.as_secs_f64()),
        ended_by_budget: false,
        matched_load_only: args.adaptive_points == Some(cli::AdaptivePoints::MatchedLoad),
    }))
}

/// Redraws the report in `dir` from its files; with `reference`, every ratio
/// is taken against that label instead of the one the run used. Fails,
/// naming the files, when a run's result file does not read; the report is
/// rendered into a staging directory and replaces only compare's own files
/// (see [`publish`]).
fn report_only(dir: &Path, reference: Option<&str>) -> anyhow::Result<()> {
    let mut manifest = Manifest::load(dir)?;
    let runs = analyse::load_runs_strict(&manifest, dir)?;
    if let Some(r) = reference {
        let mut labels: Vec<String> = runs.iter().map(analyse::label).collect();
        labels.sort();
        labels.dedup();
        if !labels.iter().any(|l| l == r) {
            return Err(plan::PlanError::UnknownReference(r.to_string(), labels.join(", ")).into());
        }
        manifest.method.reference = r.to_string();
    }
    let staging = Staging::create(dir)?;
    let plots = match render::write_report(&manifest, &runs, staging.path()) {
        Ok(plots) => plots,
        Err(e) => {
            staging.discard();
            return Err(e);
        }
    };
    // The manifest on disk keeps its own reference; only the report changes.
    let on_disk = Manifest::load(dir)?;
    staging.publish_report(dir, &on_disk)?;
    eprintln!(
        "compare: redrew {} plots and {}",
        plots.len(),
        dir.join("README.md").display()
    );
    Ok(())
}

/// The closing lines: each failed and invalid run, then one line with the
/// headline result and the counts of failed, disturbed and invalid runs; an
/// error if every run failed.
fn summarize(manifest: &Manifest, runs: &[analyse::Run], plots: usize, out_dir: &Path) -> anyhow::Result<()> {
    for r in &manifest.runs {
        if let Outcome::Failed(why) = &r.outcome {
            eprintln!("  FAILED {}: {why}", r.spec.name());
        }
    }
    for r in analyse::invalid_runs(manifest) {
        let fate = match (r.redo, r.replaced) {
            (true, _) => "the redo too; left out",
            (false, true) => "redone, the redo is used",
            (false, false) => "left out",
        };
        eprintln!("  INVALID {} ({fate}): {}", r.run_name, r.why);
    }
    let counts = analyse::run_counts(manifest, runs);
    let headline = analyse::headline(&analyse::analyse(manifest, runs));
    eprintln!("{}", final_line(&counts, headline.as_ref(), plots, out_dir));
    if counts.failed > 0 && counts.failed == counts.total {
        bail!("every run failed");
    }
    Ok(())
}

/// `compare: 50 runs (0 failed, 2 disturbed, 1 invalid); matched load 50%
/// tcp, 100 conns, 128 B: uring cheapest, server CPU of uring 0.85× epoll
/// [0.80, 0.90], cheaper; README.md and 5 plots in results/quick`.
fn final_line(
    counts: &analyse::RunCounts,
    headline: Option<&analyse::Headline>,
    plots: usize,
    out_dir: &Path,
) -> String {
    let result = match headline {
        Some(h) => {
            let k = &h.key;
            let what = match k.purpose {
                analyse::Purpose::MatchedLoad { fraction } => format!("matched load {:.0}%", fraction * 100.0),
                other => other.as_str().replace('_', " "),
            };
            let msgs = k.conn_msgs.map(|n| format!(", {n} msgs/conn")).unwrap_or_default();
            let at = format!("{what} {}, {} conns, {} B{msgs}", k.transport, k.conns, k.size_bytes);
            match &h.compared {
                Some((label, r)) => format!(
                    "{at}: {} cheapest, server CPU of {label} {:.2}× {} [{:.2}, {:.2}], {}",
                    h.cheapest,
                    r.interval.mid,
                    h.reference,
                    r.interval.lo,
                    r.interval.hi,
                    r.verdict.words("cheaper", "costlier")
                ),
                None => format!("{at}: {} cheapest", h.cheapest),
            }
        }
        None => "no result to give".to_string(),
    };
    format!(
        "compare: {} runs ({} failed, {} disturbed, {} invalid); {result}; README.md and {plots} plots in {}",
        counts.total,
        counts.failed,
        counts.disturbed,
        counts.invalid,
        out_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Issue 27: the full run is adaptive at 10% with a cap of 12 and the
    /// 45-minute budget; `--quick` and `--decide-at off` are the fixed design.
    #[test]
    fn the_full_run_is_adaptive_by_default() {
        let method = |argv: &[&str]| {
            let args = CompareArgs::try_parse_from(argv).unwrap();
            let plan = Comparison::from_request(&args.request()).unwrap();
            adaptive_method(&args, &plan)
        };
        let full = method(&["compare"]).unwrap().unwrap();
        assert_eq!(
            full,
            record::AdaptiveMethod {
                decide_at_permille: 100,
                max_repetitions: 12,
                budget_s: Some(2700.0),
                ended_by_budget: false,
                matched_load_only: false,
            }
        );
        let narrow = method(&["compare", "--decide-at", "5%", "--budget", "1h"])
            .unwrap()
            .unwrap();
        assert_eq!((narrow.decide_at_permille, narrow.budget_s), (50, Some(3600.0)));
        assert_eq!(method(&["compare", "--quick"]).unwrap(), None);
        assert_eq!(method(&["compare", "--decide-at", "off"]).unwrap(), None);
        assert_eq!(method(&["compare", "--repetitions", "1"]).unwrap(), None);
        assert!(method(&["compare", "--decide-at", "off", "--max-repetitions", "8"]).is_err());
        let matched = method(&["compare", "--quick", "--adaptive-points", "matched-load"])
            .unwrap()
            .unwrap();
        assert!(
            matched.matched_load_only,
            "the flag asks for the adaptive design, even with --quick"
        );
        assert!(method(&["compare", "--decide-at", "off", "--adaptive-points", "all"]).is_err());
        assert!(method(&["compare", "--repetitions", "1", "--decide-at", "10%"]).is_err());
        let quick = method(&["compare", "--quick", "--max-repetitions", "6"])
            .unwrap()
            .unwrap();
        assert_eq!((quick.max_repetitions, quick.budget_s), (6, None));
    }

    /// The closing line of the committed full run: one line with the
    /// headline point, the cheapest label, a ratio with its interval and the counts.
    #[test]
    fn the_closing_line_gives_the_result_and_the_counts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
        if !dir.join(record::MANIFEST).is_file() {
            eprintln!("skipped: no committed results/compare.json");
            return;
        }
        let manifest = Manifest::load(&dir).unwrap();
        let runs = analyse::load_runs(&manifest, &dir);
        let counts = analyse::run_counts(&manifest, &runs);
        let headline = analyse::headline(&analyse::analyse(&manifest, &runs));
        let line = final_line(&counts, headline.as_ref(), 5, Path::new("results"));
        eprintln!("{line}");
        assert!(!line.contains('\n'));
        // The counts are the committed run's own (whatever it was).
        let prefix = format!("compare: {} runs ({} failed, ", counts.total, counts.failed);
        assert!(line.starts_with(&prefix), "{line}");
        assert!(
            line.contains(" 0 invalid); matched load 50% tcp, 100 conns, 128 B: "),
            "{line}"
        );
        assert!(
            line.contains(" cheapest, server CPU of ") && line.contains("× epoll ["),
            "{line}"
        );
    }
}
