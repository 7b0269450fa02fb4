//! [`SandboxedLocalStore`]: the `file://` object store, confined to the [`PathPolicy`].

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use url::Url;

use super::{FileError, PathPolicy};

/// Name used in `object_store::Error::Generic` errors from this store.
const STORE_NAME: &str = "SandboxedLocalStore";
/// Listed entries checked per blocking task: large enough to amortize the task,
/// small enough that the first results are not held back for long.
const LIST_CHECK_BATCH_MAX: usize = 256;
/// Deletes in flight at once, as `LocalFileSystem` does.
const DELETE_CONCURRENCY_MAX: usize = 10;

/// The object store registered for `file://`.
///
/// It wraps `object_store`'s [`LocalFileSystem`] (rooted at `/`) and checks
/// every path an operation touches against the [`PathPolicy`] before
/// delegating: reads (`get_opts`, which also serves `head`, and `get_ranges`),
/// writes (`put_opts`, `put_multipart_opts`), `delete_stream`, listings, and
/// both ends of `copy_opts` and `rename_opts`. A path outside the roots fails
/// with `object_store::Error::PermissionDenied` whose message names the path
/// and the allowed roots.
///
/// Listings check every entry's canonical path and silently drop (with one
/// `tracing` warning per entry) those outside the roots, such as files reached
/// through a symlink that leaves a root.
///
/// Checks resolve symlinks at the moment of the check. Someone who can change
/// the file system under a root between the check and the access can still
/// race it; the sandbox guards against what SQL users can name, not against
/// local users with write access to the roots.
#[derive(Debug, Clone)]
pub struct SandboxedLocalStore {
    policy: Arc<PathPolicy>,
    inner: LocalFileSystem,
}

impl SandboxedLocalStore {
    /// A store allowing exactly what `policy` allows.
    pub fn new(policy: Arc<PathPolicy>) -> Self {
        Self {
            policy,
            inner: LocalFileSystem::new(),
        }
    }

    /// Checks the file `location` would be read or written at.
    async fn check_location(&self, location: &Path) -> Result<()> {
        let path = self.inner.path_to_filesystem(location)?;
        self.check_path(path).await
    }

    /// Checks the directory a listing under `prefix` walks.
    async fn check_prefix(&self, prefix: Option<&Path>) -> Result<()> {
        let path = prefix_to_filesystem(prefix)?;
        self.check_path(path).await
    }

    async fn check_path(&self, path: PathBuf) -> Result<()> {
        let policy = Arc::clone(&self.policy);
        run_blocking(move || policy.check(&path))
            .await?
            .map(drop)
            .map_err(to_store_error)
    }

    /// Whether a listed entry may be shown. Blocking.
    fn may_list(&self, entry: &Path, is_directory: bool) -> bool {
        let path = if is_directory {
            prefix_to_filesystem(Some(entry))
        } else {
            self.inner.path_to_filesystem(entry)
        };
        let checked = path
            .map_err(|e| e.to_string())
            .and_then(|path| self.policy.check(&path).map_err(|e| e.to_string()));
        match checked {
            Ok(_) => true,
            Err(reason) => {
                tracing::warn!(entry = %entry, %reason, "hiding listed entry outside the allowed roots");
                false
            }
        }
    }

    /// Drops entries outside the roots from a listing, checking in batches on
    /// the blocking pool because every check resolves symlinks on disk.
    fn filter_listing(
        &self,
        entries: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = self.clone();
        entries
            .ready_chunks(LIST_CHECK_BATCH_MAX)
            .then(move |batch| {
                let store = store.clone();
                async move {
                    let checked = run_blocking(move || {
                        batch
                            .into_iter()
                            .filter(|entry| match entry {
                                Ok(meta) => store.may_list(&meta.location, false),
                                Err(_) => true,
                            })
                            .collect::<Vec<_>>()
                    })
                    .await;
                    checked.unwrap_or_else(|e| vec![Err(e)])
                }
            })
            .flat_map(stream::iter)
            .boxed()
    }

