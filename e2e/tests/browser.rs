//! The web chat page and the cluster dashboard in real headless Chromium, against a scaled topology of
//! real processes (Redis, two chat-nodes with self-registration, one registry). The page draws what
//! the client SDK (`sdk/`, served at `/assets/sdk/`) reports, so this also drives the SDK's
//! reconnect, recovery and resend logic through the page; `sdk.rs` tests the SDK on its own.
//!
//! Two browsers log in through the page's form, land on different nodes, and chat: messages, typing
//! indicator, read markers, a direct message. Then the node of one of them is SIGKILLed while the
//! other keeps sending; the orphaned page must find the surviving node through the registry, re-join
//! with `since`, and show every message exactly once (counted as DOM elements per sequence number);
//! then the node comes back and the other one drains (SIGTERM), and both pages follow its `reconnect`
//! notice without losing a message. A third browser watches the dashboard lose the dead node and see
//! it come back, then logs in as a third user whose leaving shows as "away" with a last-seen time.
//!
//! Needs Debian's `chromium` and `chromium-driver` (a missing one fails the test with the install
//! line) and built `chat-node` and `registry` binaries (`cargo build -p chat-node -p registry`).
//! Screenshots go to `$SWITCHBOARD_SCREENSHOTS` when set (the repository's are made with
//! `SWITCHBOARD_SCREENSHOTS=docs/screenshots`), else under the target directory.

#[path = "browser/webdriver.rs"]
mod webdriver;

// Shared with browser_attachments.rs, which uses other parts of it.
#[allow(dead_code)]
#[path = "browser/chat.rs"]
mod chat;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chat::{SHOW, login, login_apart, screenshot_path, wait_for};
use e2e::topology::{Topology, TopologyConfig};
use serde_json::json;
use webdriver::{ChromeDriver, ENTER, Page};

/// The whole scenario, topology start included, must finish within this.
const TEST_BUDGET: Duration = Duration::from_secs(240);

async fn say(page: &Page, text: &str) -> Result<()> {
    page.type_into("#composer-input", &format!("{text}{ENTER}"))
        .await
}

/// The room messages a page shows, in DOM order: (seq, from, body).
async fn shown_messages(page: &Page) -> Result<Vec<(u64, String, String)>> {
    let v = page
        .js(
            "return [...document.querySelectorAll('#messages li.msg[data-seq]')]
               .map(e => [Number(e.dataset.seq), e.dataset.from, e.querySelector('.body').textContent]);",
            json!([]),
        )
        .await?;
    let rows: Vec<(u64, String, String)> = serde_json::from_value(v)?;
    Ok(rows)
}

async fn wait_for_message(page: &Page, who: &str, body: &str) -> Result<()> {
    wait_for(
        page,
        &format!("{who}'s page to show the message {body:?}"),
        "return [...document.querySelectorAll('#messages li.msg[data-seq] .body')].some(b => b.textContent === arguments[0]);",
        json!([body]),
        SHOW,
    )
    .await
    .map(drop)
}

