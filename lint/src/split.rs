//! Statement splitting: one lexical pass over a file that yields tokens, comments and statement
//! boundaries, so that one bad statement cannot hide the rest and nothing inside a comment,
//! string literal or dollar-quoted body is ever seen as SQL by the rules.
//!
//! It knows the quoting of both dialects (PostgreSQL `E'…'`, `"ident"`, `$tag$…$tag$`, nested
//! `/* */`; MySQL backslash escapes, `"…"` strings, `` `ident` ``, `#` comments, `DELIMITER`
//! lines) and reports input that cannot be SQL at all (unterminated quotes, comments or dollar
//! bodies, unbalanced parentheses) as [`SyntaxError`]s at the place they start.

use crate::Dialect;
use std::ops::Range;

/// What a token is. Keywords and unquoted identifiers are both `Word`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Word,
    /// `"ident"` (PostgreSQL) or `` `ident` `` (MySQL).
    QuotedIdent,
    /// Any string literal, including dollar-quoted bodies.
    Str,
    Number,
    /// `$1`-style positional parameter.
    Param,
    /// One ASCII punctuation byte.
    Punct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    /// Byte range in the source.
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// A keyword test: an unquoted word equal to `kw` ignoring ASCII case.
    pub fn is(&self, src: &str, kw: &str) -> bool {
        self.kind == Kind::Word && self.text(src).eq_ignore_ascii_case(kw)
    }

    pub fn is_punct(&self, src: &str, c: char) -> bool {
        self.kind == Kind::Punct && self.text(src).starts_with(c)
    }
}

/// A `--`, `#` or `/* */` comment, markers included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Comment {
    pub start: usize,
    pub end: usize,
}

/// One statement: a non-empty run of tokens between terminators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// Indices into [`Split::tokens`].
    pub tokens: Range<usize>,
    /// Byte offset of the first token.
    pub start: usize,
    /// Byte offset just past the last token (terminator excluded).
    pub end: usize,
    /// Byte offset just past the terminator (or `end` when there is none).
    pub terminator_end: usize,
    /// The statement contains a [`SyntaxError`]; rules do not look at it.
    pub broken: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

#[derive(Debug, Default)]
pub(crate) struct Split {
    pub tokens: Vec<Token>,
    pub comments: Vec<Comment>,
    pub statements: Vec<Statement>,
    pub errors: Vec<SyntaxError>,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Where the statement being built stands.
struct Pending {
    first_token: usize,
    broken: bool,
    /// Offsets of `(` not yet closed.
    parens: Vec<usize>,
    /// Depth of a PostgreSQL `BEGIN ATOMIC … END` function body (`;` does not end it).
    atomic: usize,
}

struct Splitter<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    dialect: Dialect,
    /// MySQL client delimiter; `None` means `;`.
    delimiter: Option<String>,
    out: Split,
    cur: Pending,
}

/// Splits `src` into statements. Never panics, whatever the input.
pub(crate) fn split(src: &str, dialect: Dialect) -> Split {
    let mut s = Splitter {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        dialect,
        delimiter: None,
        out: Split::default(),
        cur: Pending {
            first_token: 0,
            broken: false,
            parens: Vec::new(),
            atomic: 0,
        },
    };
    s.run();
    s.out
}

impl<'a> Splitter<'a> {
    fn peek(&self, ahead: usize) -> u8 {
        self.bytes.get(self.pos + ahead).copied().unwrap_or(0)
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize) {
        self.out.tokens.push(Token { kind, start, end });
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.out.errors.push(SyntaxError {
            offset,
            message: message.into(),
        });
        self.cur.broken = true;
    }

    fn pending_is_empty(&self) -> bool {
        self.out.tokens.len() == self.cur.first_token
    }

    /// Closes the statement being built; `terminator_end` is where the next one may begin.
    fn finish(&mut self, terminator_end: usize) {
        if let Some(&open) = self.cur.parens.first() {
            self.error(open, "unbalanced parentheses: this `(` is never closed");
        }
        let first = self.cur.first_token;
        let last = self.out.tokens.len();
        if last > first {
            let start = self.out.tokens[first].start;
            let end = self.out.tokens[last - 1].end;
            self.out.statements.push(Statement {
                tokens: first..last,
                start,
                end,
                terminator_end: terminator_end.max(end),
                broken: self.cur.broken,
            });
        }
        self.cur = Pending {
            first_token: last,
            broken: false,
            parens: Vec::new(),
            atomic: 0,
        };
    }

