//! The planner: a migration file checked against the live schema (through the
//! [`Adapter`]), resolved into the column mappings of both directions ([`Direction`]).
//! Planning changes nothing. The SQL every phase runs is the adapter's to show
//! ([`Planner::render_plan`]).

use crate::adapter::Planner;
use crate::catalog::{Structure, StructureKind, Table};
use crate::seam::{Direction, KeyColumn, Plan};
use crate::spec::{MigrationSpec, QualifiedName, Shape};
use crate::EngineError;

/// `spec` with the mappings its shape implies added where the file gives none.
fn with_implied_mappings<A: Planner>(
    adapter: &A,
    spec: &MigrationSpec,
) -> Result<MigrationSpec, EngineError> {
    let implied = adapter.implied_mappings(spec)?;
    let mut spec = spec.clone();
    for (k, v) in implied.up {
        spec.up.entry(k).or_insert(v);
    }
    for (k, v) in implied.down {
        spec.down.entry(k).or_insert(v);
    }
    Ok(spec)
}

/// Checks `spec` against the live database and resolves it. When the shadow table does not
/// exist yet it is created inside a transaction that is rolled back.
pub async fn build<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
) -> Result<Plan, EngineError> {
    planned(adapter, db, spec, Depth::Full).await
}

/// What the runners (sync, verify) need of a plan: the source table as it stands (for the
/// drift check) and both directions.
#[derive(Debug, Clone)]
pub struct Directions {
    pub source: Table,
    pub forward: Direction,
    pub reverse: Option<Direction>,
}

/// Everything [`build`] checks (the tables, the key, every expression and statement the
/// runners build from the mappings) except what only expand and cutover use: the indexes and
/// constraints carried over and the dependents. Reading those is most of the planning time of
/// a verify command, which needs neither.
pub async fn build_directions<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
) -> Result<Directions, EngineError> {
    let plan = planned(adapter, db, spec, Depth::Directions).await?;
    Ok(Directions {
        source: plan.source,
        forward: plan.forward,
        reverse: plan.reverse,
    })
}

/// How much of a plan to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Full,
    /// Without the structures carried over and the dependents (left empty: never returned
    /// as a [`Plan`], see [`build_directions`]).
    Directions,
}

async fn planned<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
    depth: Depth,
) -> Result<Plan, EngineError> {
    let spec = &with_implied_mappings(adapter, spec)?;
    let expand_ddl = adapter.shadow_ddl(db, spec).await?;
    adapter.begin_planning(db).await?;
    let built = build_planning(adapter, db, spec, expand_ddl, depth).await;
    // Nothing planned is kept.
    let ended = adapter.end_planning(db).await;
    let plan = built?;
    ended?;
    Ok(plan)
}

async fn build_planning<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
    expand_ddl: Vec<String>,
    depth: Depth,
) -> Result<Plan, EngineError> {
    let source = adapter
        .describe_table(db, &spec.table)
        .await?
        .ok_or_else(|| {
            EngineError::Plan(format!(
                "table {} does not exist; check `table` in the migration file",
                spec.table
            ))
        })?;
    let shadow = spec.shadow_table();
    let mut target = adapter.describe_table(db, &shadow).await?;
    if target.is_none() {
        adapter.try_shadow_ddl(db, &expand_ddl).await?;
        target = adapter.describe_table(db, &shadow).await?;
    }
    let target = target.ok_or_else(|| {
        EngineError::Plan(format!("target: the shadow table {shadow} was not created"))
    })?;

    let key = resolve_key(adapter, db, spec, &source, &target).await?;
    let forward = resolve_forward(adapter, spec, &source, &target, &key)?;
    let (reverse, reverse_notes) = resolve_reverse(adapter, spec, &source, &target, &key)?;
    check_expressions(adapter, db, &forward, &source.name, "up").await?;
    if let Some(rev) = &reverse {
        // Before cutover the new shape lives under the shadow name.
        check_expressions(adapter, db, rev, &target.name, "down").await?;
    }
    // Every statement the runners will build from the mappings compiles now, not at the first
    // captured change.
    adapter
        .check_statements(db, &forward, "sync (old → new)")
        .await?;
    if let Some(rev) = &reverse {
        let planned = Direction {
            from: target.name.clone(),
            to: source.name.clone(),
            ..rev.clone()
        };
        adapter
            .check_statements(db, &planned, "reverse sync (new → old, after cutover)")
            .await?;
    }
    let ((not_carried, dropped), dependents) = match depth {
        Depth::Full => (
            compare_structures(adapter, db, spec, &source, &target).await?,
            adapter.dependents(db, &source).await?,
        ),
        Depth::Directions => Default::default(),
    };
    Ok(Plan {
        spec: spec.clone(),
        source,
        target,
        key,
        forward,
        reverse,
        reverse_notes,
        expand_ddl,
        dependents,
        not_carried,
        dropped,
    })
}

