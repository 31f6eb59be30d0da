//! A small W3C WebDriver client for driving Debian's headless Chromium through `chromedriver`.
//!
//! WebDriver is plain JSON over HTTP, and the browser tests need a dozen of its commands, so this speaks
//! it with the `reqwest` client the crate already has rather than adding a WebDriver crate:
//!
//! ```text
//! test ──HTTP/JSON──▶ chromedriver (loopback, free port) ──DevTools──▶ chromium --headless (one per Page)
//! ```
//!
//! Every browser gets a fresh `--user-data-dir` that is removed when its [`Page`] is dropped; the
//! `chromedriver` process (and with it every browser it started) is killed when [`ChromeDriver`] drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The command that installs both; a missing binary fails the test with this line.
pub const INSTALL: &str = "apt-get update && apt-get install -y chromium chromium-driver";

/// The W3C name of the key that identifies an element in a JSON reply.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The WebDriver code of the Enter key, for [`Page::type_into`].
pub const ENTER: &str = "\u{E007}";

/// Fails with the install line when the browser or its driver is missing: never a silent skip.
pub fn require_chromium() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the browser tests need Debian's chromium and chromium-driver. Install them with:\n    {INSTALL}"
        );
    }
}

/// A running `chromedriver` on a free loopback port.
pub struct ChromeDriver {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl ChromeDriver {
    /// Starts `chromedriver` and waits (bounded) until it says it is ready.
    pub async fn start() -> Result<Self> {
        require_chromium();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(resp) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                && let Ok(body) = resp.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready on port {port} within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a new headless browser with its own fresh profile, `width` x `height` pixels.
    pub async fn page(&self, width: u32, height: u32) -> Result<Page> {
        static N: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "switchboard-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            // Several browsers share one machine in a test; none may throttle its timers or sockets
            // for being in the background.
            "--disable-background-timer-throttling".to_owned(),
            "--disable-renderer-backgrounding".to_owned(),
            "--disable-backgrounding-occluded-windows".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
                }
            }
        });
        let reply = command(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.base),
            Some(caps),
        )
        .await
        .context("creating a browser session")?;
        let id = reply["sessionId"]
            .as_str()
            .context("no sessionId in the new-session reply")?
            .to_owned();
        Ok(Page {
            http: self.http.clone(),
            base: format!("{}/session/{id}", self.base),
            profile,
            closed: false,
        })
    }

    /// Stops the driver (and every browser it runs).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One browser window (a WebDriver session).
pub struct Page {
    http: reqwest::Client,
    base: String,
    profile: PathBuf,
    closed: bool,
}

impl Page {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        command(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    /// Navigates to `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> Result<usize> {
        let v = self
            .js(
                "return document.querySelectorAll(arguments[0]).length;",
                json!([css]),
            )
            .await?;
        Ok(usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(usize::MAX))
    }

    async fn element(&self, css: &str) -> Result<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        Ok(v[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("no element id for {css}"))?
            .to_owned())
    }

    /// Clicks the first element matching `css`, as a user would.
    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Types `text` into the first element matching `css` with real key events ([`ENTER`] presses Enter).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    /// Runs a Chrome DevTools Protocol command in this page (chromedriver's `goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
        .with_context(|| format!("CDP {cmd}"))
    }

    /// Cuts this page off the network (new requests and WebSocket handshakes fail; open sockets stay)
    /// or plugs it back in.
    pub async fn set_offline(&self, offline: bool) -> Result<()> {
        self.cdp("Network.enable", json!({})).await?;
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
        )
        .await
        .map(drop)
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64_decode(v.as_str().context("screenshot reply is not a string")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Closes the browser.
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        self.cmd(reqwest::Method::DELETE, "", None).await.map(drop)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort without an async context: the driver's own exit ends the browser anyway.
            let url = self.base.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        let _ = reqwest::Client::new()
                            .delete(url)
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                    });
                }
            })
            .join();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn command(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method.clone(), url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let reply: Value = resp
        .json()
        .await
        .with_context(|| format!("{method} {url}: reply is not JSON"))?;
    if !status.is_success() {
        bail!(
            "{method} {url}: {status}: {} {}",
            reply["value"]["error"].as_str().unwrap_or("?"),
            reply["value"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(reply["value"].clone())
}

/// Decodes standard base64 (the WebDriver screenshot encoding).
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c).context("invalid base64")? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[test]
fn base64_decodes_padded_and_unpadded_input() {
    assert_eq!(base64_decode("aGVsbG8=").expect("valid"), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").expect("valid"), b"hello!");
    assert_eq!(base64_decode("aA==").expect("valid"), b"h");
}
