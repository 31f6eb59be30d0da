//! The TypeScript client SDK (`sdk/`, `@switchboard/client`) against real processes: Redis, two
//! chat-nodes and a registry, started per test by [`Topology`].
//!
//! ```text
//!  sdk/test/scenarios.mjs ──node --test (ws)──────────┐
//!                         ──headless Chromium─────────┤──▶ registry ──▶ chat-node ×2 ──▶ Redis
//!                                                     │
//!  control server (this file): /sdk/* files, /token/USER[?ttl=S], /kill/NODE (SIGKILL), /drain/NODE (SIGTERM, restart)
//! ```
//!
//! The same scenarios run in Node and in the browser: room chat across two nodes, DMs with catch-up,
//! history paging, typing / read markers / last-seen, and a node drained (SIGTERM: the client follows
//! the `reconnect` notice) and another SIGKILLed mid-conversation, each with the messages counted
//! (sent, acknowledged, delivered, lost = 0, duplicated = 0). Another test speaks open identity to
//! a standalone node (`sdk/test/open.test.mjs`), one sends files to a standalone node
//! (`sdk/test/attachments.test.mjs`), one kills the node of an upload between two chunks
//! (`sdk/test/upload-failover.test.mjs`, files in MinIO), one runs the upload logic against a stand-in node
//! (`sdk/test/upload.test.mjs`), and one checks that the committed build (`sdk/dist/`, which the registry serves to the chat page) is exactly what
//! the pinned TypeScript compiler makes of `sdk/src/`.
//!
//! Needs `node` and the SDK's development dependencies (`npm ci` in `sdk/`; `scripts/test` runs it),
//! Debian's `chromium` and `chromium-driver` for the browser test, and built `chat-node` and
//! `registry` binaries. A missing one fails the test with the install line.

// Shared with browser.rs, which uses more of it.
#[allow(dead_code)]
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use e2e::client::tokens::{Credentials, TEST_TOKEN_TTL};
use e2e::topology::{Topology, TopologyConfig};
use serde_json::{Value, json};
use switchboard_runtime::report;
use switchboard_testkit::s3::S3Server;
use tokio::sync::Mutex;

/// One run of every scenario, topology start included, must finish within this.
const TEST_BUDGET: Duration = Duration::from_secs(300);
const INSTALL_NODE: &str = "apt-get install nodejs npm && (cd sdk && npm ci)   # or ./scripts/test";

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Fails with the install line when `node` or the SDK's development dependencies are missing.
fn require_node_and_sdk_dependencies() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: the SDK tests need Node.js 18 or later. Install it with:\n    {INSTALL_NODE}"
    );
    for dep in ["ws", "typescript"] {
        let dir = sdk_dir().join("node_modules").join(dep);
        assert!(
            dir.is_dir(),
            "{} is missing: install the SDK's development dependencies with:\n    {INSTALL_NODE}",
            dir.display()
        );
    }
}

/// The test's own HTTP server: the SDK's files for the browser, tokens, node kills and drains.
struct Control {
    credentials: Credentials,
    topology: Mutex<Topology>,
}

