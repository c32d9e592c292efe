//! The `--user-agents` file, in one of three formats told apart by the first character of
//! its first line that is neither blank nor a `#` comment:
//!
//! - `[`: one JSON array of strings, or of objects carrying the user agent in a field
//!   named `useragent`, `ua` or `user_agent` (the first of these that is present);
//! - `{`: JSON lines, one such object per line;
//! - anything else: plain text, one user agent per line.
//!
//! Blank lines and lines starting with `#` are skipped in plain text and JSON lines. Any
//! line or element that is not what its format expects is an error naming the file and
//! the line (`ua.jsonl:3: no user-agent field: …`), never skipped: a load test should not
//! run on a mix other than the one asked for.

use anyhow::bail;
use bytes::Bytes;
use serde_json::{Map, Value};

/// The fields a JSON object may carry its user agent in, in order of preference.
const FIELDS: [&str; 3] = ["useragent", "ua", "user_agent"];

/// At most this many of an object's field names are quoted in an error.
const FIELDS_SHOWN: usize = 8;

/// The user agents of `text`, read from the file called `file` (for error messages).
///
/// # Errors
///
/// An empty file, a file with only comments, an empty JSON array, and any line or array
/// element that is not valid in the file's format: `file:line: what is wrong`.
pub(crate) fn parse(text: &str, file: &str) -> anyhow::Result<Vec<Bytes>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        bail!("{file}: empty file: expected user agents, one per line, as JSON lines or as a JSON array");
    }
    let Some(first) = lines(text).find(|line| !skipped(line.text)) else {
        bail!("{file}: no user agents: only comment lines");
    };
    match first.text.trim_start().chars().next() {
        Some('[') => json_array(&text[first.offset..], first.number - 1, file),
        Some('{') => json_lines(text, file),
        _ => Ok(lines(text)
            .filter(|line| !skipped(line.text))
            .map(|line| Bytes::from(line.text.trim().to_owned()))
            .collect()),
    }
}

/// One line of a file.
struct Line<'a> {
    /// 1-based.
    number: usize,
    /// Byte offset of its start in the file.
    offset: usize,
    /// Without its line terminator.
    text: &'a str,
}

/// The lines of `text`, numbered, with their offsets.
fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let mut offset = 0;
    text.split_inclusive('\n')
        .enumerate()
        .map(move |(index, raw)| {
            let line = Line {
                number: index + 1,
                offset,
                text: raw.trim_end_matches(['\n', '\r']),
            };
            offset += raw.len();
            line
        })
}

/// Whether a line is blank or a `#` comment.
fn skipped(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#')
}

/// JSON lines: one object per line.
fn json_lines(text: &str, file: &str) -> anyhow::Result<Vec<Bytes>> {
    let mut uas = Vec::new();
    for line in lines(text).filter(|line| !skipped(line.text)) {
        let n = line.number;
        let value: Value = match serde_json::from_str(line.text) {
            Ok(value) => value,
            Err(err) if err.is_eof() => bail!(
                "{file}:{n}: not valid JSON: {} (JSON lines need one whole object per line; \
                 a list of user agents can also be one JSON array)",
                json_error(&err)
            ),
            Err(err) => bail!("{file}:{n}: not valid JSON: {}", json_error(&err)),
        };
        let ua = match &value {
            Value::Object(object) => from_object(object),
            other => Err(format!(
                "expected a JSON object with a {} field, found {}",
                field_names(" or "),
                describe(other)
            )),
        };
        match ua {
            Ok(ua) => uas.push(ua),
            Err(what) => bail!("{file}:{n}: {what}"),
        }
    }
    Ok(uas)
}

/// A JSON array of strings or objects; `json` starts at line `lines_before + 1` of the file.
fn json_array(json: &str, lines_before: usize, file: &str) -> anyhow::Result<Vec<Bytes>> {
    let values: Vec<Value> = match serde_json::from_str(json) {
        Ok(values) => values,
        Err(err) => bail!(
            "{file}:{}: not valid JSON: {}",
            lines_before + err.line(),
            json_error(&err)
        ),
    };
    if values.is_empty() {
        bail!("{file}: the JSON array is empty: expected user agents");
    }
    let mut uas = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let ua = match value {
            Value::String(ua) => Ok(Bytes::from(ua.clone())),
            Value::Object(object) => from_object(object),
            other => Err(format!(
                "expected a string or an object with a {} field, found {}",
                field_names(" or "),
                describe(other)
            )),
        };
        match ua {
            Ok(ua) => uas.push(ua),
            Err(what) => {
                // Only on error: where the element starts.
                let line = element_starts(json)
                    .get(index)
                    .map(|&offset| lines_before + 1 + newlines(&json[..offset]));
                match line {
                    Some(line) => bail!("{file}:{line}: array element {}: {what}", index + 1),
                    None => bail!("{file}: array element {}: {what}", index + 1),
                }
            }
        }
    }
    Ok(uas)
}