    /// A listing stream that first checks `prefix`, then filters `list`'s entries.
    fn checked_listing(
        &self,
        prefix: Option<&Path>,
        list: impl FnOnce(&LocalFileSystem, Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>>
            + Send
            + 'static,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = prefix.cloned();
        stream::once(async move {
            store.check_prefix(prefix.as_ref()).await?;
            let entries = list(&store.inner, prefix.as_ref());
            Ok::<_, object_store::Error>(store.filter_listing(entries))
        })
        .try_flatten()
        .boxed()
    }
}

impl fmt::Display for SandboxedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_NAME}({})", self.policy.roots_display())
    }
}

#[async_trait]
impl ObjectStore for SandboxedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check_location(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // The upload's parts go to a staging file beside `location`, which is
        // renamed onto it on completion, so checking `location` covers both.
        self.check_location(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check_location(location).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.check_location(location).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let store = self.clone();
        locations
            .map(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    store.check_location(&location).await?;
                    store.inner.delete(&location).await?;
                    Ok(location)
                }
            })
            .buffered(DELETE_CONCURRENCY_MAX)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.checked_listing(prefix, |inner, prefix| inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let offset = offset.clone();
        self.checked_listing(prefix, move |inner, prefix| {
            inner.list_with_offset(prefix, &offset)
        })
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.check_prefix(prefix).await?;
        let listed = self.inner.list_with_delimiter(prefix).await?;
        let store = self.clone();
        run_blocking(move || ListResult {
            common_prefixes: listed
                .common_prefixes
                .into_iter()
                .filter(|dir| store.may_list(dir, true))
                .collect(),
            objects: listed
                .objects
                .into_iter()
                .filter(|meta| store.may_list(&meta.location, false))
                .collect(),
        })
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check_location(from).await?;
        self.check_location(to).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.check_location(from).await?;
        self.check_location(to).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// The directory `LocalFileSystem` (rooted at `/`) walks for a listing under
/// `prefix`. `LocalFileSystem` keeps its own version private; this mirrors it
/// so the path checked is the path walked.
fn prefix_to_filesystem(prefix: Option<&Path>) -> Result<PathBuf> {
    let invalid = |reason: &str| object_store::Error::Generic {
        store: STORE_NAME,
        source: format!(
            "cannot map listing prefix '{}' to a local path: {reason}",
            { prefix.map(Path::as_ref).unwrap_or_default() }
        )
        .into(),
    };
    let mut url = Url::parse("file:///").map_err(|e| invalid(&e.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| invalid("not a hierarchical URL"))?
        .pop_if_empty()
        .extend(prefix.into_iter().flat_map(Path::parts));
    url.to_file_path()
        .map_err(|()| invalid("not a local file URL"))
}

/// Turns a policy failure into the error object_store callers (DataFusion) expect.
fn to_store_error(error: FileError) -> object_store::Error {
    match error {
        FileError::PermissionDenied { ref path, .. } => object_store::Error::PermissionDenied {
            path: path.clone(),
            source: Box::new(error),
        },
        other => object_store::Error::Generic {
            store: STORE_NAME,
            source: Box::new(other),
        },
    }
}

/// Runs blocking file system work on tokio's blocking pool when there is a
/// runtime, or inline when there is none (as `LocalFileSystem` does).
async fn run_blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Ok(runtime.spawn_blocking(work).await?),
        Err(_) => Ok(work()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        root: PathBuf,
        outside: PathBuf,
        store: SandboxedLocalStore,
    }

    /// A root holding `data/a.csv` and `data/leak.csv -> <outside>/secret.csv`.
    fn fixture() -> Fixture {
        let root_dir = tempfile::tempdir().expect("tempdir");
        let outside_dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(root_dir.path()).expect("canonicalize");
        let outside = std::fs::canonicalize(outside_dir.path()).expect("canonicalize");
        std::fs::create_dir(root.join("data")).expect("mkdir");
        std::fs::write(root.join("data/a.csv"), "x\n1\n").expect("write");
        std::fs::write(outside.join("secret.csv"), "secret\n").expect("write");
        symlink(outside.join("secret.csv"), root.join("data/leak.csv")).expect("symlink");
        let policy = PathPolicy::new([root.clone()]).expect("policy");
        Fixture {
            _dirs: (root_dir, outside_dir),
            root,
            outside,
            store: SandboxedLocalStore::new(Arc::new(policy)),
        }
    }

    fn object_path(path: &std::path::Path) -> Path {
        Path::from_absolute_path(path).expect("valid object path")
    }

    #[tokio::test]
    async fn get_inside_root_works() {
        let f = fixture();
        let bytes = f
            .store
            .get(&object_path(&f.root.join("data/a.csv")))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&bytes[..], b"x\n1\n");
    }

    #[tokio::test]
    async fn get_through_symlink_to_outside_is_denied() {
        let f = fixture();
        let location = object_path(&f.root.join("data/leak.csv"));
        let err = f.store.get(&location).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("leak.csv"), "{message}");
        assert!(message.contains("allowed root"), "{message}");

        let err = f.store.head(&location).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        let err = f
            .store
            .get_ranges(&location, &[0..1, 1..3])
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn list_omits_symlink_to_outside() {
        let f = fixture();
        let prefix = object_path(&f.root.join("data"));
        let listed: Vec<ObjectMeta> = f
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .expect("list");
        let names: Vec<&str> = listed
            .iter()
            .filter_map(|meta| meta.location.filename())
            .collect();
        assert_eq!(names, vec!["a.csv"]);

        let by_delimiter = f
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .expect("list_with_delimiter");
        let names: Vec<&str> = by_delimiter
            .objects
            .iter()
            .filter_map(|meta| meta.location.filename())
            .collect();
        assert_eq!(names, vec!["a.csv"]);
    }

    #[tokio::test]
    async fn list_of_directory_symlinked_from_outside_is_hidden() {
        let f = fixture();
        symlink(&f.outside, f.root.join("data/outdir")).expect("symlink");
        let prefix = object_path(&f.root.join("data"));
        let by_delimiter = f
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .expect("list_with_delimiter");
        assert!(by_delimiter.common_prefixes.is_empty(), "{by_delimiter:?}");
        let listed: Vec<ObjectMeta> = f
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
    }

    #[tokio::test]
    async fn list_outside_roots_is_denied() {
        let f = fixture();
        let prefix = object_path(&f.outside);
        let err = f
            .store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        let err = f
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn put_under_root_works_and_outside_is_denied() {
        let f = fixture();
        let inside = object_path(&f.root.join("out/part-0.csv"));
        f.store
            .put(&inside, PutPayload::from_static(b"y\n"))
            .await
            .expect("put inside");
        assert_eq!(
            std::fs::read(f.root.join("out/part-0.csv")).expect("read back"),
            b"y\n"
        );

        let outside = object_path(&f.outside.join("new.csv"));
        let err = f
            .store
            .put(&outside, PutPayload::from_static(b"y\n"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        assert!(!f.outside.join("new.csv").exists());

        let err = f.store.put_multipart(&outside).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn copy_rename_and_delete_check_both_ends() {
        let f = fixture();
        let inside = object_path(&f.root.join("data/a.csv"));
        let outside = object_path(&f.outside.join("copied.csv"));
        let err = f.store.copy(&inside, &outside).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        let err = f.store.rename(&inside, &outside).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        assert!(f.root.join("data/a.csv").exists());

        let secret = object_path(&f.outside.join("secret.csv"));
        let err = f.store.delete(&secret).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err:?}"
        );
        assert!(f.outside.join("secret.csv").exists());

        let copy = object_path(&f.root.join("data/b.csv"));
        f.store.copy(&inside, &copy).await.expect("copy inside");
        f.store.delete(&copy).await.expect("delete inside");
        assert!(!f.root.join("data/b.csv").exists());
    }

    #[test]
    fn display_names_the_roots() {
        let f = fixture();
        let shown = f.store.to_string();
        assert_eq!(shown, format!("SandboxedLocalStore({})", f.root.display()));
    }
}
