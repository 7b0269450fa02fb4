//! [`PathPolicy`]: which local directories the server may touch.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::FileError;

/// How many dangling symlinks [`PathPolicy::check`] follows by hand before
/// giving up; the same bound Linux uses (`MAXSYMLINKS`), so a link cycle ends.
const SYMLINK_HOPS_MAX: usize = 40;

/// Where local files may be read or written.
///
/// A policy is a non-empty list of canonical directories ("roots"). A path is
/// allowed when its canonical form — every symlink resolved — lies under one of
/// them. Cloning is cheap: the roots are shared behind an [`Arc`].
#[derive(Clone, PartialEq, Eq)]
pub struct PathPolicy {
    roots: Arc<[PathBuf]>,
}

impl PathPolicy {
    /// Builds a policy from `roots`, which should be directories.
    ///
    /// Each root is canonicalized (symlinks resolved, made absolute against the
    /// current directory). A root that does not exist or is not a directory is
    /// skipped with a `tracing` warning, so one missing mount does not keep the
    /// server from starting; duplicates are dropped, order is kept.
    ///
    /// # Errors
    ///
    /// * [`FileError::InvalidLocation`] when no root remains.
    /// * [`FileError::Io`] when a root exists but cannot be resolved (for example
    ///   a parent directory is not searchable).
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Result<Self, FileError> {
        let mut given = Vec::new();
        let mut kept: Vec<PathBuf> = Vec::new();
        for root in roots {
            if let Some(canonical) = canonical_root(&root)? {
                if !kept.contains(&canonical) {
                    kept.push(canonical);
                }
            }
            given.push(root.display().to_string());
        }
        if kept.is_empty() {
            let location = if given.is_empty() {
                "(no data roots configured)".to_string()
            } else {
                given.join(", ")
            };
            return Err(FileError::InvalidLocation {
                location,
                reason: "none of the configured data roots is an existing directory".to_string(),
            });
        }
        Ok(Self { roots: kept.into() })
    }

    /// The canonical roots, in configuration order, without duplicates. Never empty.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Returns the canonical form of `path` if it lies under a root.
    ///
    /// `path` must be absolute. An existing path is fully canonicalized, so a
    /// symlink inside a root that points outside every root is denied. For a path
    /// that does not exist yet (a file about to be written), the deepest existing
    /// ancestor is canonicalized and the missing components are appended; a `..`
    /// among those missing components is refused, because what it means depends
    /// on directories that do not exist yet. A dangling symlink is followed by
    /// hand, so writing through it is judged by where it points.
    ///
    /// This function does blocking file system calls.
    ///
    /// # Errors
    ///
    /// * [`FileError::PermissionDenied`] when the canonical path is outside every root.
    /// * [`FileError::InvalidLocation`] when `path` is relative, has `..` after a
    ///   missing directory, or goes through too many dangling symlinks.
    /// * [`FileError::Io`] when resolving fails for another reason (permissions, a loop).
    pub fn check(&self, path: &Path) -> Result<PathBuf, FileError> {
        if !path.is_absolute() {
            return Err(FileError::InvalidLocation {
                location: path.display().to_string(),
                reason: "a local path must be absolute here".to_string(),
            });
        }
        let canonical = canonicalize_lenient(path, path, SYMLINK_HOPS_MAX)?;
        if self.allows_canonical(&canonical) {
            Ok(canonical)
        } else {
            Err(self.denied(path))
        }
    }

    /// Whether an already canonical path lies under a root. Component-wise, so
    /// `/srv/data2` is not under `/srv/data`.
    fn allows_canonical(&self, canonical: &Path) -> bool {
        self.roots.iter().any(|root| canonical.starts_with(root))
    }

    /// The error for `path` lying outside every root.
    pub(crate) fn denied(&self, path: &Path) -> FileError {
        FileError::PermissionDenied {
            path: path.display().to_string(),
            roots: self.roots_display(),
        }
    }

    /// The roots as one comma-separated string, for messages.
    pub(crate) fn roots_display(&self) -> String {
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        roots.join(", ")
    }
}

impl fmt::Debug for PathPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathPolicy")
            .field("roots", &self.roots)
            .finish()
    }
}

/// Canonicalizes one configured root, or returns `None` (with a warning) when it
/// cannot serve as a root.
fn canonical_root(root: &Path) -> Result<Option<PathBuf>, FileError> {
    match std::fs::canonicalize(root) {
        Ok(canonical) if canonical.is_dir() => Ok(Some(canonical)),
        Ok(_) => {
            tracing::warn!(root = %root.display(), "data root is not a directory; skipping it");
            Ok(None)
        }
        Err(e) if is_missing(&e) => {
            tracing::warn!(root = %root.display(), "data root does not exist; skipping it");
            Ok(None)
        }
        Err(source) => Err(FileError::Io {
            path: root.display().to_string(),
            source,
        }),
    }
}

