//! Building the object store that serves a [`ResolvedLocation`].

use std::path::Path;
use std::sync::Arc;

use hdfs_native_object_store::HdfsObjectStoreBuilder;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ClientConfigKey, ObjectStore};

use super::{FileError, LocationKind, PathPolicy, ResolvedLocation, SandboxedLocalStore};

/// Option prefixes for S3 stores; both spellings are common in other engines.
const S3_PREFIXES: [&str; 2] = ["aws.", "s3."];
/// Option prefix for HDFS stores; the rest of the key is a Hadoop configuration key.
const HDFS_PREFIX: &str = "hdfs.";

/// The S3 keys users most often need, for "unknown option" messages. Every key
/// `AmazonS3ConfigKey` accepts works; listing all of them would bury these.
const S3_COMMON_KEYS: &str = "aws.access_key_id, aws.secret_access_key, aws.session_token, \
    aws.region, aws.endpoint, aws.allow_http, aws.skip_signature, \
    aws.virtual_hosted_style_request, aws.unsigned_payload, aws.role_arn, \
    aws.request_payer, aws.timeout, aws.connect_timeout, aws.proxy_url \
    (any object_store S3 setting; 's3.' works as a prefix too)";
const HDFS_KEYS: &str =
    "hdfs.<Hadoop configuration key>, for example hdfs.dfs.client.use.datanode.hostname";
const LOCAL_KEYS: &str = "none; object store options only apply to s3:// and hdfs:// locations";

/// Table OPTIONS as `(key, value)` pairs, in the order they were written.
pub type TableOptions = Vec<(String, String)>;

/// Splits table OPTIONS into the object-store ones and the rest.
///
/// Object-store options are those whose key starts with `aws.`, `s3.` or
/// `hdfs.`, compared case-insensitively. Both halves keep the order they had in
/// `options`, and keys and values are returned untouched: the rest are format
/// options for the caller to interpret.
pub fn split_store_options(options: TableOptions) -> (TableOptions, TableOptions) {
    options.into_iter().partition(|(key, _)| {
        S3_PREFIXES
            .iter()
            .chain(std::iter::once(&HDFS_PREFIX))
            .any(|prefix| strip_prefix_ignore_case(key, prefix).is_some())
    })
}

/// Builds the object store for `location`, applying `store_options` (the first
/// half of [`split_store_options`]).
///
/// * Local: the [`SandboxedLocalStore`] for `policy`; any store option is an error.
/// * S3: starts from `AmazonS3Builder::from_env()`, so the usual `AWS_*`
///   variables apply, then applies each `aws.<key>` / `s3.<key>` where `<key>`
///   is an `AmazonS3ConfigKey` with or without its `aws_` prefix, compared
///   case-insensitively. The bucket always comes from the URL. An `http://`
///   endpoint implies `allow_http` unless that was set explicitly (option or
///   `AWS_ALLOW_HTTP`). Options naming a local token file are checked against
///   `policy`, since the client would read that file.
/// * HDFS: `HdfsObjectStoreBuilder` for `scheme://authority`, with every
///   `hdfs.<key>` passed as the Hadoop configuration key `<key>` (case kept).
///
/// Building does not touch the network; credentials and name nodes are first
/// contacted by the first request.
///
/// # Errors
///
/// * [`FileError::UnknownOption`] for an option the store does not understand
///   (including options of another store kind), listing accepted keys.
/// * [`FileError::InvalidLocation`] when an option names a different bucket than the URL.
/// * [`FileError::PermissionDenied`] when a token-file option lies outside the roots.
/// * [`FileError::Store`], naming the URL, when the store's builder fails
///   (for example an option value of the wrong type).
pub fn build_object_store(
    location: &ResolvedLocation,
    store_options: &[(String, String)],
    policy: &PathPolicy,
) -> Result<Arc<dyn ObjectStore>, FileError> {
    match &location.kind {
        LocationKind::Local => {
            if let Some((option, _)) = store_options.first() {
                return Err(FileError::UnknownOption {
                    option: option.clone(),
                    valid: LOCAL_KEYS.to_string(),
                });
            }
            Ok(Arc::new(SandboxedLocalStore::new(Arc::new(policy.clone()))))
        }
        LocationKind::S3 { bucket } => build_s3(location, bucket, store_options, policy),
        LocationKind::Hdfs { authority } => build_hdfs(location, authority, store_options),
    }
}

fn build_s3(
    location: &ResolvedLocation,
    bucket: &str,
    store_options: &[(String, String)],
    policy: &PathPolicy,
) -> Result<Arc<dyn ObjectStore>, FileError> {
    let url = location.url.to_string();
    let store = s3_builder(&url, bucket, store_options, policy)?
        .build()
        .map_err(|source| FileError::Store { url, source })?;
    Ok(Arc::new(store))
}

