//! Colour on stdout only where a person reads it: `--color auto|always|never`. Under
//! `auto` the decision is `anstream`'s, the one cargo and clap make (stdout a terminal
//! whose `TERM` is not `dumb`, `NO_COLOR`, `CLICOLOR_FORCE`, `CLICOLOR`); the escapes are
//! `anstyle`'s.

use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};

/// The `--color` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum When {
    /// Colour when stdout is a terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it)
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether to colour stdout: `always` and `never` win over the environment; `auto` asks
/// anstream about this process's stdout and environment.
pub fn for_stdout(when: When) -> bool {
    match when {
        When::Always => true,
        When::Never => false,
        When::Auto => anstream::AutoStream::choice(&std::io::stdout()) != ColorChoice::Never,
    }
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
    fn style(self) -> Style {
        match self {
            Paint::Green => AnsiColor::Green.on_default(),
            Paint::Yellow => AnsiColor::Yellow.on_default(),
            Paint::Red => AnsiColor::Red.on_default(),
            Paint::Bold => Style::new().bold(),
        }
    }

    /// `text` wrapped in the ANSI escape for this style when `on`, else `text` as it is.
    pub fn apply(self, text: &str, on: bool) -> String {
        if on {
            let style = self.style();
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment() {
        // Whatever the test's stdout and variables: `always` and `never` are not asked.
        assert!(for_stdout(When::Always));
        assert!(!for_stdout(When::Never));
    }

    #[test]
    fn paint_is_plain_text_when_off() {
        assert_eq!(Paint::Red.apply("needs login", false), "needs login");
        assert_eq!(Paint::Red.apply("x", true), "\x1b[31mx\x1b[0m");
        assert_eq!(Paint::Green.apply("ok", true), "\x1b[32mok\x1b[0m");
        assert_eq!(Paint::Yellow.apply("ok", true), "\x1b[33mok\x1b[0m");
        assert_eq!(Paint::Bold.apply("H", true), "\x1b[1mH\x1b[0m");
    }
}
