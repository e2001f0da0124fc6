//! Inline suppression: `-- splice:ignore rule-a, rule-b` attached to one statement, and
//! `-- splice:ignore-file rule` for the whole input. An ignore that suppresses nothing, or names
//! a rule that does not exist, is itself reported as `unused-ignore`.
//!
//! A statement ignore attaches to: the statement it sits inside (e.g. at the end of its first
//! line); else, when code precedes it on its line, the statement that ended on that line; else
//! the next statement, if only comment lines (no blank line) lie between them. Anything after
//! ` -- ` or `:` in the comment is a free-text reason.

use crate::rules::unused_ignore;
use crate::split::{LineIndex, Split};
use crate::{rule, Finding, Options};

struct Ignore {
    /// Byte offset of the comment.
    offset: usize,
    /// `None` for `splice:ignore-file`.
    target: Option<usize>,
    /// Rule ids, each with whether it suppressed something.
    rules: Vec<(String, bool)>,
}

/// Parses a comment's text; `Some((file_level, rule ids))` for suppression comments.
fn parse(comment: &str) -> Option<(bool, Vec<String>)> {
    let body = if let Some(b) = comment.strip_prefix("--") {
        b
    } else if let Some(b) = comment.strip_prefix('#') {
        b
    } else {
        let b = comment.strip_prefix("/*")?;
        b.strip_suffix("*/").unwrap_or(b)
    };
    let body = body.trim_start();
    let (file, rest) = if let Some(r) = body.strip_prefix("splice:ignore-file") {
        (true, r)
    } else {
        (false, body.strip_prefix("splice:ignore")?)
    };
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let list = rest.split(" --").next().unwrap_or("");
    let list = list.split(':').next().unwrap_or("");
    let rules = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Some((file, rules))
}

/// The statement an ignore comment at `start..end` applies to.
fn target(sql: &str, split: &Split, lines: &LineIndex, start: usize, end: usize) -> Option<usize> {
    let stmts = &split.statements;
    let next = stmts.partition_point(|s| s.start < start);
    // Inside a statement.
    if let Some(i) = next.checked_sub(1) {
        if start < stmts[i].end {
            return Some(i);
        }
    }
    let line = lines.line(start);
    let line_start = lines.line_start(line).unwrap_or(0);
    let code_before = sql
        .get(line_start..start)
        .is_some_and(|s| !s.trim().is_empty());
    if code_before {
        // Trailing comment: the statement that ended on this line.
        let i = next.checked_sub(1)?;
        return (lines.line(stmts[i].end.saturating_sub(1)) == line).then_some(i);
    }
    // Own line: the next statement, if no blank line lies between.
    let st = stmts.get(next)?;
    let between = sql.get(end..st.start)?;
    let pieces: Vec<&str> = between.split('\n').collect();
    let blank = pieces.len() > 2
        && pieces[1..pieces.len() - 1]
            .iter()
            .any(|p| p.trim().is_empty());
    (!blank).then_some(next)
}

/// Drops suppressed findings and adds `unused-ignore` ones.
pub(crate) fn apply(
    sql: &str,
    split: &Split,
    lines: &LineIndex,
    findings: Vec<Finding>,
    opts: &Options,
) -> Vec<Finding> {
    let mut ignores: Vec<Ignore> = split
        .comments
        .iter()
        .filter_map(|c| {
            let text = sql.get(c.start..c.end)?;
            let (file, rules) = parse(text)?;
            Some(Ignore {
                offset: c.start,
                target: if file {
                    None
                } else {
                    // An ignore with no statement to attach to suppresses nothing.
                    Some(target(sql, split, lines, c.start, c.end).unwrap_or(usize::MAX))
                },
                rules: rules.into_iter().map(|r| (r, false)).collect(),
            })
        })
        .collect();
    if ignores.is_empty() {
        return findings;
    }

    // Ignores by the statement they target (file-level ones under `None`), so that matching is
    // not findings × ignores.
    let mut by_target: std::collections::HashMap<Option<usize>, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, ig) in ignores.iter().enumerate() {
        by_target.entry(ig.target).or_default().push(i);
    }
    let mut kept = Vec::with_capacity(findings.len());
    for f in findings {
        let mut suppressed = false;
        let file_level = by_target.get(&None).into_iter().flatten();
        let here = f
            .statement
            .and_then(|s| by_target.get(&Some(s)))
            .into_iter()
            .flatten();
        for &i in file_level.chain(here) {
            for (r, used) in &mut ignores[i].rules {
                if r == f.rule.id {
                    *used = true;
                    suppressed = true;
                }
            }
        }
        if !suppressed {
            kept.push(f);
        }
    }

    let unused_enabled = crate::enabled(&unused_ignore::INFO, opts);
    if !unused_enabled {
        return kept;
    }
    // Unused ignores, then the file-level `unused-ignore` ignores may silence those.
    let mut unused = Vec::new();
    for ig in &ignores {
        for (r, used) in &ig.rules {
            if *used || (ig.target.is_none() && r == unused_ignore::INFO.id) {
                continue;
            }
            let message = match rule(r) {
                None => format!("`{r}` in this ignore comment is not a splice rule"),
                Some(info) if !crate::enabled(info, opts) => continue,
                Some(_) if ig.target == Some(usize::MAX) => format!(
                    "this ignore of `{r}` is not attached to any statement (put it on the line \
                     before the statement or at the end of its line)"
                ),
                Some(_) => format!("this ignore of `{r}` suppresses nothing"),
            };
            unused.push(Finding {
                statement: None,
                offset: ig.offset,
                rule: &unused_ignore::INFO,
                message,
            });
        }
    }
    let mut file_level_used = false;
    let silenced = ignores
        .iter()
        .any(|ig| ig.target.is_none() && ig.rules.iter().any(|(r, _)| r == unused_ignore::INFO.id));
    if silenced && !unused.is_empty() {
        unused.clear();
        file_level_used = true;
    }
    if silenced && !file_level_used {
        for ig in ignores.iter().filter(|ig| ig.target.is_none()) {
            if ig.rules.iter().any(|(r, _)| r == unused_ignore::INFO.id) {
                unused.push(Finding {
                    statement: None,
                    offset: ig.offset,
                    rule: &unused_ignore::INFO,
                    message: format!(
                        "this ignore of `{}` suppresses nothing",
                        unused_ignore::INFO.id
                    ),
                });
            }
        }
    }
    kept.extend(unused);
    kept
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_rule_lists_and_reasons() {
        assert_eq!(
            parse("-- splice:ignore drop-column, rename-table -- cutover swaps names"),
            Some((false, vec!["drop-column".into(), "rename-table".into()]))
        );
        assert_eq!(
            parse("/* splice:ignore-file truncate */"),
            Some((true, vec!["truncate".into()]))
        );
        assert_eq!(
            parse("-- splice:ignore truncate: staging table"),
            Some((false, vec!["truncate".into()]))
        );
        assert_eq!(parse("-- splice:ignored truncate"), None);
        assert_eq!(parse("-- just a comment"), None);
    }
}