/// `GET /token/USER[?ttl=SECONDS]`: a token for `USER` (default lifetime: the test clients' one).
async fn token(
    State(c): State<Arc<Control>>,
    UrlPath(user): UrlPath<String>,
    Query(q): Query<TokenQuery>,
) -> (StatusCode, String) {
    let ttl = q.ttl.map_or(TEST_TOKEN_TTL, Duration::from_secs);
    match c.credentials.issuer() {
        Some(issuer) => (StatusCode::OK, issuer.mint(&user, ttl)),
        None => (StatusCode::NOT_FOUND, "open mode has no tokens".into()),
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    ttl: Option<u64>,
}

/// `POST /kill/NODE` SIGKILLs the node; `POST /drain/NODE` stops it with SIGTERM (the node drains and
/// exits), then starts it again so later scenarios have two nodes.
async fn disrupt(
    State(c): State<Arc<Control>>,
    UrlPath((action, node)): UrlPath<(String, String)>,
) -> (StatusCode, String) {
    let mut topology = c.topology.lock().await;
    let Some(i) = (0..topology.node_count()).find(|&i| topology.node_id(i) == node) else {
        return (StatusCode::NOT_FOUND, format!("no node {node}\n"));
    };
    let done = match action.as_str() {
        "kill" => topology.kill_node(i).map(|()| "killed".to_owned()),
        "drain" => match topology.stop_node(i, Duration::from_secs(30)).await {
            Ok(status) => topology
                .restart_node(i)
                .await
                .map(|()| format!("drained ({status}) and restarted")),
            Err(e) => Err(e),
        },
        _ => return (StatusCode::NOT_FOUND, format!("no action {action}\n")),
    };
    match done {
        Ok(what) => (StatusCode::OK, format!("{node}: {what}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, report::chain(&e)),
    }
}

/// `sdk/dist/*` and `sdk/test/*` (nothing else, no `..`), so the browser loads the SDK as a module.
async fn file(UrlPath(path): UrlPath<String>) -> impl IntoResponse {
    let allowed = (path.starts_with("dist/") || path.starts_with("test/"))
        && !path.contains("..")
        && path.matches('/').count() == 1;
    let content_type = match Path::new(&path).extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        _ => "",
    };
    match std::fs::read_to_string(sdk_dir().join(&path)) {
        Ok(body) if allowed && !content_type.is_empty() => {
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
        }
        _ => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}

/// A two-node cluster whose nodes and registry accept the control server's origin (its nodes keep
/// files in `s3` when given), and the control server. Returns the registry's URL and the control
/// server's.
async fn cluster_with_control(
    s3: Option<&S3Server>,
) -> Result<(String, String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control = format!("http://{}", listener.local_addr()?);
    let mut config =
        TopologyConfig::scaled(2, 1).with_node_args(["--allowed-origins", control.as_str()]);
    if let Some(s3) = s3 {
        config = config.with_s3(s3);
    }
    config
        .registry_args
        .extend(["--allowed-origins".to_owned(), control.clone()]);
    let topology = Topology::start(config).await?;
    let registry = topology.registry_url(0);
    let app = Router::new()
        .route("/token/{user}", get(token))
        .route("/{action}/{node}", post(disrupt))
        .route("/sdk/{*path}", get(file))
        .with_state(Arc::new(Control {
            credentials: topology.credentials().clone(),
            topology: Mutex::new(topology),
        }));
    let server = tokio::spawn(async move {
        // The server ends with the test; a failure to serve shows as the scenarios' fetch errors.
        let _ = axum::serve(listener, app).await;
    });
    Ok((registry, control, server))
}

/// The scenarios' figures (`figures TITLE: {...}` diagnostics), printed for the report.
fn print_figures(output: &str) {
    for line in output.lines().filter(|l| l.contains("figures ")) {
        println!("{}", line.trim_start_matches(['#', ' ', 'ℹ']));
    }
}

/// Runs `node --test FILE` in `sdk/` with `env`, prints the scenarios' figures and checks that
/// `passed` tests passed and none failed.
async fn node_test(file: &str, env: &[(&str, &str)], passed: usize) -> Result<()> {
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-force-exit", "--test-reporter=tap", file])
        .current_dir(sdk_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("run node --test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print_figures(&stdout);
    ensure!(
        out.status.success(),
        "{file} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains(&format!("# pass {passed}\n")) && stdout.contains("# fail 0"),
        "not every test of {file} ran:\n{stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_scenarios_pass_in_node_against_real_nodes() -> Result<()> {
    require_node_and_sdk_dependencies();
    tokio::time::timeout(TEST_BUDGET, async {
        let (registry, control, server) = cluster_with_control(None).await?;
        let env = [
            ("SWITCHBOARD_REGISTRY", registry.as_str()),
            ("SWITCHBOARD_CONTROL", control.as_str()),
        ];
        let passed = node_test("test/node.test.mjs", &env, 8).await;
        server.abort();
        passed
    })
    .await
    .context("the SDK's Node scenarios ran out of time")?
}

/// Open identity (a standalone node without Redis, its own registry): the client claims a name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_speaks_open_mode_to_a_standalone_node() -> Result<()> {
    require_node_and_sdk_dependencies();
    tokio::time::timeout(TEST_BUDGET, async {
        let topology = Topology::start(TopologyConfig::standalone()).await?;
        let node = topology.node_http_url(0);
        node_test("test/open.test.mjs", &[("SWITCHBOARD_REGISTRY", &node)], 1).await
    })
    .await
    .context("the SDK's open-mode test ran out of time")?
}

/// Files (`sdk/test/attachments.test.mjs`) against a standalone node, whose default store is a local
/// directory: chunked upload with progress, download by the other member, a file of the wrong type
/// failed for both, a direct message with a file, history with the current states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_sends_files_to_a_standalone_node() -> Result<()> {
    require_node_and_sdk_dependencies();
    tokio::time::timeout(TEST_BUDGET, async {
        let topology = Topology::start(TopologyConfig::standalone()).await?;
        let node = topology.node_http_url(0);
        node_test(
            "test/attachments.test.mjs",
            &[("SWITCHBOARD_REGISTRY", &node)],
            3,
        )
        .await
    })
    .await
    .context("the SDK's attachment tests ran out of time")?
}

/// An upload outlives its node (`sdk/test/upload-failover.test.mjs`): files in MinIO, the sender's
/// node SIGKILLed between two chunks, the upload finished through the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_upload_goes_on_through_another_node_when_its_node_dies() -> Result<()> {
    require_node_and_sdk_dependencies();
    tokio::time::timeout(TEST_BUDGET, async {
        let s3 = S3Server::start()
            .await
            .context("starting MinIO (scripts/test builds its binary)")?;
        let (registry, control, server) = cluster_with_control(Some(&s3)).await?;
        let env = [
            ("SWITCHBOARD_REGISTRY", registry.as_str()),
            ("SWITCHBOARD_CONTROL", control.as_str()),
        ];
        let passed = node_test("test/upload-failover.test.mjs", &env, 1).await;
        server.abort();
        passed
    })
    .await
    .context("the SDK's upload failover test ran out of time")?
}

/// The upload logic (`sdk/test/upload.test.mjs`: chunk boundaries; resume from the node's offset
/// after a dropped connection, a 503, 409 offset_mismatch / upload_in_progress, 400 incomplete;
/// 429 waited out, 415 not retried, bounded retries, cancellation; attachment updates applied once,
/// and files last seen pending looked up again after a reconnect) against a stand-in node the test
/// itself runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_uploads_resume_and_apply_attachment_states_idempotently() -> Result<()> {
    require_node_and_sdk_dependencies();
    tokio::time::timeout(TEST_BUDGET, node_test("test/upload.test.mjs", &[], 11))
        .await
        .context("the SDK's upload tests ran out of time")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_scenarios_pass_in_headless_chromium_against_real_nodes() -> Result<()> {
    require_node_and_sdk_dependencies();
    webdriver::require_chromium();
    tokio::time::timeout(TEST_BUDGET, async {
        let (registry, control, server) = cluster_with_control(None).await?;
        let driver = webdriver::ChromeDriver::start().await?;
        let page = driver.page(1024, 768).await?;
        page.goto(&format!(
            "{control}/sdk/test/browser.html?registry={registry}"
        ))
        .await?;
        let results = loop {
            let v = page
                .js(
                    "return window.sdkDone ? window.sdkResults : null;",
                    json!([]),
                )
                .await?;
            if !v.is_null() {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        page.close().await?;
        driver.stop().await;
        server.abort();
        let results = results.as_array().cloned().unwrap_or_default();
        for r in &results {
            println!("figures {}: {}", r["title"], r["figures"]);
        }
        let failed: Vec<&Value> = results.iter().filter(|r| r["ok"] != json!(true)).collect();
        ensure!(
            failed.is_empty(),
            "scenarios failed in Chromium: {failed:#?}"
        );
        ensure!(
            results.len() == 7,
            "{} scenarios ran, expected 7",
            results.len()
        );
        Ok(())
    })
    .await
    .context("the SDK's browser scenarios ran out of time")?
}

/// The committed `sdk/dist/` (served to the chat page without npm at build time) must be what the
/// pinned compiler makes of `sdk/src/`: an edit to the sources without a rebuild fails here.
#[test]
fn committed_sdk_build_equals_a_fresh_compile_of_its_sources() -> Result<()> {
    require_node_and_sdk_dependencies();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-dist");
    let _ = std::fs::remove_dir_all(&out_dir);
    let status = std::process::Command::new("node")
        .arg("node_modules/typescript/bin/tsc")
        .args(["-p", ".", "--outDir"])
        .arg(&out_dir)
        .current_dir(sdk_dir())
        .status()
        .context("run tsc")?;
    ensure!(status.success(), "tsc failed: {status}");
    let names = |dir: &Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let dist = sdk_dir().join("dist");
    let fresh = names(&out_dir)?;
    ensure!(
        fresh == names(&dist)?,
        "sdk/dist has other files than a fresh build ({fresh:?}): run `npm run build` in sdk/ and commit"
    );
    for name in &fresh {
        let a = std::fs::read_to_string(out_dir.join(name))?;
        let b = std::fs::read_to_string(dist.join(name))?;
        if a != b {
            bail!(
                "sdk/dist/{name} differs from a fresh build of sdk/src: run `npm run build` in sdk/ and commit"
            );
        }
    }
    Ok(())
}
