//! [`Memory`]: an in-memory database behind every adapter trait, for tests of the phase
//! machine, the applier, backfill and verify that run in milliseconds with no server. It is a
//! stand-in, not a database: tables are maps from key to row, the change stream is a log of
//! committed transactions with positions, slots remember what was acknowledged, and the state
//! store keeps records, history and a fenced runner lock. Mapping expressions are `s.<column>`
//! (a copy) or a function a test registers by its text ([`Memory::define_expression`]).
//!
//! Faults a test can inject: a crash at any numbered step ([`Memory::crash_at_step`]: every
//! call that changes something counts one step; the step fails without effect, as if the
//! process died just before it), and a lost change stream ([`Memory::lose_slot`]).
//!
//! What it cannot show (a server test does): SQL, locks and their timeouts, visibility,
//! replication origins, TOAST.

use crate::adapter::{
    BackfillSource, ChangeApplier, Cutover, Planner, SchemaChanges, Sessions, StateStore,
    VerifySource,
};
use crate::catalog::{Column, Dependent, Table};
use crate::error::Refusal;
use crate::seam::{
    Continuity, Direction, Fill, KeyColumn, KeyRange, Load, Plan, RangeResult, RateLimit,
    Selection, Side, StoredPass, StoredRange, Swap, SwapLock, VerifyReport,
};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::state::{
    Checkpoint, DeferredIndex, Event, Figure, LastVerify, MigrationRecord, Phase, PhaseChange,
    QuarantineEntry, Transition,
};
use crate::EngineError;
use bytes::Bytes;
use cdc::{CdcError, ChangeSource, Lag, Lsn, Op, Position, TableName, Timestamp, Transaction};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value as Json;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A mapping function registered for an expression's text: the source row in, a value out.
pub type Expression = Arc<dyn Fn(&Row) -> Option<String> + Send + Sync>;

/// A row: column name → value (`None` is NULL).
pub type Row = BTreeMap<String, Option<String>>;

/// The in-memory database. Cloning gives another handle on the same database (another
/// process, after a crash).
#[derive(Clone, Default)]
pub struct Memory {
    db: Arc<Mutex<Database>>,
}

/// A key that orders integers as numbers and everything else as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SortKey(Vec<String>);

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            let o = match (a.parse::<i64>(), b.parse::<i64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.cmp(b),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Default)]
struct MemTable {
    columns: Vec<Column>,
    primary_key: Vec<String>,
    rows: BTreeMap<SortKey, Row>,
}

impl MemTable {
    fn key_of(&self, row: &Row) -> SortKey {
        SortKey(
            self.primary_key
                .iter()
                .map(|k| row.get(k).cloned().flatten().unwrap_or_default())
                .collect(),
        )
    }
}

struct Committed {
    position: u64,
    origin: Option<String>,
    changes: Vec<(QualifiedName, Op, Vec<String>)>,
}

struct Slot {
    /// The last position acknowledged.
    acked: u64,
    skip_origins: Vec<String>,
}

#[derive(Default)]
struct Database {
    tables: BTreeMap<QualifiedName, MemTable>,
    /// Tables created inside the planning scope, thrown away at its end.
    planned: BTreeMap<QualifiedName, MemTable>,
    log: Vec<Committed>,
    next_position: u64,
    slots: BTreeMap<String, Slot>,
    expressions: HashMap<String, Expression>,
    records: BTreeMap<String, MigrationRecord>,
    order: Vec<String>,
    history: Vec<(String, Transition)>,
    events: Vec<(String, Event)>,
    verifies: Vec<(String, LastVerify)>,
    /// Incremental verify's stored ranges, by migration.
    verify_ranges: HashMap<String, StoredPass>,
    locks: HashSet<String>,
    markers: HashMap<String, i64>,
    /// Steps taken so far, by name.
    steps: Vec<String>,
    crash_at: Option<usize>,
    /// How long the impact budget's heartbeat takes to commit.
    commit_latency: Duration,
    heartbeats: u64,
}

/// The error of a step that "crashed".
fn crashed(step: &str) -> EngineError {
    EngineError::Database {
        context: format!("simulated crash at {step}"),
        message: "the process died here".into(),
    }
}

impl Database {
    /// Counts one step; fails it (without effect) when it is the one to crash at.
    fn step(&mut self, name: &str) -> Result<(), EngineError> {
        self.steps.push(name.to_string());
        if self.crash_at == Some(self.steps.len()) {
            self.crash_at = None;
            return Err(crashed(name));
        }
        Ok(())
    }

    fn table(&self, name: &QualifiedName) -> Result<&MemTable, EngineError> {
        self.tables
            .get(name)
            .ok_or_else(|| EngineError::Missing(format!("table {name} does not exist")))
    }

    fn commit(&mut self, origin: Option<&str>, changes: Vec<(QualifiedName, Op, Vec<String>)>) {
        if changes.is_empty() {
            return;
        }
        self.next_position += 1;
        self.log.push(Committed {
            position: self.next_position,
            origin: origin.map(str::to_string),
            changes,
        });
    }

    fn evaluate(&self, expr: &str, row: &Row) -> Result<Option<String>, String> {
        if let Some(column) = expr.strip_prefix("s.") {
            return row
                .get(column)
                .cloned()
                .ok_or_else(|| format!("column {column} does not exist"));
        }
        match self.expressions.get(expr) {
            Some(f) => Ok(f(row)),
            None => Err(format!(
                "the in-memory database knows no expression `{expr}`; register it with \
                 Memory::define_expression"
            )),
        }
    }

