//! verify's report for people: the summary line, then each diverged key once with the columns
//! that differ by name (expected and found), a count per column when there are many, and what
//! to do next. `--json` carries the same, plus the raw rows.

use engine::seam::{ColumnDifference, DivergedKey, Divergence};
use engine::{VerifyKind, VerifyReport};
use std::collections::BTreeMap;

/// Keys listed one by one; past this, a count.
const LISTED_KEYS: usize = 20;
/// Values longer than this are cut in the listing (`--json` has them whole).
const VALUE_CHARS: usize = 60;

pub fn render(name: &str, r: &VerifyReport) -> String {
    let read = match r.kind {
        VerifyKind::Full => format!("full pass, {} rows in {} ranges", r.rows_checked, r.ranges),
        VerifyKind::Incremental => format!(
            "incremental pass, {} rows re-read in {} of {} ranges",
            r.rows_checked, r.ranges, r.ranges_total
        ),
    };
    let mut out = format!(
        "verify {name}: {read}, {} re-checked, {} diverged ({:.1}s); cutover {}\n",
        r.rechecked,
        r.diverged.len(),
        r.seconds,
        if r.cutover_allowed() {
            "allowed"
        } else {
            "refused"
        }
    );
    if let Some(why) = &r.full_because {
        out.push_str(&format!(
            "  incremental was asked for; ran a full pass: {why}\n"
        ));
    }
    if r.diverged.is_empty() {
        return out;
    }
    for d in r.diverged.iter().take(LISTED_KEYS) {
        out.push_str(&format!("  {}: ", key_text(r, d)));
        match r.divergence(d) {
            Divergence::MissingInTarget => {
                out.push_str("missing from the new table (the old table has it)\n")
            }
            Divergence::MissingInSource => {
                out.push_str("only in the new table (the old table has no such row)\n")
            }
            Divergence::Columns(cols) => {
                out.push_str(&format!("{} column(s) differ\n", cols.len()));
                let width = cols.iter().map(|c| c.column.len()).max().unwrap_or(0);
                for c in &cols {
                    out.push_str(&format!(
                        "      {:<width$}  expected {}  found {}\n",
                        c.column,
                        value(&c.expected),
                        value(&c.found)
                    ));
                }
            }
        }
    }
    if r.diverged.len() > LISTED_KEYS {
        out.push_str(&format!(
            "  … and {} more key(s) (all of them: splice verify {name} --json)\n",
            r.diverged.len() - LISTED_KEYS
        ));
    }
    if r.diverged.len() > 1 {
        out.push_str(&format!("  {}\n", counts(r)));
    }
    out.push_str(&what_to_do(name, r));
    out
}

/// The way out: these keys differed in every re-check round, so they are not changes in flight.
fn what_to_do(name: &str, r: &VerifyReport) -> String {
    let keys: Vec<String> = r
        .diverged
        .iter()
        .take(LISTED_KEYS)
        .map(|d| {
            let values: Vec<String> = d
                .key
                .iter()
                .map(|v| format!("'{}'", v.replace('\'', "''")))
                .collect();
            if values.len() == 1 {
                values[0].clone()
            } else {
                format!("({})", values.join(", "))
            }
        })
        .collect();
    let key = match r.key_columns.as_slice() {
        [one] => one.clone(),
        [] => "<key>".into(),
        many => format!("({})", many.join(", ")),
    };
    format!(
        "what to do: these keys still differed after capture was drained and they were read \
         again, in every re-check round.\n\
         \x20 1. If `expected` (the old row through [up]) is not what the new table should hold, \
         the mapping is wrong: fix [up], `splice abort {name}`, then expand and sync again.\n\
         \x20 2. Otherwise something wrote these rows past capture (a trigger, or a session with \
         session_replication_role = replica writing the new table): stop it, touch the keys in \
         the old table so capture re-syncs them, and verify again:\n\
         \x20      UPDATE <old table> SET {first} = {first} WHERE {key} IN ({list});\n\
         \x20      splice verify {name}\n\
         Cutover stays refused until verify passes.\n",
        first = r.key_columns.first().map_or("<key>", String::as_str),
        list = keys.join(", "),
    )
}