/// The configured, not yet built, S3 builder (separate so tests can inspect it).
fn s3_builder(
    url: &str,
    bucket: &str,
    store_options: &[(String, String)],
    policy: &PathPolicy,
) -> Result<AmazonS3Builder, FileError> {
    let mut builder = AmazonS3Builder::from_env();
    let mut allow_http_explicit = std::env::var_os("AWS_ALLOW_HTTP").is_some();
    for (option, value) in store_options {
        let key = s3_config_key(option)?;
        match key {
            AmazonS3ConfigKey::Bucket if value != bucket => {
                return Err(FileError::InvalidLocation {
                    location: url.to_string(),
                    reason: format!(
                        "option '{option}' names bucket '{value}' but the location names \
                         bucket '{bucket}'"
                    ),
                });
            }
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp) => allow_http_explicit = true,
            // The client reads these files; a SQL user must not be able to point
            // it at files outside the sandbox.
            AmazonS3ConfigKey::WebIdentityTokenFile
            | AmazonS3ConfigKey::ContainerAuthorizationTokenFile => {
                policy.check(Path::new(value))?;
            }
            _ => {}
        }
        builder = builder.with_config(key, value);
    }
    let endpoint_is_http = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|endpoint| {
            endpoint
                .as_bytes()
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"http://"))
        });
    if endpoint_is_http && !allow_http_explicit {
        builder = builder.with_allow_http(true);
    }
    Ok(builder.with_bucket_name(bucket))
}

/// Maps `aws.<key>` / `s3.<key>` to the S3 setting it names.
fn s3_config_key(option: &str) -> Result<AmazonS3ConfigKey, FileError> {
    let unknown = || FileError::UnknownOption {
        option: option.to_string(),
        valid: S3_COMMON_KEYS.to_string(),
    };
    let key = S3_PREFIXES
        .iter()
        .find_map(|prefix| strip_prefix_ignore_case(option, prefix))
        .filter(|key| !key.is_empty())
        .ok_or_else(unknown)?
        .to_ascii_lowercase();
    key.parse::<AmazonS3ConfigKey>()
        .or_else(|_| format!("aws_{key}").parse::<AmazonS3ConfigKey>())
        .map_err(|_| unknown())
}

fn build_hdfs(
    location: &ResolvedLocation,
    authority: &str,
    store_options: &[(String, String)],
) -> Result<Arc<dyn ObjectStore>, FileError> {
    let mut config = Vec::with_capacity(store_options.len());
    for (option, value) in store_options {
        let key = strip_prefix_ignore_case(option, HDFS_PREFIX)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| FileError::UnknownOption {
                option: option.clone(),
                valid: HDFS_KEYS.to_string(),
            })?;
        // Hadoop keys are case-sensitive (name service ids are part of some), so
        // only the prefix is matched loosely.
        config.push((key.to_string(), value.clone()));
    }
    // The store addresses paths from the file system root; the URL's path is
    // the table's prefix, which DataFusion passes with every request.
    let base = format!("{}://{authority}", location.url.scheme());
    let store = HdfsObjectStoreBuilder::new()
        .with_url(base)
        .with_config(config)
        .build()
        .map_err(|source| FileError::Store {
            url: location.url.to_string(),
            source,
        })?;
    Ok(Arc::new(store))
}