    /// The mapped row of `dir` for source row `row`, keyed by the target's columns.
    fn mapped(&self, dir: &Direction, row: &Row) -> Result<Row, EngineError> {
        let mut out = Row::new();
        for k in &dir.key {
            out.insert(k.name.clone(), row.get(&k.name).cloned().flatten());
        }
        for (column, expr) in &dir.columns {
            let v = self.evaluate(expr, row).map_err(EngineError::Plan)?;
            out.insert(column.clone(), v);
        }
        Ok(out)
    }

    /// Writes the mapped row of `key` into `dir.to` (or deletes it when the source has none);
    /// true when something changed.
    fn resync(
        &mut self,
        dir: &Direction,
        key: &SortKey,
        may_delete: bool,
    ) -> Result<bool, EngineError> {
        let source = self.table(&dir.from)?.rows.get(key).cloned();
        let mapped = source.map(|r| self.mapped(dir, &r)).transpose()?;
        let target = self
            .tables
            .get_mut(&dir.to)
            .ok_or_else(|| EngineError::Missing(format!("table {} does not exist", dir.to)))?;
        Ok(match mapped {
            Some(row) => {
                let merged = match target.rows.get(key) {
                    Some(old) => {
                        let mut m = old.clone();
                        m.extend(row);
                        m
                    }
                    None => row,
                };
                target.rows.insert(key.clone(), merged.clone()) != Some(merged)
            }
            None if may_delete => target.rows.remove(key).is_some(),
            None => false,
        })
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    fn lock(&self) -> MutexGuard<'_, Database> {
        // A test that panicked while holding the lock has failed already.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the impact budget's heartbeat take `latency` to commit from now on (what the
    /// application's commits would feel).
    pub fn set_commit_latency(&self, latency: Duration) {
        self.lock().commit_latency = latency;
    }

    /// Heartbeats the impact budget's probe committed so far.
    pub fn heartbeats(&self) -> u64 {
        self.lock().heartbeats
    }

    /// Creates a table from `CREATE TABLE name (col type [NOT NULL] [PRIMARY KEY] [DEFAULT …],
    /// …, [PRIMARY KEY (a, b)])`.
    pub fn create_table(&self, ddl: &str) -> Result<(), EngineError> {
        let (name, table) = parse_create_table(ddl)?;
        self.lock().tables.insert(name, table);
        Ok(())
    }

    /// Registers the function an expression's text stands for.
    pub fn define_expression(
        &self,
        text: &str,
        f: impl Fn(&Row) -> Option<String> + Send + Sync + 'static,
    ) {
        self.lock().expressions.insert(text.into(), Arc::new(f));
    }

    /// The application writes: inserts or replaces one row, in a transaction of its own.
    pub fn upsert(&self, table: &str, values: &[(&str, Option<&str>)]) {
        let name = qualified(table);
        let mut db = self.lock();
        let Some(t) = db.tables.get_mut(&name) else {
            panic!("no table {name}");
        };
        let row: Row = values
            .iter()
            .map(|(c, v)| (c.to_string(), v.map(str::to_string)))
            .collect();
        let key = t.key_of(&row);
        let op = if t.rows.contains_key(&key) {
            Op::Update
        } else {
            Op::Insert
        };
        t.rows.insert(key.clone(), row);
        db.commit(None, vec![(name, op, key.0)]);
    }

    /// The application deletes one row by key.
    pub fn delete(&self, table: &str, key: &[&str]) {
        let name = qualified(table);
        let key = SortKey(key.iter().map(|k| k.to_string()).collect());
        let mut db = self.lock();
        let removed = db
            .tables
            .get_mut(&name)
            .is_some_and(|t| t.rows.remove(&key).is_some());
        if removed {
            db.commit(None, vec![(name, Op::Delete, key.0)]);
        }
    }

    /// Changes a row behind everyone's back: no change is captured.
    pub fn tamper(&self, table: &str, key: &[&str], column: &str, value: Option<&str>) {
        let key = SortKey(key.iter().map(|k| k.to_string()).collect());
        if let Some(row) = self
            .lock()
            .tables
            .get_mut(&qualified(table))
            .and_then(|t| t.rows.get_mut(&key))
        {
            row.insert(column.into(), value.map(str::to_string));
        }
    }

    /// The rows of a table in key order, `None` when it does not exist.
    pub fn rows(&self, table: &str) -> Option<Vec<Row>> {
        self.lock()
            .tables
            .get(&qualified(table))
            .map(|t| t.rows.values().cloned().collect())
    }

    /// True when a table of that name exists.
    pub fn has_table(&self, table: &str) -> bool {
        self.lock().tables.contains_key(&qualified(table))
    }

    /// Makes step `n` (1-based, counted over every change any handle makes from now on) fail
    /// without effect, as if the process died just before it.
    pub fn crash_at_step(&self, n: usize) {
        let mut db = self.lock();
        db.crash_at = Some(db.steps.len() + n);
    }

    /// The names of the steps taken so far.
    pub fn steps(&self) -> Vec<String> {
        self.lock().steps.clone()
    }

    /// Drops a change stream as a DBA (or a failover) would.
    pub fn lose_slot(&self, slot: &str) {
        self.lock().slots.remove(slot);
    }

    /// True when the change stream `slot` exists.
    pub fn has_slot(&self, slot: &str) -> bool {
        self.lock().slots.contains_key(slot)
    }
}

fn qualified(table: &str) -> QualifiedName {
    QualifiedName::parse(table).unwrap_or(QualifiedName {
        schema: "public".into(),
        name: table.into(),
    })
}

/// Splits `s` at commas outside parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut parts, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

fn parse_create_table(ddl: &str) -> Result<(QualifiedName, MemTable), EngineError> {
    let bad = || {
        EngineError::Plan(format!(
            "target: not a CREATE TABLE this stand-in reads: {ddl}"
        ))
    };
    let ddl = ddl.trim().trim_end_matches(';');
    let rest = ddl
        .get(..13)
        .filter(|p| p.eq_ignore_ascii_case("create table "))
        .map(|_| &ddl[13..])
        .ok_or_else(bad)?;
    let open = rest.find('(').ok_or_else(bad)?;
    let close = rest.rfind(')').ok_or_else(bad)?;
    let name = QualifiedName::parse(rest[..open].trim()).map_err(|_| bad())?;
    let mut table = MemTable::default();
    for part in split_top_level(&rest[open + 1..close]) {
        let upper = part.to_ascii_uppercase();
        if let Some(cols) = upper.strip_prefix("PRIMARY KEY") {
            let cols = cols.trim().trim_start_matches('(').trim_end_matches(')');
            table.primary_key = cols
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            continue;
        }
        let mut words = part.split_whitespace();
        let column = words.next().ok_or_else(bad)?.to_string();
        let sql_type = words.next().ok_or_else(bad)?.to_ascii_lowercase();
        if upper.contains("PRIMARY KEY") {
            table.primary_key.push(column.clone());
        }
        table.columns.push(Column {
            name: column,
            sql_type,
            not_null: upper.contains("NOT NULL") || upper.contains("PRIMARY KEY"),
            has_default: upper.contains("DEFAULT"),
            generated: false,
            collation: String::new(),
        });
    }
    for k in &table.primary_key {
        if let Some(c) = table.columns.iter_mut().find(|c| &c.name == k) {
            c.not_null = true;
        }
    }
    Ok((name, table))
}

/// Canonical text of one value: COPY's escapes, NULL as `\N`.
fn canonical(value: &Option<String>, out: &mut Vec<u8>) {
    let Some(v) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

fn in_range(key: &SortKey, range: &KeyRange) -> bool {
    let above = range
        .lower
        .as_ref()
        .is_none_or(|lo| key > &SortKey(lo.clone()));
    let below = range
        .upper
        .as_ref()
        .is_none_or(|hi| key <= &SortKey(hi.clone()));
    above && below
}

impl Sessions for Memory {
    type Conn = ();

    async fn connect(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

impl Planner for Memory {
    async fn shadow_ddl(&self, _: &(), spec: &MigrationSpec) -> Result<Vec<String>, EngineError> {
        let crate::spec::Shape::Target(ddl) = &spec.shape else {
            return Err(EngineError::Plan(
                "the in-memory adapter takes target (CREATE TABLE) migrations only".into(),
            ));
        };
        let (_, table) = parse_create_table(ddl)?;
        let shadow = spec.shadow_table();
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}{}",
                    c.name,
                    c.sql_type,
                    if c.not_null { " NOT NULL" } else { "" },
                    if c.has_default { " DEFAULT x" } else { "" }
                )
            })
            .collect();
        Ok(vec![format!(
            "CREATE TABLE {}.{} ({}, PRIMARY KEY ({}))",
            shadow.schema,
            shadow.name,
            columns.join(", "),
            table.primary_key.join(", ")
        )])
    }

