//! The fallback recogniser: when sqlparser rejects a statement, read its tokens (keywords
//! outside comments, strings and bodies) well enough to apply the destructive and locking
//! rules, and to tell well-known harmless statement kinds from statements nobody understood.

use crate::ops::{ConstraintKind, Fill, Name, Op};
use crate::split::{Kind, Token};
use crate::Dialect;

pub(crate) enum Recognised {
    /// The statement does these things (possibly nothing the rules care about).
    Ops(Vec<Op>),
    /// Not a statement kind the recogniser knows.
    Unknown,
}

/// Statement kinds that lock no existing table's data in a way the rules judge.
const HARMLESS_LEADING: &[&str] = &[
    "ANALYSE",
    "ANALYZE",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "COMMENT",
    "COPY",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DISCARD",
    "DO",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "FLUSH",
    "GRANT",
    "IMPORT",
    "INSERT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "OPTIMIZE",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "RELEASE",
    "REPLACE",
    "RESET",
    "REVOKE",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SHOW",
    "SOURCE",
    "UNLISTEN",
    "UNLOCK",
    "UPDATE",
    "USE",
    "VALUES",
    "WITH",
];

/// Objects whose CREATE / ALTER / DROP the rules do not judge.
const HARMLESS_OBJECTS: &[&str] = &[
    "ACCESS",
    "AGGREGATE",
    "ALGORITHM",
    "CAST",
    "COLLATION",
    "CONSTRAINT",
    "CONVERSION",
    "DEFAULT",
    "DEFINER",
    "DOMAIN",
    "EVENT",
    "EXTENSION",
    "FOREIGN",
    "FUNCTION",
    "GROUP",
    "INSTANCE",
    "LANGUAGE",
    "LARGE",
    "LOGFILE",
    "MATERIALIZED",
    "OPERATOR",
    "OWNED",
    "POLICY",
    "PROCEDURAL",
    "PROCEDURE",
    "PUBLICATION",
    "RECURSIVE",
    "RESOURCE",
    "ROLE",
    "ROUTINE",
    "RULE",
    "SEQUENCE",
    "SERVER",
    "SQL",
    "STATISTICS",
    "SUBSCRIPTION",
    "SYSTEM",
    "TABLESPACE",
    "TEXT",
    "TRANSFORM",
    "TRIGGER",
    "TRUSTED",
    "TYPE",
    "USER",
    "VIEW",
];

struct Cursor<'a> {
    src: &'a str,
    toks: &'a [Token],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str, toks: &'a [Token]) -> Self {
        Cursor { src, toks, i: 0 }
    }

    fn peek(&self) -> Option<Token> {
        self.toks.get(self.i).copied()
    }

    fn peek_is(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is(self.src, kw))
    }

    fn peek_word(&self) -> Option<String> {
        self.peek()
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.text(self.src).to_ascii_uppercase())
    }

    fn eat(&mut self, kw: &str) -> bool {
        let hit = self.peek_is(kw);
        if hit {
            self.i += 1;
        }
        hit
    }

    /// Eats all of `kws` in order, or nothing.
    fn eat_all(&mut self, kws: &[&str]) -> bool {
        let ok = kws.iter().enumerate().all(|(k, kw)| {
            self.toks
                .get(self.i + k)
                .is_some_and(|t| t.is(self.src, kw))
        });
        if ok {
            self.i += kws.len();
        }
        ok
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let hit = self.peek().is_some_and(|t| t.is_punct(self.src, c));
        if hit {
            self.i += 1;
        }
        hit
    }

    /// One identifier part: a word or a quoted identifier, unquoted.
    fn ident(&mut self) -> Option<(String, bool)> {
        let t = self.peek()?;
        let v = ident_value(self.src, &t)?;
        self.i += 1;
        Some(v)
    }

    /// A dotted name.
    fn name(&mut self) -> Option<Name> {
        let mut parts = vec![self.ident()?];
        while self.peek().is_some_and(|t| t.is_punct(self.src, '.')) {
            self.i += 1;
            match self.ident() {
                Some(p) => parts.push(p),
                None => break,
            }
        }
        Some(Name::from_parts(
            parts.iter().map(|(v, q)| (v.as_str(), *q)),
        ))
    }

    fn rest(&self) -> &'a [Token] {
        self.toks.get(self.i..).unwrap_or(&[])
    }
}

