//! Markdown rendering of the report (CommonMark with GitHub tables).

use std::fmt::Write as _;

use super::doc::{Block, Cell, Document, Table, Tone};

/// Renders the document; plots are referenced as `plots/*.svg` images.
pub(super) fn render(doc: &Document) -> String {
    let mut out = format!("# {}\n", esc(&doc.title));
    for block in &doc.blocks {
        out.push('\n');
        match block {
            Block::Heading(level, text, badge) => {
                let hashes = "#".repeat(usize::from((*level).clamp(2, 6)));
                let _ = write!(out, "{hashes} {}", esc(text));
                if let Some((b, _)) = badge {
                    let _ = write!(out, " — **{}**", esc(b));
                }
                out.push('\n');
            }
            Block::Meta(pairs) => {
                for (k, v) in pairs {
                    let _ = writeln!(out, "- **{}:** {}", esc(k), esc(v));
                }
            }
            Block::Para(text) => {
                let _ = writeln!(out, "{}", esc(text));
            }
            Block::Callout(tone, text, items) => {
                let label = match tone {
                    Tone::Bad => "FAIL",
                    Tone::Warn => "Warning",
                    _ => "Note",
                };
                let _ = writeln!(out, "> **{label}:** {}", esc(text));
                for item in items {
                    let _ = writeln!(out, "> - {}", esc(item));
                }
            }
            Block::List(items) => {
                for item in items {
                    let _ = writeln!(out, "- {}", esc(item));
                }
            }
            Block::Table(t) => table(t, &mut out),
            Block::Figure { title, file, .. } => {
                let _ = writeln!(out, "**{}**\n\n![{}]({file})", esc(title), esc(title));
            }
        }
    }
    out
}

fn table(t: &Table, out: &mut String) {
    let head: Vec<String> = t.header.iter().map(|h| esc(h)).collect();
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let rule: Vec<&str> = t
        .numeric
        .iter()
        .map(|&n| if n { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in &t.rows {
        let cells: Vec<String> = row.iter().map(cell).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

fn cell(c: &Cell) -> String {
    if c.code {
        // Backslash escapes do not work inside code spans; a pipe would still end the cell.
        // One code span per comma-separated item (artifact lists).
        let spans: Vec<String> = c
            .text
            .split(", ")
            .map(|item| format!("`{}`", item.replace('`', "'").replace('|', "¦")))
            .collect();
        return spans.join(", ");
    }
    let text = esc(&c.text);
    match c.tone {
        Tone::Bad => format!("**{text}**"),
        _ => text,
    }
}

/// Escapes the characters CommonMark (and GitHub tables) would interpret.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}