    fn expand_script(&self, _spec: &MigrationSpec, plan: &Plan) -> String {
        plan.expand_ddl.join(";\n")
    }

    fn cast_expression(&self, expr: &str, _sql_type: &str) -> String {
        expr.to_string()
    }

    fn source_column(&self, column: &str, _sql_type: &str) -> String {
        format!("s.{column}")
    }

    fn sorts_alike(&self, source: &Column, target: &Column) -> bool {
        source.sql_type == target.sql_type
    }

    async fn begin_planning(&self, _: &()) -> Result<(), EngineError> {
        Ok(())
    }

    async fn end_planning(&self, _: &()) -> Result<(), EngineError> {
        self.lock().planned.clear();
        Ok(())
    }

    async fn try_shadow_ddl(&self, _: &(), ddl: &[String]) -> Result<(), EngineError> {
        for statement in ddl {
            let (name, table) = parse_create_table(statement)?;
            self.lock().planned.insert(name, table);
        }
        Ok(())
    }

    async fn describe_table(
        &self,
        _: &(),
        name: &QualifiedName,
    ) -> Result<Option<Table>, EngineError> {
        let db = self.lock();
        // Planning sees the shadow table its DDL would create, as PostgreSQL's rolled-back
        // planning transaction does.
        let found = db
            .tables
            .get(name)
            .or_else(|| db.planned.get(name))
            .cloned();
        Ok(found.map(|t| Table {
            name: name.clone(),
            oid: 0,
            approx_rows: t.rows.len() as i64,
            columns: t.columns,
            primary_key: t.primary_key,
        }))
    }

    async fn has_unique_key(
        &self,
        _: &(),
        table: &Table,
        columns: &[String],
    ) -> Result<bool, EngineError> {
        Ok(table.primary_key == columns)
    }

    async fn check_expression(
        &self,
        _: &(),
        from: &QualifiedName,
        expr: &str,
    ) -> Result<(), String> {
        let db = self.lock();
        let columns: Row = db
            .tables
            .get(from)
            .or_else(|| db.planned.get(from))
            .map(|t| t.columns.iter().map(|c| (c.name.clone(), None)).collect())
            .unwrap_or_default();
        db.evaluate(expr, &columns).map(|_| ())
    }

    async fn dependents(&self, _: &(), _table: &Table) -> Result<Vec<Dependent>, EngineError> {
        Ok(Vec::new())
    }

    fn render_plan(&self, plan: &Plan) -> String {
        format!("{} → {}\n", plan.source.name, plan.target.name)
    }
}