fn span_text(src: &str, toks: &[Token]) -> String {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => src.get(a.start..b.end).unwrap_or("").to_string(),
        _ => String::new(),
    }
}

fn ident_value(src: &str, t: &Token) -> Option<(String, bool)> {
    match t.kind {
        Kind::Word => Some((t.text(src).to_string(), false)),
        Kind::QuotedIdent => {
            let text = t.text(src);
            let q = text.chars().next()?;
            let inner = text.get(1..text.len().saturating_sub(1)).unwrap_or("");
            let doubled = format!("{q}{q}");
            Some((inner.replace(&doubled, &q.to_string()), true))
        }
        _ => None,
    }
}

/// Splits a token run at commas outside parentheses.
fn split_commas<'t>(src: &str, toks: &'t [Token]) -> Vec<&'t [Token]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (k, t) in toks.iter().enumerate() {
        if t.is_punct(src, '(') {
            depth += 1;
        } else if t.is_punct(src, ')') {
            depth -= 1;
        } else if depth == 0 && t.is_punct(src, ',') {
            parts.push(&toks[from..k]);
            from = k + 1;
        }
    }
    parts.push(&toks[from..]);
    parts
}

/// Whether `kws` occurs in sequence outside parentheses.
fn contains_seq(src: &str, toks: &[Token], kws: &[&str]) -> bool {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate() {
        if t.is_punct(src, '(') {
            depth += 1;
        } else if t.is_punct(src, ')') {
            depth -= 1;
        } else if depth == 0
            && kws
                .iter()
                .enumerate()
                .all(|(j, kw)| toks.get(k + j).is_some_and(|t| t.is(src, kw)))
        {
            return true;
        }
    }
    false
}

/// Statement kinds no rule judges (DML, grants, comments, functions, triggers, types, …),
/// told by their leading keywords. For these, sqlparser's verdict cannot change the outcome
/// (a parse yields no operation, a failure falls back to this same classification), so the
/// linter skips the full parse: large INSERTs and function bodies would otherwise dominate.
pub(crate) fn is_unjudged(src: &str, toks: &[Token]) -> bool {
    let mut c = Cursor::new(src, toks);
    let Some(first) = c.peek_word() else {
        return false;
    };
    c.i += 1;
    match first.as_str() {
        "ALTER" | "DROP" => second_is_harmless(&c, &[]),
        "CREATE" => {
            c.eat_all(&["OR", "REPLACE"]);
            second_is_harmless(&c, &[])
        }
        other => HARMLESS_LEADING.contains(&other),
    }
}