/// The user agent in one of the [`FIELDS`] of `object`, or what is wrong.
fn from_object(object: &Map<String, Value>) -> Result<Bytes, String> {
    for field in FIELDS {
        match object.get(field) {
            Some(Value::String(ua)) => return Ok(Bytes::from(ua.clone())),
            Some(other) => {
                return Err(format!(
                    "field {field:?} is {}: expected a string",
                    describe(other)
                ))
            }
            None => {}
        }
    }
    let found = match object.len() {
        0 => "an empty object".to_owned(),
        n => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            let mut names: Vec<String> = keys
                .iter()
                .take(FIELDS_SHOWN)
                .map(|k| format!("{k:?}"))
                .collect();
            if n > FIELDS_SHOWN {
                names.push(format!("and {} more", n - FIELDS_SHOWN));
            }
            let noun = if n == 1 { "field" } else { "fields" };
            format!("{noun} {}", names.join(", "))
        }
    };
    Err(format!(
        "no user-agent field: expected one of {}; found {found}",
        field_names(", ")
    ))
}

/// The accepted field names, quoted and joined: `"useragent", "ua", "user_agent"`.
fn field_names(last_separator: &str) -> String {
    let quoted: Vec<String> = FIELDS.iter().map(|f| format!("{f:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => {
            format!("{}{last_separator}{last}", rest.join(", "))
        }
        _ => quoted.join(", "),
    }
}

