//! Operations from a statement sqlparser understood. Statement kinds not listed here are
//! harmless to the rules (queries, DML, functions, grants, comments, types, …).

use crate::ops::{ConstraintKind, Fill, Name, Op};
use crate::Dialect;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableAlgorithm, AlterTableLock, AlterTableOperation, ColumnDef,
    ColumnOption, Expr, Ident, ObjectName, ObjectType, RenameTableNameKind, Set, Statement,
    TableConstraint, Value,
};

pub(crate) fn name(n: &ObjectName) -> Name {
    Name::from_parts(n.0.iter().map(|p| match p.as_ident() {
        Some(i) => (i.value.as_str(), i.quote_style.is_some()),
        None => ("?", false),
    }))
}

fn ident(i: &Ident) -> String {
    i.value.clone()
}

pub(crate) fn ops(stmt: &Statement, dialect: Dialect, out: &mut Vec<Op>) {
    match stmt {
        Statement::CreateTable(ct) => out.push(Op::CreateTable {
            table: name(&ct.name),
        }),
        Statement::AlterTable(at) => {
            let table = name(&at.name);
            for op in &at.operations {
                alter_op(&table, op, out);
            }
        }
        Statement::CreateIndex(ci) => {
            let table = name(&ci.table_name);
            out.push(Op::CreateIndex {
                name: ci.name.as_ref().map(name),
                table: table.clone(),
                concurrently: ci.concurrently,
            });
            // MySQL `CREATE INDEX … ALGORITHM=… LOCK=…`.
            for op in &ci.alter_options {
                if matches!(
                    op,
                    AlterTableOperation::Algorithm { .. } | AlterTableOperation::Lock { .. }
                ) {
                    alter_op(&table, op, out);
                }
            }
        }
        Statement::Drop {
            object_type,
            names,
            table,
            ..
        } => {
            for n in names {
                let n = name(n);
                match object_type {
                    ObjectType::Table => out.push(Op::DropTable { table: n }),
                    ObjectType::Schema => out.push(Op::DropSchema {
                        name: n,
                        kind: "schema",
                    }),
                    ObjectType::Database => out.push(Op::DropSchema {
                        name: n,
                        kind: "database",
                    }),
                    // sqlparser 0.63 has no `DROP INDEX CONCURRENTLY`: the recogniser sees it.
                    ObjectType::Index => out.push(Op::DropIndex {
                        name: n,
                        table: table.as_ref().map(name),
                        concurrently: false,
                    }),
                    _ => {}
                }
            }
        }
        Statement::Vacuum(v) if v.full => out.push(Op::VacuumFull {
            table: v.table_name.as_ref().map(name),
        }),
        Statement::Truncate(t) => {
            for target in &t.table_names {
                out.push(Op::Truncate {
                    table: name(&target.name),
                });
            }
        }
        Statement::RenameTable(renames) => {
            for r in renames {
                out.push(Op::RenameTable {
                    from: name(&r.old_name),
                    to: name(&r.new_name),
                });
            }
        }
        Statement::StartTransaction { .. } => out.push(Op::Begin),
        Statement::Commit { .. } | Statement::Rollback { .. } => out.push(Op::Commit),
        Statement::Set(set) => {
            let is_timeout = |n: &ObjectName| is_lock_timeout(&n.to_string(), dialect);
            let hit = match set {
                Set::SingleAssignment { variable, .. } => is_timeout(variable),
                Set::MultipleAssignments { assignments } => {
                    assignments.iter().any(|a| is_timeout(&a.name))
                }
                Set::ParenthesizedAssignments { variables, .. } => variables.iter().any(is_timeout),
                _ => false,
            };
            if hit {
                out.push(Op::SetLockTimeout);
            }
        }
        _ => {}
    }
}

/// `lock_timeout` (PostgreSQL) or `lock_wait_timeout` (MySQL), however it is prefixed.
pub(crate) fn is_lock_timeout(variable: &str, dialect: Dialect) -> bool {
    let last = variable.rsplit('.').next().unwrap_or(variable);
    let last = last.trim_matches(|c| c == '@' || c == '`' || c == '"');
    let want = match dialect {
        Dialect::Postgres => "lock_timeout",
        Dialect::Mysql => "lock_wait_timeout",
    };
    last.eq_ignore_ascii_case(want)
}

