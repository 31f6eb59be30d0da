//! Files in the web chat page, in real headless Chromium, against real processes: Redis, two
//! chat-nodes that store attachments in a real S3 server (MinIO) and a registry; and a standalone
//! node with its default local-directory store.
//!
//! ```text
//!  alice's page ──WebSocket──▶ node-a ──┐                 ┌──▶ MinIO (bucket "switchboard")
//!     │  PUT /v1/uploads/… (chunks)     ├── Redis ────────┤
//!  bob's page   ──WebSocket──▶ node-b ──┘                 └── any node serves any attachment
//!     └─ <img thumbnail_url>, fetch(url) from node-b
//! ```
//!
//! Alice puts a PNG made by the test into the page's file input (as a user picking a file would),
//! sees its preview in the tray and sends it with a caption over a slowed link; bob, on the other
//! node, sees it pending, then the thumbnail load and downloads the file from his page, byte for byte. Then alice sends a file named
//! `.png` whose bytes are text: both pages show it as failed, with the reason. A file of a type the
//! node does not take is refused with a clear message, and a direct message carries a file that the
//! other user downloads. The standalone check sends a text file and downloads it back, drops one on
//! the conversation, and watches a slowed upload's progress until it is cancelled.
//!
//! Needs Debian's `chromium` and `chromium-driver`, the MinIO binary (`scripts/test` builds it), and
//! built `chat-node` and `registry` binaries; a missing one fails the test with how to get it.

// Shared with browser.rs and sdk.rs, which use more of it.
#[allow(dead_code)]
#[path = "browser/webdriver.rs"]
mod webdriver;

// Shared with browser.rs, which uses other parts of it.
#[allow(dead_code)]
#[path = "browser/chat.rs"]
mod chat;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use chat::{SHOW, login, login_apart, screenshot_path, wait_for};
use e2e::topology::{Topology, TopologyConfig};
use serde_json::{Value, json};
use switchboard_testkit::s3::S3Server;
use webdriver::{ChromeDriver, ENTER, Page};

/// The whole scenario, topology and MinIO start included, must finish within this.
const TEST_BUDGET: Duration = Duration::from_secs(240);

/// A directory of its own for the files this run puts into file inputs.
fn file_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "attachments-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A real PNG (a gradient, so it compresses to something of a few KiB), written to `dir/name`.
fn write_png(dir: &Path, name: &str, width: u32, height: u32) -> Result<(PathBuf, Vec<u8>)> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            u8::try_from(x * 255 / width).unwrap_or(255),
            u8::try_from(y * 255 / height).unwrap_or(255),
            u8::try_from((x ^ y) & 0xff).unwrap_or(0),
        ])
    });
    let path = dir.join(name);
    img.save_with_format(&path, image::ImageFormat::Png)?;
    let bytes = std::fs::read(&path)?;
    Ok((path, bytes))
}

/// Picks `path` in the page's file input (chromedriver hands the file to the input as a user's pick
/// would) and waits for it to show in the tray; returns whether the tray shows an image preview.
async fn pick_file(page: &Page, path: &Path) -> Result<bool> {
    page.type_into("#file-input", &path.display().to_string())
        .await?;
    let name = path
        .file_name()
        .context("file name")?
        .to_string_lossy()
        .into_owned();
    let tray = wait_for(
        page,
        &format!("{name} to show in the tray"),
        "const li = [...document.querySelectorAll('#attach-tray li')].find(l => l.dataset.name === arguments[0]);
         return li ? { preview: !!li.querySelector('img') } : null;",
        json!([name]),
        SHOW,
    )
    .await?;
    Ok(tray["preview"] == json!(true))
}

