//! The operator's managed Redis start scripts (`operator/src/resources/redis.sh`, `sentinel.sh`) run as
//! real processes: three data nodes and three sentinels, each on its own loopback address standing in for
//! a pod's stable host name, started and restarted in several orders. Every time they must agree on
//! exactly one master, with every replica linked to it and every sentinel naming it. The sentinels require
//! the password: one asked without it refuses.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use operator::resources::{
    HANDOVER_SCRIPT, REDIS_SCRIPT, REDIS_TERMINATION_GRACE_SECONDS, SENTINEL_SCRIPT, alive_probe,
    ready_probe,
};
const PASSWORD: &str = "managed-secret";
const MASTER_NAME: &str = "switchboard";
const CONVERGE: Duration = Duration::from_secs(40);

struct Pod {
    host: String,
    dir: PathBuf,
    child: Option<Child>,
}

struct Bed {
    data: Vec<Pod>,
    sentinels: Vec<Pod>,
    redis_port: u16,
    sentinel_port: u16,
    /// The password servers started now are given (`REDIS_PASSWORD`), and every one they accept
    /// (`REDIS_PASSWORDS`), as the operator's auth Secret gives them to the pods.
    password: String,
    passwords: String,
    /// With TLS: the directory holding `tls.crt`, `tls.key` and `ca.crt` (`TLS_DIR`, as the pods get it).
    tls_dir: Option<PathBuf>,
    _pki: Option<switchboard_testkit::tls::Pki>,
    _root: PathBuf,
}

fn port_free_on(hosts: &[String], port: u16) -> bool {
    hosts
        .iter()
        .all(|h| TcpListener::bind((h.as_str(), port)).is_ok())
}

fn require(binary: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{binary} is missing: apt-get install redis-server redis-sentinel (redis-tools)"
    );
}

impl Bed {
    fn new() -> Self {
        Self::with_tls(false)
    }

    /// A bed whose servers speak TLS only, with a certificate for every loopback host, when `tls`.
    fn with_tls(tls: bool) -> Self {
        for b in ["redis-server", "redis-sentinel", "redis-cli", "timeout"] {
            require(b);
        }
        let net = fastrand::u8(10..250);
        let data: Vec<String> = (1..=3).map(|i| format!("127.{net}.1.{i}")).collect();
        let sentinels: Vec<String> = (1..=3).map(|i| format!("127.{net}.2.{i}")).collect();
        let all: Vec<String> = data.iter().chain(&sentinels).cloned().collect();
        let pick = || loop {
            let p = fastrand::u16(20_000..60_000);
            if port_free_on(&all, p) {
                return p;
            }
        };
        let (redis_port, sentinel_port) = (pick(), pick());
        let root = std::env::temp_dir().join(format!(
            "switchboard-managed-redis-{}-{net}",
            std::process::id()
        ));
        let pod = |kind: &str, i: usize, host: &String| Pod {
            host: host.clone(),
            dir: root.join(format!("{kind}-{i}")),
            child: None,
        };
        let (tls_dir, pki) = if tls {
            let pki = switchboard_testkit::tls::Pki::new();
            let hosts: Vec<&str> = all.iter().map(String::as_str).collect();
            let issued = pki.issue("servers", &hosts);
            let dir = root.join("tls");
            std::fs::create_dir_all(&dir).expect("tls dir");
            for (from, to) in [
                ("servers.crt", "tls.crt"),
                ("servers.key", "tls.key"),
                ("ca.crt", "ca.crt"),
            ] {
                std::fs::copy(issued.join(from), dir.join(to)).expect("certificate files");
            }
            (Some(dir), Some(pki))
        } else {
            (None, None)
        };
        Bed {
            data: data
                .iter()
                .enumerate()
                .map(|(i, h)| pod("redis", i, h))
                .collect(),
            sentinels: sentinels
                .iter()
                .enumerate()
                .map(|(i, h)| pod("sentinel", i, h))
                .collect(),
            redis_port,
            sentinel_port,
            password: PASSWORD.to_owned(),
            passwords: PASSWORD.to_owned(),
            tls_dir,
            _pki: pki,
            _root: root,
        }
    }