    fn run(&mut self) {
        let len = self.bytes.len();
        // A UTF-8 byte-order mark (Windows editors) is not part of the first statement.
        if self.src.starts_with('\u{feff}') {
            self.pos = '\u{feff}'.len_utf8();
        }
        while self.pos < len {
            let b = self.bytes[self.pos];
            if b.is_ascii_whitespace() {
                self.pos += 1;
                continue;
            }
            if let Some(d) = &self.delimiter {
                if self.src[self.pos..].starts_with(d.as_str()) {
                    let end = self.pos + d.len();
                    self.pos = end;
                    self.finish(end);
                    continue;
                }
            }
            if self.dialect == Dialect::Mysql
                && (b == b'd' || b == b'D')
                && (self.pending_is_empty() || self.at_line_start())
                && self.delimiter_line()
            {
                continue;
            }
            if self.dialect == Dialect::Postgres
                && b == b'\\'
                && (self.pending_is_empty() || self.at_line_start())
            {
                self.psql_meta_command();
                continue;
            }
            let start = self.pos;
            match b {
                b'-' if self.peek(1) == b'-' && self.dash_comment() => self.line_comment(),
                b'#' if self.dialect == Dialect::Mysql => self.line_comment(),
                b'/' if self.peek(1) == b'*' => self.block_comment(),
                b'\'' => self.quoted(b'\'', Kind::Str, self.dialect == Dialect::Mysql),
                b'"' => match self.dialect {
                    Dialect::Postgres => self.quoted(b'"', Kind::QuotedIdent, false),
                    Dialect::Mysql => self.quoted(b'"', Kind::Str, true),
                },
                b'`' if self.dialect == Dialect::Mysql => {
                    self.quoted(b'`', Kind::QuotedIdent, false)
                }
                b'$' if self.dialect == Dialect::Postgres => self.dollar(),
                b'0'..=b'9' => {
                    while self.pos < len
                        && (is_word_byte(self.bytes[self.pos]) || self.bytes[self.pos] == b'.')
                    {
                        self.pos += 1;
                    }
                    self.push(Kind::Number, start, self.pos);
                }
                _ if is_word_start(b) => self.word(),
                b'(' => {
                    self.cur.parens.push(start);
                    self.pos += 1;
                    self.push(Kind::Punct, start, self.pos);
                }
                b')' => {
                    if self.cur.parens.pop().is_none() {
                        self.error(
                            start,
                            "unbalanced parentheses: this `)` has no matching `(`",
                        );
                    }
                    self.pos += 1;
                    self.push(Kind::Punct, start, self.pos);
                }
                b';' if self.delimiter.is_none()
                    && self.cur.atomic == 0
                    && (self.cur.parens.is_empty() || !self.in_rule_actions()) =>
                {
                    self.pos += 1;
                    self.finish(self.pos);
                }
                _ => {
                    self.pos += 1;
                    self.push(Kind::Punct, start, self.pos);
                }
            }
        }
        self.finish(len);
    }

    /// A psql meta-command line (`\echo …`, `\set …`, `\gexec`): client-side, not SQL. `\g…`
    /// sends the query typed so far, so it ends the pending statement.
    fn psql_meta_command(&mut self) {
        let line_end = self.src[self.pos..]
            .find('\n')
            .map_or(self.src.len(), |i| self.pos + i);
        if self.src[self.pos..].starts_with("\\g") && !self.pending_is_empty() {
            self.finish(self.pos);
        }
        self.pos = line_end;
    }

    /// PostgreSQL `CREATE [OR REPLACE] RULE … DO (cmd; cmd)`: the one place `;` may appear
    /// inside parentheses.
    fn in_rule_actions(&self) -> bool {
        let src = self.src;
        let toks = &self.out.tokens[self.cur.first_token..];
        self.dialect == Dialect::Postgres
            && toks.first().is_some_and(|t| t.is(src, "CREATE"))
            && (toks.get(1).is_some_and(|t| t.is(src, "RULE"))
                || toks.get(3).is_some_and(|t| t.is(src, "RULE")))
    }

    /// MySQL needs whitespace (or the end) after `--` for a comment: `1--1` is arithmetic.
    fn dash_comment(&self) -> bool {
        self.dialect == Dialect::Postgres
            || self
                .bytes
                .get(self.pos + 2)
                .is_none_or(|b| b.is_ascii_whitespace())
    }

