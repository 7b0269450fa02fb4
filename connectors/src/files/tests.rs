//! End-to-end checks that DataFusion, reading through the pieces of this
//! module the way the engine does, only ever sees files inside the roots.

use std::path::{Path, PathBuf};

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::{CsvReadOptions, SessionContext};

use super::{build_object_store, resolve_location, PathPolicy};

struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    root: PathBuf,
    policy: PathPolicy,
}

/// `root/data/{a,b}.csv` (one row each) and `root/data/leak.csv`, a symlink to a
/// two-row CSV outside the root.
fn fixture() -> Fixture {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let outside_dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(root_dir.path()).expect("canonicalize");
    std::fs::create_dir(root.join("data")).expect("mkdir");
    std::fs::write(root.join("data/a.csv"), "x\n1\n").expect("write");
    std::fs::write(root.join("data/b.csv"), "x\n2\n").expect("write");
    let secret = outside_dir.path().join("secret.csv");
    std::fs::write(&secret, "x\n98\n99\n").expect("write");
    std::os::unix::fs::symlink(&secret, root.join("data/leak.csv")).expect("symlink");
    let policy = PathPolicy::new([root.clone()]).expect("policy");
    Fixture {
        _dirs: (root_dir, outside_dir),
        root,
        policy,
    }
}

/// A session whose `file://` store is the sandbox, as the engine sets it up.
fn session(f: &Fixture) -> SessionContext {
    let ctx = SessionContext::new();
    let any_local = resolve_location(
        f.root.to_str().expect("utf-8"),
        Path::new("/"),
        &f.policy,
        true,
    )
    .expect("root resolves");
    let store = build_object_store(&any_local, &[], &f.policy).expect("local store");
    let url = url::Url::parse("file://").expect("url");
    ctx.register_object_store(&url, store);
    ctx
}

async fn sum_x(ctx: &SessionContext, table_path: &str) -> i64 {
    ctx.register_csv("t", table_path, CsvReadOptions::new())
        .await
        .expect("register");
    let batches = ctx
        .sql("SELECT CAST(sum(x) AS BIGINT) AS s FROM t")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .expect("int64");
    column.value(0)
}

#[tokio::test]
async fn directory_table_skips_symlink_leaving_the_root() {
    let f = fixture();
    let ctx = session(&f);
    let resolved = resolve_location("data", &f.root, &f.policy, true).expect("resolves");
    assert!(
        resolved.url.as_str().ends_with("/data/"),
        "{}",
        resolved.url
    );
    // 1 + 2 from a.csv and b.csv; leak.csv would add 98 + 99.
    assert_eq!(sum_x(&ctx, resolved.url.as_str()).await, 3);
}

#[tokio::test]
async fn glob_display_lists_with_the_glob() {
    let f = fixture();
    let ctx = session(&f);
    let resolved = resolve_location("data/a*.csv", &f.root, &f.policy, true).expect("resolves");
    let glob = resolved.glob.as_deref().expect("glob kept");
    assert_eq!(glob, "a*.csv");
    let listing = ListingTableUrl::parse(&resolved.display).expect("parses");
    assert!(listing.get_glob().is_some());
    assert_eq!(sum_x(&ctx, &resolved.display).await, 1);
}

#[tokio::test]
async fn reading_a_symlink_to_outside_fails_with_permission_denied() {
    let f = fixture();
    let ctx = session(&f);
    // The path itself resolves outside, so resolution already refuses it ...
    let err = resolve_location("data/leak.csv", &f.root, &f.policy, true).unwrap_err();
    assert!(err.to_string().starts_with("permission denied"), "{err}");
    // ... and a URL that bypasses resolution is stopped by the store.
    let bypass = format!("file://{}/data/leak.csv", f.root.display());
    let result = ctx.register_csv("t", &bypass, CsvReadOptions::new()).await;
    let message = match result {
        Err(e) => e.to_string(),
        Ok(()) => match ctx.sql("SELECT * FROM t").await {
            Err(e) => e.to_string(),
            Ok(df) => df
                .collect()
                .await
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string()),
        },
    };
    assert!(message.contains("allowed root"), "{message}");
}
