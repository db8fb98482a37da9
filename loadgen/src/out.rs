//! Where a result goes (`--out`, `--json`): checked before the run starts, so
//! a measurement is never lost to an unwritable path at the end, and written
//! atomically (a temporary file in the same directory, then a rename), so a
//! crash or a full disk never leaves half a file where a whole one was.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::cli::UsageError;
use crate::report;
use crate::result::{self, write_atomic, RunResult};

/// The destinations of one result, checked.
#[derive(Debug, Clone)]
pub struct OutPlan {
    file: Option<ResultFiles>,
    json_on_stdout: bool,
}

/// The JSON file and the `.hgrm` percentile file beside it.
#[derive(Debug, Clone)]
struct ResultFiles {
    json: PathBuf,
    hgrm: PathBuf,
}

impl OutPlan {
    /// Checks `--out` (`-` is stdout) and `--json` before anything runs: the
    /// directory must exist and take a new file, and the JSON must not be the
    /// name its `.hgrm` would get.
    pub fn check(out: Option<&Path>, json: bool) -> Result<OutPlan, UsageError> {
        let mut plan = OutPlan {
            file: None,
            json_on_stdout: json,
        };
        let Some(out) = out else { return Ok(plan) };
        if out == Path::new("-") {
            plan.json_on_stdout = true;
            return Ok(plan);
        }
        let bad = |why: String| UsageError(format!("--out {}: {why}", out.display()));
        if out.extension().is_some_and(|e| e == "hgrm") {
            return Err(bad(
                "that is the name of the .hgrm percentile file written beside the JSON; \
                 give the JSON's name, e.g. run.json"
                    .into(),
            ));
        }
        if out.is_dir() {
            return Err(bad("is a directory; give a file name, e.g. run.json".into()));
        }
        let dir = parent_dir(out);
        if !dir.is_dir() {
            return Err(bad(format!("the directory {} does not exist", dir.display())));
        }
        // The one reliable test of "can I create a file here" is to create one.
        tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| bad(format!("cannot create a file in {}: {e}", dir.display())))?;
        plan.file = Some(ResultFiles {
            json: out.to_path_buf(),
            hgrm: hgrm_path(out),
        });
        Ok(plan)
    }

    /// True when stdout carries the JSON, so it must carry nothing else.
    pub fn json_on_stdout(&self) -> bool {
        self.json_on_stdout
    }

    /// Writes the result: the files (atomically), then the JSON on stdout.
    /// Returns a line saying which files were written, if any.
    pub fn write(&self, result: &RunResult, hist: &Histogram<u64>) -> anyhow::Result<Option<String>> {
        let json = result::to_json(result)?;
        let mut wrote = None;
        if let Some(f) = &self.file {
            write_atomic(&f.json, json.as_bytes())
                .with_context(|| format!("--out {}: cannot write", f.json.display()))?;
            write_atomic(&f.hgrm, report::hgrm(hist).as_bytes())
                .with_context(|| format!("cannot write {}", f.hgrm.display()))?;
            wrote = Some(format!("wrote {} and {}", f.json.display(), f.hgrm.display()));
        }
        if self.json_on_stdout {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(json.as_bytes())
                .context("write the result to stdout")?;
            stdout.flush().context("write the result to stdout")?;
        }
        Ok(wrote)
    }
}

/// The `.hgrm` path beside a JSON path: `run.json` → `run.hgrm`; any other
/// name gets `.hgrm` appended (`run.out` → `run.out.hgrm`), so it can never
/// be the JSON's own name.
pub fn hgrm_path(json: &Path) -> PathBuf {
    if json.extension().is_some_and(|e| e == "json") {
        json.with_extension("hgrm")
    } else {
        let mut s = json.as_os_str().to_owned();
        s.push(".hgrm");
        PathBuf::from(s)
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