/// The kind of a JSON value, for error messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its position, which the caller reports as `file:line`;
/// the column is kept.
fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&position) {
        Some(message) if err.column() > 0 => format!("{message} (column {})", err.column()),
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// The number of line breaks in `text`.
fn newlines(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count()
}

/// The byte offsets at which the elements of the (valid) JSON array `json` start.
fn element_starts(json: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut expecting) = (0usize, false, false, false);
    for (i, c) in json.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if expecting && !c.is_whitespace() && c != ']' {
            starts.push(i);
            expecting = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                expecting = depth == 1;
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user agents of `text` as strings, or the error message.
    fn uas(text: &str) -> Result<Vec<String>, String> {
        parse(text, "ua.txt")
            .map(|v| {
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect()
            })
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn plain_text_one_per_line() {
        assert_eq!(
            uas("# browsers\ncurl/8\r\n\n  Mozilla/5.0 (X11) x  \n{not json, but plain text}\n"),
            Ok(vec![
                "curl/8".to_owned(),
                "Mozilla/5.0 (X11) x".to_owned(),
                "{not json, but plain text}".to_owned()
            ])
        );
    }

    #[test]
    fn json_lines_with_any_of_the_fields() {
        let text = "\u{feff}# from browsers.jsonl\n\
                    {\"useragent\": \"Mozilla/5.0 a\", \"percent\": 0.09, \"ua\": \"not this\"}\n\
                    \n\
                    {\"ua\": \"curl/8\"}\r\n\
                    {\"user_agent\": \"\"}\n";
        assert_eq!(
            uas(text),
            Ok(vec![
                "Mozilla/5.0 a".to_owned(),
                "curl/8".to_owned(),
                String::new()
            ])
        );
    }

    #[test]
    fn json_lines_errors_name_file_line_and_fields() {
        assert_eq!(
            uas("{\"ua\": \"a\"}\n# c\n{\"name\": \"Chrome\", \"version\": 131}\n"),
            Err(
                "ua.txt:3: no user-agent field: expected one of \"useragent\", \"ua\", \
                 \"user_agent\"; found fields \"name\", \"version\""
                    .to_owned()
            )
        );
        assert_eq!(
            uas("{\"ua\": \"a\"}\n{}\n"),
            Err(
                "ua.txt:2: no user-agent field: expected one of \"useragent\", \"ua\", \
                 \"user_agent\"; found an empty object"
                    .to_owned()
            )
        );
        assert_eq!(
            uas("{\"ua\": \"a\"}\n{\"ua\": 7}\n"),
            Err("ua.txt:2: field \"ua\" is a number: expected a string".to_owned())
        );
        assert_eq!(
            uas("{\"ua\": \"a\"}\n\"b\"\n"),
            Err(
                "ua.txt:2: expected a JSON object with a \"useragent\", \"ua\" or \
                 \"user_agent\" field, found a string"
                    .to_owned()
            )
        );
        let bad = uas("{\"ua\": \"a\"}\n{\"ua\": \"b\",}\n").unwrap_err();
        assert!(
            bad.starts_with("ua.txt:2: not valid JSON: trailing comma (column "),
            "{bad}"
        );
        assert_eq!(
            uas("{\n  \"Bot\": {\"ua\": \"b\"}\n}\n"),
            Err(
                "ua.txt:1: not valid JSON: EOF while parsing an object (column 1) (JSON lines \
                 need one whole object per line; a list of user agents can also be one JSON \
                 array)"
                    .to_owned()
            )
        );
        let plain_after_json = uas("{\"ua\": \"a\"}\ncurl/8\n").unwrap_err();
        assert!(
            plain_after_json.starts_with("ua.txt:2: not valid JSON: "),
            "{plain_after_json}"
        );
    }

    #[test]
    fn json_array_of_strings_or_objects() {
        assert_eq!(
            uas("[\n  \"Mozilla/5.0 [x], {y}\",\n  {\"useragent\": \"b \\\"q\\\"\"},\n  {\"ua\": \"c\"}\n]\n"),
            Ok(vec![
                "Mozilla/5.0 [x], {y}".to_owned(),
                "b \"q\"".to_owned(),
                "c".to_owned()
            ])
        );
        // Comment lines before the array are skipped, and line numbers still count them.
        assert_eq!(
            uas("# list\n[\"a\",\n \"b\",\n {\"pattern\": \"x\", \"instances\": [\"y\"]}]"),
            Err(
                "ua.txt:4: array element 3: no user-agent field: expected one of \
                 \"useragent\", \"ua\", \"user_agent\"; found fields \"instances\", \"pattern\""
                    .to_owned()
            )
        );
        assert_eq!(
            uas("[\"a\",\n [\"b\"]]"),
            Err(
                "ua.txt:2: array element 2: expected a string or an object with a \
                 \"useragent\", \"ua\" or \"user_agent\" field, found an array"
                    .to_owned()
            )
        );
        let bad = uas("[\"a\",\n\"b\"\n\"c\"]").unwrap_err();
        assert!(
            bad.starts_with("ua.txt:3: not valid JSON: expected `,` or `]`"),
            "{bad}"
        );
        let bad = uas("[\"a\"] x").unwrap_err();
        assert!(
            bad.starts_with("ua.txt:1: not valid JSON: trailing characters"),
            "{bad}"
        );
    }

    #[test]
    fn empty_files_are_errors() {
        let empty = uas("").unwrap_err();
        assert!(empty.starts_with("ua.txt: empty file"), "{empty}");
        assert!(uas(" \n\n").unwrap_err().starts_with("ua.txt: empty file"));
        assert_eq!(
            uas("# nothing\n"),
            Err("ua.txt: no user agents: only comment lines".to_owned())
        );
        assert_eq!(
            uas(" [ ] "),
            Err("ua.txt: the JSON array is empty: expected user agents".to_owned())
        );
    }

    #[test]
    fn many_fields_are_cut_short() {
        let fields: Vec<String> = (0..12).map(|i| format!("\"f{i:02}\": 1")).collect();
        let err = uas(&format!("{{{}}}", fields.join(", "))).unwrap_err();
        assert!(err.ends_with("\"f06\", \"f07\", and 4 more"), "{err}");
    }

    #[test]
    fn element_starts_skip_strings_and_nesting() {
        let json = r#"[ "a,]", {"b": [1, 2]}, [3,4] ,5]"#;
        let starts = element_starts(json);
        let firsts: Vec<char> = starts
            .iter()
            .filter_map(|&i| json[i..].chars().next())
            .collect();
        assert_eq!(firsts, vec!['"', '{', '[', '5']);
    }
}
