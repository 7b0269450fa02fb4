//! Resolving the location strings users write in SQL into URLs.

use std::path::{Component, Path, PathBuf};

use url::Url;

use super::policy::is_missing;
use super::{FileError, PathPolicy};

/// What users may write as a location, for error messages.
const SUPPORTED_LOCATIONS: &str =
    "a local path, file://, s3:// (or s3a://), hdfs:// (or viewfs://)";

/// Characters that start a glob pattern, as DataFusion's `ListingTableUrl` sees them.
const GLOB_CHARS: [u8; 3] = [b'*', b'?', b'['];

/// A location given by a user (`CREATE EXTERNAL TABLE ... LOCATION '...'`,
/// `COPY ... TO '...'`), resolved to a URL DataFusion's `ListingTableUrl` can parse.
///
/// A URL ending in `/` names a directory (a collection of files), anything else
/// a single object, as `ListingTableUrl::is_collection` expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLocation {
    /// The resolved URL. Local locations are canonical `file://` URLs (symlinks
    /// resolved, checked against the [`PathPolicy`]); `s3a://` is normalized to
    /// `s3://`. For a local glob, the glob segments follow the directory's URL
    /// percent-encoded (`?` becomes `%3F`); see [`ResolvedLocation::glob`].
    pub url: Url,
    /// Which store serves the URL.
    pub kind: LocationKind,
    /// The location for people: the canonical path (with a trailing `/` for a
    /// directory and the glob re-appended) for local locations, the URL otherwise.
    /// For local locations this is also a plain absolute path that
    /// `ListingTableUrl::parse` turns into the same prefix and glob.
    pub display: String,
    /// The glob pattern of a local location, relative to the directory that
    /// precedes it (`*.csv` for `/srv/data/*.csv`); `None` without a glob and for
    /// remote locations, where `*` is taken literally as `ListingTableUrl` does.
    ///
    /// `ListingTableUrl::parse(url)` treats a `file://` URL's glob characters
    /// literally, so to list with the glob either parse [`Self::display`] or use
    /// `ListingTableUrl::try_new(<url of the directory>, Some(Pattern::new(glob)))`.
    pub glob: Option<String>,
}

/// Which object store a [`ResolvedLocation`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationKind {
    /// The local file system, through [`super::SandboxedLocalStore`].
    Local,
    /// Amazon S3 or a compatible service.
    S3 {
        /// The bucket named by the URL's host.
        bucket: String,
    },
    /// HDFS (`hdfs://`) or a ViewFs mount table (`viewfs://`).
    Hdfs {
        /// `host[:port]` of the name node or name service; empty when the URL
        /// relies on `fs.defaultFS` from the Hadoop configuration.
        authority: String,
    },
}

/// Resolves a user location.
///
/// Accepted forms:
///
/// * a plain absolute path, or a relative one, which is taken relative to `base_dir`;
/// * a `file://` URL (host empty or `localhost`);
/// * `s3://bucket/key...` or `s3a://bucket/key...`;
/// * `hdfs://host:port/path` or `viewfs://cluster/path`.
///
/// Local locations are checked with [`PathPolicy::check`] and canonicalized.
/// Glob characters (`*`, `?`, `[`) are kept: the longest glob-free directory
/// before them is checked instead and the glob part re-appended (see
/// [`ResolvedLocation::glob`]). An existing directory gets a trailing `/` in the
/// URL so DataFusion lists it; a path that does not exist keeps the trailing `/`
/// the user wrote, if any. A local path that does not exist is accepted only
/// when `must_exist` is false (the target of a write).
///
/// Resolution never touches the network. Local resolution does blocking file
/// system calls.
///
/// # Errors
///
/// * [`FileError::InvalidLocation`] for an empty location, an unsupported
///   scheme (the message lists the supported ones), a malformed URL, an S3 URL
///   without bucket, credentials in a URL, or `..` inside a glob.
/// * [`FileError::PermissionDenied`] for a local path outside the roots.
/// * [`FileError::NotFound`] for a missing local path when `must_exist` is true.
/// * [`FileError::Io`] when the local file system cannot be inspected.
pub fn resolve_location(
    location: &str,
    base_dir: &Path,
    policy: &PathPolicy,
    must_exist: bool,
) -> Result<ResolvedLocation, FileError> {
    if location.trim().is_empty() {
        return Err(invalid(location, "a location cannot be empty"));
    }
    let Some(scheme) = url_scheme(location) else {
        return resolve_plain_path(location, base_dir, policy, must_exist);
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => resolve_file_url(location, policy, must_exist),
        "s3" | "s3a" => resolve_s3(location),
        "hdfs" | "viewfs" => resolve_hdfs(location),
        other => Err(invalid(
            location,
            format!(
                "unsupported scheme '{other}'; use {SUPPORTED_LOCATIONS} \
                 (write './{location}' for a relative path that contains ':')"
            ),
        )),
    }
}