pub(crate) fn recognise(src: &str, toks: &[Token], dialect: Dialect) -> Recognised {
    let mut c = Cursor::new(src, toks);
    let Some(first) = c.peek_word() else {
        return Recognised::Unknown;
    };
    c.i += 1;
    let mut ops = Vec::new();
    match first.as_str() {
        "ALTER" => {
            // MariaDB `ALTER [ONLINE] [IGNORE] TABLE`.
            if dialect == Dialect::Mysql {
                c.eat("ONLINE");
                c.eat("IGNORE");
            }
            if c.eat("TABLE") {
                alter_table(&mut c, &mut ops);
                if ops.is_empty() {
                    return Recognised::Unknown;
                }
            } else if !second_is_harmless(&c, &["INDEX", "SCHEMA", "DATABASE", "TABLE"]) {
                return Recognised::Unknown;
            }
        }
        "CREATE" => {
            if !create(&mut c, &mut ops) {
                return Recognised::Unknown;
            }
        }
        "DROP" => {
            if !drop(&mut c, &mut ops) {
                return Recognised::Unknown;
            }
        }
        "TRUNCATE" => {
            c.eat("TABLE");
            for part in split_commas(src, c.rest()) {
                let mut p = Cursor::new(src, part);
                p.eat("ONLY");
                if let Some(table) = p.name() {
                    ops.push(Op::Truncate { table });
                }
            }
            if ops.is_empty() {
                return Recognised::Unknown;
            }
        }
        "RENAME" => {
            if c.eat("TABLE") {
                for part in split_commas(src, c.rest()) {
                    let mut p = Cursor::new(src, part);
                    if let (Some(from), true, Some(to)) = (p.name(), p.eat("TO"), p.name()) {
                        ops.push(Op::RenameTable { from, to });
                    }
                }
                if ops.is_empty() {
                    return Recognised::Unknown;
                }
            }
        }
        "REINDEX" => {
            if c.peek().is_some_and(|t| t.is_punct(src, '(')) {
                // REINDEX (VERBOSE, CONCURRENTLY) …: options in parentheses.
                let opts_end = c.rest().iter().position(|t| t.is_punct(src, ')'));
                let opts = &c.rest()[..opts_end.unwrap_or(0)];
                let conc = opts.iter().any(|t| t.is(src, "CONCURRENTLY"));
                c.i += opts_end.map_or(0, |e| e + 1);
                return reindex(&mut c, conc);
            }
            return reindex(&mut c, false);
        }
        "VACUUM" => {
            // VACUUM (FULL, ANALYZE) t / VACUUM FULL FREEZE VERBOSE ANALYZE t
            let mut full = false;
            if c.peek().is_some_and(|t| t.is_punct(src, '(')) {
                let end = c.rest().iter().position(|t| t.is_punct(src, ')'));
                let opts = &c.rest()[..end.unwrap_or(0)];
                // `FULL` alone or `FULL true|on|1`; `FULL false|off|0` is a plain VACUUM.
                full = opts.windows(2).any(|w| {
                    w[0].is(src, "FULL")
                        && !(w[1].is(src, "FALSE") || w[1].is(src, "OFF") || w[1].text(src) == "0")
                }) || opts.last().is_some_and(|t| t.is(src, "FULL"));
                c.i += end.map_or(0, |e| e + 1);
            }
            while let Some(w) = c.peek_word() {
                match w.as_str() {
                    "FULL" => full = true,
                    "FREEZE" | "VERBOSE" | "ANALYZE" | "ANALYSE" => {}
                    _ => break,
                }
                c.i += 1;
            }
            if full {
                ops.push(Op::VacuumFull { table: c.name() });
            }
        }
        "CLUSTER" => {
            // CLUSTER [VERBOSE | (VERBOSE)] [table [USING index]], or the old `CLUSTER index ON table`.
            if c.peek().is_some_and(|t| t.is_punct(src, '(')) {
                let end = c.rest().iter().position(|t| t.is_punct(src, ')'));
                c.i += end.map_or(0, |e| e + 1);
            }
            c.eat("VERBOSE");
            let first = c.name();
            let table = if c.eat("ON") { c.name() } else { first };
            ops.push(Op::Cluster { table });
        }
        "BEGIN" | "START" => {
            // `BEGIN` opens a transaction block, `START TRANSACTION` too; `BEGIN ATOMIC`
            // never stands alone.
            if first == "BEGIN" || c.peek_is("TRANSACTION") {
                ops.push(Op::Begin);
            }
        }
        "COMMIT" | "END" | "ABORT" => ops.push(Op::Commit),
        "ROLLBACK" => {
            if !c.peek_is("TO") {
                ops.push(Op::Commit);
            }
        }
        "SET" => {
            while let Some(w) = c.peek_word() {
                if matches!(w.as_str(), "SESSION" | "LOCAL" | "GLOBAL" | "PERSIST") {
                    c.i += 1;
                } else {
                    break;
                }
            }
            let var = c
                .rest()
                .iter()
                .take_while(|t| !t.is_punct(src, '=') && !t.is(src, "TO"))
                .map(|t| t.text(src))
                .collect::<String>();
            if crate::ast::is_lock_timeout(&var, dialect) {
                ops.push(Op::SetLockTimeout);
            }
        }
        other if HARMLESS_LEADING.contains(&other) => {}
        _ => return Recognised::Unknown,
    }
    Recognised::Ops(ops)
}

fn second_is_harmless(c: &Cursor, also: &[&str]) -> bool {
    c.peek_word()
        .is_some_and(|w| HARMLESS_OBJECTS.contains(&w.as_str()) || also.contains(&w.as_str()))
}

fn reindex(c: &mut Cursor, mut concurrently: bool) -> Recognised {
    let kind = c.peek_word().unwrap_or_default();
    c.i += 1;
    concurrently |= c.eat("CONCURRENTLY");
    let target = match c.name() {
        Some(n) => format!("{} {}", kind.to_ascii_lowercase(), n.display),
        None => kind.to_ascii_lowercase(),
    };
    Recognised::Ops(vec![Op::Reindex {
        target,
        concurrently,
    }])
}

