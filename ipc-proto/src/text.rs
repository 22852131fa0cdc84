//! What a server says, made safe to show and to paste: the one sanitizer for
//! server-controlled text in messages, the shell quoting of suggested commands (built in
//! [`crate::next_step`]), and the RFC 6749 §3.3 scope check. Daemon and clients share them
//! so a message is as safe whichever side writes it.

/// Longest piece of server-controlled text a message quotes, in characters.
pub const MAX_QUOTED_CHARS: usize = 200;

/// Text from a remote server (an `error_description`, a scope, a URL, a name), made fit
/// for a log line or a terminal: ANSI escape sequences and Unicode bidirectional controls
/// removed with every other control character, cut at `max` characters (`…` marks the
/// cut). A hostile server can then neither repaint the user's terminal, hide text, nor
/// flood a log.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut kept = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            skip_escape_sequence(&mut chars);
            continue;
        }
        if c.is_control() || is_invisible(c) {
            continue;
        }
        if kept == max {
            out.push('…');
            break;
        }
        out.push(c);
        kept += 1;
    }
    out
}

/// After an ESC: a CSI sequence (`[` parameters, final byte `@`–`~`), an OSC or other
/// string sequence (`]`, `P`, `X`, `^`, `_`, up to BEL or ESC `\`), or a single character.
fn skip_escape_sequence(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    chars.next_if_eq(&'\\');
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Characters that move, reorder or hide text instead of showing it: bidirectional
/// controls (Trojan Source, CVE-2021-42574), zero-width characters, the line and paragraph
/// separators (a line break in a dialog) and the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{61c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

/// A command line for a POSIX shell: each argument quoted so that the shell passes it as
/// one word and expands nothing in it (`shlex`, the quoting cargo's build tools rely on).
/// Every `mcp-auth …` command a message suggests is quoted here (through
/// [`crate::next_step`]'s builders), so pasting it — by a person or by an agent with a
/// shell tool — runs exactly that command. NUL bytes, which no argument can hold, are
/// dropped.
pub fn shell_command<S: AsRef<str>>(args: &[S]) -> String {
    let words: Vec<String> = args.iter().map(|a| a.as_ref().replace('\0', "")).collect();
    shlex::try_join(words.iter().map(String::as_str)).expect("no NUL byte is left to refuse")
}

/// Why a scope is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "scope `{shown}` is not an OAuth scope token (RFC 6749 §3.3 allows only printable ASCII without space, `\"` and `\\`)"
)]
pub struct InvalidScope {
    /// The scope, through [`printable`].
    pub shown: String,
}

/// Checks one scope token: `1*( %x21 / %x23-5B / %x5D-7E )`, RFC 6749 §3.3. Anything else
/// (quotes, backslashes, spaces, control characters, non-ASCII) is refused, so no scope a
/// server names can break out of a quoted argument or a log line.
pub fn check_scope(scope: &str) -> Result<(), InvalidScope> {
    let ok = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    if ok {
        Ok(())
    } else {
        Err(InvalidScope {
            shown: printable(scope, 64),
        })
    }
}

/// Checks every token of a space-separated scope list (RFC 6749 §3.3 separates with single
/// spaces; any run of spaces is accepted) and returns them.
pub fn parse_scopes(list: &str) -> Result<Vec<String>, InvalidScope> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| check_scope(s).map(|()| s.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_escapes_controls_and_bidi_and_bounds_length() {
        assert_eq!(
            printable("a\u{1b}[31mred\u{1b}[0m\nb\u{1b}]0;title\u{7}c", 100),
            "aredbc"
        );
        assert_eq!(printable("x\u{1b}]8;;http://e\u{1b}\\y", 100), "xy");
        assert_eq!(
            printable("safe\u{202e}txt.exe\u{9b}2J", 100),
            "safetxt.exe2J"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
        assert_eq!(printable("\u{1b}", 3), "");
    }

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        for ok in [
            "mcp:read",
            "https://graph.example/.default",
            "a!#$%&'()*+,-./[]^_`{|}~",
        ] {
            assert!(check_scope(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "say\"hi",
            "back\\slash",
            "new\nline",
            "\u{1b}[31m",
            "ü",
        ] {
            assert!(check_scope(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_scopes("a  b").unwrap(), vec!["a", "b"]);
        assert!(parse_scopes("a \"b").is_err());
    }

    #[test]
    fn commands_quote_every_argument() {
        let hostile = "x';touch /tmp/p;'$(id)`id`\"\n";
        let cmd = shell_command(&["mcp-auth", "login", hostile]);
        assert!(!cmd.contains('\0'));
        assert_eq!(
            shlex::split(&cmd).unwrap(),
            vec!["mcp-auth", "login", hostile]
        );
    }
}
