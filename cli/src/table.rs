//! A small aligned-table renderer for `mcp-auth list`: one line per row, columns two
//! spaces apart, cut with `…` only when a terminal is narrower than the table.

use std::io::IsTerminal;

use crate::color::Paint;

/// Narrowest a shrinkable column gets before the table is allowed to overflow.
const MIN_SHRUNK_WIDTH: usize = 10;
const GAP: &str = "  ";

pub struct Column {
    pub title: &'static str,
    /// May be cut (server URLs, scopes) when the terminal is too narrow; ids and times are not.
    pub shrinkable: bool,
}

pub struct Cell {
    text: String,
    paint: Option<Paint>,
}

impl Cell {
    /// Control characters (a hostile server's terminal escapes) are shown as `?`.
    pub fn new(text: impl AsRef<str>) -> Cell {
        let text = text
            .as_ref()
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Cell { text, paint: None }
    }

    pub fn painted(text: impl AsRef<str>, paint: Paint) -> Cell {
        Cell {
            paint: Some(paint),
            ..Cell::new(text)
        }
    }
}

pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        assert_eq!(row.len(), self.columns.len(), "one cell per column");
        self.rows.push(row);
    }

    /// The table, one `\n`-terminated line per row after the header. `max_width`: the
    /// terminal's width (cells are cut to fit), or `None` to print every value in full.
    pub fn render(&self, max_width: Option<usize>, color: bool) -> String {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .map(|r| width(&r[i].text))
                    .chain([width(c.title)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if let Some(max) = max_width {
            self.shrink(&mut widths, max);
        }
        let mut out = String::new();
        let header: Vec<Cell> = self
            .columns
            .iter()
            .map(|c| Cell::painted(c.title, Paint::Bold))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                let text = cut(&cell.text, *w);
                let pad = w - width(&text);
                line.push_str(&match cell.paint {
                    Some(p) => p.apply(&text, color),
                    None => text,
                });
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(GAP);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Takes one column at a time from the widest shrinkable column until the table fits
    /// in `max` or every shrinkable column is at its minimum.
    fn shrink(&self, widths: &mut [usize], max: usize) {
        let total = |w: &[usize]| w.iter().sum::<usize>() + GAP.len() * w.len().saturating_sub(1);
        while total(widths) > max {
            let widest = (0..widths.len())
                .filter(|&i| {
                    self.columns[i].shrinkable
                        && widths[i] > MIN_SHRUNK_WIDTH.max(width(self.columns[i].title))
                })
                .max_by_key(|&i| widths[i]);
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
    }
}

/// Characters, as columns: the values shown (URLs, scopes, emails, times) are not wide
/// East Asian text, so no width table is carried for it.
fn width(s: &str) -> usize {
    s.chars().count()
}

fn cut(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Columns of the terminal stdout is, or `None` when stdout is not a terminal (a pipe or
/// a file gets every value in full). `COLUMNS` when the terminal does not tell.
pub fn stdout_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some((terminal_size::Width(columns), _)) =
        terminal_size::terminal_size_of(std::io::stdout())
    {
        return Some(usize::from(columns));
    }
    std::env::var("COLUMNS").ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(vec![
            Column {
                title: "SERVER",
                shrinkable: true,
            },
            Column {
                title: "SCOPES",
                shrinkable: true,
            },
            Column {
                title: "STATE",
                shrinkable: false,
            },
        ]);
        t.push(vec![
            Cell::new("https://mcp.example.com/mcp"),
            Cell::new("mcp:read mcp:write offline_access"),
            Cell::painted("ok", Paint::Green),
        ]);
        t.push(vec![
            Cell::new("https://b.example/mcp"),
            Cell::new("—"),
            Cell::painted("needs login", Paint::Red),
        ]);
        t
    }

    #[test]
    fn columns_are_aligned_and_values_whole_without_a_width() {
        let text = sample().render(None, false);
        assert_eq!(
            text,
            "SERVER                       SCOPES                             STATE\n\
             https://mcp.example.com/mcp  mcp:read mcp:write offline_access  ok\n\
             https://b.example/mcp        —                                  needs login\n"
        );
    }

    #[test]
    fn no_escape_bytes_without_colour_and_the_same_layout_with_it() {
        let plain = sample().render(None, false);
        assert!(!plain.contains('\x1b'));
        let coloured = sample().render(None, true);
        assert!(coloured.contains("\x1b[32mok\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[31mneeds login\x1b[0m"));
        let stripped = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn a_narrow_terminal_cuts_shrinkable_cells_with_an_ellipsis() {
        let text = sample().render(Some(50), false);
        for line in text.lines() {
            assert!(line.chars().count() <= 50, "{line:?}");
        }
        assert!(text.contains('…'), "{text}");
        assert!(text.contains("needs login"), "STATE is never cut: {text}");
        // Wide enough: nothing is cut.
        assert_eq!(
            sample().render(Some(200), false),
            sample().render(None, false)
        );
    }

    #[test]
    fn a_terminal_too_narrow_for_the_minimums_overflows_rather_than_cutting_more() {
        let text = sample().render(Some(5), false);
        let header = text.lines().next().unwrap();
        assert!(
            header.starts_with("SERVER      SCOPES      STATE"),
            "{text}"
        );
    }

    #[test]
    fn control_characters_in_values_are_neutralised() {
        let mut t = Table::new(vec![Column {
            title: "ACCOUNT",
            shrinkable: true,
        }]);
        t.push(vec![Cell::new("evil\x1b[2Jname")]);
        let text = t.render(None, false);
        assert!(
            !text.contains('\x1b') && text.contains("evil?[2Jname"),
            "{text:?}"
        );
    }
}