    /// Only whitespace precedes `pos` on its line.
    fn at_line_start(&self) -> bool {
        self.bytes[..self.pos]
            .iter()
            .rev()
            .take_while(|&&b| b != b'\n')
            .all(|&b| b == b' ' || b == b'\t' || b == b'\r')
    }

    /// MySQL client `DELIMITER xx` line: changes the terminator, is not a statement itself.
    fn delimiter_line(&mut self) -> bool {
        const KW: &str = "DELIMITER";
        let rest = &self.bytes[self.pos..];
        if rest.len() <= KW.len()
            || !rest[..KW.len()].eq_ignore_ascii_case(KW.as_bytes())
            || !matches!(rest[KW.len()], b' ' | b'\t')
        {
            return false;
        }
        let line_end = self.src[self.pos..]
            .find('\n')
            .map_or(self.src.len(), |i| self.pos + i);
        // The client runs the delimiter command even mid-statement: what came before ends.
        if !self.pending_is_empty() {
            self.finish(self.pos);
        }
        let arg = self.src[self.pos + KW.len()..line_end].trim();
        let arg = arg.split_whitespace().next().unwrap_or("");
        if !arg.is_empty() {
            self.delimiter = (arg != ";").then(|| arg.to_string());
        }
        self.pos = line_end;
        true
    }

    fn line_comment(&mut self) {
        let start = self.pos;
        let end = self.src[start..]
            .find('\n')
            .map_or(self.src.len(), |i| start + i);
        self.out.comments.push(Comment { start, end });
        self.pos = end;
    }