impl SchemaChanges for Memory {
    async fn create_shadow(
        &self,
        _: &(),
        _spec: &MigrationSpec,
        ddl: &[String],
        lock: &MemoryLock,
        change: &PhaseChange,
    ) -> Result<Vec<DeferredIndex>, EngineError> {
        let mut db = self.lock();
        db.step("create_shadow")?;
        db.record_change(lock, change)?;
        for statement in ddl {
            let (name, table) = parse_create_table(statement)?;
            db.tables.entry(name).or_insert(table);
        }
        // No indexes in here: nothing to defer.
        Ok(Vec::new())
    }

    async fn build_index(
        &self,
        _: &(),
        _: &MigrationSpec,
        _: &DeferredIndex,
    ) -> Result<bool, EngineError> {
        Ok(false)
    }

    async fn drop_shadow(&self, _: &(), spec: &MigrationSpec) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("drop_shadow")?;
        db.tables.remove(&spec.shadow_table());
        Ok(())
    }

    async fn quarantine(
        &self,
        _: &(),
        spec: &MigrationSpec,
        lock: &MemoryLock,
        entry: &QuarantineEntry,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("quarantine")?;
        db.record_change(lock, change)?;
        if let Some(t) = db.tables.remove(&spec.retired_table()) {
            db.tables.insert(spec.quarantined_table(), t);
        }
        db.set_quarantine(&lock.name, Some(entry));
        Ok(())
    }

    async fn restore_from_quarantine(
        &self,
        _: &(),
        spec: &MigrationSpec,
        lock: &MemoryLock,
    ) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("restore_from_quarantine")?;
        db.check_fence(lock)?;
        if let Some(t) = db.tables.remove(&spec.quarantined_table()) {
            db.tables.insert(spec.retired_table(), t);
        }
        db.set_quarantine(&lock.name, None);
        Ok(())
    }

    async fn drop_quarantined(
        &self,
        _: &(),
        spec: &MigrationSpec,
        lock: &MemoryLock,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("drop_quarantined")?;
        db.record_change(lock, change)?;
        db.tables.remove(&spec.quarantined_table());
        Ok(())
    }
}

/// The runner lock of one migration in [`Memory`]; released when dropped (the process ended).
pub struct MemoryLock {
    db: Arc<Mutex<Database>>,
    name: String,
    fence: i64,
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.locks.remove(&self.name);
    }
}

impl Database {
    /// Fails unless `lock` still holds the migration's fence.
    fn check_fence(&self, lock: &MemoryLock) -> Result<(), EngineError> {
        let current = self.records.get(&lock.name).map(|r| r.fence);
        if current != Some(lock.fence) {
            return Err(EngineError::Busy(format!(
                "migration {}: another runner took over (fencing token {} is stale)",
                lock.name, lock.fence
            )));
        }
        Ok(())
    }

    /// Records `change` (fenced, compare-and-set on its `from`) and its history entry.
    fn record_change(
        &mut self,
        lock: &MemoryLock,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        self.check_fence(lock)?;
        let Some(r) = self.records.get_mut(&lock.name) else {
            return Err(EngineError::NoSuchMigration {
                name: lock.name.clone(),
            });
        };
        if r.phase != change.from {
            return Err(Refusal::PhaseChanged {
                name: lock.name.clone(),
                expected: change.from,
                found: r.phase.to_string(),
            }
            .into());
        }
        r.phase = change.to;
        self.history.push((
            lock.name.clone(),
            Transition {
                at: String::new(),
                actor: "test".into(),
                from: Some(change.from.to_string()),
                to: change.to.to_string(),
                figures: change.figures.clone(),
            },
        ));
        Ok(())
    }

    fn set_quarantine(&mut self, name: &str, quarantine: Option<&QuarantineEntry>) {
        if let Some(r) = self.records.get_mut(name) {
            r.quarantined_as = quarantine.map(|q| q.quarantined_as.clone());
            // Time does not pass in here: a quarantine of 0 s has expired.
            r.quarantine_until = quarantine.map(|q| format!("+{}s", q.seconds));
            r.quarantine_expired = quarantine.is_some_and(|q| q.seconds <= 0.0);
        }
    }
}

impl Memory {
    /// Runs `write` on the migration's record if `lock` still holds its fence.
    fn fenced(
        &self,
        lock: &MemoryLock,
        step: &str,
        write: impl FnOnce(&mut Database),
    ) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step(step)?;
        db.check_fence(lock)?;
        write(&mut db);
        Ok(())
    }

    fn record_mut<'d>(db: &'d mut Database, name: &str) -> Option<&'d mut MigrationRecord> {
        db.records.get_mut(name)
    }
}

impl StateStore for Memory {
    type Lock = MemoryLock;

    async fn ensure_state(&self, _: &()) -> Result<(), EngineError> {
        Ok(())
    }

