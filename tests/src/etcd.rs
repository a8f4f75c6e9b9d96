//! A real etcd (Debian's `etcd-server`) on loopback, started by the test
//! that needs it and stopped by pid when dropped. `make test` installs the
//! package when it is missing; `EMR_ETCD` names another binary.

use std::path::{Path, PathBuf};
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
    /// Served over TLS, clients holding a certificate of `ca`.
    tls: Option<ServerTls>,
    /// Plain HTTP `/health` (`--listen-metrics-urls`), for a TLS member.
    metrics_port: u16,
}

/// A member's TLS: its certificate and key, and the CA its clients'
/// certificates must chain to (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Throwaway certificates for etcd over mutual TLS, made with the openssl
/// command: a CA, the member's (`server_name` and 127.0.0.1), a client's
/// with no Common Name (etcd's gateway refuses one when its auth is on),
/// and a client's from another CA.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub server: ServerTls,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl Certificates {
    pub fn make(dir: &Path, server_name: &str) -> Certificates {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ca = |name: &str| {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ]);
        };
        let signed = |name: &str, ca: &str, subject: &str, ext: &str| {
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
            run(&[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]);
        };
        ca("etcd-ca");
        ca("other-ca");
        signed(
            "member",
            "etcd-ca",
            "/CN=etcd",
            &format!("subjectAltName=DNS:{server_name},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
        );
        let client_ext = "subjectAltName=DNS:emr-edge\nextendedKeyUsage=clientAuth\n";
        signed("client", "etcd-ca", "/O=emr-edge", client_ext);
        signed("stranger", "other-ca", "/O=emr-edge", client_ext);
        Certificates {
            server: ServerTls {
                ca: dir.join("etcd-ca.crt"),
                cert: dir.join("member.crt"),
                key: dir.join("member.key"),
            },
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            stranger_cert: dir.join("stranger.crt"),
            stranger_key: dir.join("stranger.key"),
        }
    }
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

    /// A single member served over mutual TLS only.
    pub fn start_tls(tls: &ServerTls) -> Etcd {
        let mut etcd = Self::member("m1", free_port(), free_port());
        etcd.initial_cluster = format!("m1=http://127.0.0.1:{}", etcd.peer_port);
        etcd.tls = Some(tls.clone());
        etcd.metrics_port = free_port();
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
            tls: None,
            metrics_port: 0,
        }
    }

    fn spawn(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &t.cert),
                ("--key-file", &t.key),
                ("--trusted-ca-file", &t.ca),
            ] {
                tls_args.push(flag.into());
                tls_args.push(path.display().to_string());
            }
            tls_args.push("--client-cert-auth".into());
            tls_args.push("--listen-metrics-urls".into());
            tls_args.push(format!("http://127.0.0.1:{}", self.metrics_port));
        }
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
            .args(&tls_args)
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
        let health = if self.tls.is_some() {
            format!("http://127.0.0.1:{}/health", self.metrics_port)
        } else {
            self.url("/health")
        };
        while Instant::now() < deadline {
            if crate::blocking_get(&health).is_ok_and(|b| b.contains("true")) {
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