/// The plan as it stands after cutover: the new table carries the live name, the old one
/// the retired name. `forward` then points old → new (used only to describe), `reverse`
/// new → old.
pub async fn build_after_cutover<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
) -> Result<Plan, EngineError> {
    let spec = &with_implied_mappings(adapter, spec)?;
    let old = adapter
        .describe_table(db, &spec.retired_table())
        .await?
        .ok_or_else(|| {
            EngineError::Missing(format!(
                "the old table {} is missing; was it moved or dropped by hand?",
                spec.retired_table()
            ))
        })?;
    let new = adapter
        .describe_table(db, &spec.table)
        .await?
        .ok_or_else(|| EngineError::Missing(format!("table {} is missing", spec.table)))?;
    let names = match &spec.key {
        Some(k) if !k.is_empty() => k.clone(),
        _ => old.primary_key.clone(),
    };
    let key: Vec<KeyColumn> = names
        .iter()
        .map(|n| KeyColumn {
            name: n.clone(),
            sql_type: old
                .column(n)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| "text".into()),
        })
        .collect();
    let mut forward = resolve_forward(adapter, spec, &old, &new, &key)?;
    forward.from = spec.retired_table();
    forward.to = spec.table.clone();
    let (reverse, reverse_notes) = resolve_reverse(adapter, spec, &old, &new, &key)?;
    let dependents = adapter.dependents(db, &new).await?;
    Ok(Plan {
        spec: spec.clone(),
        // Expand is long done: the live table is the new shape now.
        expand_ddl: Vec::new(),
        source: old,
        target: new,
        key,
        forward,
        reverse,
        reverse_notes,
        dependents,
        // Checked before cutover; the swap carries index names both ways.
        not_carried: Vec::new(),
        dropped: Vec::new(),
    })
}

/// The live table's indexes and constraints the new shape lacks (compared by shape, not
/// name): those the file declares dropped, or that the ALTER itself removed, are `dropped`;
/// the rest are `not_carried`.
async fn compare_structures<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
) -> Result<(Vec<Structure>, Vec<Structure>), EngineError> {
    let mut target_left = adapter.structures(db, target).await?;
    let mut not_carried = Vec::new();
    let mut dropped = Vec::new();
    for s in adapter.structures(db, source).await? {
        if let Some(i) = target_left
            .iter()
            .position(|t| t.kind == s.kind && t.shape == s.shape)
        {
            target_left.remove(i);
            continue;
        }
        let declared = match s.kind {
            StructureKind::Index => spec.drop_indexes.contains(&s.name),
            StructureKind::Check | StructureKind::ForeignKey => {
                spec.drop_constraints.contains(&s.name)
            }
        };
        if declared || matches!(spec.shape, Shape::Alter(_)) {
            dropped.push(s);
        } else {
            not_carried.push(s);
        }
    }
    Ok((not_carried, dropped))
}

fn describe_sort(col: &crate::catalog::Column) -> String {
    if col.collation.is_empty() {
        col.sql_type.clone()
    } else {
        format!("{} COLLATE \"{}\"", col.sql_type, col.collation)
    }
}

async fn resolve_key<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
) -> Result<Vec<KeyColumn>, EngineError> {
    let names = match &spec.key {
        Some(k) if !k.is_empty() => {
            if !adapter.has_unique_key(db, source, k).await? {
                return Err(EngineError::Plan(format!(
                    "key ({}) is not backed by a unique index on {}; create one \
                     (CREATE UNIQUE INDEX CONCURRENTLY) or use the primary key",
                    k.join(", "),
                    source.name
                )));
            }
            k.clone()
        }
        _ if !source.primary_key.is_empty() => source.primary_key.clone(),
        _ => {
            return Err(EngineError::Plan(format!(
                "table {} has no primary key; declare key = [\"col\", …] naming a unique \
                 NOT NULL key in the migration file",
                source.name
            )))
        }
    };
    let mut key = Vec::new();
    for name in &names {
        let col = source.column(name).ok_or_else(|| {
            EngineError::Plan(format!(
                "key column {name} does not exist in {}",
                source.name
            ))
        })?;
        if !col.not_null {
            return Err(EngineError::Plan(format!(
                "key column {name} of {} is nullable; a key must be NOT NULL",
                source.name
            )));
        }
        let Some(target_col) = target.column(name) else {
            return Err(EngineError::Plan(format!(
                "key column {name} is missing from the target; the new shape must keep the key \
                 columns under the same names"
            )));
        };
        if !adapter.sorts_alike(col, target_col) {
            return Err(EngineError::Plan(format!(
                "key column {name} changes from {} to {} in the target; backfill and verify \
                 walk the key in one order on both sides, so it must keep its type and \
                 collation (widening an integer is fine) — change the key in a migration keyed \
                 on another unique key",
                describe_sort(col),
                describe_sort(target_col)
            )));
        }
        if spec.up.contains_key(name) {
            return Err(EngineError::Plan(format!(
                "[up] maps key column {name}; key columns are copied as they are — remove it \
                 from [up]"
            )));
        }
        key.push(KeyColumn {
            name: name.clone(),
            sql_type: col.sql_type.clone(),
        });
    }
    if !adapter.has_unique_key(db, target, &names).await? {
        return Err(EngineError::Plan(format!(
            "target: the new table needs a PRIMARY KEY or UNIQUE constraint on ({}) — \
             sync writes by key",
            names.join(", ")
        )));
    }
    Ok(key)
}

