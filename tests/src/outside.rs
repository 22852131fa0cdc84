//! Real programs from Debian standing in for what sits between a user and a server: a test
//! CA made with `openssl`, a TLS-terminating front (`socat OPENSSL-LISTEN`) before a test
//! server, an HTTP proxy (`tinyproxy`) with its access log, and an SSH server (`sshd`) to
//! forward a socket with `ssh -R`. Each runs as its own process group on loopback and is
//! stopped, with the processes it forked, when its handle drops.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools;

/// Names the TLS tests reach their servers by (an `/etc/hosts` entry: see [`hosts_entry`]).
pub const AS_HOST: &str = "as.corp.mcp-authd.test";
pub const MCP_HOST: &str = "mcp.corp.mcp-authd.test";

/// Makes `names` resolve to 127.0.0.1 through `/etc/hosts`, once (tests run as root in CI;
/// a parallel test adding the same line at once only duplicates it, which is harmless).
pub fn hosts_entry(names: &[&str]) {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| {
            !hosts.lines().any(|line| {
                let line = line.split('#').next().unwrap_or_default();
                let mut fields = line.split_whitespace();
                fields.next() == Some("127.0.0.1") && fields.any(|f| f == *name)
            })
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/hosts")
        .expect("/etc/hosts must be writable (the tests run as root)");
    // One write: concurrent appends do not interleave.
    file.write_all(format!("\n127.0.0.1 {}\n", missing.join(" ")).as_bytes())
        .expect("append to /etc/hosts");
}

/// A loopback port nothing listens on right now (for a front whose origin a server must
/// know before the front starts).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Waits until something accepts on `127.0.0.1:port`.
fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on port {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A started program in its own process group; the group is killed on drop.
struct Group(Child);

impl Group {
    fn spawn(command: &mut Command) -> Group {
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", command.get_program().display()));
        Group(child)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The group's id is the leader's pid: the program and whatever it forked.
        // SAFETY: kill takes no pointers; the group is ours (process_group(0) at spawn).
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Runs a command, panicking with its stderr when it fails.
fn run(command: &mut Command) {
    let out = command.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test certificate authority and one server certificate it signed for some names.
pub struct TestCa {
    /// The CA certificate (PEM): what `ca_file` / `SSL_CERT_FILE` point at.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    /// Made with the `openssl` command line in `dir`. `None` (skipped) without openssl
    /// outside CI.
    pub fn create(dir: &Path, names: &[&str]) -> Option<TestCa> {
        let openssl = tools::required(
            "openssl",
            tools::on_path("openssl"),
            "the test CA of the TLS tests",
        )?;
        let ca = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        let server_cert = dir.join("server.pem");
        let server_key = dir.join("server.key");
        let csr = dir.join("server.csr");
        let ext = dir.join("server.ext");
        run(Command::new(&openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=mcp-authd test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca));
        run(Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", &format!("/CN={}", names[0])])
            .arg("-keyout")
            .arg(&server_key)
            .arg("-out")
            .arg(&csr));
        let alt_names: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
                alt_names.join(",")
            ),
        )
        .expect("write the extensions file");
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial", "4711"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&server_cert));
        Some(TestCa {
            ca,
            server_cert,
            server_key,
        })
    }
}

/// `socat` terminating TLS on `127.0.0.1:port` with the CA's server certificate and
/// forwarding the plain stream to `backend`.
pub struct TlsFront {
    _socat: Group,
}

impl TlsFront {
    pub fn start(ca: &TestCa, port: u16, backend: SocketAddr) -> Option<TlsFront> {
        let socat = tools::required("socat", tools::on_path("socat"), "the TLS fronts")?;
        let mut group = Group::spawn(
            Command::new(socat)
                .arg(format!(
                    "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                    ca.server_cert.display(),
                    ca.server_key.display()
                ))
                .arg(format!("TCP:{backend}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_listening(port, "socat", &mut group.0);
        Some(TlsFront { _socat: group })
    }
}

/// `tinyproxy` on a loopback port with its own config and access log.
pub struct HttpProxy {
    pub port: u16,
    log: PathBuf,
    _tinyproxy: Group,
}

impl HttpProxy {
    pub fn start(dir: &Path) -> Option<HttpProxy> {
        let tinyproxy = tools::required(
            "tinyproxy",
            tools::on_path("tinyproxy"),
            "the HTTP proxy tests",
        )?;
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let config = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port (the test servers' ports are ephemeral).
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Connect\nLogFile \"{}\"\n",
                log.display()
            ),
        )
        .expect("write the tinyproxy config");
        let mut group = Group::spawn(
            Command::new(tinyproxy)
                .arg("-d")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_listening(port, "tinyproxy", &mut group.0);
        Some(HttpProxy {
            port,
            log,
            _tinyproxy: group,
        })
    }

    /// `http://127.0.0.1:PORT`, for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines the proxy logged (`CONNECT host:port HTTP/1.1`, `GET http://…`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").filter(|_| l.contains("Request (")))
            .map(|(_, request)| request.to_string())
            .collect()
    }
}

/// `sshd` on a loopback port accepting one key for the current user, for `ssh -R`.
pub struct SshServer {
    pub port: u16,
    /// The client's private key.
    pub key: PathBuf,
    _sshd: Group,
}

impl SshServer {
    pub fn start(dir: &Path) -> Option<SshServer> {
        let sshd = tools::required(
            "sshd",
            Some(PathBuf::from("/usr/sbin/sshd")).filter(|p| p.exists()),
            "the forwarded-socket test",
        )?;
        tools::required("ssh", tools::on_path("ssh"), "the forwarded-socket test")?;
        let host_key = dir.join("host_key");
        let key = dir.join("user_key");
        for k in [&host_key, &key] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(k));
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).expect("authorized_keys");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 UsePAM no\nStrictModes no\nStreamLocalBindUnlink yes\nAllowStreamLocalForwarding yes\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .expect("write the sshd config");
        // sshd insists on its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut group = Group::spawn(
            Command::new(sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(dir.join("sshd.log"))
                        .map(Stdio::from)
                        .unwrap_or(Stdio::null()),
                ),
        );
        wait_listening(port, "sshd", &mut group.0);
        Some(SshServer {
            port,
            key,
            _sshd: group,
        })
    }

    /// `ssh -N -R remote:local` to this server as the current user, running until dropped;
    /// returns once `remote` exists.
    pub fn forward(&self, remote: &Path, local: &Path) -> Forward {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let mut group = Group::spawn(
            Command::new("ssh")
                .arg("-i")
                .arg(&self.key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ])
                .args(["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"])
                .args(["-o", "LogLevel=ERROR", "-N", "-p", &self.port.to_string()])
                .arg("-R")
                .arg(format!("{}:{}", remote.display(), local.display()))
                .arg(format!("{user}@127.0.0.1"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !remote.exists() {
            if let Ok(Some(status)) = group.0.try_wait() {
                panic!(
                    "ssh -R exited with {status} before {} existed",
                    remote.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ssh -R did not create {}",
                remote.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Forward { _ssh: group }
    }
}

/// A running `ssh -R`.
pub struct Forward {
    _ssh: Group,
}
