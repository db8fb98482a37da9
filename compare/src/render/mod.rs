//! Stage 5, render: the SVG plots and `README.md`, from the manifest and
//! the analysed runs. Never runs anything and never imports `execute`: the
//! settings the README quotes come from the manifest.
//!
//! - [`findings`]: `findings.json`, the statistics behind the Findings.
//! - [`plots`]: SVG plots drawn with `plotters`.
//! - [`readme`]: the generated `README.md`, one function per section.
//! - [`verdict`]: the table of ratios to the reference that opens it.
//! - [`headline`]: the sentences under that table, also written with the
//!   table's matched-load rows to `headline.md` for the repository's README.

pub mod findings;
mod findings_text;
pub mod headline;
pub mod plots;
pub mod readme;
pub mod verdict;

use std::path::Path;

use anyhow::Context;

use crate::analyse::{self, Run};
use crate::record::Manifest;
use plots::PlotFile;

/// Writes `dir/findings.json` and `dir/headline.md`, draws the plots and
/// writes `dir/README.md`.
/// Returns the plots written.
pub fn write_report(manifest: &Manifest, runs: &[Run], dir: &Path) -> anyhow::Result<Vec<PlotFile>> {
    let analysis = analyse::analyse(manifest, runs);
    findings::write(&analysis, dir)?;
    headline::write(manifest, &analysis, dir)?;
    let drawn = plots::draw_all(runs, &analysis, manifest.open_loop_rate, dir)?;
    let text = readme::render_drawn(manifest, runs, &drawn);
    let path = dir.join("README.md");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(drawn.files)
}