/// Errors that mean "nothing at this path", including a file used as a directory.
pub(crate) fn is_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Canonicalizes the deepest existing ancestor of the absolute `path` and
/// appends the missing rest. `original` is what the user asked for, for errors.
fn canonicalize_lenient(
    path: &Path,
    original: &Path,
    hops_left: usize,
) -> Result<PathBuf, FileError> {
    let components: Vec<Component<'_>> = path.components().collect();
    // Walk from the full path upwards; the root directory always resolves, so
    // the loop ends with a return at `existing_len == 1` at the latest.
    for existing_len in (1..=components.len()).rev() {
        let existing: PathBuf = components[..existing_len].iter().collect();
        let missing = &components[existing_len..];
        match std::fs::canonicalize(&existing) {
            Ok(canonical) => return append_missing(canonical, missing, original),
            Err(e) if is_missing(&e) => {
                if is_symlink(&existing) {
                    let target = follow_dangling(&existing, missing, original)?;
                    let hops_left =
                        hops_left
                            .checked_sub(1)
                            .ok_or_else(|| FileError::InvalidLocation {
                                location: original.display().to_string(),
                                reason: "too many levels of symbolic links".to_string(),
                            })?;
                    return canonicalize_lenient(&target, original, hops_left);
                }
            }
            Err(source) => {
                return Err(FileError::Io {
                    path: existing.display().to_string(),
                    source,
                })
            }
        }
    }
    Err(FileError::InvalidLocation {
        location: original.display().to_string(),
        reason: "a local path must be absolute here".to_string(),
    })
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// For a dangling symlink `link`, the path it designates followed by `missing`.
fn follow_dangling(
    link: &Path,
    missing: &[Component<'_>],
    original: &Path,
) -> Result<PathBuf, FileError> {
    let target = std::fs::read_link(link).map_err(|source| FileError::Io {
        path: link.display().to_string(),
        source,
    })?;
    // A relative target is relative to the link's directory; `join` keeps an
    // absolute target as is.
    let parent = link.parent().unwrap_or_else(|| Path::new("/"));
    let mut next = parent.join(target);
    if !next.is_absolute() {
        return Err(FileError::InvalidLocation {
            location: original.display().to_string(),
            reason: format!("cannot resolve symbolic link '{}'", link.display()),
        });
    }
    for component in missing {
        next.push(component.as_os_str());
    }
    Ok(next)
}

/// Appends the components that do not exist yet to a canonical ancestor.
fn append_missing(
    mut canonical: PathBuf,
    missing: &[Component<'_>],
    original: &Path,
) -> Result<PathBuf, FileError> {
    for component in missing {
        match component {
            Component::Normal(name) => canonical.push(OsString::from(name)),
            // `components()` drops inner `.`; kept for completeness.
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FileError::InvalidLocation {
                    location: original.display().to_string(),
                    reason: "'..' cannot follow a directory that does not exist".to_string(),
                })
            }
        }
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn policy_for(dir: &Path) -> PathPolicy {
        PathPolicy::new([dir.to_path_buf()]).expect("temp dir is a valid root")
    }

    #[test]
    fn allows_a_file_under_a_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("a.csv");
        std::fs::write(&file, "x\n1\n").expect("write");
        let policy = policy_for(root.path());
        let checked = policy.check(&file).expect("file under root is allowed");
        assert_eq!(checked, std::fs::canonicalize(&file).expect("canonicalize"));
    }

    #[test]
    fn denies_etc_passwd_with_a_message_naming_path_and_roots() {
        let root = tempfile::tempdir().expect("tempdir");
        let policy = policy_for(root.path());
        let err = policy.check(Path::new("/etc/passwd")).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("permission denied for location '/etc/passwd'"),
            "{message}"
        );
        assert!(
            message.contains(&policy.roots()[0].display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn denies_symlink_inside_root_pointing_outside() {
        let root = tempfile::tempdir().expect("tempdir");
        let link = root.path().join("passwd.csv");
        symlink("/etc/passwd", &link).expect("symlink");
        let err = policy_for(root.path()).check(&link).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn denies_dangling_symlink_pointing_outside() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let link = root.path().join("out");
        symlink(outside.path().join("not-yet"), &link).expect("symlink");
        let err = policy_for(root.path())
            .check(&link.join("file.csv"))
            .unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn denies_parent_dir_escape() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(base.path().join("outside.csv"), "x").expect("write");
        let policy = policy_for(&root);

        let existing = root.join("../outside.csv");
        let err = policy.check(&existing).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");

        let missing = root.join("../not-there.csv");
        let err = policy.check(&missing).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");

        // `..` after a directory that does not exist cannot be judged.
        let through_missing = root.join("nope/../../outside.csv");
        let err = policy.check(&through_missing).unwrap_err();
        assert!(matches!(err, FileError::InvalidLocation { .. }), "{err:?}");
    }

    #[test]
    fn allows_a_new_file_in_a_new_directory_under_a_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let policy = policy_for(root.path());
        let target = root.path().join("out/year=2024/part-0.parquet");
        let checked = policy.check(&target).expect("allowed");
        assert!(checked.starts_with(&policy.roots()[0]), "{checked:?}");
        assert!(checked.ends_with("out/year=2024/part-0.parquet"));
    }

    #[test]
    fn rejects_relative_paths() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = policy_for(root.path())
            .check(Path::new("data/a.csv"))
            .unwrap_err();
        assert!(matches!(err, FileError::InvalidLocation { .. }), "{err:?}");
    }

    #[test]
    fn missing_roots_are_skipped_unless_none_remain() {
        let root = tempfile::tempdir().expect("tempdir");
        let missing = root.path().join("missing");
        let policy =
            PathPolicy::new([missing.clone(), root.path().to_path_buf()]).expect("one root left");
        assert_eq!(policy.roots().len(), 1);

        let err = PathPolicy::new([missing]).unwrap_err();
        assert!(matches!(err, FileError::InvalidLocation { .. }), "{err:?}");
        assert!(PathPolicy::new(Vec::new()).is_err());
    }

    #[test]
    fn sibling_with_common_name_prefix_is_not_under_root() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("data");
        let sibling = base.path().join("data2");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::create_dir(&sibling).expect("mkdir");
        let err = policy_for(&root).check(&sibling.join("a.csv")).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
    }
}