fn resolve_forward<A: Planner>(
    adapter: &A,
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
    key: &[KeyColumn],
) -> Result<Direction, EngineError> {
    for col in spec.up.keys() {
        if target.column(col).is_none() {
            return Err(EngineError::Plan(format!(
                "[up] names column {col}, which the target does not have"
            )));
        }
    }
    let mut columns = Vec::new();
    for col in target.columns.iter().filter(|c| !c.generated) {
        let expr = match spec.up.get(&col.name) {
            Some(e) => adapter.cast_expression(e, &col.sql_type),
            None if source.column(&col.name).is_some() => {
                adapter.source_column(&col.name, &col.sql_type)
            }
            None if !col.not_null || col.has_default => continue,
            None => {
                return Err(EngineError::Plan(format!(
                    "target column {} is NOT NULL, has no default and no source column of that \
                     name; add `{} = \"<expression over the old row>\"` to [up]",
                    col.name, col.name
                )))
            }
        };
        columns.push((col.name.clone(), expr));
    }
    Ok(Direction {
        from: source.name.clone(),
        to: spec.shadow_table(),
        key: key.to_vec(),
        columns,
    })
}

fn resolve_reverse<A: Planner>(
    adapter: &A,
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
    key: &[KeyColumn],
) -> Result<(Option<Direction>, Vec<String>), EngineError> {
    for col in spec.down.keys() {
        if source.column(col).is_none() {
            return Err(EngineError::Plan(format!(
                "[down] names column {col}, which {} does not have",
                source.name
            )));
        }
    }
    let mut notes = Vec::new();
    let mut impossible = false;
    let mut columns = Vec::new();
    for col in source.columns.iter().filter(|c| !c.generated) {
        let expr = match spec.down.get(&col.name) {
            Some(e) => adapter.cast_expression(e, &col.sql_type),
            None if target.column(&col.name).is_some() => {
                adapter.source_column(&col.name, &col.sql_type)
            }
            None if !col.not_null || col.has_default => {
                notes.push(format!(
                    "old column {} has no counterpart and no [down] entry: rows written after \
                     cutover get {} there",
                    col.name,
                    if col.has_default {
                        "its default"
                    } else {
                        "NULL"
                    }
                ));
                continue;
            }
            None => {
                impossible = true;
                notes.push(format!(
                    "old column {} is NOT NULL without a default and has no [down] entry: \
                     rollback after cutover is impossible; add `{} = \"<expression over the \
                     new row>\"` to [down]",
                    col.name, col.name
                ));
                continue;
            }
        };
        columns.push((col.name.clone(), expr));
    }
    if impossible {
        return Ok((None, notes));
    }
    // After cutover the new table carries the live name and the old one the retired name.
    Ok((
        Some(Direction {
            from: spec.table.clone(),
            to: spec.retired_table(),
            key: key.to_vec(),
            columns,
        }),
        notes,
    ))
}

/// Compiles every mapping expression (and its cast) against the real tables, one column at a
/// time so an error names the column.
async fn check_expressions<A: Planner>(
    adapter: &A,
    db: &A::Conn,
    dir: &Direction,
    from: &QualifiedName,
    section: &str,
) -> Result<(), EngineError> {
    for (col, expr) in &dir.columns {
        adapter
            .check_expression(db, from, expr)
            .await
            .map_err(|message| {
                EngineError::Plan(format!(
                    "[{section}] {col}: `{expr}` does not compile against {from}: {message}"
                ))
            })?;
    }
    Ok(())
}
