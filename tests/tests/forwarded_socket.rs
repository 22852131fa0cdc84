//! The laptop's broker from a remote shell (issue 14.3): the daemon's socket forwarded with
//! a real `ssh -R /remote/path:/local/socket` through a real `sshd` on loopback, as agent
//! forwarding does. `mcp-auth` on the "remote" end logs in (the browser opens beside the
//! daemon) and takes tokens through it; the audit names `ssh`, the process that connected
//! on the daemon's side; and the client's trust checks still judge the remote end.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use mcp_authd_tests::daemon::{DaemonHome, bin};
use mcp_authd_tests::outside::SshServer;
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_auth_works_through_ssh_remote_forwarding_and_still_checks_the_socket() {
    let dir = tempfile::Builder::new()
        .prefix("fwd")
        .tempdir_in("/tmp")
        .unwrap();
    let Some(sshd) = SshServer::start(dir.path()) else {
        return;
    };
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    // The remote end: a private directory of the user's, as the docs ask for.
    let remote_dir = dir.path().join("remote");
    std::fs::create_dir(&remote_dir).unwrap();
    set_mode(&remote_dir, 0o700);
    let remote = remote_dir.join("mcp-authd.sock");
    let forward = sshd.forward(&remote, d.socket());
    let through = |args: &[&str]| remote_cli(&remote, args);

    let out = through(&["login", &url]);
    assert!(out.status.success(), "login through the forward: {out:?}");
    let out = through(&["token", &url]);
    assert!(out.status.success(), "token through the forward: {out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(mcp.status_with_token(&token).await, 200);

    // The daemon saw the ssh client connect, not the remote mcp-auth: that is what its
    // audit (and a confirm_clients question) names.
    let inspected: Value = serde_json::from_str(&d.cli_ok(&["inspect", &url, "--json"])).unwrap();
    let newest = &inspected["hand_outs"][0];
    let ssh = std::fs::canonicalize(mcp_authd_tests::tools::on_path("ssh").unwrap()).unwrap();
    assert_eq!(newest["peer_exe"], ssh.display().to_string(), "{inspected}");
    drop(forward);

    // A forward into a directory others may enter: the remote mcp-auth refuses to talk to
    // it before sending anything, as for a local socket.
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    set_mode(&open_dir, 0o755);
    let open = open_dir.join("mcp-authd.sock");
    let _forward = sshd.forward(&open, d.socket());
    let hand_outs_before = inspected["hand_outs"].as_array().unwrap().len();
    let out = remote_cli(&open, &["token", &url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to talk to") && stderr.contains("chmod 700"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no token: {out:?}");
    let inspected: Value = serde_json::from_str(&d.cli_ok(&["inspect", &url, "--json"])).unwrap();
    assert_eq!(
        inspected["hand_outs"].as_array().unwrap().len(),
        hand_outs_before,
        "nothing was handed out: {inspected}"
    );
}

/// `mcp-auth` in the remote shell: it finds the forwarded socket through
/// `MCP_AUTHD_SOCKET`, as the README tells remote users to set it.
fn remote_cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("mcp-auth"))
        .args(args)
        .env("MCP_AUTHD_SOCKET", socket)
        .env_remove("MCP_AUTHD_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-auth")
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}