fn invalid(location: &str, reason: impl Into<String>) -> FileError {
    FileError::InvalidLocation {
        location: location.to_string(),
        reason: reason.into(),
    }
}

/// The scheme of `location` if it starts like a URL: a letter, then letters,
/// digits, `+`, `-` or `.`, then `:` (RFC 3986). One-letter schemes are not
/// taken, so a Windows drive letter is not mistaken for one.
fn url_scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let well_formed = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (well_formed && scheme.len() > 1).then_some(scheme)
}

fn resolve_plain_path(
    location: &str,
    base_dir: &Path,
    policy: &PathPolicy,
    must_exist: bool,
) -> Result<ResolvedLocation, FileError> {
    let path = Path::new(location);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let base = std::path::absolute(base_dir).map_err(|source| FileError::Io {
            path: base_dir.display().to_string(),
            source,
        })?;
        base.join(path)
    };
    let wants_dir = location.ends_with('/');
    resolve_local(&absolute, wants_dir, location, policy, must_exist)
}

fn resolve_file_url(
    location: &str,
    policy: &PathPolicy,
    must_exist: bool,
) -> Result<ResolvedLocation, FileError> {
    let url = Url::parse(location)
        .map_err(|e| invalid(location, format!("not a valid file URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            location,
            "'?' and '#' start a query or fragment in a URL; percent-encode them \
             (%3F, %23), or write a plain path to use '?' in a glob",
        ));
    }
    if let Some(host) = url
        .host_str()
        .filter(|h| !h.is_empty() && *h != "localhost")
    {
        return Err(invalid(
            location,
            format!("a file URL must name a local file, but it names host '{host}'"),
        ));
    }
    let path = url
        .to_file_path()
        .map_err(|()| invalid(location, "the URL cannot be turned into a local path"))?;
    let wants_dir = url.path().ends_with('/');
    resolve_local(&path, wants_dir, location, policy, must_exist)
}

/// Resolves an absolute local path, with or without a glob.
fn resolve_local(
    path: &Path,
    wants_dir: bool,
    location: &str,
    policy: &PathPolicy,
    must_exist: bool,
) -> Result<ResolvedLocation, FileError> {
    match split_glob(path, location)? {
        Some((prefix, glob)) => resolve_local_glob(&prefix, &glob, location, policy, must_exist),
        None => resolve_local_plain(path, wants_dir, location, policy, must_exist),
    }
}

/// Splits `path` before its first component holding a glob character, like
/// `ListingTableUrl` does, into the directory and the glob segments.
fn split_glob(path: &Path, location: &str) -> Result<Option<(PathBuf, Vec<String>)>, FileError> {
    let components: Vec<Component<'_>> = path.components().collect();
    let is_glob = |c: &Component<'_>| {
        let bytes = c.as_os_str().as_encoded_bytes();
        bytes.iter().any(|b| GLOB_CHARS.contains(b))
    };
    let Some(first_glob) = components.iter().position(is_glob) else {
        return Ok(None);
    };
    let prefix: PathBuf = components[..first_glob].iter().collect();
    let mut glob = Vec::with_capacity(components.len() - first_glob);
    for component in &components[first_glob..] {
        // Listing never yields `..`, so such a pattern could only confuse.
        let Component::Normal(name) = component else {
            return Err(invalid(location, "'..' is not allowed in a glob pattern"));
        };
        let name = name
            .to_str()
            .ok_or_else(|| invalid(location, "a glob pattern must be valid UTF-8"))?;
        glob.push(name.to_string());
    }
    Ok(Some((prefix, glob)))
}