    async fn register(&self, _: &(), name: &str, spec_text: &str) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("register")?;
        if !db.records.contains_key(name) {
            db.order.push(name.into());
            db.records.insert(
                name.into(),
                MigrationRecord {
                    name: name.into(),
                    spec: spec_text.into(),
                    phase: Phase::Planned,
                    fence: 0,
                    backfill_last_key: None,
                    backfill_done: false,
                    rows_copied: 0,
                    rows_total: 0,
                    backfill_rate: None,
                    sync_throttle: None,
                    sync_impact: None,
                    rate_limit: None,
                    lock_ms: None,
                    quarantined_as: None,
                    quarantine_until: None,
                    quarantine_expired: false,
                },
            );
        }
        Ok(())
    }

    async fn reregister(&self, lock: &MemoryLock, spec_text: &str) -> Result<(), EngineError> {
        self.fenced(lock, "reregister", |db| {
            if let Some(r) = Self::record_mut(db, &lock.name) {
                r.spec = spec_text.into();
            }
        })
    }

    async fn load_record(
        &self,
        _: &(),
        name: &str,
    ) -> Result<Option<MigrationRecord>, EngineError> {
        Ok(self.lock().records.get(name).cloned())
    }

    async fn load_records(&self, _: &()) -> Result<Vec<MigrationRecord>, EngineError> {
        let db = self.lock();
        Ok(db
            .order
            .iter()
            .filter_map(|n| db.records.get(n).cloned())
            .collect())
    }

    async fn history(&self, _: &(), name: &str) -> Result<Vec<Transition>, EngineError> {
        Ok(self
            .lock()
            .history
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn record_event(&self, _: &(), name: &str, event: &Event) -> Result<bool, EngineError> {
        let mut db = self.lock();
        if !db.records.contains_key(name) {
            return Ok(false);
        }
        let n = db.events.len();
        let mut event = event.clone();
        event.at = format!("event {n}");
        db.events.push((name.into(), event));
        Ok(true)
    }

    async fn events(&self, _: &(), name: &str, limit: usize) -> Result<Vec<Event>, EngineError> {
        let db = self.lock();
        let mine: Vec<Event> = db
            .events
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
            .collect();
        Ok(mine[mine.len().saturating_sub(limit)..].to_vec())
    }

    async fn runner(&self, _: &(), _: &str) -> Result<Option<crate::state::Runner>, EngineError> {
        Ok(None)
    }

    async fn last_verify(&self, _: &(), name: &str) -> Result<Option<LastVerify>, EngineError> {
        Ok(self
            .lock()
            .verifies
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()))
    }

    async fn set_rate_limit(
        &self,
        _: &(),
        name: &str,
        limit: Option<RateLimit>,
    ) -> Result<bool, EngineError> {
        let mut db = self.lock();
        Ok(match db.records.get_mut(name) {
            Some(r) => {
                r.rate_limit = limit;
                true
            }
            None => false,
        })
    }

    async fn acquire_lock(&self, name: &str) -> Result<MemoryLock, EngineError> {
        let mut db = self.lock();
        if !db.locks.insert(name.into()) {
            return Err(EngineError::Busy(format!(
                "migration {name} is being run by another runner"
            )));
        }
        let fence = match db.records.get_mut(name) {
            Some(r) => {
                r.fence += 1;
                r.fence
            }
            None => 0,
        };
        Ok(MemoryLock {
            db: self.db.clone(),
            name: name.into(),
            fence,
        })
    }

    async fn transition(&self, lock: &MemoryLock, change: &PhaseChange) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step(&format!("transition to {}", change.to))?;
        db.record_change(lock, change)
    }

    async fn checkpoint(
        &self,
        lock: &MemoryLock,
        checkpoint: &Checkpoint,
    ) -> Result<Option<RateLimit>, EngineError> {
        let mut limit = None;
        self.fenced(lock, "checkpoint", |db| {
            if let Some(r) = Self::record_mut(db, &lock.name) {
                if checkpoint.last_key.is_some() {
                    r.backfill_last_key = checkpoint.last_key.clone();
                }
                r.rows_copied = checkpoint.rows_copied;
                r.backfill_done = checkpoint.done;
                r.backfill_rate = checkpoint.rows_per_second.or(r.backfill_rate);
                if checkpoint.throttle.is_some() {
                    r.sync_throttle = checkpoint.throttle.clone();
                }
                limit = r.rate_limit;
            }
        })?;
        Ok(limit)
    }

    async fn set_figure(
        &self,
        lock: &MemoryLock,
        figure: Figure,
        value: f64,
    ) -> Result<(), EngineError> {
        self.fenced(lock, "set_figure", |db| {
            if let Some(r) = Self::record_mut(db, &lock.name) {
                match figure {
                    Figure::RowsTotal => r.rows_total = value as i64,
                    Figure::LockMs => r.lock_ms = Some(value),
                }
            }
        })
    }

    async fn save_impact(
        &self,
        lock: &MemoryLock,
        impact: Option<&crate::state::Impact>,
    ) -> Result<(), EngineError> {
        let name = lock.name.clone();
        self.fenced(lock, "save_impact", |db| {
            if let Some(r) = db.records.get_mut(&name) {
                r.sync_impact = impact.cloned();
            }
        })
    }

    async fn reset_backfill(&self, lock: &MemoryLock) -> Result<(), EngineError> {
        self.fenced(lock, "reset_backfill", |db| {
            if let Some(r) = Self::record_mut(db, &lock.name) {
                r.backfill_last_key = None;
                r.backfill_done = false;
                r.rows_copied = 0;
            }
        })
    }

    async fn set_quarantine(
        &self,
        lock: &MemoryLock,
        quarantine: Option<&QuarantineEntry>,
    ) -> Result<(), EngineError> {
        self.fenced(lock, "set_quarantine", |db| {
            db.set_quarantine(&lock.name, quarantine)
        })
    }

    async fn record_verify(
        &self,
        lock: &MemoryLock,
        report: &VerifyReport,
    ) -> Result<(), EngineError> {
        self.fenced(lock, "record_verify", |db| {
            db.verifies.push((
                lock.name.clone(),
                LastVerify {
                    passed: report.passed(),
                    diverged_keys: serde_json::to_value(&report.diverged).unwrap_or(Json::Null),
                    at: String::new(),
                    rows_checked: report.rows_checked as i64,
                },
            ));
        })
    }

    async fn verify_ranges(&self, _: &(), name: &str) -> Result<Option<StoredPass>, EngineError> {
        Ok(self
            .lock()
            .verify_ranges
            .get(name)
            .filter(|p| !p.ranges.is_empty())
            .cloned())
    }

    async fn start_verify_pass(
        &self,
        lock: &MemoryLock,
        shape: &str,
        ranges: &[KeyRange],
    ) -> Result<(), EngineError> {
        self.fenced(lock, "start_verify_pass", |db| {
            let pass = StoredPass {
                shape: shape.into(),
                ranges: ranges
                    .iter()
                    .enumerate()
                    .map(|(i, range)| StoredRange {
                        idx: i as i32,
                        range: range.clone(),
                        passed: false,
                        marks: 0,
                        checked_marks: None,
                    })
                    .collect(),
            };
            db.verify_ranges.insert(lock.name.clone(), pass);
        })
    }

    async fn record_verify_ranges(
        &self,
        lock: &MemoryLock,
        results: &[RangeResult],
    ) -> Result<(), EngineError> {
        self.fenced(lock, "record_verify_ranges", |db| {
            if let Some(pass) = db.verify_ranges.get_mut(&lock.name) {
                for result in results {
                    if let Some(r) = pass.ranges.iter_mut().find(|r| r.idx == result.idx) {
                        r.passed = result.passed;
                        r.checked_marks = Some(result.checked_marks);
                    }
                }
            }
        })
    }

    async fn forget_verify_ranges(&self, lock: &MemoryLock) -> Result<(), EngineError> {
        self.fenced(lock, "forget_verify_ranges", |db| {
            db.verify_ranges.remove(&lock.name);
        })
    }
}

