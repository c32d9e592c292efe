//! Noticing changes to files with inotify (the `notify` crate), in every way files are
//! replaced in practice:
//!
//! - written in place (an editor without backup copies, `>>`, `truncate` and write);
//! - written next to the target and renamed over it (`mv`, most editors, config tools);
//! - deleted and created again;
//! - swapped as a Kubernetes ConfigMap volume: `list.txt` is a symlink to
//!   `..data/list.txt`, `..data` a symlink to a timestamped directory, and an update
//!   renames a new `..data` over the old one.
//!
//! A watch on a file itself dies with the file's inode, so [`FileWatcher`] watches the
//! *directories*: the directory of each file as named, the directory of the file it
//! finally resolves to, and the directory of every symlink met while resolving it. An
//! event matters when it names one of those paths (the file, its final target, or a
//! link on the way); reading files, ours included, never does. Each event that matters
//! wakes [`FileWatcher::changed`]; the reloader waits for quiet before reloading.
//!
//! After a reload the set is computed again ([`FileWatcher::watch`]): a ConfigMap swap
//! moves the final targets to a new directory, and the configuration may name new files.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{debug, warn};

/// Watches a set of files through their directories; see the module docs.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    /// Paths whose events matter; read by the notify thread for every event.
    relevant: Arc<ArcSwap<HashSet<PathBuf>>>,
    /// Directories watched now.
    dirs: BTreeSet<PathBuf>,
    /// Woken on every event that matters (a permit is kept if nobody waits).
    wake: Arc<Notify>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Starts the inotify watcher, watching nothing yet.
    ///
    /// # Errors
    ///
    /// The watcher cannot start (inotify instance limit reached).
    pub fn new() -> notify::Result<FileWatcher> {
        let relevant: Arc<ArcSwap<HashSet<PathBuf>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let handler = {
            let relevant = relevant.clone();
            let wake = wake.clone();
            move |event: notify::Result<Event>| match event {
                Ok(event) => {
                    if matters(&event, &relevant.load()) {
                        debug!(kind = ?event.kind, paths = %joined(&event.paths), "watched file changed");
                        wake.notify_one();
                    }
                }
                Err(err) => {
                    // A queue overflow or a watch gone bad: check the files to be sure.
                    warn!(error = %err, "file watcher error; checking the files");
                    wake.notify_one();
                }
            }
        };
        Ok(FileWatcher {
            watcher: notify::recommended_watcher(handler)?,
            relevant,
            dirs: BTreeSet::new(),
            wake,
        })
    }

    /// Watches `files` (and only them) from now on: see the module docs for which
    /// directories that means. A directory that cannot be watched (it does not exist
    /// yet) is logged and skipped; the stamp poll covers it.
    pub fn watch<P: AsRef<Path>>(&mut self, files: &[P]) {
        let targets = WatchSet::of(files);
        for dir in self.dirs.difference(&targets.dirs) {
            // Fails when the directory is gone, and then the watch is gone too.
            let _ = self.watcher.unwatch(dir);
        }
        let mut watched = BTreeSet::new();
        // Watched again even when already watched: a no-op for the same directory, and
        // the way to follow a directory replaced under the same name.
        for dir in &targets.dirs {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.clone());
                }
                Err(err) => {
                    warn!(dir = %dir.display(), error = %err, "cannot watch directory; relying on the stamp poll");
                }
            }
        }
        debug!(dirs = %joined(&watched), "watching");
        self.dirs = watched;
        self.relevant.store(Arc::new(targets.paths));
    }

    /// The directories watched now.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }

    /// Resolves after an event that matters (at once if one came since the last call).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

/// Paths as one log field: joined with ", " (log lines carry no lists).
fn joined<'p>(paths: impl IntoIterator<Item = &'p PathBuf>) -> String {
    let paths: Vec<String> = paths.into_iter().map(|p| p.display().to_string()).collect();
    paths.join(", ")
}

/// Whether `event` can change what a watched path reads.
fn matters(event: &Event, relevant: &HashSet<PathBuf>) -> bool {
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        // Opening and reading, ours included, change nothing.
        EventKind::Access(AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(_))
        | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => event.paths.iter().any(|p| relevant.contains(p)),
    }
}

/// The directories to watch for a set of files, and the paths inside them that matter.
#[derive(Debug, Default, PartialEq, Eq)]
struct WatchSet {
    dirs: BTreeSet<PathBuf>,
    paths: HashSet<PathBuf>,
}