fn resolve_local_plain(
    path: &Path,
    wants_dir: bool,
    location: &str,
    policy: &PathPolicy,
    must_exist: bool,
) -> Result<ResolvedLocation, FileError> {
    let canonical = policy.check(path)?;
    let is_dir = match std::fs::metadata(&canonical) {
        Ok(metadata) => metadata.is_dir(),
        Err(e) if is_missing(&e) && !must_exist => wants_dir,
        Err(e) if is_missing(&e) => {
            return Err(FileError::NotFound {
                path: canonical.display().to_string(),
            })
        }
        Err(source) => {
            return Err(FileError::Io {
                path: canonical.display().to_string(),
                source,
            })
        }
    };
    let url = if is_dir {
        Url::from_directory_path(&canonical)
    } else {
        Url::from_file_path(&canonical)
    }
    .map_err(|()| invalid(location, "the path cannot be expressed as a file URL"))?;
    let mut display = canonical.display().to_string();
    if is_dir && !display.ends_with('/') {
        display.push('/');
    }
    Ok(ResolvedLocation {
        url,
        kind: LocationKind::Local,
        display,
        glob: None,
    })
}

fn resolve_local_glob(
    prefix: &Path,
    glob: &[String],
    location: &str,
    policy: &PathPolicy,
    must_exist: bool,
) -> Result<ResolvedLocation, FileError> {
    let canonical = policy.check(prefix)?;
    match std::fs::metadata(&canonical) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                location,
                format!(
                    "'{}' before the glob pattern is a file, not a directory",
                    canonical.display()
                ),
            ))
        }
        Err(e) if is_missing(&e) && !must_exist => {}
        Err(e) if is_missing(&e) => {
            return Err(FileError::NotFound {
                path: canonical.display().to_string(),
            })
        }
        Err(source) => {
            return Err(FileError::Io {
                path: canonical.display().to_string(),
                source,
            })
        }
    }
    let mut url = Url::from_directory_path(&canonical)
        .map_err(|()| invalid(location, "the path cannot be expressed as a file URL"))?;
    url.path_segments_mut()
        .map_err(|()| invalid(location, "the path cannot be expressed as a file URL"))?
        .pop_if_empty()
        .extend(glob);
    let glob = glob.join("/");
    let directory = canonical.display().to_string();
    let display = format!("{}/{glob}", directory.trim_end_matches('/'));
    Ok(ResolvedLocation {
        url,
        kind: LocationKind::Local,
        display,
        glob: Some(glob),
    })
}

