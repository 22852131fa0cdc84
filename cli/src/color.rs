//! Colour on stdout only where a person reads it: `--color auto|always|never`, `NO_COLOR`
//! (<https://no-color.org>) and `CLICOLOR_FORCE`.

use std::io::IsTerminal;

/// The `--color` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum When {
    /// Colour when stdout is a terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it)
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether to colour: `always` and `never` win over the environment; under `auto`, a
/// non-empty `NO_COLOR` turns colour off, a `CLICOLOR_FORCE` other than `0` turns it on,
/// and otherwise stdout must be a terminal whose `TERM` is not `dumb`.
pub fn enabled(when: When, env: impl Fn(&str) -> Option<String>, stdout_is_tty: bool) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    match when {
        When::Always => true,
        When::Never => false,
        When::Auto if set("NO_COLOR") => false,
        When::Auto if set("CLICOLOR_FORCE") && env("CLICOLOR_FORCE").as_deref() != Some("0") => {
            true
        }
        When::Auto => stdout_is_tty && env("TERM").as_deref() != Some("dumb"),
    }
}

/// [`enabled`] for this process's stdout and environment.
pub fn for_stdout(when: When) -> bool {
    enabled(
        when,
        |name| std::env::var(name).ok(),
        std::io::stdout().is_terminal(),
    )
}

/// The few styles the CLI uses: states (good, warning, bad) and table headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Green,
    Yellow,
    Red,
    Bold,
}

impl Paint {
    fn sgr(self) -> &'static str {
        match self {
            Paint::Green => "32",
            Paint::Yellow => "33",
            Paint::Red => "31",
            Paint::Bold => "1",
        }
    }

    /// `text` wrapped in the ANSI escape for this style when `on`, else `text` as it is.
    pub fn apply(self, text: &str, on: bool) -> String {
        if on {
            format!("\x1b[{}m{text}\x1b[0m", self.sgr())
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn auto_colours_a_terminal_only() {
        assert!(enabled(When::Auto, env(&[("TERM", "xterm")]), true));
        assert!(!enabled(When::Auto, env(&[("TERM", "xterm")]), false));
        assert!(!enabled(When::Auto, env(&[("TERM", "dumb")]), true));
    }

    #[test]
    fn no_color_and_clicolor_force_under_auto() {
        assert!(!enabled(When::Auto, env(&[("NO_COLOR", "1")]), true));
        assert!(
            enabled(When::Auto, env(&[("NO_COLOR", "")]), true),
            "an empty NO_COLOR does not count"
        );
        assert!(enabled(When::Auto, env(&[("CLICOLOR_FORCE", "1")]), false));
        assert!(!enabled(When::Auto, env(&[("CLICOLOR_FORCE", "0")]), false));
        assert!(
            !enabled(
                When::Auto,
                env(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]),
                true
            ),
            "NO_COLOR wins"
        );
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        assert!(enabled(When::Always, env(&[("NO_COLOR", "1")]), false));
        assert!(!enabled(When::Never, env(&[("CLICOLOR_FORCE", "1")]), true));
    }

    #[test]
    fn paint_is_plain_text_when_off() {
        assert_eq!(Paint::Red.apply("needs login", false), "needs login");
        assert_eq!(Paint::Red.apply("x", true), "\x1b[31mx\x1b[0m");
    }
}