    /// `host:port` of every data node and of every sentinel.
    fn addrs(&self) -> (Vec<String>, Vec<String>) {
        let data = self
            .data
            .iter()
            .map(|p| format!("{}:{}", p.host, self.redis_port));
        let sentinels = self
            .sentinels
            .iter()
            .map(|p| format!("{}:{}", p.host, self.sentinel_port));
        (data.collect(), sentinels.collect())
    }

    /// Client settings for the servers through the sentinels with `password` (TLS when the bed speaks it).
    fn client_args(&self, password: &str) -> switchboard_redis::RedisArgs {
        let (_, sentinels) = self.addrs();
        let mut args = switchboard_redis::RedisArgs::from_sentinels(sentinels, MASTER_NAME)
            .with_password(password)
            .with_sentinel_password(password);
        args.redis_tls_ca_file = self.tls_dir.as_ref().map(|d| d.join("ca.crt"));
        args
    }

    /// The operator's planned failover away from `master` (a host), asking with `password`.
    async fn planned_failover(
        &self,
        master: &str,
        password: &str,
    ) -> Result<(), switchboard_redis::sentinel::NotStarted> {
        let (_, sentinels) = self.addrs();
        self.planned_failover_asking(master, password, &sentinels)
            .await
    }

    /// The same, asking only the sentinels at `sentinels` (`host:port`).
    async fn planned_failover_asking(
        &self,
        master: &str,
        password: &str,
        sentinels: &[String],
    ) -> Result<(), switchboard_redis::sentinel::NotStarted> {
        let (data, _) = self.addrs();
        let master = format!("{master}:{}", self.redis_port);
        let replicas: Vec<String> = data.into_iter().filter(|a| *a != master).collect();
        let access = self.client_args(password).access().expect("access");
        switchboard_redis::sentinel::planned_failover(
            &master,
            &replicas,
            sentinels,
            MASTER_NAME,
            &access,
            Duration::from_secs(3),
        )
        .await
    }