/// `false` when the object kind is not one the recogniser knows.
fn create(c: &mut Cursor, ops: &mut Vec<Op>) -> bool {
    c.eat_all(&["OR", "REPLACE"]);
    while let Some(w) = c.peek_word() {
        if matches!(
            w.as_str(),
            "UNIQUE"
                | "FULLTEXT"
                | "SPATIAL"
                | "TEMP"
                | "TEMPORARY"
                | "UNLOGGED"
                | "GLOBAL"
                | "LOCAL"
        ) {
            c.i += 1;
        } else {
            break;
        }
    }
    if c.eat("TABLE") {
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        match c.name() {
            Some(table) => ops.push(Op::CreateTable { table }),
            None => return false,
        }
    } else if c.eat("INDEX") {
        let concurrently = c.eat("CONCURRENTLY");
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        let name = if c.peek_is("ON") { None } else { c.name() };
        // MySQL may put `USING BTREE` before ON.
        while c.peek().is_some() && !c.peek_is("ON") {
            c.i += 1;
        }
        if c.eat("ON") {
            c.eat("ONLY");
            if let Some(table) = c.name() {
                // MySQL `… ALGORITHM=… LOCK=…` after the column list.
                let src = c.src;
                let rest = c.rest();
                let options: Vec<Op> = rest
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.is(src, "ALGORITHM") || t.is(src, "LOCK"))
                    .map(|(k, _)| alter_action(src, &rest[k..], &table))
                    .collect();
                ops.push(Op::CreateIndex {
                    name,
                    table,
                    concurrently,
                });
                ops.extend(options);
            }
        }
        return !ops.is_empty();
    } else {
        return second_is_harmless(c, &["SCHEMA", "DATABASE", "INDEX"]);
    }
    true
}

/// `false` when the object kind is not one the recogniser knows.
fn drop(c: &mut Cursor, ops: &mut Vec<Op>) -> bool {
    c.eat("TEMPORARY");
    if !second_is_harmless(c, &["TABLE", "SCHEMA", "DATABASE", "INDEX"]) {
        return false;
    }
    let Some(what) = c.peek_word() else {
        return false;
    };
    c.i += 1;
    let concurrently = what == "INDEX" && c.eat("CONCURRENTLY");
    c.eat_all(&["IF", "EXISTS"]);
    // MySQL `DROP INDEX idx ON t`: the names end at ON.
    let end = c
        .rest()
        .iter()
        .position(|t| t.is(c.src, "ON"))
        .unwrap_or(c.rest().len());
    let src = c.src;
    let on_table = c
        .rest()
        .get(end + 1..)
        .and_then(|t| Cursor::new(src, t).name());
    for part in split_commas(src, &c.rest()[..end]) {
        let Some(name) = Cursor::new(src, part).name() else {
            continue;
        };
        match what.as_str() {
            "TABLE" => ops.push(Op::DropTable { table: name }),
            "SCHEMA" => ops.push(Op::DropSchema {
                name,
                kind: "schema",
            }),
            "DATABASE" => ops.push(Op::DropSchema {
                name,
                kind: "database",
            }),
            "INDEX" => ops.push(Op::DropIndex {
                name,
                table: on_table.clone(),
                concurrently,
            }),
            _ => {}
        }
    }
    // The kinds the rules judge must name what they drop.
    !ops.is_empty() || !matches!(what.as_str(), "TABLE" | "SCHEMA" | "DATABASE" | "INDEX")
}

fn alter_table(c: &mut Cursor, ops: &mut Vec<Op>) {
    c.eat_all(&["IF", "EXISTS"]);
    c.eat("ONLY");
    let Some(table) = c.name() else {
        return;
    };
    c.eat_punct('*');
    let src = c.src;
    for action in split_commas(src, c.rest()) {
        if !action.is_empty() {
            let op = alter_action(src, action, &table);
            let added = matches!(op, Op::AddColumn { .. });
            ops.push(op);
            if added {
                // Inline `UNIQUE` / `PRIMARY KEY` on the new column build an index too.
                ops.extend(inline_key(src, &action[1..], &table));
            }
        }
    }
}

