//! Installs the docs page's assets from npm (`package.json`, pinned by `package-lock.json`)
//! into `OUT_DIR`, once per lock file, so the crate can embed them: the page works offline and
//! no CDN is involved. `npm ci` runs with `--ignore-scripts` (no install-time code from the
//! registry runs here). Set `ZX_DOCS_NODE_MODULES` to a `node_modules` already holding the
//! locked versions to build without npm.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const FILES: &[&str] = &[
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/favicon-32x32.png",
];

/// `result`, or an error naming what was being done (a build script reports by failing).
fn doing<T, E: Error + Send + Sync + 'static>(
    what: impl std::fmt::Display,
    result: std::result::Result<T, E>,
) -> Result<T> {
    result.map_err(|e| format!("{what}: {e}").into())
}

fn main() -> Result<()> {
    println!("cargo:rerun-if-changed=package.json");
    println!("cargo:rerun-if-changed=package-lock.json");
    println!("cargo:rerun-if-env-changed=ZX_DOCS_NODE_MODULES");
    let out = PathBuf::from(doing("OUT_DIR", std::env::var("OUT_DIR"))?);
    let modules = match std::env::var("ZX_DOCS_NODE_MODULES") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => install(&out)?,
    };
    let assets = out.join("assets");
    doing("create OUT_DIR/assets", std::fs::create_dir_all(&assets))?;
    for file in FILES {
        let from = modules.join(file);
        let name = Path::new(file)
            .file_name()
            .ok_or_else(|| format!("{file} has no file name"))?;
        doing(
            format!("copy {} (is npm ci complete?)", from.display()),
            std::fs::copy(&from, assets.join(name)),
        )?;
    }
    Ok(())
}

/// `npm ci` into `OUT_DIR/npm`, unless it already holds this lock file's install.
fn install(out: &Path) -> Result<PathBuf> {
    let dir = out.join("npm");
    let lock = doing("read package-lock.json", std::fs::read("package-lock.json"))?;
    let installed = dir.join("installed.lock");
    if std::fs::read(&installed).ok().as_deref() == Some(lock.as_slice()) {
        return Ok(dir.join("node_modules"));
    }
    doing("create OUT_DIR/npm", std::fs::create_dir_all(&dir))?;
    doing(
        "copy package.json",
        std::fs::copy("package.json", dir.join("package.json")),
    )?;
    doing(
        "copy package-lock.json",
        std::fs::write(dir.join("package-lock.json"), &lock),
    )?;
    let status = doing(
        "run npm (the docs page's assets need Node.js 20 + npm, or ZX_DOCS_NODE_MODULES)",
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .env("SCARF_ANALYTICS", "false")
            .status(),
    )?;
    if !status.success() {
        return Err(format!("npm ci failed for the docs page's assets ({status})").into());
    }
    doing(
        "record the installed lock file",
        std::fs::write(&installed, &lock),
    )?;
    Ok(dir.join("node_modules"))
}
