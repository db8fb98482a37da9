//! Stage 5, render: the SVG plots and `README.md`, from the manifest and
//! the analysed runs. Never runs anything and never imports `execute`: the
//! settings the README quotes come from the manifest.
//!
//! - [`findings`]: `findings.json`, the statistics behind the Findings.
//! - [`plots`]: SVG plots drawn with `plotters`.
//! - [`readme`]: the generated `README.md`, one function per section.

pub mod findings;
mod findings_text;
pub mod plots;
pub mod readme;

use std::path::Path;

use anyhow::Context;

use crate::analyse::{self, Run};
use crate::record::Manifest;
use plots::PlotFile;

/// Writes `dir/findings.json`, draws the plots and writes `dir/README.md`.
/// Returns the plots written.
pub fn write_report(manifest: &Manifest, runs: &[Run], dir: &Path) -> anyhow::Result<Vec<PlotFile>> {
    let analysis = analyse::analyse(manifest, runs);
    findings::write(&analysis, dir)?;
    let plots = plots::draw_all(runs, &analysis, manifest.open_loop_rate, dir)?;
    let text = readme::render(manifest, runs, &plots);
    let path = dir.join("README.md");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(plots)
}
