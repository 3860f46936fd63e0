//! Self-contained HTML rendering of the report: inline CSS, plots inlined as SVG.

use std::fmt::Write as _;

use super::doc::{Block, Cell, Document, Table, Tone};

const CSS: &str = r#"
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --head:#f3f4f6; --accent:#2563eb;
        --good:#047857; --good-bg:#d1fae5; --bad:#b91c1c; --bad-bg:#fee2e2;
        --warn:#92400e; --warn-bg:#fef3c7; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0; background: #fafafa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
       min-height: 100vh; box-shadow: 0 0 0 1px var(--line); }
h1 { font-size: 1.6em; margin: 0.2em 0 0.6em; }
h2 { font-size: 1.25em; margin: 1.8em 0 0.6em; padding-bottom: 0.25em;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 1.4em 0 0.5em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 0.4em 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
.table-wrap { overflow-x: auto; margin: 0.5em 0 1em; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
td:first-child { white-space: nowrap; }
h4 { font-size: 0.95em; margin: 1.1em 0 0.3em; color: var(--muted); }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fcfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em;
       color: #374151; }
.good { color: var(--good); font-weight: 600; }
.bad { color: var(--bad); font-weight: 700; }
.warn { color: var(--warn); font-weight: 600; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 9px; font-size: 0.8em;
         vertical-align: middle; margin-left: 6px; }
.badge.good { background: var(--good-bg); }
.badge.bad { background: var(--bad-bg); }
.callout { border-left: 4px solid var(--accent); background: #eff6ff; padding: 8px 12px;
           margin: 0.6em 0; border-radius: 0 4px 4px 0; }
.callout-warn { border-color: #d97706; background: var(--warn-bg); }
.callout-bad { border-color: var(--bad); background: var(--bad-bg); }
.callout ul { margin: 0.3em 0 0; }
figure { margin: 1.2em 0 1.8em; }
figure svg { max-width: 100%; height: auto; display: block; border: 1px solid var(--line);
             border-radius: 4px; }
figcaption { font-size: 0.85em; color: var(--muted); margin-top: 4px; }
figcaption a { color: var(--accent); }
"#;

/// Renders the document as one HTML page.
pub(super) fn render(doc: &Document) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n",
        esc(&doc.title),
        esc(&doc.title)
    );
    for block in &doc.blocks {
        match block {
            Block::Heading(level, text, badge) => {
                let l = (*level).clamp(2, 6);
                let _ = write!(out, "<h{l}>{}", esc(text));
                if let Some((b, tone)) = badge {
                    let _ = write!(
                        out,
                        "<span class=\"badge {}\">{}</span>",
                        class(*tone),
                        esc(b)
                    );
                }
                let _ = writeln!(out, "</h{l}>");
            }
            Block::Meta(pairs) => {
                out.push_str("<dl class=\"meta\">\n");
                for (k, v) in pairs {
                    let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
                }
                out.push_str("</dl>\n");
            }
            Block::Para(text) => {
                let _ = writeln!(out, "<p>{}</p>", esc(text));
            }
            Block::Callout(tone, text, items) => {
                let _ = write!(
                    out,
                    "<div class=\"callout callout-{}\">{}",
                    class(*tone),
                    esc(text)
                );
                if !items.is_empty() {
                    out.push_str("<ul>");
                    for item in items {
                        let _ = write!(out, "<li>{}</li>", esc(item));
                    }
                    out.push_str("</ul>");
                }
                out.push_str("</div>\n");
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(out, "<li>{}</li>", esc(item));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(t) => table(t, &mut out),
            Block::Figure { title, file, svg } => {
                let _ = writeln!(
                    out,
                    "<figure>\n{}\n<figcaption>{} — <a href=\"{}\">{}</a></figcaption>\n</figure>",
                    inline_svg(svg),
                    esc(title),
                    esc(file),
                    esc(file)
                );
            }
        }
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn table(t: &Table, out: &mut String) {
    out.push_str("<div class=\"table-wrap\"><table>\n<thead><tr>");
    for (i, h) in t.header.iter().enumerate() {
        let num = t.numeric.get(i).copied().unwrap_or(false);
        let _ = write!(
            out,
            "<th{}>{}</th>",
            if num { " class=\"num\"" } else { "" },
            esc(h)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let num = t.numeric.get(i).copied().unwrap_or(false);
            cell(c, num, out);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

fn cell(c: &Cell, num: bool, out: &mut String) {
    let mut classes = Vec::new();
    if num {
        classes.push("num");
    }
    if c.tone != Tone::Plain {
        classes.push(class(c.tone));
    }
    let attr = if classes.is_empty() {
        String::new()
    } else {
        format!(" class=\"{}\"", classes.join(" "))
    };
    let text = if c.code {
        format!("<code>{}</code>", esc(&c.text))
    } else {
        esc(&c.text)
    };
    let _ = write!(out, "<td{attr}>{text}</td>");
}

fn class(tone: Tone) -> &'static str {
    match tone {
        Tone::Plain => "",
        Tone::Good => "good",
        Tone::Bad => "bad",
        Tone::Warn => "warn",
        Tone::Muted => "muted",
    }
}

/// The SVG document without an XML declaration, which is not allowed inside HTML.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}
