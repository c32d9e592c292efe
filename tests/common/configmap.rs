//! A Kubernetes ConfigMap (or Secret) volume, laid out in a directory the way the
//! kubelet's AtomicWriter maintains it: every version in a timestamped directory,
//! `..data` a symlink to the current one, each visible file a symlink through `..data`.
//! An update writes a new directory, points `..data_tmp` at it, renames that over
//! `..data` (the atomic swap) and removes the old directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct ConfigMap {
    dir: PathBuf,
    version: u32,
}

impl ConfigMap {
    /// `dir/..<ts>.1/<file>`, `dir/..data -> ..<ts>.1`, `dir/<file> -> ..data/<file>`.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> ConfigMap {
        std::fs::create_dir_all(dir).unwrap();
        let mut map = ConfigMap {
            dir: dir.to_path_buf(),
            version: 0,
        };
        let first = map.write_version(files);
        std::os::unix::fs::symlink(&first, dir.join("..data")).unwrap();
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        map
    }

    fn write_version(&mut self, files: &[(&str, &str)]) -> String {
        self.version += 1;
        let name = format!("..2026_11_24_10_00_00.{}", self.version);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        for (file, text) in files {
            std::fs::write(self.dir.join(&name).join(file), text).unwrap();
        }
        name
    }

    /// Publishes a new version of every file; returns when the swap (the rename)
    /// happened.
    pub fn update(&mut self, files: &[(&str, &str)]) -> Instant {
        let old = std::fs::read_link(self.dir.join("..data")).unwrap();
        let new = self.write_version(files);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let swapped = Instant::now();
        std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        swapped
    }
}
