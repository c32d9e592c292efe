//! The fenced code blocks of a Markdown file, for tests that check the documentation
//! (`tests/docs.rs`).
//!
//! A small reader, not a full CommonMark parser: a fence is a line of three or more
//! backticks or tildes after any indentation (so fences inside list items count), with an
//! optional info string; it closes at a line of at least as many of the same character
//! and nothing else. Content lines lose up to the opening fence's indentation. A
//! backtick fence whose info string holds a backtick is inline code, not a fence.
//!
//! The line right before a fence may carry a directive for the test, an HTML comment
//! `<!-- docs-test: ... -->` (invisible when rendered); its text is in
//! [`Block::directive`]. A `docs-test:` comment anywhere else is reported by
//! [`read`] as misplaced, so a directive cannot silently miss its block.

/// One fenced code block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The first word of the info string (`sh`, `toml`, ...), empty when unlabelled.
    pub info: String,
    /// The lines between the fences, the fence's indentation removed, each ending in `\n`.
    pub body: String,
    /// The text after `docs-test:` of the comment on the line before the fence, trimmed,
    /// with its 1-based line.
    pub directive: Option<(usize, String)>,
    /// The text between the previous block (or the start of the file) and this one, the
    /// directive's line left out: what a reader sees just before the block.
    pub prose: String,
}

/// The blocks of `text`, in order; `Err` with every problem (`line N: ...`): a fence
/// never closed, a `docs-test` comment that is malformed or not on the line right before
/// a fence.
pub fn read(text: &str) -> Result<Vec<Block>, Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut outside = vec![true; lines.len()];
    let mut prose_start = 0;
    let mut i = 0;
    while i < lines.len() {
        let Some(open) = opening_fence(lines[i]) else {
            i += 1;
            continue;
        };
        let Some(close) = (i + 1..lines.len()).find(|&j| closes(lines[j], &open)) else {
            problems.push(format!("line {}: code fence never closed", i + 1));
            break;
        };
        let directive = i
            .checked_sub(1)
            .filter(|&d| d >= prose_start)
            .and_then(|d| directive_text(lines[d]).map(|text| (d, text)));
        let prose_end = directive.as_ref().map_or(i, |(d, _)| *d);
        if let Some((d, _)) = directive {
            outside[d] = false;
        }
        outside[i..=close].iter_mut().for_each(|o| *o = false);
        blocks.push(Block {
            line: i + 1,
            info: open.info.clone(),
            body: lines[i + 1..close]
                .iter()
                .map(|line| format!("{}\n", strip_indent(line, open.indent)))
                .collect(),
            directive: directive.map(|(d, text)| (d + 1, text)),
            prose: lines[prose_start..prose_end].join("\n"),
        });
        prose_start = close + 1;
        i = close + 1;
    }
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if outside[n] && trimmed.starts_with("<!--") && trimmed.contains("docs-test") {
            problems.push(format!(
                "line {}: a docs-test directive must be `<!-- docs-test: ... -->` on the line \
                 right before a code fence",
                n + 1
            ));
        }
    }
    if problems.is_empty() {
        Ok(blocks)
    } else {
        Err(problems)
    }
}

struct Fence {
    indent: usize,
    marker: char,
    len: usize,
    info: String,
}

fn opening_fence(line: &str) -> Option<Fence> {
    let trimmed = line.trim_start_matches(' ');
    let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|c| *c == marker).count();
    if len < 3 {
        return None;
    }
    let rest = &trimmed[len..];
    if marker == '`' && rest.contains('`') {
        return None;
    }
    Some(Fence {
        indent: line.len() - trimmed.len(),
        marker,
        len,
        info: rest.split_whitespace().next().unwrap_or("").to_string(),
    })
}

fn closes(line: &str, open: &Fence) -> bool {
    let trimmed = line.trim();
    trimmed.len() >= open.len && trimmed.chars().all(|c| c == open.marker)
}

fn strip_indent(line: &str, indent: usize) -> &str {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    &line[spaces.min(indent)..]
}

/// `Some(text)` for a line `<!-- docs-test: text -->`.
fn directive_text(line: &str) -> Option<String> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim()
        .strip_prefix("docs-test:")?;
    Some(inner.trim().to_string())
}