impl Memory {
    /// The stored verify ranges of `migration` (tests look at their marks).
    pub fn stored_verify_ranges(&self, migration: &str) -> Option<StoredPass> {
        self.lock().verify_ranges.get(migration).cloned()
    }
}

impl crate::adapter::CommitProbe for Memory {
    type Probe = Memory;

    async fn open_probe(&self, _migration: &str) -> Result<Memory, EngineError> {
        Ok(self.clone())
    }

    async fn beat(probe: &mut Memory) -> Result<(), EngineError> {
        let latency = {
            let mut db = probe.lock();
            db.heartbeats += 1;
            db.commit_latency
        };
        tokio::time::sleep(latency).await;
        Ok(())
    }
}

impl BackfillSource for Memory {
    async fn estimate_rows(&self, _: &(), table: &Table) -> Result<i64, EngineError> {
        Ok(self.lock().table(&table.name)?.rows.len() as i64)
    }

    async fn chunk_upper(
        &self,
        _: &(),
        dir: &Direction,
        after: Option<&[String]>,
        offset: i64,
    ) -> Result<Option<Vec<String>>, EngineError> {
        let db = self.lock();
        let range = KeyRange {
            lower: after.map(<[String]>::to_vec),
            upper: None,
        };
        Ok(db
            .table(&dir.from)?
            .rows
            .keys()
            .filter(|k| in_range(k, &range))
            .nth(offset.max(0) as usize)
            .map(|k| k.0.clone()))
    }

    async fn last_key(
        &self,
        _: &(),
        table: &QualifiedName,
        _: &[KeyColumn],
    ) -> Result<Option<Vec<String>>, EngineError> {
        let db = self.lock();
        Ok(db
            .table(table)?
            .rows
            .keys()
            .next_back()
            .map(|k| k.0.clone()))
    }

