//! A temporary directory for the CLI's end-to-end tests, removed on drop.

// Each test crate that includes this uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// A temporary directory named after the test binary's process and `name`.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes it empty (a leftover of an earlier run is removed first).
    pub fn new(name: &str) -> TempDir {
        let exe = std::env::current_exe().ok();
        let test = exe
            .as_deref()
            .and_then(|p| p.file_stem())
            .and_then(|s| s.to_str())
            .unwrap_or("test");
        let dir =
            std::env::temp_dir().join(format!("peng3dnet-{test}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to the file `name` in it; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
