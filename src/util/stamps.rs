//! File stamps: what identifies a version of a file without reading it (device, inode,
//! size, modification and change times, following symlinks). Two equal sets of stamps
//! mean nothing a reload reads has changed. The reloader uses them to filter out events
//! that change nothing (a Kubernetes ConfigMap's old directory being deleted after the
//! swap) and as the polling fallback when events are missed; the rule set uses them to
//! keep, across a reload, the lists and ASN tables whose files did not change
//! (`rules::Loaded`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|m| Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Stamps of a list of files, in order; a file that cannot be read has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamps(Vec<(PathBuf, Option<Stamp>)>);

impl Stamps {
    /// Stamps `files` now (one `stat` each, symlinks followed).
    pub fn of<P: AsRef<Path>>(files: &[P]) -> Stamps {
        Stamps(
            files
                .iter()
                .map(|path| (path.as_ref().to_path_buf(), Stamp::of(path.as_ref())))
                .collect(),
        )
    }

    /// Stamps of `files`: the ones in `self` are reused, the others stamped now. A reload
    /// stamps the files it knows before reading any, then the files a new configuration
    /// names before reading those, so a change during the reload is never mistaken for
    /// what was read.
    pub fn extended_to<P: AsRef<Path>>(&self, files: &[P]) -> Stamps {
        Stamps(
            files
                .iter()
                .map(|file| {
                    let file = file.as_ref();
                    match self.0.iter().find(|(p, _)| p == file) {
                        Some(known) => known.clone(),
                        None => (file.to_path_buf(), Stamp::of(file)),
                    }
                })
                .collect(),
        )
    }

    /// Whether every file could be stamped (none is missing or unreadable).
    pub fn complete(&self) -> bool {
        self.0.iter().all(|(_, stamp)| stamp.is_some())
    }

    /// The files whose stamp differs from `earlier` (changed, appeared, disappeared),
    /// for the log line that says why a reload runs.
    pub fn changed_since(&self, earlier: &Stamps) -> Vec<&Path> {
        self.0
            .iter()
            .filter(|(path, stamp)| {
                earlier
                    .0
                    .iter()
                    .find(|(p, _)| p == path)
                    .is_none_or(|(_, s)| s != stamp)
            })
            .map(|(path, _)| path.as_path())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_change_changes_the_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.txt");
        std::fs::write(&file, "10.0.0.1\n").unwrap();
        let files = [file.clone()];
        let first = Stamps::of(&files);
        assert_eq!(Stamps::of(&files), first, "stable without a change");

        // In place, same size.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&file, "10.0.0.2\n").unwrap();
        let second = Stamps::of(&files);
        assert_ne!(second, first);
        assert_eq!(second.changed_since(&first), vec![file.as_path()]);

        // Rename over: a new inode.
        let tmp = dir.path().join("list.txt.tmp");
        std::fs::write(&tmp, "10.0.0.2\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let third = Stamps::of(&files);
        assert_ne!(third, second);

        // Gone, then back.
        std::fs::remove_file(&file).unwrap();
        let gone = Stamps::of(&files);
        assert_ne!(gone, third);
        assert_eq!(gone.changed_since(&third), vec![file.as_path()]);
        std::fs::write(&file, "10.0.0.2\n").unwrap();
        assert_ne!(Stamps::of(&files), gone);
    }

    #[test]
    fn a_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "1\n").unwrap();
        let link = dir.path().join("list.txt");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let files = [link.clone()];
        let before = Stamps::of(&files);
        let tmp = dir.path().join("tmp-link");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert_ne!(Stamps::of(&files), before, "retargeted link");
    }

    #[test]
    fn a_new_file_in_the_set_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "1\n").unwrap();
        let before = Stamps::of(std::slice::from_ref(&a));
        let b = dir.path().join("b.txt");
        let after = Stamps::of(&[a, b.clone()]);
        assert_eq!(after.changed_since(&before), vec![b.as_path()]);
    }
}
