//! The `registry` executable as an operator runs it: start-up errors, SIGTERM drain, second-signal abort.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::{RedisServer, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn registry() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_registry"));
    command
        .env_remove("SWITCHBOARD_REDIS_URL")
        .env_remove("SWITCHBOARD_REDIS_SENTINELS")
        .env_remove("SWITCHBOARD_REDIS_PASSWORD")
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    command
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run registry"))
        .await
        .expect("join")
}

async fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.ok()?;
    raw.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while status_of(port, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "registry never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the child if a test fails before it exited.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "registry did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_redis_it_exits_with_a_clear_message() {
    let mut command = registry();
    command.args(["--listen", "127.0.0.1:0"]);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the registry needs Redis"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_password_exits_with_a_clear_message_that_hides_it() {
    let redis = RedisServer::start_with_password("right")
        .await
        .expect("redis");
    let mut command = registry();
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        &format!("redis://127.0.0.1:{}/0", redis.port()),
    ]);
    command.env("SWITCHBOARD_REDIS_PASSWORD", "Wr0ngPa55");
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("Redis rejected the password"), "{stderr}");
    assert!(
        !stderr.contains("Wr0ngPa55") && !stdout.contains("Wr0ngPa55"),
        "password leaked"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let redis = RedisServer::start().await.expect("redis");
    let port = free_port().expect("port");
    let mut child = registry()
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("spawn");
    wait_ready(port).await;
    signal(child.0.id(), "-TERM");
    let status = wait_exit(&mut child.0, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_aborts_the_drain() {
    let redis = RedisServer::start().await.expect("redis");
    let port = free_port().expect("port");
    let mut child = registry()
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis.url(),
            "--drain-delay",
            "60s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("spawn");
    wait_ready(port).await;
    signal(child.0.id(), "-TERM");
    // Draining: still serving, but not ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(port, "/readyz").await != Some(503) {
        assert!(Instant::now() < deadline, "not draining after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(child.0.id(), "-INT");
    let status = wait_exit(&mut child.0, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(switchboard_runtime::FORCED_EXIT_CODE));
}
