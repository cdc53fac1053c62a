//! Installs the docs page's assets from npm (`package.json`, pinned by `package-lock.json`)
//! into `OUT_DIR`, once per lock file, so the crate can embed them: the page works offline and
//! no CDN is involved. `npm ci` runs with `--ignore-scripts` (no install-time code from the
//! registry runs here). Set `ZX_DOCS_NODE_MODULES` to a `node_modules` already holding the
//! locked versions to build without npm.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: &[&str] = &[
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/favicon-32x32.png",
];

fn main() {
    println!("cargo:rerun-if-changed=package.json");
    println!("cargo:rerun-if-changed=package-lock.json");
    println!("cargo:rerun-if-env-changed=ZX_DOCS_NODE_MODULES");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let modules = match std::env::var("ZX_DOCS_NODE_MODULES") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => install(&out),
    };
    let assets = out.join("assets");
    std::fs::create_dir_all(&assets).expect("create OUT_DIR/assets");
    for file in FILES {
        let from = modules.join(file);
        let name = Path::new(file).file_name().expect("file name");
        std::fs::copy(&from, assets.join(name))
            .unwrap_or_else(|e| panic!("{} is missing ({e}): is npm ci complete?", from.display()));
    }
}

/// `npm ci` into `OUT_DIR/npm`, unless it already holds this lock file's install.
fn install(out: &Path) -> PathBuf {
    let dir = out.join("npm");
    let lock = std::fs::read("package-lock.json").expect("read package-lock.json");
    let installed = dir.join("installed.lock");
    if std::fs::read(&installed).ok().as_deref() == Some(lock.as_slice()) {
        return dir.join("node_modules");
    }
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/npm");
    std::fs::copy("package.json", dir.join("package.json")).expect("copy package.json");
    std::fs::write(dir.join("package-lock.json"), &lock).expect("copy package-lock.json");
    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&dir)
        .env("SCARF_ANALYTICS", "false")
        .status()
        .unwrap_or_else(|e| panic!("npm is needed to build the docs page (Node.js 20 + npm): {e}"));
    assert!(status.success(), "npm ci failed for the docs page's assets");
    std::fs::write(&installed, &lock).expect("record the installed lock file");
    dir.join("node_modules")
}
