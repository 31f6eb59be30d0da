//! Steps of the chat page that several browser tests take: waiting for something to show, logging in
//! through the form, putting two users on two different nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::webdriver::Page;

/// How long one visible change may take to show on a page.
pub const SHOW: Duration = Duration::from_secs(20);
/// The room every browser test chats in.
pub const ROOM: &str = "lobby";

/// Where a screenshot named `name` goes: `$SWITCHBOARD_SCREENSHOTS` (relative to the workspace root)
/// when set, else under the target directory.
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHBOARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    let dir = if dir.is_relative() {
        // `cargo test` runs in the package directory; a relative path means the workspace root.
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir)
    } else {
        dir
    };
    dir.join(name)
}

/// Polls `script` in `page` until it returns something truthy and returns that; on timeout the error
/// quotes the end of what the page shows.
pub async fn wait_for(
    page: &Page,
    what: &str,
    script: &str,
    args: Value,
    within: Duration,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = page.js(script, args.clone()).await?;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        };
        if truthy {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            let shown = page
                .js("return document.body.innerText.slice(-2000);", json!([]))
                .await
                .unwrap_or_default();
            bail!(
                "timed out after {within:?} waiting for {what}; the page shows:\n{}",
                shown.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs `user` in through the form and returns the node the page says it is on.
pub async fn login(page: &Page, base: &str, user: &str) -> Result<String> {
    page.goto(&format!("{base}/")).await?;
    page.type_into("#login-user", user).await?;
    page.js(
        "document.getElementById('login-room').value = '';",
        json!([]),
    )
    .await?;
    page.type_into("#login-room", ROOM).await?;
    page.click("#login-form button[type=submit]").await?;
    connected_node(page, user).await
}

/// Waits until `user`'s page is connected and lists the user; returns the node it is on.
pub async fn connected_node(page: &Page, user: &str) -> Result<String> {
    let node = wait_for(
        page,
        &format!("{user} to connect and see itself in the member list"),
        "const c = document.getElementById('conn');
         const me = document.querySelector(`#members li[data-user=\"${arguments[0]}\"]`);
         return c.dataset.state === 'connected' && me ? document.getElementById('node-name').textContent : null;",
        json!([user]),
        SHOW,
    )
    .await?;
    Ok(node.as_str().context("node name")?.to_owned())
}

/// The registry's load set (`GET /v1/nodes`).
pub async fn load_set(registry: &str) -> Result<Vec<Value>> {
    let body: Value = reqwest::get(format!("{registry}/v1/nodes"))
        .await?
        .json()
        .await?;
    Ok(body["nodes"].as_array().cloned().unwrap_or_default())
}

/// Waits until the registry reports at least `at_least` connections on `node`.
pub async fn wait_connections(registry: &str, node: &str, at_least: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SHOW;
    loop {
        let nodes = load_set(registry).await?;
        if nodes
            .iter()
            .any(|n| n["id"] == json!(node) && n["connections"].as_u64().unwrap_or(0) >= at_least)
        {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{node} never reported {at_least} connection(s): {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs `first` and `second` in on two different nodes: the registry hands out the least-loaded
/// node, so once the first user's node reports the connection the second lands on the other one (a
/// few tries, leaving and joining again, cover a slow report). Returns both nodes.
pub async fn login_apart(
    registry: &str,
    (first, first_page): (&str, &Page),
    (second, second_page): (&str, &Page),
) -> Result<(String, String)> {
    let first_node = login(first_page, registry, first).await?;
    wait_connections(registry, &first_node, 1).await?;
    let mut second_node = login(second_page, registry, second).await?;
    for _ in 0..5 {
        if second_node != first_node {
            break;
        }
        second_page.click("#leave-btn").await?;
        wait_connections(registry, &first_node, 1).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        second_page.click("#login-form button[type=submit]").await?;
        second_node = connected_node(second_page, second).await?;
    }
    ensure!(
        second_node != first_node,
        "{first} and {second} both landed on {first_node}"
    );
    Ok((first_node, second_node))
}
