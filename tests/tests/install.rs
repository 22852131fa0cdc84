//! What `scripts/install.sh` installs, and that it works: `--version` of both binaries,
//! shell completions each shell accepts and that offer every subcommand, man pages groff
//! renders without a warning, and the script itself run into a temporary home.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mcp_authd_tests::daemon::bin;
use mcp_authd_tests::tools::{on_path, required};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("start the program");
    assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn describe(out: &Output) -> String {
    format!(
        "exited with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mcp_auth(args: &[&str]) -> String {
    run_ok(Command::new(bin("mcp-auth")).args(args))
}

/// The subcommands `mcp-auth --help` lists (without `help`), read from the help text rather
/// than from what is being tested.
fn subcommands() -> Vec<String> {
    let help = mcp_auth(&["--help"]);
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect();
    assert!(
        listed.iter().any(|n| n == "login") && listed.iter().any(|n| n == "service"),
        "no command list in --help: {help}"
    );
    listed
}

/// `groff` renders the page as plain text on a line long enough that no name is hyphenated;
/// any warning fails.
fn render_man(page: &str) -> Option<String> {
    let groff = required("groff", on_path("groff"), "rendering the man pages")?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.1");
    std::fs::write(&file, page).unwrap();
    let out = Command::new(groff)
        .args(["-k", "-man", "-Tutf8", "-ww", "-rLL=300n", "-P-cbou"])
        .arg(&file)
        .output()
        .expect("run groff");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "groff: {}",
        describe(&out)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 page"))
}

#[test]
fn both_binaries_print_the_workspace_version() {
    assert_eq!(mcp_auth(&["--version"]), format!("mcp-auth {VERSION}\n"));
    assert_eq!(
        run_ok(Command::new(bin("mcp-authd")).arg("--version")),
        format!("mcp-authd {VERSION}\n")
    );
}

#[test]
fn bash_completion_parses_and_completes_every_subcommand() {
    let Some(bash) = required("bash", on_path("bash"), "the bash completion") else {
        return;
    };
    let script = mcp_auth(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcp-auth");
    std::fs::write(&file, &script).unwrap();
    run_ok(Command::new(&bash).arg("-n").arg(&file));
    // What bash's programmable completion does at `mcp-auth <TAB>`: call the function the
    // script registered for mcp-auth (`complete -F`) with the words so far.
    let offered = run_ok(
        Command::new(&bash)
            .args([
                "-c",
                r#"source "$1"; f=$(complete -p mcp-auth | sed -n 's/.*-F \([^ ]*\).*/\1/p')
                   COMP_WORDS=(mcp-auth ""); COMP_CWORD=1; COMP_LINE="mcp-auth "; COMP_POINT=9
                   "$f" mcp-auth "" mcp-auth; printf '%s\n' "${COMPREPLY[@]}""#,
                "bash",
            ])
            .arg(&file),
    );
    let offered: Vec<&str> = offered.lines().collect();
    for sub in subcommands() {
        assert!(offered.contains(&sub.as_str()), "{sub} not in {offered:?}");
    }
}

#[test]
fn fish_completion_parses_and_completes_every_subcommand() {
    let Some(fish) = required("fish", on_path("fish"), "the fish completion") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcp-auth.fish");
    std::fs::write(&file, mcp_auth(&["completions", "fish"])).unwrap();
    run_ok(Command::new(&fish).arg("--no-execute").arg(&file));
    // `complete -C` prints what fish offers at `mcp-auth <TAB>`: one "name\tdescription" each.
    let offered = run_ok(
        Command::new(&fish)
            .args([
                "--no-config",
                "-c",
                "source $argv[1]; complete -C 'mcp-auth '",
            ])
            .arg(&file)
            .env("HOME", dir.path()),
    );
    let offered: Vec<&str> = offered
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    for sub in subcommands() {
        assert!(offered.contains(&sub.as_str()), "{sub} not in {offered:?}");
    }
}

#[test]
fn zsh_completion_parses_and_names_every_subcommand() {
    let Some(zsh) = required("zsh", on_path("zsh"), "the zsh completion") else {
        return;
    };
    let script = mcp_auth(&["completions", "zsh"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("_mcp-auth");
    std::fs::write(&file, &script).unwrap();
    run_ok(Command::new(zsh).arg("-n").arg(&file));
    assert!(script.starts_with("#compdef mcp-auth"), "{script}");
    // _describe's entries: 'name:description'.
    for sub in subcommands() {
        assert!(script.contains(&format!("'{sub}:")), "{sub} missing");
    }
}

#[test]
fn the_man_pages_render_and_name_every_subcommand() {
    let Some(main) = render_man(&mcp_auth(&["man"])) else {
        return;
    };
    for section in ["SYNOPSIS", "SUBCOMMANDS", "EXIT STATUS", "ENVIRONMENT"] {
        assert!(main.contains(section), "no {section} in:\n{main}");
    }
    assert!(main.contains("authorization required"), "{main}");
    let dir = tempfile::tempdir().unwrap();
    mcp_auth(&["man", "--dir", dir.path().to_str().unwrap()]);
    for sub in subcommands() {
        let name = format!("mcp-auth-{sub}");
        assert!(
            main.contains(&format!("{name}(1)")),
            "{name} not in:\n{main}"
        );
        let page = std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        let text = render_man(&page).unwrap();
        assert!(text.contains(&name), "{name}.1:\n{text}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mcp-auth.1")).unwrap(),
        mcp_auth(&["man"])
    );

    let daemon = render_man(&run_ok(Command::new(bin("mcp-authd")).arg("--man"))).unwrap();
    for expected in [
        "mcp-authd",
        "--socket",
        "--home",
        "--config",
        "MCP_AUTHD_HOME",
    ] {
        assert!(daemon.contains(expected), "no {expected} in:\n{daemon}");
    }
}

/// `scripts/install.sh ARGS --from <the binaries the tests use>` with `home` as HOME and
/// no XDG directories but `XDG_RUNTIME_DIR` (empty: no user manager answers there).
fn install_sh(home: &Path, args: &[&str]) -> String {
    let built = bin("mcp-auth").parent().unwrap().to_path_buf();
    let runtime = home.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    run_ok(
        Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .args(args)
            .arg("--from")
            .arg(built)
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", runtime)
            .env_remove("PREFIX")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("MCP_AUTHD_SOCKET"),
    )
}

#[test]
fn install_sh_puts_binaries_man_pages_and_completions_in_the_user_locations() {
    let home = tempfile::tempdir().unwrap();
    let out = install_sh(home.path(), &["--no-service"]);
    assert!(out.contains("not installed (--no-service)"), "{out}");
    let h = home.path();
    for file in [
        ".local/share/man/man1/mcp-auth.1",
        ".local/share/man/man1/mcp-auth-login.1",
        ".local/share/man/man1/mcp-authd.1",
        ".local/share/bash-completion/completions/mcp-auth",
        ".local/share/zsh/site-functions/_mcp-auth",
        ".config/fish/completions/mcp-auth.fish",
    ] {
        let len = std::fs::metadata(h.join(file)).map(|m| m.len());
        assert!(len.as_ref().is_ok_and(|&n| n > 0), "{file}: {len:?}\n{out}");
    }
    for name in ["mcp-auth", "mcp-authd"] {
        let installed = h.join(".local/bin").join(name);
        assert_eq!(
            run_ok(Command::new(&installed).arg("--version")),
            format!("{name} {VERSION}\n")
        );
    }
    assert!(
        !h.join(".config/systemd").exists(),
        "--no-service wrote units"
    );
}

#[test]
fn install_sh_without_a_user_session_still_installs_and_says_so() {
    let home = tempfile::tempdir().unwrap();
    let prefix = home.path().join("opt");
    let out = install_sh(
        home.path(),
        &["--prefix", prefix.to_str().expect("UTF-8 temp path")],
    );
    assert!(out.contains("no systemd user session here"), "{out}");
    let daemon = prefix.join("bin/mcp-authd");
    assert_eq!(
        run_ok(Command::new(&daemon).arg("--version")),
        format!("mcp-authd {VERSION}\n")
    );
    assert!(prefix.join("share/man/man1/mcp-auth.1").exists());
    // The units are written for the next session with systemd, running the installed daemon.
    let unit = std::fs::read_to_string(home.path().join(".config/systemd/user/mcp-authd.service"))
        .unwrap_or_else(|e| panic!("no service unit ({e}):\n{out}"));
    let daemon = std::fs::canonicalize(&daemon).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}\n", daemon.display())),
        "{unit}"
    );
    assert!(
        home.path()
            .join(".config/systemd/user/mcp-authd.socket")
            .exists()
    );
}
