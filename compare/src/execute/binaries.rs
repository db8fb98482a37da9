//! Finding (and with `cargo run`, building) the executables a comparison runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::plan::Peer;

/// The directory with `server`, `loadgen` and any reference peer.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
    pub loadgen: PathBuf,
}

impl Binaries {
    /// When started by `cargo run`, builds `server` and `loadgen` with the same
    /// profile first: `cargo run -p compare` builds only compare, and a
    /// stale server would silently measure old code.
    pub fn build_with_cargo() -> anyhow::Result<()> {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return Ok(());
        };
        let exe = std::env::current_exe().context("finding the compare executable")?;
        let profile = exe
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
        if !workspace.is_file() {
            return Ok(());
        }
        let mut cmd = Command::new(cargo);
        cmd.arg("build").arg("--manifest-path").arg(&workspace).args([
            "--bin",
            "server",
            "--bin",
            "loadgen",
            "--bin",
            "tokio-echo",
        ]);
        match profile.as_str() {
            "debug" => {
                eprintln!(
                    "compare: warning: debug build; the figures mean little. Use `cargo run --release -p compare`."
                );
            }
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        eprintln!("compare: building server, loadgen and tokio-echo ({profile})");
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("`cargo build` of server and loadgen failed ({status})");
        }
        Ok(())
    }

    /// Finds loadgen and the executable of every peer in `dir`, or beside
    /// the running executable.
    pub fn locate(dir: Option<&Path>, peers: &[Peer]) -> anyhow::Result<Binaries> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => {
                let exe = std::env::current_exe().context("finding the compare executable")?;
                let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
                // Tests and benches run from target/<profile>/deps.
                if dir.ends_with("deps") {
                    dir.pop();
                }
                dir
            }
        };
        // Absolute, because loadgen runs with the output directory as its working directory.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let bins = Binaries {
            loadgen: dir.join("loadgen"),
            dir,
        };
        let mut names = vec!["loadgen"];
        names.extend(peers.iter().map(|p| p.executable()));
        for name in names {
            if !bins.dir.join(name).is_file() {
                bail!(
                    "`{name}` not found in {}: build everything first with `cargo build --release` \
                     (`cargo run --release -p compare` builds them itself), \
                     or point --bin-dir at the directory that has it",
                    bins.dir.display()
                );
            }
        }
        Ok(bins)
    }

    /// The executable that serves `peer`.
    pub fn server_for(&self, peer: Peer) -> PathBuf {
        self.dir.join(peer.executable())
    }
}