/// `ADD [COLUMN] c type … UNIQUE | PRIMARY KEY`: the constraint the column definition adds.
fn inline_key(src: &str, after_add: &[Token], table: &Name) -> Option<Op> {
    // Skip COLUMN, IF NOT EXISTS and the column name: a column may be called "unique".
    let mut c = Cursor::new(src, after_add);
    c.eat("COLUMN");
    c.eat_all(&["IF", "NOT", "EXISTS"]);
    c.ident()?;
    let rest = c.rest();
    let kind = if contains_seq(src, rest, &["PRIMARY", "KEY"]) {
        ConstraintKind::PrimaryKey
    } else if contains_seq(src, rest, &["UNIQUE"]) {
        ConstraintKind::Unique
    } else {
        return None;
    };
    Some(Op::AddConstraint {
        table: table.clone(),
        name: None,
        kind,
        not_valid: false,
        using_index: false,
    })
}

fn alter_action(src: &str, action: &[Token], table: &Name) -> Op {
    let mut c = Cursor::new(src, action);
    let table = table.clone();
    let other = |table| Op::OtherAlter { table };
    let Some(verb) = c.peek_word() else {
        return other(table);
    };
    c.i += 1;
    match verb.as_str() {
        "ADD" => {
            let mut cname = None;
            if c.eat("CONSTRAINT") {
                cname = c.ident().map(|(v, _)| v);
            }
            let kind = if c.eat_all(&["PRIMARY", "KEY"]) {
                Some(ConstraintKind::PrimaryKey)
            } else if c.eat("UNIQUE") {
                Some(ConstraintKind::Unique)
            } else if c.eat_all(&["FOREIGN", "KEY"]) {
                Some(ConstraintKind::ForeignKey)
            } else if c.eat("CHECK") {
                Some(ConstraintKind::Check)
            } else {
                None
            };
            if let Some(kind) = kind {
                return Op::AddConstraint {
                    table,
                    name: cname,
                    kind,
                    not_valid: contains_seq(src, action, &["NOT", "VALID"]),
                    using_index: contains_seq(src, action, &["USING", "INDEX"]),
                };
            }
            if cname.is_some()
                || [
                    "INDEX",
                    "KEY",
                    "FULLTEXT",
                    "SPATIAL",
                    "PARTITION",
                    "EXCLUDE",
                ]
                .iter()
                .any(|k| c.peek_is(k))
            {
                return other(table);
            }
            c.eat("COLUMN");
            c.eat_all(&["IF", "NOT", "EXISTS"]);
            match c.ident() {
                Some((column, _)) => column_def(src, c.rest(), table, column),
                None => other(table),
            }
        }
        "DROP" => {
            if [
                "CONSTRAINT",
                "INDEX",
                "KEY",
                "PRIMARY",
                "FOREIGN",
                "CHECK",
                "PARTITION",
                "TRIGGER",
            ]
            .iter()
            .any(|k| c.peek_is(k))
            {
                return other(table);
            }
            c.eat("COLUMN");
            c.eat_all(&["IF", "EXISTS"]);
            match c.ident() {
                Some((column, _)) => Op::DropColumn { table, column },
                None => other(table),
            }
        }
        "RENAME" => {
            if c.eat("TO") || c.eat("AS") {
                return match c.name() {
                    Some(to) => Op::RenameTable { from: table, to },
                    None => other(table),
                };
            }
            if ["CONSTRAINT", "INDEX", "KEY"].iter().any(|k| c.peek_is(k)) {
                return other(table);
            }
            c.eat("COLUMN");
            match (c.ident(), c.eat("TO"), c.ident()) {
                (Some((from, _)), true, Some((to, _))) => Op::RenameColumn { table, from, to },
                _ => other(table),
            }
        }
        "ALTER" => {
            c.eat("COLUMN");
            let Some((column, _)) = c.ident() else {
                return other(table);
            };
            if c.eat_all(&["SET", "NOT", "NULL"]) {
                Op::SetNotNull { table, column }
            } else if c.eat_all(&["SET", "DATA", "TYPE"]) || c.eat("TYPE") {
                Op::ChangeType {
                    table,
                    column,
                    new_type: type_text(src, c.rest()),
                }
            } else {
                other(table)
            }
        }
        "MODIFY" => {
            c.eat("COLUMN");
            match c.ident() {
                Some((column, _)) => Op::ChangeType {
                    table,
                    column,
                    new_type: type_text(src, c.rest()),
                },
                None => other(table),
            }
        }
        "CHANGE" => {
            c.eat("COLUMN");
            match (c.ident(), c.ident()) {
                (Some((from, _)), Some((to, _))) if !from.eq_ignore_ascii_case(&to) => {
                    Op::RenameColumn { table, from, to }
                }
                (Some((column, _)), Some(_)) => Op::ChangeType {
                    table,
                    column,
                    new_type: type_text(src, c.rest()),
                },
                _ => other(table),
            }
        }
        "ALGORITHM" | "LOCK" => {
            c.eat_punct('=');
            let value = c.peek_word().unwrap_or_default();
            if verb == "ALGORITHM" {
                Op::Algorithm {
                    table,
                    algorithm: value,
                }
            } else {
                Op::Lock { table, lock: value }
            }
        }
        _ => other(table),
    }
}