/// `key id=42` (several key columns: `key (a, b)=(1, 2)`).
fn key_text(r: &VerifyReport, d: &DivergedKey) -> String {
    if r.key_columns.len() == d.key.len() && d.key.len() == 1 {
        format!("key {}={}", r.key_columns[0], d.key[0])
    } else if r.key_columns.len() == d.key.len() {
        format!("key ({})=({})", r.key_columns.join(", "), d.key.join(", "))
    } else {
        format!("key ({})", d.key.join(", "))
    }
}

/// `12345`, `NULL`, or a long value cut short; quoted when blank-padded or empty.
fn value(v: &Option<String>) -> String {
    let Some(v) = v else {
        return "NULL".into();
    };
    let cut = if v.chars().count() > VALUE_CHARS {
        format!("{}…", v.chars().take(VALUE_CHARS).collect::<String>())
    } else {
        v.clone()
    };
    if cut.is_empty() || cut.trim() != cut || cut == "NULL" || cut.contains(char::is_whitespace) {
        format!("{cut:?}")
    } else {
        cut
    }
}

/// `by column: amount_cents 1830, note 2; missing from the new table 3`.
fn counts(r: &VerifyReport) -> String {
    let mut by_column: BTreeMap<String, usize> = BTreeMap::new();
    let (mut missing, mut extra) = (0, 0);
    for d in &r.diverged {
        match r.divergence(d) {
            Divergence::MissingInTarget => missing += 1,
            Divergence::MissingInSource => extra += 1,
            Divergence::Columns(cols) => {
                for ColumnDifference { column, .. } in cols {
                    *by_column.entry(column).or_default() += 1;
                }
            }
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !by_column.is_empty() {
        let mut cols: Vec<_> = by_column.into_iter().collect();
        cols.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        parts.push(format!(
            "differing keys by column: {}",
            cols.iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if missing > 0 {
        parts.push(format!("missing from the new table: {missing}"));
    }
    if extra > 0 {
        parts.push(format!("only in the new table: {extra}"));
    }
    parts.join("; ")
}

/// verify's `--json`: the engine's report and its answers, as one object.
#[derive(serde::Serialize)]
pub struct VerifyJson<'r> {
    passed: bool,
    /// `full` or `incremental`: the kind of pass that ran.
    kind: VerifyKind,
    /// Why an incremental request ran a full pass; absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    full_because: Option<&'r str>,
    /// Rows and ranges this pass read, of `ranges_total`.
    rows_checked: u64,
    ranges: u64,
    ranges_total: u64,
    rechecked: u64,
    divergence_rate: f64,
    key_columns: &'r [String],
    columns: &'r [String],
    diverged: Vec<DivergedJson<'r>>,
    seconds: f64,
    cutover_allowed: bool,
}

#[derive(serde::Serialize)]
struct DivergedJson<'r> {
    key: &'r [String],
    expected: Option<&'r str>,
    found: Option<&'r str>,
    /// `missing_in_target`, `missing_in_source` or `columns`.
    kind: &'static str,
    differences: Vec<ColumnDifference>,
}

impl<'r> From<&'r VerifyReport> for VerifyJson<'r> {
    fn from(r: &'r VerifyReport) -> VerifyJson<'r> {
        VerifyJson {
            passed: r.passed(),
            kind: r.kind,
            full_because: r.full_because.as_deref(),
            rows_checked: r.rows_checked,
            ranges: r.ranges,
            ranges_total: r.ranges_total,
            rechecked: r.rechecked,
            divergence_rate: r.divergence_rate(),
            key_columns: &r.key_columns,
            columns: &r.columns,
            diverged: r
                .diverged
                .iter()
                .map(|d| {
                    let (kind, differences) = match r.divergence(d) {
                        Divergence::MissingInTarget => ("missing_in_target", vec![]),
                        Divergence::MissingInSource => ("missing_in_source", vec![]),
                        Divergence::Columns(c) => ("columns", c),
                    };
                    DivergedJson {
                        key: &d.key,
                        expected: d.expected.as_deref(),
                        found: d.found.as_deref(),
                        kind,
                        differences,
                    }
                })
                .collect(),
            seconds: r.seconds,
            cutover_allowed: r.cutover_allowed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(diverged: Vec<DivergedKey>) -> VerifyReport {
        VerifyReport {
            kind: VerifyKind::Full,
            full_because: None,
            ranges_total: 11,
            rows_checked: 1_000_116,
            ranges: 11,
            rechecked: 244,
            diverged,
            seconds: 2.0,
            key_columns: vec!["id".into()],
            columns: ["id", "customer_id", "amount_cents", "currency", "note"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[test]
    fn the_summary_says_which_pass_ran_and_what_it_re_read() {
        let mut r = report(vec![]);
        r.kind = VerifyKind::Incremental;
        r.ranges = 2;
        r.ranges_total = 110;
        r.rows_checked = 18_204;
        let text = render("orders_v2", &r);
        assert!(
            text.starts_with(
                "verify orders_v2: incremental pass, 18204 rows re-read in 2 of 110 ranges,"
            ),
            "{text}"
        );
        r.kind = VerifyKind::Full;
        r.full_because = Some("no verify pass is stored yet".into());
        let text = render("orders_v2", &r);
        assert!(text.contains("full pass, 18204 rows in 2 ranges"), "{text}");
        assert!(
            text.contains("incremental was asked for; ran a full pass: no verify pass is stored"),
            "{text}"
        );
        let v = serde_json::to_value(VerifyJson::from(&r)).expect("json");
        assert_eq!(v["kind"], "full");
        assert_eq!(v["ranges_total"], 110);
    }

    fn key(id: u32, expected: Option<&str>, found: Option<&str>) -> DivergedKey {
        DivergedKey {
            key: vec![id.to_string()],
            expected: expected.map(String::from),
            found: found.map(String::from),
        }
    }

    #[test]
    fn the_divergence_report_names_the_key_once_and_the_differing_columns() {
        let r = report(vec![
            key(
                42,
                Some("42\t42\t7\t12345\tEUR\tedited"),
                Some("42\t42\t7\t12300\tEUR\t\\N"),
            ),
            key(77, Some("77\t77\t3\t500\tEUR\t\\N"), None),
            key(91, None, Some("91\t91\t3\t500\tEUR\tx")),
        ]);
        let text = render("orders_v2", &r);
        assert!(text.contains("  key id=42: 2 column(s) differ\n"), "{text}");
        assert!(
            text.contains("      amount_cents  expected 12345  found 12300\n"),
            "{text}"
        );
        assert!(
            text.contains("      note          expected edited  found NULL\n"),
            "{text}"
        );
        assert!(
            text.contains("key id=77: missing from the new table"),
            "{text}"
        );
        assert!(text.contains("key id=91: only in the new table"), "{text}");
        assert!(!text.contains('\t'), "no raw tuples: {text}");
        assert!(text.contains("what to do:"), "{text}");
        insta::assert_snapshot!("divergence_report", text);
    }

    #[test]
    fn many_diverged_keys_end_in_a_count_per_column() {
        let keys = (1..=45)
            .map(|i| {
                key(
                    i,
                    Some(&format!("{i}\t{i}\t7\t100\tEUR\tx")),
                    Some(&format!("{i}\t{i}\t7\t101\tEUR\tx")),
                )
            })
            .collect();
        let text = render("orders_v2", &report(keys));
        assert_eq!(
            text.matches("column(s) differ").count(),
            LISTED_KEYS,
            "{text}"
        );
        assert!(text.contains("… and 25 more key(s)"), "{text}");
        assert!(
            text.contains("differing keys by column: amount_cents 45"),
            "{text}"
        );
    }

    #[test]
    fn the_json_report_names_the_differing_columns() {
        let r = report(vec![key(
            42,
            Some("42\t42\t7\t12345\tEUR\tedited"),
            Some("42\t42\t7\t12300\tEUR\tedited"),
        )]);
        let v = serde_json::to_value(VerifyJson::from(&r)).expect("json");
        assert_eq!(v["diverged"][0]["kind"], "columns");
        assert_eq!(v["diverged"][0]["differences"][0]["column"], "amount_cents");
        assert_eq!(v["diverged"][0]["differences"][0]["expected"], "12345");
        assert_eq!(
            v["diverged"][0]["expected"],
            "42\t42\t7\t12345\tEUR\tedited"
        );
        assert_eq!(v["key_columns"][0], "id");
    }
}
