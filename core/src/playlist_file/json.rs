//! A pull reader for JSON (RFC 8259) that knows the line of every value, so
//! entries can say where their object starts and errors where they are. The
//! format readers walk the structure they expect and skip the rest, so
//! nothing is kept that is not used: no tree of the whole file.
//!
//! Errors: the end of the text inside a value is "truncated" (naming the
//! innermost object, list or string); anything else that is not JSON is a
//! syntax error with line and column; nesting deeper than [`MAX_DEPTH`] is
//! refused, so skipping can recurse.

use super::PlaylistFileError as E;
use std::borrow::Cow;

/// Deeper than any playlist format (the Web API's is 6).
pub(super) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    /// For messages: "`"tracks"` is {noun}".
    pub(super) fn noun(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "a list",
            Kind::String => "text",
            Kind::Number => "a number",
            Kind::Bool => "true or false",
            Kind::Null => "null",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Open {
    Object,
    Array,
}

pub(super) struct Reader<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    line_start: usize,
    open: Vec<Open>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Reader {
            src,
            pos: 0,
            line: 1,
            line_start: 0,
            open: Vec::new(),
        }
    }

    /// The line of the reader's position; after [`Reader::peek`], the line
    /// where the next value starts.
    pub(super) fn line(&self) -> usize {
        self.line
    }

    fn byte(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b) = self.byte() {
            match b {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                _ => break,
            }
        }
    }

    fn truncated(&self, inside: Option<&'static str>) -> E {
        let inside = inside.unwrap_or(match self.open.last() {
            Some(Open::Object) => "an object",
            Some(Open::Array) => "a list",
            None => "a value",
        });
        E::JsonTruncated {
            line: self.line,
            inside,
        }
    }

    fn syntax(&self, problem: impl Into<String>) -> E {
        E::JsonSyntax {
            line: self.line,
            column: self.pos.saturating_sub(self.line_start) + 1,
            problem: problem.into(),
        }
    }

    /// What is at the position, for messages: `'x'`.
    fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => "the end".to_owned(),
        }
    }

    /// The kind of the next value, after skipping whitespace.
    pub(super) fn peek(&mut self) -> Result<Kind, E> {
        self.ws();
        match self.byte() {
            None => Err(self.truncated(None)),
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"') => Ok(Kind::String),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(b't' | b'f') => Ok(Kind::Bool),
            Some(b'n') => Ok(Kind::Null),
            Some(_) => Err(self.syntax(format!("expected a value but found {}", self.found()))),
        }
    }

    fn expect(&mut self, kind: Kind) -> Result<(), E> {
        let found = self.peek()?;
        if found == kind {
            Ok(())
        } else {
            Err(self.syntax(format!(
                "expected {} but found {}",
                kind.noun(),
                found.noun()
            )))
        }
    }

    fn enter(&mut self, open: Open) -> Result<(), E> {
        if self.open.len() >= MAX_DEPTH {
            return Err(E::JsonTooDeep {
                line: self.line,
                limit: MAX_DEPTH,
            });
        }
        self.open.push(open);
        self.pos += 1;
        Ok(())
    }

    /// Reads an object, calling `f` with each key and the key's line; `f`
    /// reads or skips the value (one it leaves unread is skipped).
    pub(super) fn object<F>(&mut self, mut f: F) -> Result<(), E>
    where
        F: FnMut(&mut Self, &str, usize) -> Result<(), E>,
    {
        self.expect(Kind::Object)?;
        self.enter(Open::Object)?;
        self.ws();
        if self.byte() == Some(b'}') {
            self.pos += 1;
            self.open.pop();
            return Ok(());
        }
        loop {
            self.ws();
            match self.byte() {
                None => return Err(self.truncated(None)),
                Some(b'"') => {}
                Some(_) => {
                    return Err(self.syntax(format!(
                        "expected a field name in quotes but found {}",
                        self.found()
                    )));
                }
            }
            let key_line = self.line;
            let key = self.string_body()?;
            self.ws();
            match self.byte() {
                None => return Err(self.truncated(None)),
                Some(b':') => self.pos += 1,
                Some(_) => {
                    return Err(self.syntax(format!(
                        "expected ':' after the field name but found {}",
                        self.found()
                    )));
                }
            }
            self.peek()?;
            let start = self.pos;
            f(self, &key, key_line)?;
            if self.pos == start {
                self.skip()?;
            }
            self.ws();
            match self.byte() {
                None => return Err(self.truncated(None)),
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.open.pop();
                    return Ok(());
                }
                Some(_) => {
                    return Err(self.syntax(format!(
                        "expected ',' or '}}' after a field's value but found {}",
                        self.found()
                    )));
                }
            }
        }
    }

    /// Reads a list, calling `f` for each element; `f` reads or skips it.
    pub(super) fn array<F>(&mut self, mut f: F) -> Result<(), E>
    where
        F: FnMut(&mut Self) -> Result<(), E>,
    {
        self.expect(Kind::Array)?;
        self.enter(Open::Array)?;
        self.ws();
        if self.byte() == Some(b']') {
            self.pos += 1;
            self.open.pop();
            return Ok(());
        }
        loop {
            self.peek()?;
            let start = self.pos;
            f(self)?;
            if self.pos == start {
                self.skip()?;
            }
            self.ws();
            match self.byte() {
                None => return Err(self.truncated(None)),
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.open.pop();
                    return Ok(());
                }
                Some(_) => {
                    return Err(self.syntax(format!(
                        "expected ',' or ']' after a list element but found {}",
                        self.found()
                    )));
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>, E> {
        self.expect(Kind::String)?;
        self.string_body()
    }

    /// Text or null; `Ok(Err(kind))` for another kind of value, which is
    /// skipped.
    pub(super) fn text_or_null(&mut self) -> Result<Result<Option<Cow<'a, str>>, Kind>, E> {
        match self.peek()? {
            Kind::String => self.string_body().map(|s| Ok(Some(s))),
            Kind::Null => self.literal("null").map(|()| Ok(None)),
            other => self.skip().map(|()| Err(other)),
        }
    }

    /// A whole number, or `None` for any other value (skipped).
    pub(super) fn count(&mut self) -> Result<Option<u64>, E> {
        match self.peek()? {
            Kind::Number => Ok(self.number()?.parse().ok()),
            _ => self.skip().map(|()| None),
        }
    }

    /// The string at the position, which is its opening quote.
    fn string_body(&mut self) -> Result<Cow<'a, str>, E> {
        let src = self.src;
        let bytes = src.as_bytes();
        self.pos += 1;
        let mut owned: Option<String> = None;
        let mut segment = self.pos;
        loop {
            let Some(&b) = bytes.get(self.pos) else {
                return Err(self.truncated(Some("a string")));
            };
            match b {
                b'"' => {
                    let tail = src.get(segment..self.pos).unwrap_or_default();
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(src.get(segment..self.pos).unwrap_or_default());
                    self.pos += 1;
                    let c = self.escape()?;
                    s.push(c);
                    segment = self.pos;
                }
                b'\n' => return Err(self.syntax("a string is not closed before the line ends")),
                0..=0x1f => {
                    return Err(self.syntax(format!(
                        "a control character (byte {b:#04x}) inside a string"
                    )));
                }
                _ => self.pos += 1,
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self) -> Result<char, E> {
        let Some(b) = self.byte() else {
            return Err(self.truncated(Some("a string")));
        };
        if !matches!(
            b,
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u'
        ) {
            return Err(self.syntax(format!(
                "an unknown escape '\\{}' in a string",
                self.found().trim_matches('\'')
            )));
        }
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                match high {
                    0xD800..=0xDBFF => {
                        let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
                        if rest.starts_with(b"\\u") {
                            self.pos += 2;
                            let low = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(
                                    self.syntax("half of a UTF-16 surrogate pair in a \\u escape")
                                );
                            }
                            let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
                        } else if b"\\u".starts_with(rest) {
                            return Err(self.truncated(Some("a string")));
                        } else {
                            return Err(
                                self.syntax("half of a UTF-16 surrogate pair in a \\u escape")
                            );
                        }
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.syntax("half of a UTF-16 surrogate pair in a \\u escape"));
                    }
                    c => char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
                }
            }
            _ => char::REPLACEMENT_CHARACTER,
        })
    }

    fn hex4(&mut self) -> Result<u32, E> {
        let mut value = 0;
        for _ in 0..4 {
            let Some(b) = self.byte() else {
                return Err(self.truncated(Some("a string")));
            };
            let Some(digit) = char::from(b).to_digit(16) else {
                return Err(self.syntax("a \\u escape needs four hex digits"));
            };
            value = value * 16 + digit;
            self.pos += 1;
        }
        Ok(value)
    }

    fn digits(&mut self) -> Result<(), E> {
        match self.byte() {
            None => return Err(self.truncated(None)),
            Some(b'0'..=b'9') => {}
            Some(_) => {
                return Err(self.syntax(format!(
                    "expected a digit in a number but found {}",
                    self.found()
                )));
            }
        }
        while matches!(self.byte(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<&'a str, E> {
        let start = self.pos;
        if self.byte() == Some(b'-') {
            self.pos += 1;
        }
        if self.byte() == Some(b'0') {
            self.pos += 1;
        } else {
            self.digits()?;
        }
        if self.byte() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.byte(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.byte(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(self.src.get(start..self.pos).unwrap_or_default())
    }

    fn literal(&mut self, word: &'static str) -> Result<(), E> {
        let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else if word.as_bytes().starts_with(rest) {
            Err(self.truncated(None))
        } else {
            Err(self.syntax(format!("expected a value but found {}", self.found())))
        }
    }

    /// Reads past the next value.
    pub(super) fn skip(&mut self) -> Result<(), E> {
        match self.peek()? {
            Kind::Object => self.object(|r, _, _| r.skip()),
            Kind::Array => self.array(Self::skip),
            Kind::String => self.string_body().map(drop),
            Kind::Number => self.number().map(drop),
            Kind::Bool if self.byte() == Some(b't') => self.literal("true"),
            Kind::Bool => self.literal("false"),
            Kind::Null => self.literal("null"),
        }
    }

    /// Refuses anything but whitespace after the top-level value.
    pub(super) fn finish(&mut self) -> Result<(), E> {
        self.ws();
        let rest = self.src.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(());
        }
        let found = rest.lines().next().unwrap_or_default();
        Err(E::JsonTrailing {
            line: self.line,
            found: super::clip(found).chars().take(40).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string and number of `src`, with its line, depth first.
    fn walk(src: &str) -> Result<Vec<(usize, String)>, E> {
        fn value(r: &mut Reader<'_>, out: &mut Vec<(usize, String)>) -> Result<(), E> {
            let line = r.line();
            match r.peek()? {
                Kind::Object => r.object(|r, key, key_line| {
                    out.push((key_line, format!("key {key}")));
                    value(r, out)
                }),
                Kind::Array => r.array(|r| value(r, out)),
                Kind::String => {
                    let s = r.string()?;
                    out.push((line, s.into_owned()));
                    Ok(())
                }
                Kind::Number => {
                    let n = r.count()?;
                    out.push((line, format!("{n:?}")));
                    Ok(())
                }
                Kind::Bool | Kind::Null => r.skip(),
            }
        }
        let mut r = Reader::new(src);
        let mut out = Vec::new();
        value(&mut r, &mut out)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn reads_values_with_their_lines() {
        let src = "{\n \"a\": [1, -2.5e3, true, false, null],\n \"b\\u00e9\": \"x\\\"\\n\\u00e9\\ud83c\\udfb5\",\n \"c\": {}\n}\n";
        let got = walk(src).unwrap();
        assert_eq!(
            got,
            [
                (2, "key a".to_owned()),
                (2, "Some(1)".to_owned()),
                (2, "None".to_owned()),
                (3, "key bé".to_owned()),
                (3, "x\"\né🎵".to_owned()),
                (4, "key c".to_owned()),
            ]
        );
        assert_eq!(walk(" [] ").unwrap(), []);
        assert_eq!(walk("\"é\"").unwrap(), [(1, "é".to_owned())]);
    }

    #[test]
    fn truncation_names_the_innermost_value() {
        let cases = [
            ("{\"a\": [1, 2", 1, "a list"),
            ("{\"a\": [1, 2]", 1, "an object"),
            ("{\n\"a\":\n", 3, "an object"),
            ("{\"a\": \"xy", 1, "a string"),
            ("{\"a\": \"x\\", 1, "a string"),
            ("{\"a\": \"x\\u00", 1, "a string"),
            ("{\"a\": \"\\ud83c", 1, "a string"),
            ("{\"a\": \"\\ud83c\\", 1, "a string"),
            ("[tru", 1, "a list"),
            ("[1.", 1, "a list"),
            ("[-", 1, "a list"),
            ("[1e+", 1, "a list"),
            ("{\"a\"", 1, "an object"),
            ("{", 1, "an object"),
            ("nul", 1, "a value"),
        ];
        for (src, line, inside) in cases {
            assert_eq!(
                walk(src).unwrap_err(),
                E::JsonTruncated { line, inside },
                "{src:?}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_line_column_and_problem() {
        let cases = [
            (
                "{\"a\": 1,}",
                1,
                9,
                "expected a field name in quotes but found '}'",
            ),
            ("[1, 2,]", 1, 7, "expected a value but found ']'"),
            (
                "{\"a\" 1}",
                1,
                6,
                "expected ':' after the field name but found '1'",
            ),
            (
                "[1 2]",
                1,
                4,
                "expected ',' or ']' after a list element but found '2'",
            ),
            (
                "{\"a\": 1 \"b\": 2}",
                1,
                9,
                "expected ',' or '}' after a field's value but found '\"'",
            ),
            (
                "[01]",
                1,
                3,
                "expected ',' or ']' after a list element but found '1'",
            ),
            (
                "[\n\"a\nb\"]",
                2,
                3,
                "a string is not closed before the line ends",
            ),
            (
                "[\"a\tb\"]",
                1,
                4,
                "a control character (byte 0x09) inside a string",
            ),
            ("[\"\\x\"]", 1, 4, "an unknown escape '\\x' in a string"),
            ("[\"\\u12g4\"]", 1, 7, "a \\u escape needs four hex digits"),
            (
                "[\"\\udc00\"]",
                1,
                9,
                "half of a UTF-16 surrogate pair in a \\u escape",
            ),
            (
                "[\"\\ud800x\"]",
                1,
                9,
                "half of a UTF-16 surrogate pair in a \\u escape",
            ),
            (
                "[\"\\ud800\\u0041\"]",
                1,
                15,
                "half of a UTF-16 surrogate pair in a \\u escape",
            ),
            ("[truth]", 1, 2, "expected a value but found 't'"),
            ("[-x]", 1, 3, "expected a digit in a number but found 'x'"),
            ("[é]", 1, 2, "expected a value but found 'é'"),
        ];
        for (src, line, column, problem) in cases {
            assert_eq!(
                walk(src).unwrap_err(),
                E::JsonSyntax {
                    line,
                    column,
                    problem: problem.to_owned()
                },
                "{src:?}"
            );
        }
    }

    #[test]
    fn trailing_text_and_deep_nesting_are_refused() {
        assert_eq!(
            walk("{}\n\n#EXTINF:1,A - B\n").unwrap_err(),
            E::JsonTrailing {
                line: 3,
                found: "#EXTINF:1,A - B".to_owned()
            }
        );
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(walk(&deep).is_ok());
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            walk(&deeper).unwrap_err(),
            E::JsonTooDeep {
                line: 1,
                limit: MAX_DEPTH
            }
        );
        // Even a very deep file only reaches the limit, never the stack's.
        let huge = "[".repeat(1 << 20);
        assert!(matches!(walk(&huge), Err(E::JsonTooDeep { .. })));
    }
}
