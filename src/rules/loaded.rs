//! Compiled rule structures that a reload keeps when their files did not change.
//!
//! This module owns [`Loaded`], a shared compiled structure together with the
//! [`Stamps`] of the files it was built from (device, inode, size, modification and
//! change times), taken before the files are read, and the [`FileCaps`] they were read
//! within. A reload whose input has the same stamps and caps as the one in force keeps
//! the compiled structure instead of parsing the files again: the full ASN tables take
//! about 0.4 s of CPU to build, and an operator who appends one line to a block list
//! should not pay for them. (Comparing the caps keeps a reload honest after a cap is
//! lowered: it reads the files again, as `check` would, rather than keep what the new cap
//! refuses.)
//!
//! Taking the stamps *before* reading makes the check safe against a file changing while
//! it is loaded: the loaded data may be newer than the stamps, never older, and the next
//! reload sees different stamps and loads again.

use std::ops::Deref;
use std::sync::Arc;

use super::FileCaps;
use crate::util::Stamps;

/// A compiled structure, shared between the rule sets that use it, and the stamps of the
/// files it was built from. Dereferences to the structure.
#[derive(Debug, Default)]
pub struct Loaded<T> {
    value: Arc<T>,
    /// The stamps of the files and the caps they were read within; `None` for a
    /// structure not built from files (tests, tools): never kept.
    stamps: Option<(Stamps, FileCaps)>,
}

impl<T> Loaded<T> {
    /// `value`, built from the files stamped `stamps` (taken before they were read),
    /// read within `caps`.
    pub fn from_files(value: T, stamps: Stamps, caps: FileCaps) -> Self {
        Self {
            value: Arc::new(value),
            stamps: Some((stamps, caps)),
        }
    }

    /// The structure of `previous`, shared, when it was built from files that still have
    /// the stamps `now`, within the same `caps`.
    pub fn kept(previous: Option<&Loaded<T>>, now: &Stamps, caps: &FileCaps) -> Option<Loaded<T>> {
        let previous = previous?;
        let (stamps, was) = previous.stamps.as_ref()?;
        (now.complete() && stamps == now && was == caps).then(|| previous.clone())
    }

    /// Whether `self` and `other` are the same structure (kept by a reload).
    pub fn ptr_eq(&self, other: &Loaded<T>) -> bool {
        Arc::ptr_eq(&self.value, &other.value)
    }
}

/// Another handle on the same structure.
impl<T> Clone for Loaded<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            stamps: self.stamps.clone(),
        }
    }
}

/// A structure not built from files: never kept by a reload.
impl<T> From<T> for Loaded<T> {
    fn from(value: T) -> Self {
        Self {
            value: Arc::new(value),
            stamps: None,
        }
    }
}

impl<T> Deref for Loaded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_structures_from_unchanged_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "1\n").unwrap();
        let stamps = Stamps::of(&[&path]);
        let caps = FileCaps::defaults("lists");
        let first = Loaded::from_files(7u32, stamps.clone(), caps);
        let kept = Loaded::kept(Some(&first), &stamps, &caps).unwrap();
        assert!(kept.ptr_eq(&first));
        assert_eq!(*kept, 7);
        // Other caps: read again.
        let lower = FileCaps::new("lists", 1 << 20, 1024, 10);
        assert!(Loaded::kept(Some(&first), &stamps, &lower).is_none());

        std::fs::write(&path, "12\n").unwrap();
        assert!(Loaded::kept(Some(&first), &Stamps::of(&[&path]), &caps).is_none());
        assert!(Loaded::<u32>::kept(None, &stamps, &caps).is_none());
        // Not from files: never kept.
        assert!(Loaded::kept(Some(&Loaded::from(7u32)), &stamps, &caps).is_none());
        // A file that cannot be read: not kept (its load reports why).
        let missing = Stamps::of(&[dir.path().join("missing")]);
        let from_missing = Loaded::from_files(7u32, missing.clone(), caps);
        assert!(Loaded::kept(Some(&from_missing), &missing, &caps).is_none());
    }
}
