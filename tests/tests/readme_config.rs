//! Every `toml` block of README.md (the configuration reference and one entry per
//! identity provider) is a config file the daemon accepts: each is loaded by a running
//! daemon through `mcp-auth reload`, the daemon's own loader with all its checks.

use mcp_authd_tests::daemon::DaemonHome;

/// The ```toml blocks of the README, in order.
fn toml_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```toml block in README.md");
    blocks
}

#[test]
fn every_config_example_in_the_readme_is_accepted_by_the_daemon() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let blocks = toml_blocks(&readme);
    let providers = [
        "login.microsoftonline.com",
        "accounts.google.com",
        "okta.com",
        "auth0.com",
        "/realms/",
        "github.com/login/oauth",
    ];
    for provider in providers {
        assert!(
            blocks.iter().any(|b| b.contains(provider)),
            "README has no config example for {provider}"
        );
    }

    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let config = home.path().join("config.toml");
    for block in &blocks {
        std::fs::write(&config, block).unwrap();
        let out = d.cli(&["reload"]);
        assert!(
            out.status.success(),
            "the daemon refused this README example:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `[servers."…"]`, not its sub-tables (`[servers."…".enterprise]`).
        let entries = block
            .lines()
            .filter(|l| {
                l.starts_with("[servers.") && l.split(']').next().is_some_and(|t| t.ends_with('"'))
            })
            .count();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&format!("({entries} server entr")),
            "{said} for:\n{block}"
        );
    }

    // The test can fail: a key the daemon does not know is refused.
    std::fs::write(
        &config,
        "[servers.\"https://a.example\"]\nextra_param = 1\n",
    )
    .unwrap();
    assert!(!d.cli(&["reload"]).status.success());
}