    fn block_comment(&mut self) {
        let start = self.pos;
        let nested = self.dialect == Dialect::Postgres;
        let mut depth = 0usize;
        let len = self.bytes.len();
        while self.pos < len {
            if self.peek(0) == b'/' && self.peek(1) == b'*' && (nested || depth == 0) {
                depth += 1;
                self.pos += 2;
            } else if self.peek(0) == b'*' && self.peek(1) == b'/' {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    self.out.comments.push(Comment {
                        start,
                        end: self.pos,
                    });
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.error(start, "unterminated block comment: `/*` is never closed");
    }

    /// A quoted string or identifier; the quote doubled is an escape, and so is a backslash
    /// when `backslash` is set (MySQL strings, PostgreSQL `E'…'`).
    fn quoted(&mut self, quote: u8, kind: Kind, backslash: bool) {
        self.quoted_from(self.pos, quote, kind, backslash)
    }

    fn quoted_from(&mut self, start: usize, quote: u8, kind: Kind, backslash: bool) {
        let len = self.bytes.len();
        self.pos += 1; // opening quote
        while self.pos < len {
            let b = self.bytes[self.pos];
            if backslash && b == b'\\' {
                self.pos += 2;
            } else if b == quote {
                if self.peek(1) == quote {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    self.push(kind, start, self.pos);
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = len;
        let what = match (kind, quote) {
            (Kind::QuotedIdent, _) => "quoted identifier",
            _ => "string literal",
        };
        let q = quote as char;
        self.error(
            start,
            format!("unterminated {what}: this `{q}` is never closed"),
        );
    }

    fn word(&mut self) {
        let start = self.pos;
        let len = self.bytes.len();
        while self.pos < len && is_word_byte(self.bytes[self.pos]) {
            self.pos += 1;
        }
        let word = &self.src[start..self.pos];
        // E'…' escape strings (PostgreSQL); the prefix belongs to the literal.
        if self.dialect == Dialect::Postgres
            && word.eq_ignore_ascii_case("e")
            && self.peek(0) == b'\''
        {
            return self.quoted_from(start, b'\'', Kind::Str, true);
        }
        self.push(Kind::Word, start, self.pos);
        if self.dialect == Dialect::Postgres {
            self.track_atomic_body();
        }
    }

    /// `CREATE FUNCTION … BEGIN ATOMIC … ; … END`: semicolons inside the body do not end the
    /// statement. CASE … END nests inside it.
    fn track_atomic_body(&mut self) {
        let n = self.out.tokens.len();
        let Some(last) = self.out.tokens.last().copied() else {
            return;
        };
        let src = self.src;
        if self.cur.atomic > 0 {
            if last.is(src, "CASE") {
                self.cur.atomic += 1;
            } else if last.is(src, "END") {
                self.cur.atomic -= 1;
            }
        } else if last.is(src, "ATOMIC")
            && n >= 2
            && self.out.tokens[n - 2].is(src, "BEGIN")
            && self
                .out
                .tokens
                .get(self.cur.first_token)
                .is_some_and(|t| t.is(src, "CREATE"))
        {
            self.cur.atomic = 1;
        }
    }

    /// `$1` parameter, `$tag$ … $tag$` body, or a lone `$`.
    fn dollar(&mut self) {
        let start = self.pos;
        let len = self.bytes.len();
        if self.peek(1).is_ascii_digit() {
            self.pos += 1;
            while self.pos < len && self.bytes[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
            return self.push(Kind::Param, start, self.pos);
        }
        let mut j = start + 1;
        while j < len && is_word_byte(self.bytes[j]) && self.bytes[j] != b'$' {
            j += 1;
        }
        let tag_ok = j < len
            && self.bytes[j] == b'$'
            && (j == start + 1 || is_word_start(self.bytes[start + 1]));
        if !tag_ok {
            self.pos += 1;
            return self.push(Kind::Punct, start, self.pos);
        }
        let tag = &self.src[start..=j];
        match self.src[j + 1..].find(tag) {
            Some(i) => {
                self.pos = j + 1 + i + tag.len();
                self.push(Kind::Str, start, self.pos);
            }
            None => {
                self.pos = len;
                self.error(
                    start,
                    format!("unterminated dollar-quoted body: `{tag}` is never closed"),
                );
            }
        }
    }
}

/// Maps byte offsets to 1-based (line, column-in-characters).
///
/// Columns count characters from the line start; the last answer is remembered, so a run of
/// increasing offsets on one long line (minified SQL) costs linear, not quadratic, time.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
    /// (offset, line, column) of the last `line_col` answer.
    last: std::cell::Cell<(usize, usize, usize)>,
}

impl LineIndex {
    pub fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            starts,
            last: std::cell::Cell::new((0, 1, 1)),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    pub fn line_col(&self, src: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(src.len());
        let line = self.line(offset);
        let mut start = self.starts[line - 1];
        if start == 0 && src.starts_with('\u{feff}') && offset >= 3 {
            start = 3; // editors do not show the byte-order mark
        }
        let (last_offset, last_line, last_col) = self.last.get();
        let (from, col0) = if last_line == line && last_offset >= start && last_offset <= offset {
            (last_offset, last_col)
        } else {
            (start, 1)
        };
        let col = src
            .get(from..offset)
            .map_or(col0, |s| col0 + s.chars().count());
        self.last.set((offset, line, col));
        (line, col)
    }

    /// Byte offset where a 1-based line starts.
    pub fn line_start(&self, line: usize) -> Option<usize> {
        self.starts.get(line.checked_sub(1)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(src: &str, dialect: Dialect) -> Vec<&str> {
        split(src, dialect)
            .statements
            .iter()
            .map(|s| &src[s.start..s.end])
            .collect()
    }

    fn pg(src: &str) -> Vec<&str> {
        texts(src, Dialect::Postgres)
    }

    fn my(src: &str) -> Vec<&str> {
        texts(src, Dialect::Mysql)
    }

    fn errors(src: &str, dialect: Dialect) -> Vec<(usize, String)> {
        split(src, dialect)
            .errors
            .into_iter()
            .map(|e| (e.offset, e.message))
            .collect()
    }

    #[test]
    fn splits_on_semicolons_and_drops_empty_statements() {
        assert_eq!(pg("select 1; ;; select 2"), vec!["select 1", "select 2"]);
    }

    #[test]
    fn semicolons_in_comments_do_not_split() {
        assert_eq!(
            pg("select 1 -- a; b\n; /* c; /* nested; */ d; */ select 2;"),
            vec!["select 1", "select 2"]
        );
    }

    #[test]
    fn mysql_block_comments_do_not_nest_and_hash_starts_a_comment() {
        assert_eq!(
            my("select 1 /* a /* b */; # x;\nselect 2"),
            vec!["select 1", "select 2"]
        );
    }

    #[test]
    fn semicolons_in_strings_do_not_split() {
        assert_eq!(
            pg("select 'a;''b;'; select 2"),
            vec!["select 'a;''b;'", "select 2"]
        );
        assert_eq!(
            pg(r"select E'a\';b'; select 2"),
            vec![r"select E'a\';b'", "select 2"]
        );
        assert_eq!(my(r#"select 'a\';b', "c;\"d"; select 2"#).len(), 2);
    }

    #[test]
    fn backslash_is_not_an_escape_in_standard_postgres_strings() {
        assert_eq!(
            pg(r"select 'a\'; select 2"),
            vec![r"select 'a\'", "select 2"]
        );
    }

    #[test]
    fn quoted_identifiers_do_not_split() {
        assert_eq!(
            pg(r#"select "a;""b"; select 2"#),
            vec![r#"select "a;""b""#, "select 2"]
        );
        assert_eq!(
            my("select `a;``b`; select 2"),
            vec!["select `a;``b`", "select 2"]
        );
    }

    #[test]
    fn dollar_quoted_bodies_do_not_split() {
        let sql =
            "create function f() returns int as $fn$ select 1; $$ $fn$ language sql; select $1;";
        assert_eq!(
            pg(sql),
            vec![
                "create function f() returns int as $fn$ select 1; $$ $fn$ language sql",
                "select $1"
            ]
        );
        assert_eq!(
            pg("do $$ begin; end $$; select 2"),
            vec!["do $$ begin; end $$", "select 2"]
        );
    }

    #[test]
    fn dollar_inside_identifier_is_not_a_tag() {
        assert_eq!(pg("select a$b$c; select 2").len(), 2);
    }

    #[test]
    fn rule_action_lists_do_not_split() {
        let sql = "CREATE OR REPLACE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 2";
        assert_eq!(pg(sql).len(), 2);
        assert!(errors(sql, Dialect::Postgres).is_empty());
    }

    #[test]
    fn begin_atomic_bodies_do_not_split() {
        let sql = "create function f() returns int language sql begin atomic select 1; select case when true then 1 end; end; select 2";
        assert_eq!(pg(sql).len(), 2);
    }

    #[test]
    fn mysql_delimiter_lines_change_the_terminator() {
        let sql = "DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END //\nDELIMITER ;\nSELECT 3;";
        assert_eq!(
            my(sql),
            vec![
                "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END",
                "SELECT 3"
            ]
        );
    }

    #[test]
    fn byte_order_mark_and_crlf_line_ends_are_whitespace() {
        assert_eq!(
            pg("\u{feff}SELECT 1;\r\n-- c\r\nSELECT 2;\r\n"),
            vec!["SELECT 1", "SELECT 2"]
        );
    }

    #[test]
    fn psql_meta_commands_are_not_statements() {
        let sql = "\\echo Use \"CREATE EXTENSION x\" to load this file. \\quit\nSELECT 1;\nSELECT 2\n\\gexec\n\\set x 1\nSELECT 3;";
        assert_eq!(pg(sql), vec!["SELECT 1", "SELECT 2", "SELECT 3"]);
        assert!(errors(sql, Dialect::Postgres).is_empty());
    }

    #[test]
    fn mysql_double_dash_needs_whitespace_to_start_a_comment() {
        assert_eq!(my("select 1--1; select 2"), vec!["select 1--1", "select 2"]);
        assert_eq!(
            my("select 1 -- c; d\nselect 2"),
            vec!["select 1 -- c; d\nselect 2"]
        );
    }

    #[test]
    fn mysql_delimiter_line_ends_an_unterminated_statement() {
        let sql = "SELECT 1\nDELIMITER //\nSELECT 2; SELECT 3 //";
        assert_eq!(my(sql), vec!["SELECT 1", "SELECT 2; SELECT 3"]);
    }

    #[test]
    fn unterminated_forms_are_syntax_errors_where_they_start() {
        assert_eq!(errors("select 1; select 'abc", Dialect::Postgres)[0].0, 17);
        assert_eq!(errors("select \"abc", Dialect::Postgres)[0].0, 7);
        assert_eq!(errors("select 1 /* /* */", Dialect::Postgres)[0].0, 9);
        assert_eq!(errors("do $x$ begin end $y$", Dialect::Postgres)[0].0, 3);
        assert_eq!(errors("select `abc", Dialect::Mysql)[0].0, 7);
        assert!(errors("select 1 /* /* */", Dialect::Mysql).is_empty());
    }

    #[test]
    fn unbalanced_parentheses_are_syntax_errors_and_splitting_continues() {
        let s = split("select (1; select 2); select 3", Dialect::Postgres);
        assert_eq!(s.errors.len(), 2);
        assert_eq!(s.errors[0].offset, 7);
        assert_eq!(s.errors[1].offset, 19);
        assert_eq!(s.statements.len(), 3);
        assert!(s.statements[0].broken && s.statements[1].broken && !s.statements[2].broken);
    }

    #[test]
    fn valid_sql_has_no_errors() {
        let sql = "create table t (a int default (1), b text check (b <> ')')); comment on table t is 'it''s (';";
        assert!(errors(sql, Dialect::Postgres).is_empty());
    }

    #[test]
    fn line_index_counts_characters_not_bytes() {
        let src = "é;\n  ab";
        let idx = LineIndex::new(src);
        assert_eq!(idx.line_col(src, 2), (1, 2));
        assert_eq!(idx.line_col(src, src.len() - 2), (2, 3));
    }

    #[test]
    fn statement_positions_skip_leading_comments_and_exclude_terminators() {
        let src = "-- header\n  SELECT 1;\n/* c */ SELECT\n  2 ;";
        let s = split(src, Dialect::Postgres);
        let idx = LineIndex::new(src);
        let got: Vec<((usize, usize), &str, usize)> = s
            .statements
            .iter()
            .map(|st| {
                (
                    idx.line_col(src, st.start),
                    &src[st.start..st.end],
                    st.terminator_end,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![((2, 3), "SELECT 1", 21), ((3, 9), "SELECT\n  2", src.len()),]
        );
    }

    #[test]
    fn line_index_answers_agree_in_any_query_order() {
        let src = "ab\u{e9}cd\nx\u{e9}yz\n\u{e9}\u{e9}";
        let fresh = |o: usize| LineIndex::new(src).line_col(src, o);
        let idx = LineIndex::new(src);
        let offsets: Vec<usize> = (0..=src.len())
            .filter(|&o| src.is_char_boundary(o))
            .collect();
        for &o in offsets
            .iter()
            .chain(offsets.iter().rev())
            .chain(offsets.iter())
        {
            assert_eq!(idx.line_col(src, o), fresh(o), "offset {o}");
        }
    }

    #[test]
    fn comments_are_recorded_with_their_markers() {
        let src = "-- one\nselect 1; /* two */";
        let s = split(src, Dialect::Postgres);
        let c: Vec<&str> = s.comments.iter().map(|c| &src[c.start..c.end]).collect();
        assert_eq!(c, vec!["-- one", "/* two */"]);
    }

    /// Fragments that are complete SQL lexemes in both dialects.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_][a-z0-9_]{0,6}",
            "[0-9]{1,4}",
            "'[a-z ;()]{0,6}'",
            "\\([a-z0-9 ,]{0,6}\\)",
            "/\\* [a-z;]{0,5} \\*/",
            Just("=".to_string()),
            Just(",".to_string()),
        ]
    }

    fn statement() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 1..8).prop_map(|f| f.join(" "))
    }

    proptest! {
        #[test]
        fn splitting_never_panics_and_positions_are_in_bounds(src in any::<String>()) {
            for dialect in [Dialect::Postgres, Dialect::Mysql] {
                let s = split(&src, dialect);
                for st in &s.statements {
                    prop_assert!(st.start < st.end && st.end <= st.terminator_end);
                    prop_assert!(st.terminator_end <= src.len());
                    prop_assert!(src.is_char_boundary(st.start) && src.is_char_boundary(st.end));
                }
                for e in &s.errors {
                    prop_assert!(e.offset < src.len() && src.is_char_boundary(e.offset));
                }
                let idx = LineIndex::new(&src);
                for t in &s.tokens {
                    prop_assert!(src.is_char_boundary(t.start) && src.is_char_boundary(t.end));
                    let (line, col) = idx.line_col(&src, t.start);
                    prop_assert!(line >= 1 && col >= 1);
                }
            }
        }

        #[test]
        fn joining_generated_statements_round_trips(stmts in prop::collection::vec(statement(), 0..6)) {
            let joined = stmts.iter().map(|s| format!("{s};\n")).collect::<String>();
            for dialect in [Dialect::Postgres, Dialect::Mysql] {
                let s = split(&joined, dialect);
                prop_assert!(s.errors.is_empty());
                let got: Vec<&str> = s.statements.iter().map(|st| &joined[st.start..st.end]).collect();
                // A statement that is only a comment has no tokens and is not a statement.
                let want: Vec<&str> = stmts
                    .iter()
                    .map(|s| s.as_str())
                    .filter(|s| !split(s, dialect).tokens.is_empty())
                    .map(|s| {
                        let toks = split(s, dialect).tokens;
                        &s[toks[0].start..toks[toks.len() - 1].end]
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
