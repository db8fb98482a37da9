//! Stage 6, publish: a new comparison is written into a fresh directory
//! inside `--out-dir` and replaces the previous one only when it has
//! finished, so an interrupted run leaves the old results whole.
//! `--report-only` renders into such a directory too and publishes only the
//! report.
//!
//! What compare may replace or remove in `--out-dir` is what it owns: a
//! file that the previous manifest lists in its `files` and that is still
//! the file it wrote (a regular file, not a link, of the size and content
//! hash recorded). Manifests written before that list own compare's fixed
//! names (README, findings, plots) and the run files they list, while they
//! are regular files. Nothing is written through a link: new files arrive by
//! `rename`, which replaces a directory entry, and an entry that is a link
//! is never owned, so it is refused rather than replaced. A directory without
//! a manifest owns nothing: compare adds to it but removes nothing from it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::record::{Manifest, WrittenFile, MANIFEST, RUNS_DIR};
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

    /// Replaces the previous run in `out_dir` with this one. `manifest`
    /// gains the list of the files written ([`Manifest::files`]) and is
    /// saved into the new run. First the old README goes (so it never links
    /// to a file that is gone), then the old run's own files, then the new
    /// files arrive, the manifest and the README last.
    pub fn publish(self, out_dir: &Path, manifest: &mut Manifest) -> anyhow::Result<()> {
        let new = staged_files(&self.dir)?;
        manifest.files = new
            .iter()
            .map(|p| WrittenFile::of(&self.dir, p))
            .collect::<anyhow::Result<_>>()?;
        manifest.save(&self.dir)?;
        let owned = Owned::previous(out_dir);
        let mut arriving = new.clone();
        arriving.push(MANIFEST.to_string());
        self.check_replaceable(out_dir, &arriving, &owned)?;
        remove_owned(out_dir, README, &owned)?;
        for old in owned.listed() {
            remove_owned(out_dir, &old, &owned)?;
        }
        self.move_in(out_dir, arriving)
    }

    /// `--report-only`: moves the report rendered here (README, findings,
    /// plots) into `out_dir`, and removes the plots of the previous report
    /// that this one does not draw, where compare owns them. A manifest
    /// that lists its files gets the new report's in place of the old, so
    /// that the next run still owns them; an older manifest is left as it is.
    pub fn publish_report(self, out_dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
        let new = staged_files(&self.dir)?;
        let owned = Owned::previous(out_dir);
        let mut arriving = new.clone();
        if !manifest.files.is_empty() {
            let mut updated = manifest.clone();
            updated.files.retain(|f| !is_report_file(&f.path));
            for p in &new {
                updated.files.push(WrittenFile::of(&self.dir, p)?);
            }
            updated.save(&self.dir)?;
            arriving.push(MANIFEST.to_string());
        }
        self.check_replaceable(out_dir, &arriving, &owned)?;
        for plot in PLOT_FILES.iter().filter(|p| !new.iter().any(|n| n == *p)) {
            remove_owned(out_dir, plot, &owned)?;
        }
        self.move_in(out_dir, arriving)
    }

    /// Fails, before anything is removed or moved, when an entry the new
    /// files would replace is not compare's own (see the module doc). The
    /// new files stay in the staging directory, and the message says so.
    fn check_replaceable(&self, out_dir: &Path, arriving: &[String], owned: &Owned) -> anyhow::Result<()> {
        let runs = out_dir.join(RUNS_DIR);
        if runs.symlink_metadata().is_ok_and(|m| !m.file_type().is_dir()) {
            anyhow::bail!(
                "{} is not a directory (a link or a file); compare writes only into a directory of its own there; \
                 nothing was replaced, and the new results are in {}",
                runs.display(),
                self.dir.display()
            );
        }
        let foreign: Vec<&str> = arriving
            .iter()
            .map(String::as_str)
            .filter(|n| out_dir.join(n).symlink_metadata().is_ok() && !owned.owns(out_dir, n))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} already holds {}, which is not a file an earlier comparison there wrote (or it was changed since, or \
             it is a link); nothing was replaced, and the new results are in {}",
            out_dir.display(),
            foreign.join(", "),
            self.dir.display()
        )
    }

    /// Moves `names` (relative paths) from the staging directory into
    /// `out_dir`, the manifest and README last, and removes the staging directory.
    fn move_in(self, out_dir: &Path, mut names: Vec<String>) -> anyhow::Result<()> {
        if names.iter().any(|n| n.starts_with(&format!("{RUNS_DIR}/"))) {
            let runs = out_dir.join(RUNS_DIR);
            std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        }
        names.sort_by_key(|n| (n == README, n == MANIFEST));
        for name in names {
            let (from, to) = (self.dir.join(&name), out_dir.join(&name));
            std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

/// Whether `path` is one of the report's files (README, findings, headline, a plot).
fn is_report_file(path: &str) -> bool {
    path == README || path == FINDINGS_FILE || path == HEADLINE_FILE || PLOT_FILES.contains(&path)
}

/// The files in the staging directory, relative to it: the top level and
/// `runs/`, without the manifest (which is written last, from them).
fn staged_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let list = |d: &Path| -> anyhow::Result<Vec<(String, bool)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            v.push((name, e.file_type()?.is_dir()));
        }
        Ok(v)
    };
    let mut files = Vec::new();
    for (name, is_dir) in list(dir)? {
        if is_dir && name == RUNS_DIR {
            for (run, _) in list(&dir.join(RUNS_DIR))? {
                files.push(format!("{RUNS_DIR}/{run}"));
            }
        } else if name != MANIFEST {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

/// What the previous comparison in a directory owns (see the module doc).
enum Owned {
    /// No manifest there: nothing.
    Nothing,
    /// A manifest that lists its files.
    Listed(Vec<WrittenFile>),
    /// A manifest from before that list: compare's fixed names and the run
    /// files it names, at the top (flat layout) or under `runs/`. A manifest
    /// that does not load (e.g. it names a path outside the directory) names
    /// none.
    Named(Vec<String>),
}

impl Owned {
    fn previous(out_dir: &Path) -> Owned {
        if out_dir.join(MANIFEST).symlink_metadata().is_err() {
            return Owned::Nothing;
        }
        let old = match Manifest::load(out_dir) {
            Ok(old) => old,
            Err(e) => {
                eprintln!(
                    "compare: warning: the previous manifest in {} does not load ({e:#}); its files are left in place",
                    out_dir.display()
                );
                return Owned::Named(vec![MANIFEST.to_string()]);
            }
        };
        if !old.files.is_empty() {
            return Owned::Listed(old.files);
        }
        let mut names: Vec<String> = [README, MANIFEST, FINDINGS_FILE, HEADLINE_FILE]
            .into_iter()
            .chain(PLOT_FILES.iter().copied())
            .map(String::from)
            .collect();
        for r in &old.runs {
            for f in [r.result_file.clone(), r.result_file.hgrm()] {
                names.push(f.as_str().to_string());
                names.push(f.relative());
            }
        }
        Owned::Named(names)
    }

    /// The files the previous comparison wrote, as relative paths.
    fn listed(&self) -> Vec<String> {
        match self {
            Owned::Nothing => Vec::new(),
            Owned::Listed(files) => files.iter().map(|f| f.path.clone()).collect(),
            Owned::Named(names) => names.iter().filter(|n| n.as_str() != MANIFEST).cloned().collect(),
        }
    }

    /// Whether `out_dir/path` is the previous comparison's and still as it wrote it.
    fn owns(&self, out_dir: &Path, path: &str) -> bool {
        let full = out_dir.join(path);
        let regular = full.symlink_metadata().is_ok_and(|m| m.file_type().is_file());
        if !regular {
            return false;
        }
        match self {
            Owned::Nothing => false,
            // The manifest cannot list its own hash; it is compare's when it names its files.
            Owned::Listed(_) if path == MANIFEST => true,
            Owned::Listed(files) => files.iter().any(|f| f.path == path && f.is_intact(out_dir)),
            Owned::Named(names) => names.iter().any(|n| n == path),
        }
    }
}

/// Removes `out_dir/path` if compare owns it; leaves anything else alone.
fn remove_owned(out_dir: &Path, path: &str, owned: &Owned) -> anyhow::Result<()> {
    if !owned.owns(out_dir, path) {
        return Ok(());
    }
    let full = out_dir.join(path);
    match std::fs::remove_file(&full) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", full.display()))
        }
        _ => Ok(()),
    }
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

    fn manifest() -> Manifest {
        Manifest {
            schema: crate::record::MANIFEST_SCHEMA.into(),
            started_utc: String::new(),
            finished_utc: String::new(),
            git_commit: String::new(),
            command: Vec::new(),
            quick: true,
            server_cpus: "0".into(),
            loadgen_cpus: "1".into(),
            duration_s: 1.0,
            warmup_s: 0.1,
            method: Default::default(),
            open_loop_rate: None,
            open_loop_note: String::new(),
            matched_load: Vec::new(),
            notes: Vec::new(),
            machine: sockbench::machine::Machine::probe(),
            platform_stalls: Vec::new(),
            runs: Vec::new(),
            files: Vec::new(),
        }
    }

    #[test]
    fn a_directory_that_is_not_compare_s_keeps_its_files() {
        let out = fresh_dir("compare-publish-clobber-");
        std::fs::write(out.join(README), b"the user's own").unwrap();
        let staging = Staging::create(&out).unwrap();
        let kept = staging.path().to_path_buf();
        std::fs::write(kept.join(README), b"generated").unwrap();
        let err = staging.publish(&out, &mut manifest()).unwrap_err().to_string();
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

    #[test]
    fn a_file_compare_wrote_is_replaced_until_it_is_edited() {
        let out = fresh_dir("compare-publish-owned-");
        let publish = |readme: &[u8]| {
            let staging = Staging::create(&out).unwrap();
            std::fs::create_dir(staging.path().join(RUNS_DIR)).unwrap();
            std::fs::write(staging.path().join(README), readme).unwrap();
            std::fs::write(staging.path().join("runs/a.json"), b"{}").unwrap();
            let mut m = manifest();
            staging.publish(&out, &mut m).map(|()| m)
        };
        let first = publish(b"one").unwrap();
        assert_eq!(
            first.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [README, "runs/a.json"]
        );
        publish(b"two").unwrap();
        assert_eq!(std::fs::read(out.join(README)).unwrap(), b"two");
        std::fs::write(out.join(README), b"edited by hand").unwrap();
        assert!(publish(b"three").is_err(), "an edited README was replaced");
        assert_eq!(std::fs::read(out.join(README)).unwrap(), b"edited by hand");
        let _ = std::fs::remove_dir_all(&out);
    }
}
