//! Source drift: the source table's columns, types, nullability and key as expand saw them.
//! Sync, verify and cutover compare the table as it is now and refuse any difference by name:
//! a column added after expand would otherwise vanish at cutover, and a changed type would be
//! copied through a mapping planned for another one.

use crate::catalog::Table;
use serde::{Deserialize, Serialize};

/// The shape expand recorded (in its history entry, under `source_shape`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceShape {
    pub columns: Vec<ShapeColumn>,
    pub key: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeColumn {
    pub name: String,
    pub sql_type: String,
    pub not_null: bool,
}

impl SourceShape {
    pub fn of(table: &Table) -> SourceShape {
        SourceShape {
            columns: table
                .columns
                .iter()
                .map(|c| ShapeColumn {
                    name: c.name.clone(),
                    sql_type: c.sql_type.clone(),
                    not_null: c.not_null,
                })
                .collect(),
            key: table.primary_key.clone(),
        }
    }

    /// What changed from `self` (at expand) to `now`, one phrase per change; empty when
    /// nothing did.
    pub fn changes(&self, now: &SourceShape) -> Vec<String> {
        let mut out = Vec::new();
        for c in &now.columns {
            match self.columns.iter().find(|o| o.name == c.name) {
                None => out.push(format!("column {} ({}) was added", c.name, c.sql_type)),
                Some(o) if o.sql_type != c.sql_type => out.push(format!(
                    "column {} changed type from {} to {}",
                    c.name, o.sql_type, c.sql_type
                )),
                Some(o) if o.not_null != c.not_null => out.push(format!(
                    "column {} is now {}",
                    c.name,
                    if c.not_null { "NOT NULL" } else { "nullable" }
                )),
                Some(_) => {}
            }
        }
        for o in &self.columns {
            if !now.columns.iter().any(|c| c.name == o.name) {
                out.push(format!("column {} was dropped or renamed", o.name));
            }
        }
        if self.key != now.key {
            out.push(format!(
                "the primary key changed from ({}) to ({})",
                self.key.join(", "),
                now.key.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(cols: &[(&str, &str, bool)], key: &[&str]) -> SourceShape {
        SourceShape {
            columns: cols
                .iter()
                .map(|(n, t, nn)| ShapeColumn {
                    name: n.to_string(),
                    sql_type: t.to_string(),
                    not_null: *nn,
                })
                .collect(),
            key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn every_kind_of_change_is_named_and_an_unchanged_table_has_none() {
        let before = shape(&[("id", "bigint", true), ("note", "text", false)], &["id"]);
        assert!(before.changes(&before.clone()).is_empty());
        let after = shape(
            &[("id", "integer", true), ("discount_code", "text", false)],
            &["id", "discount_code"],
        );
        assert_eq!(
            before.changes(&after),
            vec![
                "column id changed type from bigint to integer",
                "column discount_code (text) was added",
                "column note was dropped or renamed",
                "the primary key changed from (id) to (id, discount_code)",
            ]
        );
        let nullable = shape(&[("id", "bigint", true), ("note", "text", true)], &["id"]);
        assert_eq!(
            before.changes(&nullable),
            vec!["column note is now NOT NULL"]
        );
    }
}