fn alter_op(table: &Name, op: &AlterTableOperation, out: &mut Vec<Op>) {
    let table = table.clone();
    let o = match op {
        AlterTableOperation::AddColumn { column_def, .. } => {
            return add_column(table, column_def, out);
        }
        AlterTableOperation::DropColumn { column_names, .. } => {
            for c in column_names {
                out.push(Op::DropColumn {
                    table: table.clone(),
                    column: ident(c),
                });
            }
            return;
        }
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => Op::RenameColumn {
            table,
            from: ident(old_column_name),
            to: ident(new_column_name),
        },
        AlterTableOperation::RenameTable { table_name } => {
            let to = match table_name {
                RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => name(n),
            };
            Op::RenameTable { from: table, to }
        }
        AlterTableOperation::ChangeColumn {
            old_name,
            new_name,
            data_type,
            ..
        } => {
            if !old_name.value.eq_ignore_ascii_case(&new_name.value) {
                Op::RenameColumn {
                    table,
                    from: ident(old_name),
                    to: ident(new_name),
                }
            } else {
                Op::ChangeType {
                    table,
                    column: ident(old_name),
                    new_type: data_type.to_string(),
                }
            }
        }
        AlterTableOperation::ModifyColumn {
            col_name,
            data_type,
            ..
        } => Op::ChangeType {
            table,
            column: ident(col_name),
            new_type: data_type.to_string(),
        },
        AlterTableOperation::AlterColumn { column_name, op } => match op {
            AlterColumnOperation::SetNotNull => Op::SetNotNull {
                table,
                column: ident(column_name),
            },
            AlterColumnOperation::SetDataType { data_type, .. } => Op::ChangeType {
                table,
                column: ident(column_name),
                new_type: data_type.to_string(),
            },
            _ => Op::OtherAlter { table },
        },
        AlterTableOperation::AddConstraint {
            constraint,
            not_valid,
        } => {
            let (kind, cname) = match constraint {
                TableConstraint::PrimaryKey(c) => (ConstraintKind::PrimaryKey, &c.name),
                TableConstraint::Unique(c) => (ConstraintKind::Unique, &c.name),
                TableConstraint::ForeignKey(c) => (ConstraintKind::ForeignKey, &c.name),
                TableConstraint::Check(c) => (ConstraintKind::Check, &c.name),
                _ => return out.push(Op::OtherAlter { table }),
            };
            Op::AddConstraint {
                table,
                name: cname.as_ref().map(ident),
                kind,
                not_valid: *not_valid,
                // sqlparser 0.63 rejects `… USING INDEX idx`: the recogniser sees it.
                using_index: false,
            }
        }
        AlterTableOperation::Algorithm { algorithm, .. } => Op::Algorithm {
            table,
            algorithm: match algorithm {
                AlterTableAlgorithm::Default => "DEFAULT",
                AlterTableAlgorithm::Instant => "INSTANT",
                AlterTableAlgorithm::Inplace => "INPLACE",
                AlterTableAlgorithm::Copy => "COPY",
            }
            .to_string(),
        },
        AlterTableOperation::Lock { lock, .. } => Op::Lock {
            table,
            lock: match lock {
                AlterTableLock::Default => "DEFAULT",
                AlterTableLock::None => "NONE",
                AlterTableLock::Shared => "SHARED",
                AlterTableLock::Exclusive => "EXCLUSIVE",
            }
            .to_string(),
        },
        _ => Op::OtherAlter { table },
    };
    out.push(o);
}

const SERIAL_TYPES: &[&str] = &[
    "serial",
    "bigserial",
    "smallserial",
    "serial2",
    "serial4",
    "serial8",
];

/// The added column, then the key constraint it declares inline (which builds an index).
fn add_column(table: Name, def: &ColumnDef, out: &mut Vec<Op>) {
    let mut not_null = false;
    let mut key = None;
    let mut fill = Fill::Nothing;
    let ty = def.data_type.to_string();
    if SERIAL_TYPES.iter().any(|s| ty.eq_ignore_ascii_case(s)) {
        fill = Fill::Serial;
    }
    for o in &def.options {
        match &o.option {
            ColumnOption::NotNull => not_null = true,
            ColumnOption::PrimaryKey(_) => {
                not_null = true;
                key = Some(ConstraintKind::PrimaryKey);
            }
            ColumnOption::Unique(_) => key = key.or(Some(ConstraintKind::Unique)),
            ColumnOption::Default(Expr::Value(v)) if matches!(v.value, Value::Null) => {
                fill = Fill::Null
            }
            ColumnOption::Default(e) => fill = Fill::Default(e.to_string()),
            ColumnOption::Generated {
                generation_expr, ..
            } => {
                fill = if generation_expr.is_some() {
                    Fill::Generated
                } else {
                    Fill::Identity
                }
            }
            ColumnOption::Identity(_) => fill = Fill::Serial,
            other => {
                let text = other.to_string();
                if text.eq_ignore_ascii_case("AUTO_INCREMENT")
                    || text.eq_ignore_ascii_case("AUTOINCREMENT")
                {
                    fill = Fill::Serial;
                }
            }
        }
    }
    out.push(Op::AddColumn {
        table: table.clone(),
        column: ident(&def.name),
        not_null,
        fill,
    });
    if let Some(kind) = key {
        out.push(Op::AddConstraint {
            table,
            name: None,
            kind,
            not_valid: false,
            using_index: false,
        });
    }
}
