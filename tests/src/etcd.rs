//! A real etcd (Debian's `etcd-server`) on loopback, started by the test
//! that needs it and stopped by pid when dropped. `make test` installs the
//! package when it is missing; `EMR_ETCD` names another binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, scratch_dir};

/// The etcd binary.
pub fn etcd_binary() -> PathBuf {
    let p = std::env::var_os("EMR_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        p.exists(),
        "{} does not exist: `make test` installs Debian's etcd-server",
        p.display()
    );
    p
}

/// One etcd member, on free loopback ports.
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    pub dir: PathBuf,
    name: String,
    /// `name=peer-url` of every member.
    initial_cluster: String,
    extra: Vec<String>,
}

impl Etcd {
    /// Starts a single-member cluster and waits until it answers.
    pub fn start() -> Etcd {
        Self::start_with(&[])
    }

    /// [`Etcd::start`] with more flags (`--quota-backend-bytes=…`).
    pub fn start_with(extra: &[&str]) -> Etcd {
        let mut etcd = Self::member("m1", free_port(), free_port());
        etcd.initial_cluster = format!("m1=http://127.0.0.1:{}", etcd.peer_port);
        etcd.extra = extra.iter().map(|s| s.to_string()).collect();
        etcd.spawn();
        etcd.wait_ready();
        etcd
    }

    /// Starts a cluster of `n` members and waits until each answers.
    pub fn cluster(n: usize) -> Vec<Etcd> {
        let mut members: Vec<Etcd> = (1..=n)
            .map(|i| Self::member(&format!("m{i}"), free_port(), free_port()))
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
            m.spawn();
        }
        for m in &members {
            m.wait_ready();
        }
        members
    }

    fn member(name: &str, client_port: u16, peer_port: u16) -> Etcd {
        Etcd {
            child: None,
            client_port,
            peer_port,
            dir: scratch_dir(),
            name: name.into(),
            initial_cluster: String::new(),
            extra: Vec::new(),
        }
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("cannot open etcd's log");
        let child = Command::new(etcd_binary())
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "emr-test"])
            .args(["--log-level", "warn"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start etcd");
        self.child = Some(child);
    }

    /// Something else that answers as etcd on `port` (a proxy in front of
    /// a member), for a replica's endpoints; nothing is started or stopped.
    pub fn at_port(port: u16) -> Etcd {
        Self::member("proxy", port, 0)
    }

    /// A gateway URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.client_port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if crate::blocking_get(&self.url("/health")).is_ok_and(|b| b.contains("true")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become healthy; its log: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
