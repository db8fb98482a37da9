//! Stage 6, publish: a new comparison is written into a fresh directory
//! inside `--out-dir` and replaces the previous one only when it has
//! finished, so an interrupted run leaves the old results whole.
//!
//! Only paths inside `--out-dir` are ever removed: the previous run's files
//! come from its manifest as [`RunFileName`]s, which cannot name anything
//! outside it, and the plots by their fixed names.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::record::{Manifest, RunFileName, MANIFEST};
use crate::render::findings::FINDINGS_FILE;
use crate::render::headline::HEADLINE_FILE;
use crate::render::plots::PLOT_FILES;

const README: &str = "README.md";

/// The directory a comparison in progress writes to.
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Creates `out_dir` if needed and a fresh, hidden directory inside it.
    /// Such directories left by a compare that was killed (its pid is gone)
    /// are removed first.
    pub fn create(out_dir: &Path) -> anyhow::Result<Staging> {
        std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        remove_abandoned(out_dir);
        for n in 0..1000 {
            let dir = out_dir.join(format!("{STAGING_PREFIX}{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Staging { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        anyhow::bail!("no free directory name for a new run in {}", out_dir.display())
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes the directory and what this run wrote into it.
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Replaces the previous run in `out_dir` with this one: first the old
    /// README (so it never links to a file that is gone), then the old
    /// run's files, then the new files, the new manifest, the new README
    /// last.
    pub fn publish(self, out_dir: &Path) -> anyhow::Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        refuse_to_clobber(out_dir, &self.dir, &names)?;
        remove_in(out_dir, README)?;
        remove_previous_run(out_dir, &self.dir)?;
        // The manifest and the README go last, in that order.
        names.sort_by_key(|n| (n == README, n == MANIFEST));
        for name in names {
            let (from, to) = (self.dir.join(&name), out_dir.join(&name));
            std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        std::fs::remove_dir(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

/// Fails, before anything is removed or moved, when a file the new run
/// would replace is not compare's own: compare's fixed names (README,
/// manifest, findings, headline, plots) count as its own only in a directory that
/// holds a compare manifest, and a run file only when the previous manifest
/// lists it. So `--out-dir` pointed at a directory with a README of the
/// user's never loses it; the new results stay in the staging directory.
fn refuse_to_clobber(out_dir: &Path, staging: &Path, names: &[String]) -> anyhow::Result<()> {
    let compare_dir = out_dir.join(MANIFEST).exists();
    let listed: Vec<String> = match Manifest::load(out_dir) {
        Ok(old) => old
            .runs
            .iter()
            .flat_map(|r| {
                [
                    r.result_file.as_str().to_string(),
                    r.result_file.hgrm().as_str().to_string(),
                ]
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let fixed =
        |n: &str| n == README || n == MANIFEST || n == FINDINGS_FILE || n == HEADLINE_FILE || PLOT_FILES.contains(&n);
    let owned = |n: &str| (compare_dir && fixed(n)) || listed.iter().any(|l| l == n);
    let foreign: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| out_dir.join(n).symlink_metadata().is_ok() && !owned(n))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} already holds {}, which no earlier comparison there wrote; nothing was replaced, and the new results \
         are in {}",
        out_dir.display(),
        foreign.join(", "),
        staging.display()
    )
}

const STAGING_PREFIX: &str = ".compare-new-";

/// Removes `out_dir/.compare-new-PID-N` directories whose compare is no longer running.
fn remove_abandoned(out_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            eprintln!(
                "compare: removing {}, left by an unfinished run",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes `dir/name` if it is there.
fn remove_in(dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes the files the previous comparison in `out_dir` wrote, as its
/// manifest lists them, and plots the new run does not replace. A manifest
/// that does not load (e.g. it names a path outside the directory) gets a
/// warning, and none of its files are removed.
fn remove_previous_run(out_dir: &Path, new_run: &Path) -> anyhow::Result<()> {
    if out_dir.join(MANIFEST).exists() {
        match Manifest::load(out_dir) {
            Ok(old) => {
                for run in &old.runs {
                    remove_run_files(out_dir, &run.result_file)?;
                }
            }
            Err(e) => eprintln!(
                "compare: warning: the previous manifest in {} does not load ({e:#}); its files are left in place",
                out_dir.display()
            ),
        }
    }
    for plot in PLOT_FILES.iter().filter(|p| !new_run.join(p).exists()) {
        remove_in(out_dir, plot)?;
    }
    Ok(())
}

fn remove_run_files(out_dir: &Path, json: &RunFileName) -> anyhow::Result<()> {
    remove_in(out_dir, json.hgrm().as_str())?;
    remove_in(out_dir, json.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of the test's own (mkdtemp), removed by the test.
    fn fresh_dir(prefix: &str) -> PathBuf {
        tempfile::Builder::new().prefix(prefix).tempdir().unwrap().keep()
    }

    #[test]
    fn a_killed_run_is_cleaned_up_and_nothing_else() {
        let out = fresh_dir("compare-publish-test-");
        // pid_max is at most 2^22: this compare is certainly gone.
        let dead = out.join(".compare-new-99999999-0");
        let live = out.join(format!(".compare-new-{}-7", std::process::id()));
        let other = out.join(".compare-new-notes");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("f.json"), b"{}").unwrap();
        }
        let staging = Staging::create(&out).unwrap();
        assert!(!dead.exists(), "the killed run's directory is left");
        assert!(live.join("f.json").exists() && other.join("f.json").exists());
        staging.discard();
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_directory_that_is_not_compare_s_keeps_its_files() {
        let out = fresh_dir("compare-publish-clobber-");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(README), b"the user's own").unwrap();
        let staging = Staging::create(&out).unwrap();
        let kept = staging.path().to_path_buf();
        std::fs::write(kept.join(README), b"generated").unwrap();
        std::fs::write(kept.join(MANIFEST), b"{}").unwrap();
        let err = staging.publish(&out).unwrap_err().to_string();
        assert!(
            err.contains("README.md") && err.contains("nothing was replaced"),
            "{err}"
        );
        assert_eq!(std::fs::read(out.join(README)).unwrap(), b"the user's own");
        assert!(!out.join(MANIFEST).exists());
        assert!(
            kept.join(README).exists(),
            "the new results are kept where the message says"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}