impl WatchSet {
    fn of<P: AsRef<Path>>(files: &[P]) -> WatchSet {
        let mut set = WatchSet::default();
        for file in files {
            let Ok(file) = std::path::absolute(file.as_ref()) else {
                continue;
            };
            let (links, resolved) = resolve(&file);
            for path in std::iter::once(file).chain(links).chain(resolved) {
                if let Some(dir) = path.parent() {
                    set.dirs.insert(dir.to_path_buf());
                }
                set.paths.insert(path);
            }
        }
        // A watched directory deleted, renamed or replaced (`mv lists.new lists`): its
        // own events, and its entry in a watched parent, matter too.
        set.paths.extend(set.dirs.iter().cloned());
        set
    }
}

/// One step of a path being resolved.
enum Part {
    Root,
    Up,
    Name(OsString),
}

fn parts(path: &Path) -> impl DoubleEndedIterator<Item = Part> + '_ {
    path.components().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Part::Root),
        Component::CurDir => None,
        Component::ParentDir => Some(Part::Up),
        Component::Normal(name) => Some(Part::Name(name.to_owned())),
    })
}

/// Resolves absolute `path` step by step like the kernel does: every symlink met on the
/// way (as the path of the link itself), and the final path if it resolves completely
/// (the file exists). At most 40 links, as Linux.
fn resolve(path: &Path) -> (Vec<PathBuf>, Option<PathBuf>) {
    const MAX_LINKS: usize = 40;
    let mut links = Vec::new();
    let mut pending: VecDeque<Part> = parts(path).collect();
    let mut current = PathBuf::new();
    while let Some(part) = pending.pop_front() {
        match part {
            Part::Root => current = PathBuf::from("/"),
            Part::Up => {
                current.pop();
            }
            Part::Name(name) => {
                let next = current.join(&name);
                let is_link = std::fs::symlink_metadata(&next)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if !is_link {
                    current = next;
                    continue;
                }
                if links.len() == MAX_LINKS {
                    return (links, None);
                }
                let Ok(target) = std::fs::read_link(&next) else {
                    return (links, None);
                };
                links.push(next);
                for part in parts(&target).rev() {
                    pending.push_front(part);
                }
            }
        }
    }
    let exists = std::fs::metadata(&current).is_ok();
    (links, exists.then_some(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_plain_file_is_watched_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let file = dir.join("list.txt");
        std::fs::write(&file, "1\n").unwrap();
        let set = WatchSet::of(&[&file]);
        assert_eq!(set.dirs, BTreeSet::from([dir.clone()]));
        assert_eq!(set.paths, HashSet::from([file, dir]));
    }

    #[test]
    fn a_configmap_layout_watches_the_data_link_and_the_current_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let version = dir.join("..2026_11_24_10_00_00.1");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("list.txt"), "1\n").unwrap();
        symlink("..2026_11_24_10_00_00.1", dir.join("..data")).unwrap();
        symlink("..data/list.txt", dir.join("list.txt")).unwrap();

        let set = WatchSet::of(&[dir.join("list.txt")]);
        assert_eq!(set.dirs, BTreeSet::from([dir.clone(), version.clone()]));
        assert_eq!(
            set.paths,
            HashSet::from([
                dir.join("list.txt"),
                dir.join("..data"),
                version.join("list.txt"),
                dir.clone(),
                version.clone(),
            ])
        );
    }

    #[test]
    fn relative_and_parent_components_resolve_like_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        std::fs::write(dir.join("real/list.txt"), "1\n").unwrap();
        symlink("real/sub", dir.join("alias")).unwrap();
        // alias/../list.txt is real/list.txt for the kernel, not dir/list.txt.
        let (links, resolved) = resolve(&dir.join("alias/../list.txt"));
        assert_eq!(links, vec![dir.join("alias")]);
        assert_eq!(resolved, Some(dir.join("real/list.txt")));
    }

    #[test]
    fn a_missing_file_and_a_link_loop_still_watch_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let set = WatchSet::of(&[dir.join("later.txt")]);
        assert_eq!(set.dirs, BTreeSet::from([dir.clone()]));
        assert!(set.paths.contains(&dir.join("later.txt")));

        symlink("b", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        let (links, resolved) = resolve(&dir.join("a"));
        assert_eq!(links.len(), 40);
        assert_eq!(resolved, None);
    }

    #[test]
    fn reads_do_not_matter_writes_to_watched_paths_do() {
        let relevant = HashSet::from([PathBuf::from("/etc/guard/list.txt")]);
        let event = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
        let open = EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any));
        let write = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        assert!(!matters(&event(open, "/etc/guard/list.txt"), &relevant));
        assert!(matters(&event(write, "/etc/guard/list.txt"), &relevant));
        assert!(!matters(&event(write, "/etc/guard/other.txt"), &relevant));
        let rename = EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Both));
        let both = Event::new(rename)
            .add_path(PathBuf::from("/etc/guard/list.txt.tmp"))
            .add_path(PathBuf::from("/etc/guard/list.txt"));
        assert!(matters(&both, &relevant));
    }
}