    async fn copy_range(
        &self,
        _: &(),
        runner: &MemoryLock,
        dir: &Direction,
        lower: Option<&[String]>,
        upper: Option<&[String]>,
        fill: Fill,
    ) -> Result<u64, EngineError> {
        let range = KeyRange {
            lower: lower.map(<[String]>::to_vec),
            upper: upper.map(<[String]>::to_vec),
        };
        let mut written = 0;
        let mut failed = None;
        self.fenced(runner, "copy_range", |db| {
            let keys: Vec<SortKey> = match db.table(&dir.from) {
                Ok(t) => t
                    .rows
                    .keys()
                    .filter(|k| in_range(k, &range))
                    .cloned()
                    .collect(),
                Err(e) => {
                    failed = Some(e);
                    return;
                }
            };
            if fill == Fill::Mirror {
                let gone: Vec<SortKey> = db
                    .tables
                    .get(&dir.to)
                    .map(|t| {
                        t.rows
                            .keys()
                            .filter(|k| in_range(k, &range) && !keys.contains(k))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for key in gone {
                    if let Err(e) = db.resync(dir, &key, true) {
                        failed = Some(e);
                        return;
                    }
                }
            }
            for key in keys {
                let present = db
                    .tables
                    .get(&dir.to)
                    .is_some_and(|t| t.rows.contains_key(&key));
                if fill == Fill::Missing && present {
                    continue;
                }
                match db.resync(dir, &key, true) {
                    Ok(true) => written += 1,
                    Ok(false) => {}
                    Err(e) => {
                        failed = Some(e);
                        return;
                    }
                }
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    async fn refresh_statistics(&self, _: &(), _: &QualifiedName) -> Result<(), EngineError> {
        Ok(())
    }

    /// No replicas: the in-memory database has none to ask.
    async fn server_load(&self, _: &(), _: &Table, _: &[String]) -> Result<Load, EngineError> {
        Ok(Load::default())
    }

    async fn session_pid(&self, _: &()) -> Result<Option<i32>, EngineError> {
        Ok(None)
    }

    async fn lock_blocker(
        &self,
        _: &(),
        _: i32,
    ) -> Result<Option<crate::seam::LockHolder>, EngineError> {
        Ok(None)
    }
}

/// One direction's change stream in [`Memory`].
pub struct MemoryStream {
    db: Arc<Mutex<Database>>,
    slot: String,
    tables: Vec<QualifiedName>,
    /// The last position delivered in this session.
    delivered: u64,
}

/// The applier's session in [`Memory`].
pub struct MemorySession {
    dir: Direction,
    origin: String,
    /// A swap is locked: applied keys are written into it.
    in_swap: bool,
}

impl ChangeSource for MemoryStream {
    async fn next_transaction(&mut self) -> Result<Option<Transaction>, CdcError> {
        loop {
            {
                let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
                let Some(slot) = db.slots.get(&self.slot) else {
                    return Err(CdcError::Replication {
                        detail: format!("replication slot {} does not exist", self.slot),
                    });
                };
                let from = self.delivered.max(slot.acked);
                let next = db.log.iter().find(|c| {
                    c.position > from
                        && !c
                            .origin
                            .as_ref()
                            .is_some_and(|o| slot.skip_origins.contains(o))
                        && c.changes.iter().any(|(t, _, _)| self.tables.contains(t))
                });
                if let Some(c) = next {
                    self.delivered = c.position;
                    let position = Position::Lsn(Lsn(c.position));
                    let changes = c
                        .changes
                        .iter()
                        .filter(|(t, _, _)| self.tables.contains(t))
                        .map(|(t, op, key)| {
                            let table = TableName::from(t);
                            let key_columns = db
                                .tables
                                .get(t)
                                .map(|m| m.primary_key.clone())
                                .unwrap_or_default();
                            cdc::Change {
                                op: *op,
                                table,
                                key: key_columns
                                    .into_iter()
                                    .zip(key.iter())
                                    .map(|(c, v)| (c, cdc::Value::Text(v.clone())))
                                    .collect(),
                                old_key: None,
                                position: position.clone(),
                                committed_at: Timestamp::now(),
                                origin: c.origin.clone(),
                            }
                        })
                        .collect();
                    return Ok(Some(Transaction {
                        position: position.clone(),
                        commit_position: position,
                        committed_at: Timestamp::now(),
                        origin: c.origin.clone(),
                        source_id: c.position,
                        changes,
                    }));
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn ack(&mut self, position: &Position) -> Result<(), CdcError> {
        let Position::Lsn(Lsn(p)) = position else {
            return Err(CdcError::BadAck {
                position: position.to_string(),
                why: "the in-memory source positions are LSNs".into(),
            });
        };
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = db.slots.get_mut(&self.slot) {
            slot.acked = slot.acked.max(*p);
        }
        Ok(())
    }

    async fn lag(&mut self) -> Result<Lag, CdcError> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let acked = db.slots.get(&self.slot).map_or(0, |s| s.acked);
        Ok(Lag {
            source_position: Position::Lsn(Lsn(db.next_position)),
            acked_position: Position::Lsn(Lsn(acked)),
            bytes: db.next_position.saturating_sub(acked),
            behind: Duration::ZERO,
        })
    }

    async fn close(self) -> Result<(), CdcError> {
        Ok(())
    }

    async fn close_and_drop(self) -> Result<(), CdcError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.slots.remove(&self.slot);
        Ok(())
    }
}

impl ChangeApplier for Memory {
    type Stream = MemoryStream;
    type ApplierSession = MemorySession;

    async fn open_stream(
        &self,
        spec: &MigrationSpec,
        from: &QualifiedName,
        _to: &QualifiedName,
        slot: &str,
        continuity: Continuity,
    ) -> Result<MemoryStream, EngineError> {
        let mut db = self.lock();
        db.step("open_capture")?;
        if continuity == Continuity::Resume && !db.slots.contains_key(slot) {
            return Err(EngineError::StreamLost {
                slot: slot.into(),
                why: "does not exist any more".into(),
            });
        }
        let start = db.next_position;
        db.slots.entry(slot.into()).or_insert(Slot {
            acked: start,
            skip_origins: vec![spec.origin(), spec.reverse_origin()],
        });
        let marker = self.marker_table();
        Ok(MemoryStream {
            db: self.db.clone(),
            slot: slot.into(),
            tables: vec![
                from.clone(),
                QualifiedName {
                    schema: marker.schema,
                    name: marker.name,
                },
            ],
            delivered: 0,
        })
    }

    async fn open_applier(
        &self,
        dir: &Direction,
        origin: &str,
    ) -> Result<MemorySession, EngineError> {
        Ok(MemorySession {
            dir: dir.clone(),
            origin: origin.into(),
            in_swap: false,
        })
    }

    fn marker_table(&self) -> TableName {
        TableName::new("splice", "sync_marker")
    }

    async fn write_marker(
        &self,
        _applier: &mut MemorySession,
        migration: &str,
    ) -> Result<i64, EngineError> {
        let mut db = self.lock();
        db.step("write_marker")?;
        let id = {
            let m = db.markers.entry(migration.into()).or_insert(0);
            *m += 1;
            *m
        };
        let table = QualifiedName {
            schema: "splice".into(),
            name: "sync_marker".into(),
        };
        db.tables.entry(table.clone()).or_insert_with(|| MemTable {
            columns: Vec::new(),
            primary_key: vec!["migration".into(), "id".into()],
            rows: BTreeMap::new(),
        });
        db.commit(
            None,
            vec![(table, Op::Insert, vec![migration.into(), id.to_string()])],
        );
        Ok(id)
    }

    async fn apply(
        &self,
        applier: &mut MemorySession,
        keys: HashSet<Vec<String>>,
        gone: &HashSet<Vec<String>>,
        _txns: &[u64],
        truncate: bool,
    ) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("apply")?;
        let dir = applier.dir.clone();
        let mut keys: Vec<SortKey> = keys.into_iter().map(SortKey).collect();
        if truncate {
            let orphans: Vec<SortKey> = db
                .table(&dir.to)?
                .rows
                .keys()
                .filter(|k| {
                    !db.tables
                        .get(&dir.from)
                        .is_some_and(|t| t.rows.contains_key(k))
                })
                .cloned()
                .collect();
            keys.extend(orphans);
        }
        let mut changed = Vec::new();
        for key in keys {
            // As the servers' re-sync: only a gone key (or an orphan of a truncate) is
            // looked for a target row to delete.
            let may_delete = truncate || gone.contains(&key.0);
            if db.resync(&dir, &key, may_delete)? {
                changed.push((dir.to.clone(), Op::Update, key.0));
            }
        }
        let origin = applier.origin.clone();
        db.commit(Some(&origin), changed);
        Ok(())
    }

    async fn mark_changed(
        &self,
        _applier: &mut MemorySession,
        migration: &str,
        shape: &str,
        keys: &HashSet<Vec<String>>,
        every: bool,
    ) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("mark_changed")?;
        let Some(pass) = db.verify_ranges.get_mut(migration) else {
            return Ok(());
        };
        if pass.shape != shape {
            return Ok(());
        }
        let keys: Vec<SortKey> = keys.iter().cloned().map(SortKey).collect();
        for r in &mut pass.ranges {
            if every || keys.iter().any(|k| in_range(k, &r.range)) {
                r.marks += 1;
            }
        }
        Ok(())
    }

    async fn drop_capture(&self, slot: &str) -> Result<(), EngineError> {
        let mut db = self.lock();
        db.step("drop_capture")?;
        db.slots.remove(slot);
        Ok(())
    }

    async fn forget_appliers(&self, _: &(), _spec: &MigrationSpec) -> Result<(), EngineError> {
        Ok(())
    }

    async fn capture_problems(&self, _: &(), _: &[String]) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    async fn capture_lag_bytes(&self, _: &(), slot: &str) -> Result<Option<i64>, EngineError> {
        let db = self.lock();
        Ok(db
            .slots
            .get(slot)
            .map(|s| db.next_position.saturating_sub(s.acked) as i64))
    }
}

impl VerifySource for Memory {
    async fn sample_bounds(
        &self,
        _: &(),
        dir: &Direction,
        range_rows: i64,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        let db = self.lock();
        let keys: Vec<&SortKey> = db.table(&dir.from)?.rows.keys().collect();
        let step = range_rows.max(1) as usize;
        Ok(keys
            .iter()
            .skip(step - 1)
            .step_by(step)
            .map(|k| k.0.clone())
            .filter(|k| Some(k) != keys.last().map(|l| &l.0))
            .collect())
    }

    async fn read_canonical<'a>(
        &'a self,
        _: &'a (),
        dir: &Direction,
        side: Side,
        rows: Selection<'_>,
    ) -> Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError> {
        let db = self.lock();
        let table = match side {
            Side::Source => db.table(&dir.from)?,
            Side::Target => db.table(&dir.to)?,
        };
        let (selected, with_key): (Vec<(&SortKey, &Row)>, bool) = match rows {
            Selection::Range(r) => (
                table.rows.iter().filter(|(k, _)| in_range(k, r)).collect(),
                false,
            ),
            Selection::KeyedRange(r) => (
                table.rows.iter().filter(|(k, _)| in_range(k, r)).collect(),
                true,
            ),
            Selection::Keys(keys) => {
                let mut wanted: Vec<SortKey> = keys.iter().cloned().map(SortKey).collect();
                wanted.sort();
                (
                    wanted
                        .iter()
                        .filter_map(|k| table.rows.get_key_value(k))
                        .collect(),
                    true,
                )
            }
        };
        let mut out = Vec::new();
        for (key, row) in selected {
            let mut fields: Vec<Option<String>> = Vec::new();
            if with_key {
                fields.extend(key.0.iter().cloned().map(Some));
            }
            let values = match side {
                Side::Source => db.mapped(dir, row)?,
                Side::Target => row.clone(),
            };
            fields.extend(
                dir.columns
                    .iter()
                    .map(|(c, _)| values.get(c).cloned().flatten()),
            );
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b'\t');
                }
                canonical(f, &mut out);
            }
            out.push(b'\n');
        }
        Ok(futures_util::stream::iter([Ok(Bytes::from(out))]).boxed())
    }
}

impl Cutover for Memory {
    async fn lock_for_swap(
        &self,
        applier: &mut MemorySession,
        _spec: &MigrationSpec,
        _swap: &Swap,
        _hold_budget: Duration,
    ) -> Result<SwapLock, EngineError> {
        self.lock().step("lock_for_swap")?;
        applier.in_swap = true;
        Ok(SwapLock::Locked)
    }

    async fn finish_swap(
        &self,
        applier: &mut MemorySession,
        swap: &Swap,
        _dependents: &[Dependent],
        _incoming_columns: &[String],
        lock: &MemoryLock,
        change: &PhaseChange,
    ) -> Result<Result<Vec<String>, Vec<String>>, EngineError> {
        applier.in_swap = false;
        let mut db = self.lock();
        db.step("finish_swap")?;
        db.record_change(lock, change)?;
        let live = db.tables.remove(&swap.live);
        let incoming = db.tables.remove(&swap.incoming);
        if let Some(t) = live {
            db.tables.insert(swap.outgoing_as.clone(), t);
        }
        if let Some(t) = incoming {
            db.tables.insert(swap.live.clone(), t);
        }
        Ok(Ok(Vec::new()))
    }

    async fn validate_incoming(
        &self,
        _: &mut MemorySession,
        _: &Swap,
    ) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    async fn abort_swap(&self, applier: &mut MemorySession) {
        applier.in_swap = false;
    }

    async fn settle_carried_over(&self, _: &(), _: &[Dependent]) {}
}