/// Every message shows once, in strictly increasing sequence order, with no send left pending.
async fn assert_exactly_once(page: &Page, who: &str, expected: &[&str]) -> Result<Vec<u64>> {
    let rows = shown_messages(page).await?;
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{who}: sequences not strictly increasing (a duplicate or a misorder): {seqs:?}"
    );
    for body in expected {
        let n = rows.iter().filter(|r| r.2 == *body).count();
        ensure!(
            n == 1,
            "{who}: {body:?} is shown {n} times, expected once; shown: {rows:?}"
        );
    }
    for seq in &seqs {
        let n = page
            .count(&format!("#messages li.msg[data-seq=\"{seq}\"]"))
            .await?;
        ensure!(n == 1, "{who}: {n} DOM elements for seq {seq}");
    }
    let pending = page.count("#messages li.pending").await?;
    ensure!(pending == 0, "{who}: {pending} sends still pending");
    Ok(seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_two_nodes_chat_and_survive_a_node_kill_and_a_drain() -> Result<()> {
    webdriver::require_chromium();
    tokio::time::timeout(TEST_BUDGET, scenario())
        .await
        .context("the browser scenario ran out of time")?
}

async fn scenario() -> Result<()> {
    let mut topo = Topology::start(TopologyConfig::scaled(2, 1)).await?;
    let registry = topo.registry_url(0);
    let driver = ChromeDriver::start().await?;

    let dash = driver.page(1280, 760).await?;
    dash.goto(&format!("{registry}/dashboard")).await?;
    wait_for(
        &dash,
        "the dashboard to show 2 nodes",
        "return document.getElementById('node-count').textContent === '2';",
        json!([]),
        SHOW,
    )
    .await?;

    // Two browsers, two nodes.
    let alice = driver.page(1280, 800).await?;
    let bob = driver.page(1280, 800).await?;
    let (alice_node, bob_node) = login_apart(&registry, ("alice", &alice), ("bob", &bob)).await?;

    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        wait_for(
            page,
            &format!("{who} to see both members"),
            "return ['alice', 'bob'].every(u => document.querySelector(`#members li[data-user=\"${u}\"]`));",
            json!([]),
            SHOW,
        )
        .await?;
    }

    // Typing shows on the other node before the message is sent.
    alice
        .type_into("#composer-input", "hello bob, I am on ")
        .await?;
    wait_for(
        &bob,
        "bob to see alice typing",
        "return document.getElementById('typing').textContent.includes('alice is typing');",
        json!([]),
        SHOW,
    )
    .await?;
    let hello = format!("hello bob, I am on {alice_node}");
    alice
        .type_into("#composer-input", &format!("{alice_node}{ENTER}"))
        .await?;
    wait_for_message(&bob, "bob", &hello).await?;
    let reply = format!("hi alice, {bob_node} here");
    say(&bob, &reply).await?;
    wait_for_message(&alice, "alice", &reply).await?;
    wait_for(
        &alice,
        "alice to see bob's read marker",
        "return [...document.querySelectorAll('#messages li.msg .seen')].some(s => !s.hidden && s.textContent.includes('bob'));",
        json!([]),
        SHOW,
    )
    .await?;

    // A direct message: click the member, type, Enter.
    alice.click("#members li[data-user=\"bob\"] button").await?;
    say(&alice, "psst, this one is just for you").await?;
    wait_for(
        &bob,
        "bob to get alice's direct message",
        "const log = document.querySelector('.dm-log[data-peer=\"alice\"]');
         return log && [...log.querySelectorAll('li.msg .body')].some(b => b.textContent === 'psst, this one is just for you')
           && document.querySelector('[data-conv=\"dm:alice\"] .badge');",
        json!([]),
        SHOW,
    )
    .await?;
    alice.click("[data-conv=\"room\"]").await?;
    say(&alice, "see you in a bit").await?;
    wait_for_message(&bob, "bob", "see you in a bit").await?;
    wait_for(
        &dash,
        "the dashboard to count both connections",
        "return document.getElementById('conn-total').textContent === '2';",
        json!([]),
        SHOW,
    )
    .await?;
    alice.screenshot(&screenshot_path("chat.png")).await?;

    // Bob's node dies without a word; alice keeps talking while bob is away. Bob's page is kept off
    // the network until alice's messages are stored, so they can only reach it through recovery.
    let dead: usize = bob_node
        .strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .context("node id")?;
    bob.set_offline(true).await?;
    topo.kill_node(dead)?;
    wait_for(
        &bob,
        "bob's page to notice the dead node",
        "return document.getElementById('conn').dataset.state === 'reconnecting'
           && document.querySelector('#messages li.notice[data-kind=\"reconnect\"][data-state=\"lost\"]');",
        json!([]),
        SHOW,
    )
    .await?;
    let meanwhile = [
        "are you still there?",
        "your node just died",
        "this is the third one",
    ];
    for text in meanwhile {
        say(&alice, text).await?;
    }
    for text in meanwhile {
        wait_for_message(&alice, "alice", text).await?;
    }
    wait_for(
        &alice,
        "alice's sends to be acknowledged",
        "return !document.querySelector('#messages li.pending');",
        json!([]),
        SHOW,
    )
    .await?;
    // Bob writes while cut off: the send waits and goes out (once) after the reconnect.
    let offline_send = "typed while my node was dead";
    say(&bob, offline_send).await?;
    ensure!(
        bob.count("#messages li.pending").await? == 1,
        "bob's offline send is not shown as pending"
    );
    bob.set_offline(false).await?;

    let notice = wait_for(
        &bob,
        "bob's page to reconnect to the surviving node and finish recovery",
        "const n = [...document.querySelectorAll('#messages li.notice[data-kind=\"reconnect\"]')].pop();
         return document.getElementById('conn').dataset.state === 'connected'
           && document.getElementById('node-name').textContent === arguments[0]
           && n && n.dataset.state === 'done' ? [n.textContent, Number(n.dataset.recovered)] : null;",
        json!([alice_node]),
        SHOW,
    )
    .await?;
    let (notice_text, recovered): (String, u64) = serde_json::from_value(notice)?;
    ensure!(
        notice_text.contains(&format!("Reconnected to {alice_node} (was {bob_node})")),
        "notice: {notice_text}"
    );
    for text in meanwhile {
        wait_for_message(&bob, "bob", text).await?;
    }
    let mut expected = vec![hello.as_str(), reply.as_str(), "see you in a bit"];
    expected.extend(meanwhile);
    wait_for_message(&alice, "alice", offline_send).await?;
    expected.push(offline_send);
    let bob_seqs = assert_exactly_once(&bob, "bob", &expected).await?;
    let alice_seqs = assert_exactly_once(&alice, "alice", &expected).await?;
    ensure!(
        bob_seqs == alice_seqs,
        "bob shows {bob_seqs:?}, alice shows {alice_seqs:?}"
    );
    ensure!(
        bob_seqs == (1..=u64::try_from(bob_seqs.len())?).collect::<Vec<_>>(),
        "a gap in bob's sequence numbers: {bob_seqs:?}"
    );
    ensure!(
        recovered == 3,
        "bob's page recovered {recovered} messages, expected the 3 sent while it was away"
    );
    ensure!(
        notice_text.contains("recovered 3 missed messages"),
        "notice: {notice_text}"
    );

    // Sending still works from the new node.
    let back = format!("back, now on {alice_node}");
    say(&bob, &back).await?;
    wait_for_message(&alice, "alice", &back).await?;
    assert_exactly_once(&bob, "bob", &[back.as_str()]).await?;
    bob.screenshot(&screenshot_path("chat-reconnected.png"))
        .await?;

    // The dashboard sees the load set shrink and marks the dead node.
    wait_for(
        &dash,
        "the dashboard to show 1 node and mark the dead one as gone",
        "return document.getElementById('node-count').textContent === '1'
           && document.querySelector(`tr[data-node=\"${arguments[0]}\"][data-state=\"gone\"]`);",
        json!([bob_node]),
        SHOW,
    )
    .await?;
    dash.screenshot(&screenshot_path("dashboard-node-gone.png"))
        .await?;

    // The dead node comes back and the surviving one drains (SIGTERM): both pages get the node's
    // `reconnect` notice and move to the restarted node without losing a message.
    topo.restart_node(dead).await?;
    wait_for(
        &dash,
        "the dashboard to show the restarted node as new",
        "return document.getElementById('node-count').textContent === '2'
           && document.querySelector(`tr[data-node=\"${arguments[0]}\"][data-state=\"new\"]`);",
        json!([bob_node]),
        SHOW,
    )
    .await?;
    dash.screenshot(&screenshot_path("dashboard.png")).await?;
    let survivor: usize = alice_node
        .strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .context("node id")?;
    topo.signal_term_node(survivor)?;
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        wait_for(
            page,
            &format!("{who}'s page to move off the draining node"),
            "const n = [...document.querySelectorAll('#messages li.notice[data-kind=\"reconnect\"]')].pop();
             return document.getElementById('conn').dataset.state === 'connected'
               && document.getElementById('node-name').textContent === arguments[0]
               && n && n.dataset.state === 'done' && n.textContent.includes(`was ${arguments[1]}`);",
            json!([bob_node, alice_node]),
            SHOW,
        )
        .await?;
    }
    let after_drain = "made it through the drain";
    say(&alice, after_drain).await?;
    wait_for_message(&bob, "bob", after_drain).await?;
    expected.extend([back.as_str(), after_drain]);
    let bob_seqs = assert_exactly_once(&bob, "bob", &expected).await?;
    let alice_seqs = assert_exactly_once(&alice, "alice", &expected).await?;
    ensure!(
        bob_seqs == alice_seqs,
        "bob shows {bob_seqs:?}, alice shows {alice_seqs:?}"
    );
    topo.wait_node_exit(survivor, Duration::from_secs(30))
        .await?;

    // A member who leaves is listed as away with a last-seen time. (Bob's presence through the dead
    // node lingers until it expires, so a fresh user shows this.)
    let carol = dash;
    login(&carol, &registry, "carol").await?;
    wait_for(
        &alice,
        "alice to see carol join",
        "return document.querySelector('#members li[data-user=\"carol\"]');",
        json!([]),
        SHOW,
    )
    .await?;
    carol.click("#leave-btn").await?;
    wait_for(
        &alice,
        "alice to see carol under Away with a last-seen time",
        "const c = document.querySelector('#away li[data-user=\"carol\"] .sub');
         return c && !document.querySelector('#members li[data-user=\"carol\"]') && /last seen/.test(c.textContent);",
        json!([]),
        SHOW,
    )
    .await?;

    for page in [alice, bob, carol] {
        page.close().await?;
    }
    driver.stop().await;
    topo.shutdown();
    Ok(())
}