/// `key` without `prefix` when it starts with `prefix` ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let head = key.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        // The matched bytes are ASCII, so this is a character boundary.
        key.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::resolve_location;

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy() -> (tempfile::TempDir, PathPolicy) {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = PathPolicy::new([dir.path().to_path_buf()]).expect("policy");
        (dir, policy)
    }

    fn s3_location(policy: &PathPolicy) -> ResolvedLocation {
        resolve_location("s3://bucket/events/", Path::new("/"), policy, true).expect("s3")
    }

    #[test]
    fn split_keeps_order_and_matches_prefixes_case_insensitively() {
        let (store, rest) = split_store_options(options(&[
            ("format.has_header", "true"),
            ("AWS.Region", "eu-west-1"),
            ("delimiter", ";"),
            ("s3.endpoint", "http://localhost:9000"),
            ("hdfs.dfs.client.use.datanode.hostname", "true"),
            ("awsregion", "x"),
        ]));
        assert_eq!(
            store,
            options(&[
                ("AWS.Region", "eu-west-1"),
                ("s3.endpoint", "http://localhost:9000"),
                ("hdfs.dfs.client.use.datanode.hostname", "true"),
            ])
        );
        assert_eq!(
            rest,
            options(&[
                ("format.has_header", "true"),
                ("delimiter", ";"),
                ("awsregion", "x"),
            ])
        );
    }

    #[test]
    fn misspelled_s3_option_is_unknown_and_named() {
        let (_dir, policy) = policy();
        let err = build_object_store(
            &s3_location(&policy),
            &options(&[("aws.acess_key", "AKID")]),
            &policy,
        )
        .unwrap_err();
        match &err {
            FileError::UnknownOption { option, valid } => {
                assert_eq!(option, "aws.acess_key");
                assert!(valid.contains("aws.access_key_id"), "{valid}");
            }
            other => panic!("expected UnknownOption, got {other:?}"),
        }
        assert!(err.to_string().contains("'aws.acess_key'"), "{err}");
    }

    #[test]
    fn valid_s3_options_build_without_network() {
        let (_dir, policy) = policy();
        let store = build_object_store(
            &s3_location(&policy),
            &options(&[
                ("aws.access_key_id", "AKID"),
                ("aws.secret_access_key", "SECRET"),
                ("AWS.REGION", "eu-west-1"),
                ("s3.endpoint", "http://localhost:9000"),
                ("aws.aws_virtual_hosted_style_request", "false"),
                ("aws.skip_signature", "false"),
                ("aws.session_token", "TOKEN"),
            ]),
            &policy,
        )
        .expect("store builds");
        assert_eq!(store.to_string(), "AmazonS3(bucket)");
    }

    #[test]
    fn s3_options_reach_the_builder_and_http_endpoint_implies_allow_http() {
        let (_dir, policy) = policy();
        let builder = s3_builder(
            "s3://bucket/",
            "bucket",
            &options(&[
                ("aws.access_key_id", "AKID"),
                ("AWS.REGION", "eu-west-1"),
                ("s3.endpoint", "http://localhost:9000"),
                ("aws.aws_virtual_hosted_style_request", "true"),
            ]),
            &policy,
        )
        .expect("builder");
        let value = |key| builder.get_config_value(&key);
        assert_eq!(
            value(AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some("AKID")
        );
        assert_eq!(
            value(AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(value(AmazonS3ConfigKey::Bucket).as_deref(), Some("bucket"));
        assert_eq!(
            value(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("true")
        );
        assert_eq!(
            value(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );

        // An explicit setting wins over the implication.
        let builder = s3_builder(
            "s3://bucket/",
            "bucket",
            &options(&[
                ("aws.endpoint", "http://localhost:9000"),
                ("aws.allow_http", "false"),
            ]),
            &policy,
        )
        .expect("builder");
        assert_eq!(
            builder
                .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
                .as_deref(),
            Some("false")
        );
    }

    #[test]
    fn hdfs_option_on_s3_location_is_unknown() {
        let (_dir, policy) = policy();
        let err = build_object_store(
            &s3_location(&policy),
            &options(&[("hdfs.dfs.replication", "1")]),
            &policy,
        )
        .unwrap_err();
        assert!(matches!(err, FileError::UnknownOption { .. }), "{err:?}");
    }

    #[test]
    fn bad_s3_option_value_is_a_store_error_naming_the_url() {
        let (_dir, policy) = policy();
        let err = build_object_store(
            &s3_location(&policy),
            &options(&[("aws.allow_http", "perhaps")]),
            &policy,
        )
        .unwrap_err();
        assert!(matches!(err, FileError::Store { .. }), "{err:?}");
        assert!(err.to_string().contains("s3://bucket/events/"), "{err}");
    }

    #[test]
    fn conflicting_bucket_option_is_refused() {
        let (_dir, policy) = policy();
        let err = build_object_store(
            &s3_location(&policy),
            &options(&[("aws.bucket", "other")]),
            &policy,
        )
        .unwrap_err();
        assert!(err.to_string().contains("'other'"), "{err}");
    }

    #[test]
    fn token_file_outside_roots_is_denied() {
        let (_dir, policy) = policy();
        let err = build_object_store(
            &s3_location(&policy),
            &options(&[("aws.web_identity_token_file", "/etc/passwd")]),
            &policy,
        )
        .unwrap_err();
        assert!(matches!(err, FileError::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn store_options_on_local_location_are_refused() {
        let (dir, policy) = policy();
        let location = resolve_location(
            dir.path().to_str().expect("utf-8"),
            Path::new("/"),
            &policy,
            true,
        )
        .expect("local");
        assert!(build_object_store(&location, &[], &policy).is_ok());
        let err =
            build_object_store(&location, &options(&[("aws.region", "x")]), &policy).unwrap_err();
        assert!(matches!(err, FileError::UnknownOption { .. }), "{err:?}");
    }

    #[test]
    fn hdfs_store_builds_with_hadoop_options() {
        let (_dir, policy) = policy();
        let location = resolve_location(
            "hdfs://127.0.0.1:9000/warehouse/",
            Path::new("/"),
            &policy,
            true,
        )
        .expect("hdfs");
        let store = build_object_store(
            &location,
            &options(&[("hdfs.dfs.client.use.datanode.hostname", "true")]),
            &policy,
        )
        .expect("store builds");
        assert!(store.to_string().contains("Hdfs"), "{store}");

        let err =
            build_object_store(&location, &options(&[("aws.region", "x")]), &policy).unwrap_err();
        match err {
            FileError::UnknownOption { option, valid } => {
                assert_eq!(option, "aws.region");
                assert!(valid.contains("hdfs."), "{valid}");
            }
            other => panic!("expected UnknownOption, got {other:?}"),
        }
    }
}