/// Parses a remote URL and refuses the parts we never pass on: query strings
/// and fragments (a `?` glob would silently become one) and user info (secrets
/// belong in OPTIONS, not in a URL that is shown and logged).
fn parse_remote_url(location: &str) -> Result<Url, FileError> {
    let url =
        Url::parse(location).map_err(|e| invalid(location, format!("not a valid URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            location,
            "'?' and '#' start a query or fragment in a URL; percent-encode them (%3F, %23)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The message must not repeat the secret it is complaining about.
        let mut redacted = url.clone();
        let cleared = redacted.set_password(None).and(redacted.set_username(""));
        let shown = match cleared {
            Ok(()) => redacted.to_string(),
            Err(()) => format!("{}://...", url.scheme()),
        };
        return Err(invalid(
            &shown,
            "user names and passwords do not belong in the URL; pass credentials as \
             table OPTIONS (for S3: 'aws.access_key_id', 'aws.secret_access_key')",
        ));
    }
    Ok(url)
}

fn resolve_s3(location: &str) -> Result<ResolvedLocation, FileError> {
    let mut url = parse_remote_url(location)?;
    let bucket = url
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| {
            invalid(
                location,
                "an S3 location needs a bucket, as in s3://bucket/path/",
            )
        })?
        .to_string();
    if url.port().is_some() {
        return Err(invalid(
            location,
            "an S3 location cannot have a port; set the endpoint with the 'aws.endpoint' option",
        ));
    }
    // One scheme per store keeps DataFusion's store registry to one entry per bucket.
    if url.scheme() != "s3" {
        url.set_scheme("s3")
            .map_err(|()| invalid(location, "cannot normalize the scheme to s3"))?;
    }
    if url.path().is_empty() {
        url.set_path("/");
    }
    Ok(ResolvedLocation {
        display: url.to_string(),
        kind: LocationKind::S3 { bucket },
        url,
        glob: None,
    })
}

fn resolve_hdfs(location: &str) -> Result<ResolvedLocation, FileError> {
    let mut url = parse_remote_url(location)?;
    let host = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    if url.path().is_empty() {
        url.set_path("/");
    }
    Ok(ResolvedLocation {
        display: url.to_string(),
        kind: LocationKind::Hdfs { authority },
        url,
        glob: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        policy: PathPolicy,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonicalize");
        let policy = PathPolicy::new([root.clone()]).expect("policy");
        Fixture {
            _dir: dir,
            root,
            policy,
        }
    }

    #[test]
    fn relative_path_resolves_against_base_dir() {
        let f = fixture();
        std::fs::create_dir(f.root.join("sub")).expect("mkdir");
        std::fs::write(f.root.join("sub/a.csv"), "x\n").expect("write");
        let resolved = resolve_location("sub/a.csv", &f.root, &f.policy, true).expect("resolves");
        assert_eq!(resolved.kind, LocationKind::Local);
        assert_eq!(
            resolved.url.to_file_path().expect("file url"),
            f.root.join("sub/a.csv")
        );
        assert!(!resolved.url.path().ends_with('/'));
    }

    #[test]
    fn relative_path_escaping_base_dir_is_denied() {
        let f = fixture();
        let err = resolve_location("../../../../etc/passwd", &f.root, &f.policy, true).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn directory_gets_trailing_slash() {
        let f = fixture();
        std::fs::create_dir(f.root.join("events")).expect("mkdir");
        let location = f.root.join("events");
        let resolved = resolve_location(
            location.to_str().expect("utf-8"),
            Path::new("/"),
            &f.policy,
            true,
        )
        .expect("resolves");
        assert!(
            resolved.url.as_str().ends_with("/events/"),
            "{}",
            resolved.url
        );
        assert!(
            resolved.display.ends_with("/events/"),
            "{}",
            resolved.display
        );
    }

    #[test]
    fn file_url_resolves_like_a_path() {
        let f = fixture();
        std::fs::write(f.root.join("a b.csv"), "x\n").expect("write");
        let url = Url::from_file_path(f.root.join("a b.csv")).expect("url");
        let resolved =
            resolve_location(url.as_str(), Path::new("/"), &f.policy, true).expect("resolves");
        assert_eq!(resolved.url, url);
        assert_eq!(resolved.kind, LocationKind::Local);

        let err =
            resolve_location("file:///etc/passwd", Path::new("/"), &f.policy, true).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn glob_is_kept_and_its_directory_checked() {
        let f = fixture();
        std::fs::create_dir(f.root.join("logs")).expect("mkdir");
        let location = format!("{}/logs/2024-*/part-?.csv", f.root.display());
        let resolved =
            resolve_location(&location, Path::new("/"), &f.policy, true).expect("resolves");
        assert_eq!(resolved.glob.as_deref(), Some("2024-*/part-?.csv"));
        assert_eq!(resolved.display, location);
        assert!(
            resolved.url.path().ends_with("/logs/2024-*/part-%3F.csv"),
            "{}",
            resolved.url
        );

        // The directory before the glob is what the policy sees.
        let err = resolve_location("/etc/*.conf", Path::new("/"), &f.policy, true).unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");

        let missing = format!("{}/nope/*.csv", f.root.display());
        let err = resolve_location(&missing, Path::new("/"), &f.policy, true).unwrap_err();
        assert!(matches!(err, FileError::NotFound { .. }), "{err:?}");

        let escaping = format!("{}/logs/*/../../x", f.root.display());
        let err = resolve_location(&escaping, Path::new("/"), &f.policy, true).unwrap_err();
        assert!(matches!(err, FileError::InvalidLocation { .. }), "{err:?}");
    }

    #[test]
    fn must_exist_decides_whether_a_missing_path_is_accepted() {
        let f = fixture();
        let location = format!("{}/out/result.parquet", f.root.display());
        let err = resolve_location(&location, Path::new("/"), &f.policy, true).unwrap_err();
        match &err {
            FileError::NotFound { path } => assert!(path.ends_with("out/result.parquet")),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(err.to_string().contains("does not exist"), "{err}");

        let resolved =
            resolve_location(&location, Path::new("/"), &f.policy, false).expect("write target");
        assert!(resolved.url.path().ends_with("/out/result.parquet"));

        let dir_location = format!("{}/out/", f.root.display());
        let resolved = resolve_location(&dir_location, Path::new("/"), &f.policy, false)
            .expect("write target");
        assert!(resolved.url.path().ends_with("/out/"), "{}", resolved.url);
    }

    #[test]
    fn s3_and_s3a_resolve_to_s3_urls() {
        let f = fixture();
        let resolved = resolve_location("s3a://my-bucket/events/", Path::new("/"), &f.policy, true)
            .expect("resolves");
        assert_eq!(resolved.url.as_str(), "s3://my-bucket/events/");
        assert_eq!(
            resolved.kind,
            LocationKind::S3 {
                bucket: "my-bucket".to_string()
            }
        );

        let err = resolve_location("s3:///key", Path::new("/"), &f.policy, true).unwrap_err();
        assert!(err.to_string().contains("needs a bucket"), "{err}");

        let err = resolve_location(
            "s3://AKID:hunter2@bucket/x",
            Path::new("/"),
            &f.policy,
            true,
        )
        .unwrap_err();
        assert!(matches!(err, FileError::InvalidLocation { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            !message.contains("hunter2") && !message.contains("AKID"),
            "{message}"
        );
        assert!(message.contains("s3://bucket/x"), "{message}");
    }

    #[test]
    fn hdfs_url_resolves_with_its_authority() {
        let f = fixture();
        let resolved = resolve_location(
            "hdfs://namenode:9000/warehouse/events/",
            Path::new("/"),
            &f.policy,
            true,
        )
        .expect("resolves");
        assert_eq!(
            resolved.kind,
            LocationKind::Hdfs {
                authority: "namenode:9000".to_string()
            }
        );
        assert_eq!(resolved.url.path(), "/warehouse/events/");

        let viewfs = resolve_location("viewfs://cluster/data", Path::new("/"), &f.policy, true)
            .expect("resolves");
        assert_eq!(
            viewfs.kind,
            LocationKind::Hdfs {
                authority: "cluster".to_string()
            }
        );
    }

    #[test]
    fn unknown_scheme_names_it_and_lists_supported_ones() {
        let f = fixture();
        let err = resolve_location("gs://bucket/x", Path::new("/"), &f.policy, true).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("'gs'"), "{message}");
        assert!(
            message.contains("s3://") && message.contains("hdfs://"),
            "{message}"
        );
    }

    #[test]
    fn empty_location_is_invalid() {
        let f = fixture();
        let err = resolve_location("  ", &f.root, &f.policy, false).unwrap_err();
        assert!(matches!(err, FileError::InvalidLocation { .. }), "{err:?}");
    }
}