/// The state of the attachment named `name` in the page's room log once it is no longer pending:
/// `{state, text, href, thumb, thumbLoaded, naturalWidth, naturalHeight, messageFailed}`.
async fn settled(page: &Page, who: &str, name: &str) -> Result<Value> {
    wait_for(
        page,
        &format!("{who}'s page to show {name} as ready or failed"),
        "const atts = [...document.querySelectorAll('#messages li.msg[data-seq] .att')];
         const a = atts.find(e => (e.querySelector('img') || {}).alt === arguments[0]
                               || (e.querySelector('.att-name') || {}).textContent === arguments[0]);
         if (!a || a.dataset.state === 'pending') return null;
         const img = a.querySelector('.att-thumb img');
         if (img && !(img.complete && img.naturalWidth > 0)) return null;
         const link = a.querySelector('a.att-thumb, a.download');
         return { state: a.dataset.state, text: a.textContent, href: link ? link.href : null,
                  thumb: img ? img.src : null, naturalWidth: img ? img.naturalWidth : 0,
                  naturalHeight: img ? img.naturalHeight : 0,
                  messageFailed: a.closest('li.msg').classList.contains('att-failed') };",
        json!([name]),
        SHOW,
    )
    .await
}

/// Fetches `url` from inside the page (so with the page's origin, as its own script would) and
/// returns the status, the content type and the body.
async fn fetch_from_page(page: &Page, url: &str) -> Result<(u64, String, Vec<u8>)> {
    page.js(
        "window.__fetched = null;
         fetch(arguments[0]).then(async r => {
           const b = new Uint8Array(await r.arrayBuffer());
           let s = ''; for (const x of b) s += String.fromCharCode(x);
           window.__fetched = { status: r.status, type: r.headers.get('content-type'), body: btoa(s) };
         }).catch(e => { window.__fetched = { error: String(e) }; });",
        json!([url]),
    )
    .await?;
    let got = wait_for(
        page,
        "the page's fetch to finish",
        "return window.__fetched;",
        json!([]),
        SHOW,
    )
    .await?;
    ensure!(
        got.get("error").is_none(),
        "fetching {url} from the page failed: {got}"
    );
    let body = base64::engine::general_purpose::STANDARD
        .decode(got["body"].as_str().context("body")?)
        .context("base64")?;
    Ok((
        got["status"].as_u64().unwrap_or(0),
        got["type"].as_str().unwrap_or("").to_owned(),
        body,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_sent_on_one_node_shows_and_downloads_on_another_and_a_fake_one_fails()
-> Result<()> {
    webdriver::require_chromium();
    tokio::time::timeout(TEST_BUDGET, scaled_scenario())
        .await
        .context("the attachments browser scenario ran out of time")?
}

async fn scaled_scenario() -> Result<()> {
    let s3 = S3Server::start()
        .await
        .context("starting MinIO (scripts/test builds its binary)")?;
    let topo = Topology::start(TopologyConfig::scaled(2, 1).with_s3(&s3)).await?;
    let registry = topo.registry_url(0);
    let driver = ChromeDriver::start().await?;
    let alice = driver.page(1280, 800).await?;
    let bob = driver.page(1280, 800).await?;
    let (alice_node, bob_node) = login_apart(&registry, ("alice", &alice), ("bob", &bob)).await?;

    // A real image, picked through the file input: previewed in the tray, sent with a caption.
    let dir = file_dir()?;
    let (png_path, png) = write_png(&dir, "gradient.png", 640, 400)?;
    ensure!(
        pick_file(&alice, &png_path).await?,
        "the tray shows no preview of the picked image"
    );
    let caption = format!("a gradient from {alice_node}");
    // Alice's upload link is slowed down, so bob's page shows the file pending first.
    alice.cdp("Network.enable", json!({})).await?;
    alice
        .cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 16 << 10 }),
        )
        .await?;
    alice
        .type_into("#composer-input", &format!("{caption}{ENTER}"))
        .await?;
    wait_for(
        &bob,
        "bob's page to show the image pending while alice uploads it",
        "const a = [...document.querySelectorAll('#messages li.msg[data-seq] .att[data-state=\"pending\"]')]
           .find(e => (e.querySelector('.att-name') || {}).textContent === 'gradient.png');
         return a && a.textContent.includes('Waiting for the upload');",
        json!([]),
        SHOW,
    )
    .await?;
    alice
        .cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
        )
        .await?;

    let seen = settled(&bob, "bob", "gradient.png").await?;
    ensure!(
        seen["state"] == json!("ready"),
        "bob's page shows the image as {seen}"
    );
    ensure!(
        seen["naturalWidth"].as_u64().unwrap_or(0) <= 320
            && seen["naturalHeight"].as_u64().unwrap_or(0) <= 320
            && seen["naturalWidth"].as_u64().unwrap_or(0) >= 300,
        "the thumbnail is not the image scaled to at most 320 px: {seen}"
    );
    let thumb = seen["thumb"].as_str().context("thumbnail URL")?;
    ensure!(
        thumb.starts_with(&topo.node_http_url(node_index(&topo, &bob_node)?)),
        "bob's thumbnail comes from {thumb}, not from his node {bob_node}"
    );
    wait_for(
        &bob,
        "bob to see the caption with the image",
        "return [...document.querySelectorAll('#messages li.msg[data-seq]')].some(m =>
           m.querySelector('.body').textContent === arguments[0] && m.querySelector('.att img'));",
        json!([caption]),
        SHOW,
    )
    .await?;
    let href = seen["href"].as_str().context("full image link")?.to_owned();
    let (status, content_type, body) = fetch_from_page(&bob, &href).await?;
    ensure!(
        status == 200,
        "downloading {href} from bob's page: {status}"
    );
    ensure!(
        content_type.starts_with("image/png"),
        "the download is served as {content_type:?}"
    );
    ensure!(
        body == png,
        "bob downloaded {} bytes that are not the {} bytes alice sent",
        body.len(),
        png.len()
    );
    let mine = settled(&alice, "alice", "gradient.png").await?;
    ensure!(
        mine["state"] == json!("ready"),
        "alice's own page shows {mine}"
    );
    bob.screenshot(&screenshot_path("chat-attachments.png"))
        .await?;

    // Text bytes in a file named .png (the browser declares image/png): the node finds it is no
    // image, and both pages show it as failed with the reason.
    let fake = dir.join("not-really.png");
    std::fs::write(
        &fake,
        "this is plain text pretending to be a picture\n".repeat(20),
    )?;
    pick_file(&alice, &fake).await?;
    alice.click("#send-btn").await?;
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        let shown = settled(page, who, "not-really.png").await?;
        ensure!(
            shown["state"] == json!("failed"),
            "{who}'s page shows the fake image as {shown}"
        );
        let text = shown["text"].as_str().unwrap_or("");
        ensure!(
            text.contains("Upload failed") && text.contains("not what its type says"),
            "{who}'s page does not say why it failed: {text:?}"
        );
        ensure!(
            shown["messageFailed"] == json!(true),
            "{who}'s page does not show the message whose only file failed as failed"
        );
    }
    alice
        .screenshot(&screenshot_path("chat-attachment-failed.png"))
        .await?;

    // A file the node does not take (no known type) is refused before anything is stored, and the
    // page says so.
    let odd = dir.join("tool.bin");
    std::fs::write(&odd, [0_u8, 1, 2, 3, 4, 5, 6, 7])?;
    pick_file(&alice, &odd).await?;
    alice.click("#send-btn").await?;
    wait_for(
        &alice,
        "alice's page to refuse the file with a clear reason",
        "const li = document.querySelector('#messages li.msg.failed[data-error=\"unsupported_type\"]');
         const toast = [...document.querySelectorAll('.toast')].some(t => t.textContent.includes('not accepted here'));
         return li && toast && li.textContent.includes('not accepted here');",
        json!([]),
        SHOW,
    )
    .await?;

    // A direct message with a file: bob gets the card, and the download link works.
    alice.click("#members li[data-user=\"bob\"] button").await?;
    let note = dir.join("note.txt");
    std::fs::write(&note, "just between us\n")?;
    pick_file(&alice, &note).await?;
    alice
        .type_into("#composer-input", &format!("for your eyes only{ENTER}"))
        .await?;
    let href = wait_for(
        &bob,
        "bob to get alice's direct message with the file ready",
        "const log = document.querySelector('.dm-log[data-peer=\"alice\"]');
         const a = log && log.querySelector('.att[data-state=\"ready\"] a.download');
         return a && a.textContent === 'Download' ? a.href : null;",
        json!([]),
        SHOW,
    )
    .await?;
    let href = href.as_str().context("download link")?.to_owned();
    let (status, _, body) = fetch_from_page(&bob, &href).await?;
    ensure!(
        status == 200 && body == b"just between us\n",
        "bob's download of the direct message's file: {status}, {} bytes",
        body.len()
    );

    for page in [alice, bob] {
        page.close().await?;
    }
    driver.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn node_index(topo: &Topology, node: &str) -> Result<usize> {
    (0..topo.node_count())
        .find(|&i| topo.node_id(i) == node)
        .with_context(|| format!("no node {node}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_stores_files_in_its_local_directory() -> Result<()> {
    webdriver::require_chromium();
    tokio::time::timeout(TEST_BUDGET, async {
        let topo = Topology::start(TopologyConfig::standalone()).await?;
        let base = topo.node_http_url(0);
        let driver = ChromeDriver::start().await?;
        let page = driver.page(1280, 800).await?;
        login(&page, &base, "carol").await?;
        let dir = file_dir()?;
        let notes = dir.join("notes.txt");
        let text = "line of notes\n".repeat(500);
        std::fs::write(&notes, &text)?;
        pick_file(&page, &notes).await?;
        page.click("#send-btn").await?;
        // Dropping a file on the conversation puts it in the tray (a drop as the browser delivers
        // it: dragenter shows the drop zone, drop carries the file in its DataTransfer).
        let dropped = page
            .js(
                "const zone = document.querySelector('.conversation');
                 const dt = new DataTransfer();
                 dt.items.add(new File(['dropped text\\n'], 'dropped.txt', { type: 'text/plain' }));
                 zone.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
                 const shown = !document.getElementById('drop-zone').hidden;
                 zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
                 return { shown, hidden: document.getElementById('drop-zone').hidden,
                          tray: [...document.querySelectorAll('#attach-tray li')].map(l => l.dataset.name) };",
                json!([]),
            )
            .await?;
        ensure!(
            dropped == json!({ "shown": true, "hidden": true, "tray": ["dropped.txt"] }),
            "dropping a file: {dropped}"
        );
        page.click("#send-btn").await?;
        let shown = settled(&page, "carol", "dropped.txt").await?;
        ensure!(
            shown["state"] == json!("ready"),
            "the dropped file shows as {shown}"
        );

        // A bigger file over a slowed-down upload link: the page shows the upload's progress, and
        // the upload can be cancelled.
        let big = dir.join("big.txt");
        std::fs::write(&big, "x".repeat(3 << 20))?;
        page.cdp("Network.enable", json!({})).await?;
        page.cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1 << 20 }),
        )
        .await?;
        pick_file(&page, &big).await?;
        page.click("#send-btn").await?;
        let percent = wait_for(
            &page,
            "the page to show big.txt uploading part way",
            "const a = [...document.querySelectorAll('#messages .att[data-state=\"pending\"]')]
               .find(e => e.querySelector('.att-name').textContent === 'big.txt');
             const m = a && /Uploading (\\d+)%/.exec(a.textContent);
             const bar = a && a.querySelector('progress');
             return m && Number(m[1]) > 0 && Number(m[1]) < 100 && bar && bar.value > 0 ? Number(m[1]) : null;",
            json!([]),
            SHOW,
        )
        .await?;
        page.screenshot(&screenshot_path("chat-attachment-uploading.png"))
            .await?;
        // Cancelling stops the upload; the page shows the file as failed, cancelled.
        page.click(".att .cancel-upload").await?;
        let cancelled = settled(&page, "carol", "big.txt").await?;
        ensure!(
            cancelled["state"] == json!("failed")
                && cancelled["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("cancelled")),
            "big.txt (seen at {percent}%) after Cancel shows {cancelled}"
        );
        page.cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
        )
        .await?;

        let shown = settled(&page, "carol", "notes.txt").await?;
        ensure!(
            shown["state"] == json!("ready"),
            "the text file shows as {shown}"
        );
        let href = shown["href"].as_str().context("download link")?.to_owned();
        let (status, _, body) = fetch_from_page(&page, &href).await?;
        ensure!(
            status == 200 && body == text.as_bytes(),
            "downloaded {status}, {} bytes",
            body.len()
        );
        page.close().await?;
        driver.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await
    .context("the standalone attachments check ran out of time")?
}