    fn hosts(pods: &[Pod]) -> String {
        pods.iter()
            .map(|p| p.host.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `script` run as `pod` would run it, its output in the file `log` of the pod's directory.
    fn command(&self, script: &str, pod: &Pod, log: &str) -> Command {
        std::fs::create_dir_all(&pod.dir).expect("pod dir");
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .env("SELF_HOST", &pod.host)
            .env("FIRST_HOST", &self.data[0].host)
            .env("REDIS_HOSTS", Self::hosts(&self.data))
            .env("SENTINEL_HOSTS", Self::hosts(&self.sentinels))
            .env("MASTER_NAME", MASTER_NAME)
            .env("REDIS_PASSWORD", &self.password)
            .env("REDIS_PASSWORDS", &self.passwords)
            .env("QUORUM", "2")
            .env("REDIS_PORT", self.redis_port.to_string())
            .env("SENTINEL_PORT", self.sentinel_port.to_string())
            .env("CONF_DIR", pod.dir.join("conf"))
            .env("DATA_DIR", pod.dir.join("data"))
            .env("BIND", &pod.host)
            .env("DOWN_AFTER_MS", "1000")
            .env("FAILOVER_TIMEOUT_MS", "3000")
            .env("TLS_DIR", self.tls_dir.as_deref().unwrap_or(Path::new("")))
            .stdin(Stdio::null());
        let log = std::fs::File::create(pod.dir.join(log)).expect("log");
        let err = log.try_clone().expect("log");
        c.stdout(log).stderr(err);
        c
    }

    /// Every data node, then every sentinel, started; returns the bed and the master they agree on.
    fn bootstrapped() -> (Self, String) {
        Self::bootstrapped_with(Self::new())
    }

    fn bootstrapped_with(mut bed: Self) -> (Self, String) {
        for i in 0..bed.data.len() {
            bed.start_data(i);
        }
        for i in 0..bed.sentinels.len() {
            bed.start_sentinel(i);
        }
        let master = bed.converged("bootstrap");
        (bed, master)
    }

    fn start_data(&mut self, i: usize) {
        let child = self
            .command(REDIS_SCRIPT, &self.data[i], "log")
            .spawn()
            .expect("start redis.sh");
        self.data[i].child = Some(child);
        self.wait_up(&self.data[i].host.clone(), self.redis_port);
    }

    fn start_sentinel(&mut self, i: usize) {
        let child = self
            .command(SENTINEL_SCRIPT, &self.sentinels[i], "log")
            .spawn()
            .expect("start sentinel.sh");
        self.sentinels[i].child = Some(child);
        // Sentinels require the password (sentinel.sh).
        self.wait_up(&self.sentinels[i].host.clone(), self.sentinel_port);
    }

    /// Runs data node `i`'s stop hook (`handover.sh`, the pod's `preStop`) as the kubelet does before
    /// stopping it, bounded by the pod's grace period: whether it succeeded, its output, how long it took.
    fn stop_hook(&self, i: usize) -> (bool, String, Duration) {
        let pod = &self.data[i];
        let started = Instant::now();
        let mut child = self
            .command(HANDOVER_SCRIPT, pod, "handover.log")
            .env("LOCAL_HOST", &pod.host)
            .spawn()
            .expect("start handover.sh");
        let grace = Duration::from_secs(REDIS_TERMINATION_GRACE_SECONDS as u64);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for handover.sh") {
                break status;
            }
            if started.elapsed() > grace {
                let _ = child.kill();
                panic!("handover.sh outlasted the pod's grace period ({grace:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(pod.dir.join("handover.log")).unwrap_or_default();
        (status.success(), out, started.elapsed())
    }

    /// Whether a pod's probe `command` (`operator::resources::ready_probe`, `alive_probe`) passes against
    /// `host`, run as the kubelet runs it in a pod that started with `started_with` in its environment
    /// and has `mounted` in its applied-Secret volume (`None`: the file is missing).
    fn probe(&self, command: &str, host: &str, started_with: &str, mounted: Option<&str>) -> bool {
        let dir = self._root.join(format!("auth-{host}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("auth dir");
        if let Some(password) = mounted {
            std::fs::write(dir.join("password"), password).expect("password file");
        }
        Command::new("sh")
            .args(["-c", command])
            .env("AUTH_DIR", &dir)
            .env("REDIS_PASSWORD", started_with)
            .env("LOCAL_HOST", host)
            .env("TLS_DIR", self.tls_dir.as_deref().unwrap_or(Path::new("")))
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Our clients still connected to the data node at `host` (normal and pub/sub), leaving out the
    /// sentinels' own connections (which come back at once) and the asking one.
    fn clients_left(&self, host: &str) -> Vec<String> {
        let mut ours = Vec::new();
        for kind in ["normal", "pubsub"] {
            let list = self.cli(
                host,
                self.redis_port,
                Some(&self.password),
                &["client", "list", "type", kind],
            );
            ours.extend(
                list.lines()
                    .filter(|l| !l.contains("name=sentinel-") && !l.contains("cmd=client|list"))
                    .map(|l| format!("{kind}: {l}")),
            );
        }
        ours
    }

    fn wait_up(&self, host: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.cli(host, port, Some(&self.password), &["ping"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "{host}:{port} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(pods: &mut [Pod], i: usize) {
        if let Some(mut c) = pods[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until exactly one live data node is master, every other live one is its replica with the
    /// link up, and every live sentinel names it. Returns the master's host.
    fn converged(&self, what: &str) -> String {
        let deadline = Instant::now() + CONVERGE;
        let mut last;
        loop {
            match self.agreement() {
                Ok(master) => return master,
                Err(why) => last = why,
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no agreement after {CONVERGE:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn agreement(&self) -> Result<String, String> {
        let live = |pods: &[Pod]| {
            pods.iter()
                .filter(|p| p.child.is_some())
                .map(|p| p.host.clone())
                .collect::<Vec<_>>()
        };
        let mut masters = Vec::new();
        let mut replicas = Vec::new();
        for h in live(&self.data) {
            let info = self.cli(
                &h,
                self.redis_port,
                Some(&self.password),
                &["info", "replication"],
            );
            if info.contains("role:master") {
                masters.push(h);
            } else {
                replicas.push((h, info));
            }
        }
        let [master] = masters.as_slice() else {
            return Err(format!("masters: {masters:?}"));
        };
        for (h, info) in &replicas {
            if !info.contains(&format!("master_host:{master}"))
                || !info.contains("master_link_status:up")
            {
                return Err(format!("{h} is not a linked replica of {master}"));
            }
        }
        for s in live(&self.sentinels) {
            let named = self.cli(
                &s,
                self.sentinel_port,
                Some(&self.password),
                &["sentinel", "get-master-addr-by-name", MASTER_NAME],
            );
            if named.lines().next() != Some(master.as_str()) {
                return Err(format!("sentinel {s} names {named:?}, not {master}"));
            }
        }
        Ok(master.clone())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for i in 0..self.data.len() {
            Self::kill(&mut self.data, i);
        }
        for i in 0..self.sentinels.len() {
            Self::kill(&mut self.sentinels, i);
        }
    }
}

impl Bed {
    /// `redis-cli` against `host:port` (over TLS when the bed speaks it).
    fn cli(&self, host: &str, port: u16, password: Option<&str>, args: &[&str]) -> String {
        let mut c = Command::new("redis-cli");
        if let Some(dir) = &self.tls_dir {
            c.arg("--tls").arg("--cacert").arg(dir.join("ca.crt"));
        }
        c.args(["-h", host, "-p", &port.to_string()]).args(args);
        if let Some(password) = password {
            c.env("REDISCLI_AUTH", password);
        }
        c.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).replace('\r', ""))
            .unwrap_or_default()
    }
}

/// A client appending 1, 2, 3… to a list, each write confirmed by a replica (`WAIT 1`, as chat-nodes do
/// with `--ack-replicas 1`), until told to finish.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Writer {
    fn start(client: fred::clients::Client, key: &'static str) -> Self {
        use fred::interfaces::{ClientLike, ListInterface};
        use fred::types::{ClusterHash, CustomCommand, Value};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut confirmed = Vec::new();
            let wait = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
            let mut i = 0u64;
            // Bounded whatever happens: a test never writes for more than a minute.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 1;
                let pushed: Result<i64, _> = client.rpush(key, i).await;
                if pushed.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let replicas: Result<Value, _> = client
                    .custom(wait.clone(), vec![Value::from(1), Value::from(1000)])
                    .await;
                if replicas.ok().and_then(|v| v.as_i64()).unwrap_or(0) >= 1 {
                    confirmed.push(i);
                }
            }
            let _ = client.quit().await;
            confirmed
        });
        Writer { stop, task }
    }

    /// Stops writing; the writes a replica confirmed.
    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("writer")
    }
}

/// The confirmed writes missing from list `key` on `host`.
fn missing(bed: &Bed, host: &str, key: &str, confirmed: &[u64]) -> Vec<u64> {
    let stored: std::collections::HashSet<u64> = bed
        .cli(
            host,
            bed.redis_port,
            Some(&bed.password),
            &["lrange", key, "0", "-1"],
        )
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    confirmed
        .iter()
        .copied()
        .filter(|i| !stored.contains(i))
        .collect()
}

/// A steady write load (a [`Writer`]) with a subscriber to `probe`, both through the sentinels, as a
/// chat-node holds them: what a hand-over of the master role must carry over.
struct Load {
    client: fred::clients::Client,
    subscriber: fred::clients::SubscriberClient,
    heard: tokio::sync::broadcast::Receiver<fred::types::Message>,
    writer: Writer,
}

impl Load {
    /// Connects, subscribes and writes for 2 s before returning.
    async fn start(bed: &Bed) -> Self {
        use fred::interfaces::{EventInterface, PubsubInterface};
        let client = switchboard_redis::connect(&bed.client_args(PASSWORD))
            .await
            .expect("connect");
        let subscriber = switchboard_redis::subscriber(&bed.client_args(PASSWORD))
            .await
            .expect("subscriber");
        subscriber.subscribe("probe").await.expect("subscribe");
        let heard = subscriber.message_rx();
        let writer = Writer::start(client.clone(), "log");
        tokio::time::sleep(Duration::from_secs(2)).await;
        Load {
            client,
            subscriber,
            heard,
            writer,
        }
    }

    /// After a failover: the subscriber hears what is published on the master the servers agree on
    /// (within 15 s), the writer goes on for `then` on it, and stops; the writes a replica confirmed.
    async fn finish(mut self, bed: &Bed, then: Duration) -> Vec<u64> {
        use fred::interfaces::ClientLike;
        let promoted = bed.converged("after the failover");
        let deadline = Instant::now() + Duration::from_secs(15);
        let message = loop {
            bed.cli(
                &promoted,
                bed.redis_port,
                Some(&bed.password),
                &["publish", "probe", "moved"],
            );
            match tokio::time::timeout(Duration::from_millis(200), self.heard.recv()).await {
                Ok(Ok(m)) => break m,
                _ if Instant::now() < deadline => {}
                other => panic!("the subscriber never heard the new master: {other:?}"),
            }
        };
        assert_eq!(message.value.as_str().as_deref(), Some("moved"));
        let _ = self.subscriber.quit().await;
        tokio::time::sleep(then).await;
        let confirmed = self.writer.finish().await;
        let _ = self.client.quit().await;
        confirmed
    }
}

/// A replica other than `old` is master now and holds every write confirmed on each list, of which
/// there are more than `at_least` (so the check means something).
fn every_confirmed_write_on_the_new_master(
    bed: &Bed,
    old: &str,
    lists: &[(&str, &[u64])],
    at_least: usize,
) {
    let promoted = bed.converged("after the hand-over");
    assert_ne!(promoted, old, "a replica took over");
    for &(key, confirmed) in lists {
        assert!(
            confirmed.len() > at_least,
            "{key}: the writer kept writing: {} confirmed",
            confirmed.len()
        );
        let lost = missing(bed, &promoted, key, confirmed);
        assert!(
            lost.is_empty(),
            "{key}: {} of {} confirmed writes lost, e.g. {:?}",
            lost.len(),
            confirmed.len(),
            &lost[..lost.len().min(10)]
        );
    }
}

/// A rotation step on every data node, then every sentinel, as the operator applies it
/// (`operator/src/reconcile/rotation.rs`): a server that does not answer within 3 s is asked again on
/// the operator's next pass, so here too, at most 5 times a second apart (on a machine running several
/// test beds at once a sentinel rewriting its configuration file can take that long). A refused or
/// failed step fails the test at once.
async fn apply_step(
    data: &[String],
    sentinels: &[String],
    passwords: switchboard_redis::passwords::Passwords<'_>,
    tls: Option<&fred::types::config::TlsConfig>,
) {
    use switchboard_redis::passwords::{self, Error, Server};
    let sentinel = Server::Sentinel {
        master_name: MASTER_NAME,
    };
    let servers =
        (data.iter().map(|a| (a, Server::Data))).chain(sentinels.iter().map(|a| (a, sentinel)));
    for (addr, server) in servers {
        let mut tries = 1;
        loop {
            match passwords::apply(addr, server, passwords, tls, Duration::from_secs(3)).await {
                Ok(()) => break,
                Err(e @ Error::Unreachable { .. }) if tries < 5 => {
                    eprintln!("try {tries}: {e}; asking again, as the operator would");
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => panic!("{}", switchboard_runtime::report::chain(&e)),
            }
        }
    }
}

fn index_of(pods: &[Pod], host: &str) -> usize {
    pods.iter()
        .position(|p| p.host == host)
        .expect("a known host")
}

#[test]
fn managed_redis_keeps_one_agreed_master_through_restarts_in_any_order() {
    // Bootstrap: the first pod becomes master, the others follow it, the sentinels watch it.
    let (mut bed, master) = Bed::bootstrapped();
    assert_eq!(master, bed.data[0].host, "a new system bootstraps on pod 0");

    // Without the password a sentinel tells nothing (and so can be re-pointed by nobody).
    let refused = bed.cli(
        &bed.sentinels[0].host,
        bed.sentinel_port,
        None,
        &["sentinel", "get-master-addr-by-name", MASTER_NAME],
    );
    assert!(refused.contains("NOAUTH"), "{refused}");
    // The master dies: the sentinels promote a replica.
    Bed::kill(&mut bed.data, 0);
    let promoted = bed.converged("failover");
    assert_ne!(promoted, bed.data[0].host);

    // The old master restarts: it asks the sentinels and comes back as a replica, not a second master.
    bed.start_data(0);
    assert_eq!(bed.converged("old master back"), promoted);

    // Every sentinel restarts, in reverse order: their configuration is rebuilt from the live master,
    // not from pod 0.
    for i in (0..3).rev() {
        Bed::kill(&mut bed.sentinels, i);
    }
    for i in (0..3).rev() {
        bed.start_sentinel(i);
    }
    assert_eq!(
        bed.converged("sentinels restarted"),
        promoted,
        "no sentinel watches a stale address"
    );

    // Every data node restarts, the replicas first: they follow the master the sentinels name, and the
    // master keeps its role when it returns.
    let m = index_of(&bed.data, &promoted);
    for i in 0..3 {
        Bed::kill(&mut bed.data, i);
    }
    let order: Vec<usize> = (0..3).filter(|&i| i != m).chain([m]).collect();
    for i in order {
        bed.start_data(i);
    }
    assert_eq!(bed.converged("data nodes restarted"), promoted);
}

/// A master that comes back on an empty volume before the sentinels noticed it was gone must not serve
/// its empty dataset as master (the replicas would resync to it and lose everything): it waits for the
/// sentinels to promote a replica that has the data, then follows it.
#[test]
fn a_master_back_on_an_empty_volume_waits_for_a_failover_and_loses_nothing() {
    let (mut bed, master) = Bed::bootstrapped();
    let keys = 200;
    for k in 0..keys {
        let set = bed.cli(
            &master,
            bed.redis_port,
            Some(PASSWORD),
            &["set", &format!("k{k}"), "v"],
        );
        assert_eq!(set.trim(), "OK", "SET k{k}");
    }
    let wait = bed.cli(
        &master,
        bed.redis_port,
        Some(PASSWORD),
        &["wait", "2", "5000"],
    );
    assert_eq!(wait.trim(), "2", "both replicas have the keys");

    // The master's process dies and its volume is gone; it starts again at once, well inside the
    // sentinels' down-after window, so they still name it master.
    let m = index_of(&bed.data, &master);
    Bed::kill(&mut bed.data, m);
    std::fs::remove_dir_all(bed.data[m].dir.join("data")).expect("empty the volume");
    bed.start_data(m);

    let promoted = bed.converged("empty master back");
    assert_ne!(promoted, master, "a replica with the data was promoted");
    for pod in &bed.data {
        let size = bed.cli(&pod.host, bed.redis_port, Some(PASSWORD), &["dbsize"]);
        assert_eq!(
            size.trim(),
            keys.to_string(),
            "{} holds every key after the restart",
            pod.host
        );
    }
}

/// The operator's planned failover (before it restarts the master for an update) under a steady write
/// load: writes are held on the master while the replicas catch up and a sentinel promotes one, so every
/// write a replica confirmed (`WAIT 1`, as chat-nodes do with `--ack-replicas 1`) is on the new master.
#[test]
fn a_planned_failover_under_writes_loses_no_confirmed_write() {
    let (bed, master) = Bed::bootstrapped();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let confirmed = runtime.block_on(async {
        let load = Load::start(&bed).await;
        let started = bed.planned_failover(&master, PASSWORD).await;
        started.unwrap_or_else(|e| panic!("a sentinel started the failover: {e}"));
        // The failover sent the old master's clients on: none of ours is left there, so none sits on
        // a held master or a silent channel.
        let left = bed.clients_left(&master);
        assert!(left.is_empty(), "clients left on the old master: {left:?}");
        load.finish(&bed, Duration::from_secs(6)).await
    });
    every_confirmed_write_on_the_new_master(&bed, &master, &[("log", &confirmed)], 100);
}

/// The data pods' stop hook (`handover.sh`, their `preStop`) on the master under a steady write load,
/// as when its pod is deleted or evicted: it holds writes, lets the replicas catch up, has a sentinel
/// fail over and, once the sentinels agree, sends the master's clients on — so when the server then
/// stops nobody waits for the sentinels' down-after, and every write a replica confirmed is on the new
/// master. On a replica it does nothing.
#[test]
fn the_masters_stop_hook_hands_the_role_over_and_loses_no_confirmed_write() {
    let (mut bed, master) = Bed::bootstrapped();
    let replica = (0..bed.data.len())
        .find(|&i| bed.data[i].host != master)
        .expect("a replica");
    let (ok, out, took) = bed.stop_hook(replica);
    assert!(ok && out.trim().is_empty(), "on a replica: {ok} {out:?}");
    assert!(
        took < Duration::from_secs(10),
        "on a replica at once: {took:?}"
    );
    assert_eq!(bed.converged("after a replica's stop hook"), master);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let confirmed = runtime.block_on(async {
        let load = Load::start(&bed).await;
        let i = index_of(&bed.data, &master);
        let (ok, out, took) = bed.stop_hook(i);
        eprintln!("handover.sh on the master took {took:?}: {out}");
        assert!(ok, "the hook succeeds: {out}");
        assert!(
            out.contains("clients were sent"),
            "the role was handed over: {out}"
        );
        let left = bed.clients_left(&master);
        assert!(left.is_empty(), "clients left on the old master: {left:?}");
        // Then the pod stops; a server that does not answer is not alive.
        Bed::kill(&mut bed.data, i);
        let alive = alive_probe(i32::from(bed.redis_port));
        assert!(!bed.probe(&alive, &master, PASSWORD, Some(PASSWORD)));
        load.finish(&bed, Duration::from_secs(3)).await
    });
    every_confirmed_write_on_the_new_master(&bed, &master, &[("log", &confirmed)], 100);
}

/// Right after a password step the sentinels briefly refuse a failover: `SENTINEL SET … auth-pass` drops
/// their links to the data nodes, and until those are back they see no replica fit to promote
/// (`NOGOODSLAVE`). The planned failover asks again for a few seconds instead of giving up (before, the
/// operator waited for its next pass; the master's stop hook, which does the same, left the failover to
/// the sentinels' down-after). One sentinel is asked, so another cannot answer in its place.
#[test]
fn a_planned_failover_right_after_a_password_step_waits_for_the_sentinels_to_see_the_replicas() {
    use switchboard_redis::passwords::Passwords;
    let (bed, master) = Bed::bootstrapped();
    let (data, sentinels) = bed.addrs();
    let accepted = vec![PASSWORD.to_owned()];
    let same = Passwords {
        current: PASSWORD,
        accepted: &accepted,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = runtime.block_on(async {
        apply_step(&data, &sentinels, same, None).await;
        bed.planned_failover_asking(&master, PASSWORD, &sentinels[..1])
            .await
    });
    started.unwrap_or_else(|e| panic!("right after a password step: {e}"));
    assert_ne!(bed.converged("after the failover"), master);
}

/// A password rotation as the operator drives it (`switchboard_redis::passwords`), under writes: both
/// passwords accepted, then the servers switch to the new one among themselves, the clients move over,
/// and only then is the old one refused. No server restarts for it, no client is refused, no confirmed
/// write is lost; a data node and a sentinel restarted mid-rotation or after it (with the passwords their
/// pod is given at that step) rejoin, and a failover after it works with the new password alone.
#[test]
fn the_password_rotates_under_writes_without_a_restart_or_a_refused_client() {
    use switchboard_redis::passwords::Passwords;
    const NEW: &str = "rotated-secret";
    let (mut bed, master) = Bed::bootstrapped();
    let (data, sentinels) = bed.addrs();
    let servers: Vec<(String, u16)> = bed
        .data
        .iter()
        .map(|p| (p.host.clone(), bed.redis_port))
        .chain(
            bed.sentinels
                .iter()
                .map(|p| (p.host.clone(), bed.sentinel_port)),
        )
        .collect();
    let answers = |bed: &Bed, password: &str| -> Vec<String> {
        servers
            .iter()
            .map(|(h, port)| {
                bed.cli(h, *port, Some(password), &["ping"])
                    .trim()
                    .to_owned()
            })
            .collect()
    };
    let step = |current: &str, accepted: &[&str]| {
        let accepted: Vec<String> = accepted.iter().map(|p| (*p).to_owned()).collect();
        let data = data.clone();
        let sentinels = sentinels.clone();
        let current = current.to_owned();
        async move {
            let passwords = Passwords {
                current: &current,
                accepted: &accepted,
            };
            apply_step(&data, &sentinels, passwords, None).await;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (old_confirmed, new_confirmed) = runtime.block_on(async {
        let old = switchboard_redis::connect(&bed.client_args(PASSWORD))
            .await
            .expect("connect with the old password");
        let old_writer = Writer::start(old, "old");
        tokio::time::sleep(Duration::from_secs(1)).await;

        // 1. Both passwords work everywhere; the servers still use the old one with each other.
        step(PASSWORD, &[PASSWORD, NEW]).await;
        assert!(
            answers(&bed, NEW).iter().all(|a| a == "PONG"),
            "{:?}",
            answers(&bed, NEW)
        );
        assert!(answers(&bed, PASSWORD).iter().all(|a| a == "PONG"));

        // 2. The servers use the new one with each other; replicas still follow the master.
        step(NEW, &[PASSWORD, NEW]).await;
        bed.password = NEW.to_owned();
        bed.passwords = format!("{PASSWORD} {NEW}");
        let replica = (0..bed.data.len())
            .find(|&i| bed.data[i].host != master)
            .expect("a replica");
        Bed::kill(&mut bed.data, replica);
        bed.start_data(replica);
        assert_eq!(bed.converged("a replica restarted mid-rotation"), master);

        // The clients move over (the operator rolls their pods now).
        let new = switchboard_redis::connect(&bed.client_args(NEW))
            .await
            .expect("connect with the new password");
        let new_writer = Writer::start(new, "new");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let old_confirmed = old_writer.finish().await;

        // 3. The old password is refused everywhere.
        step(NEW, &[NEW]).await;
        bed.passwords = NEW.to_owned();
        for answer in answers(&bed, PASSWORD) {
            assert!(
                answer.contains("NOAUTH") || answer.contains("WRONGPASS"),
                "the old password still works: {answer}"
            );
        }
        // The pods that did not restart still have the old password in their environment; their
        // readiness probes pass with the new one from the mounted applied Secret, and fail without it
        // (the kubelet would take every server out of service). Liveness asks only for an answer: a
        // refused password never gets a server restarted.
        for (host, port) in &servers {
            let port = i32::from(*port);
            let (ready, alive) = (ready_probe(port), alive_probe(port));
            assert!(
                bed.probe(&ready, host, PASSWORD, Some(NEW)),
                "{host}:{port}: {ready}"
            );
            assert!(
                !bed.probe(&ready, host, PASSWORD, None),
                "{host}:{port} is ready by a refused password"
            );
            assert!(
                bed.probe(&alive, host, PASSWORD, Some(NEW)),
                "{host}:{port}: {alive}"
            );
            assert!(
                bed.probe(&alive, host, PASSWORD, None),
                "{host}:{port}: {alive}"
            );
        }
        // A sentinel restarted now knows only the new password, and the sentinels fail the master
        // over with it (held writes, as the operator does).
        Bed::kill(&mut bed.sentinels, 0);
        bed.start_sentinel(0);
        assert_eq!(
            bed.converged("a sentinel restarted after the rotation"),
            master
        );
        let started = bed.planned_failover(&master, NEW).await;
        started.unwrap_or_else(|e| panic!("a failover with the new password: {e}"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        (old_confirmed, new_writer.finish().await)
    });
    every_confirmed_write_on_the_new_master(
        &bed,
        &master,
        &[("old", &old_confirmed), ("new", &new_confirmed)],
        20,
    );
}

/// `spec.redis.managed.tls`: with a certificate (`TLS_DIR`) the start scripts bring up data nodes and
/// sentinels that speak TLS only — to clients, for replication and between sentinels. A client that
/// trusts the authority reaches the master through the sentinels and writes; the operator's planned
/// failover and a password-rotation step work over TLS; plaintext is not served.
#[test]
fn managed_redis_with_a_certificate_speaks_only_tls_and_fails_over_without_loss() {
    use switchboard_redis::passwords::Passwords;
    let (bed, master) = Bed::bootstrapped_with(Bed::with_tls(true));
    let plain = Command::new("redis-cli")
        .args(["-h", &master, "-p", &bed.redis_port.to_string(), "ping"])
        .env("REDISCLI_AUTH", PASSWORD)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert_ne!(plain.trim(), "PONG", "a plaintext client is served");
    let (data, sentinels) = bed.addrs();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let confirmed = runtime.block_on(async {
        let args = bed.client_args(PASSWORD);
        let client = switchboard_redis::connect(&args)
            .await
            .expect("a client trusting the authority connects through the sentinels");
        let writer = Writer::start(client, "tls");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A rotation step over TLS (the same passwords: nothing changes but the way in).
        let tls = args.access().expect("access").tls;
        assert!(tls.is_some());
        let accepted = vec![PASSWORD.to_owned()];
        let same = Passwords {
            current: PASSWORD,
            accepted: &accepted,
        };
        apply_step(&data, &sentinels, same, tls.as_ref()).await;
        let started = bed.planned_failover(&master, PASSWORD).await;
        started.unwrap_or_else(|e| panic!("a sentinel started the failover over TLS: {e}"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        writer.finish().await
    });
    every_confirmed_write_on_the_new_master(&bed, &master, &[("tls", &confirmed)], 20);
}