/// Keywords that end a column's type or its DEFAULT expression.
const COLUMN_CLAUSES: &[&str] = &[
    "NOT",
    "NULL",
    "DEFAULT",
    "CONSTRAINT",
    "CHECK",
    "REFERENCES",
    "UNIQUE",
    "PRIMARY",
    "GENERATED",
    "COLLATE",
    "COMMENT",
    "AUTO_INCREMENT",
    "ON",
    "FIRST",
    "AFTER",
    "USING",
    "AS",
    "CHARACTER",
    "CHARSET",
];

/// Length of the run of tokens before the next column clause (outside parentheses).
fn clause_len(src: &str, toks: &[Token]) -> usize {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate() {
        if t.is_punct(src, '(') {
            depth += 1;
        } else if t.is_punct(src, ')') {
            depth -= 1;
        } else if depth == 0
            && t.kind == Kind::Word
            && COLUMN_CLAUSES
                .iter()
                .any(|kw| t.text(src).eq_ignore_ascii_case(kw))
        {
            return k;
        }
    }
    toks.len()
}

fn type_text(src: &str, toks: &[Token]) -> String {
    span_text(src, &toks[..clause_len(src, toks)])
}

fn column_def(src: &str, toks: &[Token], table: Name, column: String) -> Op {
    let ty_len = clause_len(src, toks);
    let mut fill = Fill::Nothing;
    if let Some(t) = toks.first().filter(|_| ty_len > 0) {
        let ty = t.text(src);
        if [
            "serial",
            "bigserial",
            "smallserial",
            "serial2",
            "serial4",
            "serial8",
        ]
        .iter()
        .any(|s| ty.eq_ignore_ascii_case(s))
        {
            fill = Fill::Serial;
        }
    }
    let mut not_null = false;
    let mut k = ty_len;
    while k < toks.len() {
        let t = toks[k];
        k += 1;
        if t.is(src, "NOT") && toks.get(k).is_some_and(|n| n.is(src, "NULL")) {
            not_null = true;
            k += 1;
        } else if t.is(src, "PRIMARY") {
            not_null = true;
        } else if t.is(src, "AUTO_INCREMENT") {
            fill = Fill::Serial;
        } else if t.is(src, "DEFAULT") && toks.get(k).is_some_and(|n| n.is(src, "NULL")) {
            fill = Fill::Null;
            k += 1;
        } else if t.is(src, "DEFAULT") {
            let n = clause_len(src, &toks[k..]);
            let expr = &toks[k..k + n];
            fill = match expr {
                [one] if one.is(src, "NULL") => Fill::Null,
                [] => Fill::Nothing,
                _ => Fill::Default(span_text(src, expr)),
            };
            k += n;
        } else if t.is(src, "GENERATED") {
            let rest = &toks[k..];
            fill = if rest.iter().any(|t| t.is(src, "IDENTITY")) {
                Fill::Identity
            } else {
                Fill::Generated
            };
        } else if t.is(src, "AS") && toks.get(k).is_some_and(|n| n.is_punct(src, '(')) {
            fill = Fill::Generated;
        } else if t.is_punct(src, '(') {
            // Skip a parenthesised clause (CHECK (…), REFERENCES t (…)).
            let mut depth = 1;
            while k < toks.len() && depth > 0 {
                if toks[k].is_punct(src, '(') {
                    depth += 1;
                } else if toks[k].is_punct(src, ')') {
                    depth -= 1;
                }
                k += 1;
            }
        }
    }
    Op::AddColumn {
        table,
        column,
        not_null,
        fill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::split;

    fn ops(sql: &str, dialect: Dialect) -> Vec<Op> {
        let s = split(sql, dialect);
        match recognise(sql, &s.tokens[s.statements[0].tokens.clone()], dialect) {
            Recognised::Ops(o) => o,
            Recognised::Unknown => panic!("not recognised: {sql}"),
        }
    }

    #[test]
    fn reads_alter_table_actions() {
        let got = ops(
            "ALTER TABLE ONLY public.\"Users\" DROP COLUMN IF EXISTS email, RENAME COLUMN a TO b, ALTER COLUMN c SET NOT NULL, ADD COLUMN d int NOT NULL DEFAULT random()",
            Dialect::Postgres,
        );
        let t = Name::from_parts([("public", false), ("Users", true)]);
        assert_eq!(
            got,
            vec![
                Op::DropColumn {
                    table: t.clone(),
                    column: "email".into()
                },
                Op::RenameColumn {
                    table: t.clone(),
                    from: "a".into(),
                    to: "b".into()
                },
                Op::SetNotNull {
                    table: t.clone(),
                    column: "c".into()
                },
                Op::AddColumn {
                    table: t,
                    column: "d".into(),
                    not_null: true,
                    fill: Fill::Default("random()".into())
                },
            ]
        );
    }

    #[test]
    fn reads_using_index_and_not_valid() {
        let got = ops(
            "ALTER TABLE t ADD CONSTRAINT t_pk PRIMARY KEY USING INDEX t_idx",
            Dialect::Postgres,
        );
        assert!(matches!(
            got[0],
            Op::AddConstraint {
                kind: ConstraintKind::PrimaryKey,
                using_index: true,
                not_valid: false,
                ..
            }
        ));
    }

    #[test]
    fn reads_mysql_change_and_algorithm() {
        let got = ops(
            "ALTER TABLE t CHANGE COLUMN a b BIGINT NOT NULL, ALGORITHM=COPY, LOCK = SHARED",
            Dialect::Mysql,
        );
        let t = Name::plain("t");
        assert_eq!(
            got,
            vec![
                Op::RenameColumn {
                    table: t.clone(),
                    from: "a".into(),
                    to: "b".into()
                },
                Op::Algorithm {
                    table: t.clone(),
                    algorithm: "COPY".into()
                },
                Op::Lock {
                    table: t,
                    lock: "SHARED".into()
                },
            ]
        );
    }

    #[test]
    fn reads_index_statements() {
        assert_eq!(
            ops("DROP INDEX CONCURRENTLY IF EXISTS a, b", Dialect::Postgres).len(),
            2
        );
        assert!(matches!(
            ops("REINDEX (VERBOSE, CONCURRENTLY) TABLE t", Dialect::Postgres)[0],
            Op::Reindex {
                concurrently: true,
                ..
            }
        ));
        assert!(matches!(
            &ops("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON ONLY t (a)", Dialect::Postgres)[0],
            Op::CreateIndex { concurrently: true, table, .. } if table.key == "t"
        ));
    }

    #[test]
    fn unknown_or_nameless_statements_are_unknown() {
        for sql in [
            "FROBNICATE TABLE t",
            "ALTER TABLE",
            "TRUNCATE",
            "CREATE INDEX i",
            "CREATE TABLE",
            "DROP TABLE",
            "RENAME TABLE a",
            "CREATE WIDGET w",
            "DROP WIDGET w",
        ] {
            let s = split(sql, Dialect::Postgres);
            assert!(
                matches!(
                    recognise(sql, &s.tokens, Dialect::Postgres),
                    Recognised::Unknown
                ),
                "{sql}"
            );
        }
    }

    #[test]
    fn harmless_statement_kinds_are_recognised_with_no_operations() {
        for sql in [
            "DO $$ BEGIN DROP TABLE t; END $$",
            "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
            "ALTER TYPE mood ADD VALUE 'x'",
            "DROP FUNCTION IF EXISTS f()",
            "COMMENT ON TABLE t IS 'x'",
            "RENAME USER a TO b",
        ] {
            let s = split(sql, Dialect::Postgres);
            assert!(
                matches!(recognise(sql, &s.tokens, Dialect::Postgres), Recognised::Ops(ref o) if o.is_empty()),
                "{sql}"
            );
        }
    }
}
