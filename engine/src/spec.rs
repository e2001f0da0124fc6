//! The migration file: what the user writes (TOML), parsed and checked for shape.
//! Checks against the live schema happen in `plan`.

use crate::seam::RateLimit;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The schema contract moves old tables into.
pub const QUARANTINE_SCHEMA: &str = "splice_quarantine";

/// How the names of splice's own tables beside the live one begin (the shadow, the retired
/// table, expand's trial copy).
pub const SPLICE_TABLE_PREFIX: &str = "_splice_";

/// A parsed migration file.
#[derive(Debug, Clone)]
pub struct MigrationSpec {
    /// Unique per database; names the slot, the publication, the shadow table.
    pub name: String,
    /// The live table (the source relation).
    pub table: QualifiedName,
    /// The new shape: a whole CREATE TABLE, or ALTER TABLE statements applied to a copy of
    /// the live table.
    pub shape: Shape,
    /// Indexes of the live table the new shape drops on purpose (`target` mode: any index the
    /// target lacks must be named here).
    pub drop_indexes: Vec<String>,
    /// Constraints of the live table the new shape drops on purpose.
    pub drop_constraints: Vec<String>,
    /// When the shadow's secondary indexes are built.
    pub build_indexes: IndexBuild,
    /// Target column → SQL expression over the source row.
    pub up: BTreeMap<String, String>,
    /// Source column → SQL expression over the target row (reverse sync after cutover).
    pub down: BTreeMap<String, String>,
    /// Key columns; defaults to the source table's primary key.
    pub key: Option<Vec<String>>,
    pub throttle: Throttle,
    /// How long contract keeps the old table in quarantine before drop is allowed.
    pub quarantine: Duration,
    /// What `splice daemon` may do on its own (`[automation]`); the commands ignore it.
    pub automation: Automation,
}

/// The `[automation]` table: the gates under which `splice daemon` cuts over on its own, and
/// the watch after a cutover that rolls back on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automation {
    pub cutover: CutoverMode,
    /// How long the gates (verified, no divergence, lag under the bound) must hold together
    /// before an automatic cutover.
    pub hold: Duration,
    /// One SQL statement returning one boolean, run every second after a cutover the daemon
    /// made; false, NULL or an error rolls back.
    pub watch: Option<String>,
    /// How long the watch runs after the cutover.
    pub watch_for: Duration,
    /// Automatic cutover only inside this daily window (UTC).
    pub window: Option<DailyWindow>,
}

impl Default for Automation {
    fn default() -> Self {
        Automation {
            cutover: CutoverMode::Manual,
            hold: Duration::from_secs(300),
            watch: None,
            watch_for: Duration::from_secs(300),
            window: None,
        }
    }
}

/// Who cuts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutoverMode {
    /// A person (`splice cutover`, or the daemon's HTTP API). The default.
    #[default]
    Manual,
    /// The daemon, once the gates held for `hold` (inside `window`, if given).
    Auto,
}

/// A daily time window in UTC, `HH:MM-HH:MM`; one whose end is before its start spans
/// midnight. The start is inside, the end is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    /// Minutes after 00:00 UTC.
    pub start: u16,
    pub end: u16,
}

impl DailyWindow {
    pub fn parse(s: &str) -> Result<DailyWindow, SpecError> {
        let bad = || {
            SpecError(format!(
                "automation.window = \"{s}\" is not a daily window; write it as \"HH:MM-HH:MM\" \
                 in UTC, e.g. \"09:00-17:00\" (or \"22:00-02:00\" across midnight)"
            ))
        };
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(bad());
        }
        Ok(DailyWindow { start, end })
    }

    /// Whether `minute` (after 00:00 UTC) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl std::fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{} UTC", hm(self.start), hm(self.end))
    }
}

/// When the shadow table's secondary indexes (those no constraint and no upsert needs) are
/// built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexBuild {
    /// Once, in bulk, when the backfill is done and before verify (`CREATE INDEX
    /// CONCURRENTLY`): the copy does not maintain them row by row. The default.
    #[default]
    AfterBackfill,
    /// With the table, at expand: maintained by every copied row.
    AtExpand,
}

/// How a migration file gives the new shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `target = "CREATE TABLE …"`: the whole new table, optionally with CREATE INDEX
    /// statements; what it leaves out of the live table's indexes and constraints must be
    /// declared in `drop_indexes` / `drop_constraints`.
    Target(String),
    /// `alter = "ALTER TABLE … ; …"`: the shadow starts as an exact structural copy of the live
    /// table (columns, defaults, identity, constraints, every index, outgoing foreign keys,
    /// storage parameters, comments) and the statements are applied to it.
    Alter(String),
}

/// Rate limits and bounds for backfill and verify.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// The backfill's rate limit (`rows_per_second`; absent or 0 is unlimited).
    pub rate_limit: RateLimit,
    /// Target duration of one backfill chunk; chunk sizes adapt to it.
    pub chunk_target: Duration,
    /// Pause while capture lag exceeds this many bytes.
    pub max_capture_lag_bytes: u64,
    /// Pause while a replica's replay lag exceeds this.
    pub max_replica_lag: Duration,
    /// Replicas whose lag the backfill watches, as `host` or `host:port` (MySQL/MariaDB: a
    /// primary cannot see its replicas' lag, so splice asks each one, with the database URL's
    /// user, password and TLS settings). Empty: only what the server itself reports.
    pub replicas: Vec<String>,
    /// Pause while more sessions than this run a statement (MySQL's `Threads_running`; not
    /// checked where the database does not report it, nor when absent).
    pub max_threads_running: Option<u32>,
    /// lock_timeout for every DDL statement.
    pub lock_timeout: Duration,
    /// The impact budget: how much the application's commit latency may rise above its
    /// baseline before the backfill and the applier slow down, as a fraction (0.2: 20%).
    /// `None`: off.
    pub max_latency_increase: Option<f64>,
}

/// The default impact budget: 20% over the application's commit latency without splice.
pub const DEFAULT_MAX_LATENCY_INCREASE: f64 = 0.2;

/// Checks one `[throttle] replicas` entry: `host` or `host:port`, nothing else (credentials
/// and TLS settings come from the database URL, never from the file).
pub fn replica_address(entry: &str) -> Result<String, String> {
    let e = entry.trim();
    let (host, port) = match e.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
        _ => (e, None),
    };
    let bad_host = host.is_empty()
        || host.chars().any(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'))
        });
    let bad_port = port.is_some_and(|p| p.parse::<u16>().map_or(true, |n| n == 0));
    if bad_host || bad_port {
        return Err(format!(
            "throttle.replicas entry \"{entry}\" is not host or host:port; write e.g. \
             replicas = [\"replica-1:3306\"] (splice connects with the database URL's user, \
             password and TLS settings, so none of those belong here)"
        ));
    }
    Ok(e.to_string())
}

/// Parses an impact budget as the file and the command line give it: `"20%"`, `"off"` or `0`
/// (off). Returns the fraction (`Some(0.2)`), or `None` for off.
pub fn parse_latency_increase(s: &str) -> Result<Option<f64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t == "0" || t == "0%" {
        return Ok(None);
    }
    let number = t.strip_suffix('%').map(str::trim);
    match number.map(str::parse::<f64>) {
        Some(Ok(p)) if p > 0.0 && p.is_finite() && p <= 10_000.0 => Ok(Some(p / 100.0)),
        _ => Err(format!(
            "max_latency_increase = \"{s}\" is not a budget; write a percentage such as \"20%\", \
             or \"off\" (or 0) to turn the impact budget off"
        )),
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            rate_limit: RateLimit::Unlimited,
            chunk_target: Duration::from_millis(200),
            max_capture_lag_bytes: 256 * 1024 * 1024,
            max_replica_lag: Duration::from_secs(10),
            replicas: Vec::new(),
            max_threads_running: None,
            lock_timeout: Duration::from_secs(2),
            max_latency_increase: Some(DEFAULT_MAX_LATENCY_INCREASE),
        }
    }
}

/// `schema.table`, both parts unquoted as PostgreSQL stores them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    /// Parses `schema.table` or `table` (schema `public`). Quoted parts keep their case.
    pub fn parse(s: &str) -> Result<QualifiedName, SpecError> {
        let parts = split_ident_path(s).ok_or_else(|| {
            SpecError(format!(
                "table `{s}` is not a table name; write it as schema.table (e.g. public.orders)"
            ))
        })?;
        match parts.as_slice() {
            [name] => Ok(QualifiedName {
                schema: "public".into(),
                name: name.clone(),
            }),
            [schema, name] => Ok(QualifiedName {
                schema: schema.clone(),
                name: name.clone(),
            }),
            _ => Err(SpecError(format!(
                "table `{s}` has too many parts; write it as schema.table"
            ))),
        }
    }

    pub fn in_schema(&self, schema: &str) -> QualifiedName {
        QualifiedName {
            schema: schema.into(),
            name: self.name.clone(),
        }
    }

    pub fn with_name(&self, name: &str) -> QualifiedName {
        QualifiedName {
            schema: self.schema.clone(),
            name: name.into(),
        }
    }
}

impl From<&QualifiedName> for cdc::TableName {
    fn from(q: &QualifiedName) -> cdc::TableName {
        cdc::TableName::new(q.schema.clone(), q.name.clone())
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

fn split_ident_path(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return None;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

/// A migration file that cannot be used, with what to change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    table: String,
    target: Option<String>,
    alter: Option<String>,
    #[serde(default)]
    drop_indexes: Vec<String>,
    #[serde(default)]
    drop_constraints: Vec<String>,
    build_indexes: Option<String>,
    #[serde(default)]
    up: BTreeMap<String, String>,
    #[serde(default)]
    down: BTreeMap<String, String>,
    key: Option<Vec<String>>,
    #[serde(default)]
    throttle: RawThrottle,
    quarantine: Option<String>,
    #[serde(default)]
    automation: RawAutomation,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAutomation {
    cutover: Option<String>,
    hold: Option<String>,
    watch: Option<String>,
    watch_for: Option<String>,
    window: Option<String>,
}

impl RawAutomation {
    fn check(self) -> Result<Automation, SpecError> {
        let defaults = Automation::default();
        let cutover = match self.cutover.as_deref() {
            None | Some("manual") => CutoverMode::Manual,
            Some("auto") => CutoverMode::Auto,
            Some(other) => {
                return Err(SpecError(format!(
                    "automation.cutover = \"{other}\"; use \"manual\" (the default: a person \
                     cuts over) or \"auto\" (the daemon cuts over once the gates held)"
                )))
            }
        };
        let watch = match self.watch {
            Some(w) if w.trim().is_empty() => {
                return Err(SpecError(
                    "automation.watch is empty; give one SQL statement returning one boolean, \
                     e.g. \"SELECT count(*) = 0 FROM public.app_errors\", or leave it out"
                        .into(),
                ))
            }
            w => w,
        };
        let window = self.window.as_deref().map(DailyWindow::parse).transpose()?;
        if window.is_some() && cutover == CutoverMode::Manual {
            return Err(SpecError(
                "automation.window only limits an automatic cutover; add cutover = \"auto\", or \
                 leave the window out"
                    .into(),
            ));
        }
        let watch_for = match self.watch_for {
            Some(s) => duration("automation.watch_for", &s)?,
            None => defaults.watch_for,
        };
        if watch.is_some() && watch_for.is_zero() {
            return Err(SpecError(
                "automation.watch_for is zero, so the watch would never run; give how long to \
                 watch after cutover, e.g. \"5m\""
                    .into(),
            ));
        }
        Ok(Automation {
            cutover,
            hold: match self.hold {
                Some(s) => duration("automation.hold", &s)?,
                None => defaults.hold,
            },
            watch,
            watch_for,
            window,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    rows_per_second: Option<u32>,
    chunk_target: Option<String>,
    max_capture_lag_bytes: Option<u64>,
    max_replica_lag: Option<String>,
    replicas: Option<Vec<String>>,
    max_threads_running: Option<u32>,
    lock_timeout: Option<String>,
    max_latency_increase: Option<RawPercent>,
}

/// `"20%"`, `"off"`, or the number 0 (off).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPercent {
    Number(f64),
    Text(String),
}

fn duration(field: &str, s: &str) -> Result<Duration, SpecError> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        SpecError(format!(
            "{field} = \"{s}\" is not a duration ({e}); write e.g. \"200ms\", \"2s\" or \"30d\""
        ))
    })
}

impl MigrationSpec {
    /// Parses and checks a migration file's text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<MigrationSpec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            SpecError(format!(
                "{origin}: {e}\n  a migration file has: name, table, target (or alter), [up], \
                 [down], and optionally key, quarantine, drop_indexes, drop_constraints, \
                 [throttle], [automation]"
            ))
        })?;
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 40
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && raw
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase());
        if !name_ok {
            return Err(SpecError(format!(
                "{origin}: name = \"{}\" must be 1-40 characters of a-z, 0-9 and _, starting \
                 with a letter (it names the replication slot and the shadow table)",
                raw.name
            )));
        }
        let table =
            QualifiedName::parse(&raw.table).map_err(|e| SpecError(format!("{origin}: {e}")))?;
        let given = |s: &Option<String>| s.as_deref().is_some_and(|t| !t.trim().is_empty());
        let shape = match (raw.target, raw.alter) {
            (Some(t), None) if given(&Some(t.clone())) => Shape::Target(t),
            (None, Some(a)) if given(&Some(a.clone())) => Shape::Alter(a),
            (Some(_), Some(_)) => {
                return Err(SpecError(format!(
                    "{origin}: give either target (the whole new CREATE TABLE) or alter (ALTER \
                     TABLE statements applied to a copy of the live table), not both"
                )))
            }
            _ => {
                return Err(SpecError(format!(
                    "{origin}: no new shape; give alter = \"ALTER TABLE {} …\" (the change), or \
                     target = \"CREATE TABLE …\" (the whole new table)",
                    raw.table
                )))
            }
        };
        let build_indexes = match raw.build_indexes.as_deref() {
            None | Some("after_backfill") => IndexBuild::AfterBackfill,
            Some("at_expand") => IndexBuild::AtExpand,
            Some(other) => {
                return Err(SpecError(format!(
                    "{origin}: build_indexes = \"{other}\"; use \"after_backfill\" (the default) \
                     or \"at_expand\""
                )))
            }
        };
        let t = raw.throttle;
        let defaults = Throttle::default();
        let throttle = Throttle {
            rate_limit: RateLimit::from_rows_per_second(t.rows_per_second.unwrap_or(0)),
            chunk_target: match t.chunk_target {
                Some(s) => duration("throttle.chunk_target", &s)?,
                None => defaults.chunk_target,
            },
            max_capture_lag_bytes: t
                .max_capture_lag_bytes
                .unwrap_or(defaults.max_capture_lag_bytes),
            max_replica_lag: match t.max_replica_lag {
                Some(s) => duration("throttle.max_replica_lag", &s)?,
                None => defaults.max_replica_lag,
            },
            replicas: t
                .replicas
                .unwrap_or_default()
                .into_iter()
                .map(|r| replica_address(&r).map_err(|e| SpecError(format!("{origin}: {e}"))))
                .collect::<Result<_, _>>()?,
            max_threads_running: t.max_threads_running,
            lock_timeout: match t.lock_timeout {
                Some(s) => duration("throttle.lock_timeout", &s)?,
                None => defaults.lock_timeout,
            },
            max_latency_increase: match t.max_latency_increase {
                None => defaults.max_latency_increase,
                Some(RawPercent::Number(0.0)) => None,
                Some(RawPercent::Number(n)) => {
                    return Err(SpecError(format!(
                        "{origin}: throttle.max_latency_increase = {n}: write the budget as a \
                         percentage string, e.g. max_latency_increase = \"{n}%\" (or \"off\")"
                    )))
                }
                Some(RawPercent::Text(s)) => parse_latency_increase(&s)
                    .map_err(|e| SpecError(format!("{origin}: throttle.{e}")))?,
            },
        };
        let quarantine = match raw.quarantine {
            Some(s) => duration("quarantine", &s)?,
            None => Duration::from_secs(30 * 24 * 3600),
        };
        let automation = raw
            .automation
            .check()
            .map_err(|e| SpecError(format!("{origin}: {e}")))?;
        let lower = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect()
        };
        Ok(MigrationSpec {
            name: raw.name,
            table,
            shape,
            drop_indexes: raw.drop_indexes,
            drop_constraints: raw.drop_constraints,
            build_indexes,
            up: lower(raw.up),
            down: lower(raw.down),
            key: raw
                .key
                .map(|k| k.into_iter().map(|c| c.to_lowercase()).collect()),
            throttle,
            quarantine,
            automation,
        })
    }

    /// The shadow table expand creates: the target shape under a name of its own.
    pub fn shadow_table(&self) -> QualifiedName {
        self.table
            .with_name(&format!("{SPLICE_TABLE_PREFIX}{}_new", self.name))
    }

    /// What the old table is renamed to at cutover.
    pub fn retired_table(&self) -> QualifiedName {
        self.table
            .with_name(&format!("{SPLICE_TABLE_PREFIX}{}_old", self.name))
    }

    /// A scratch copy of the new shape that expand creates and drops at once, to try on it
    /// what cutover will create (MySQL: the table's triggers).
    pub fn trial_table(&self) -> QualifiedName {
        self.table
            .with_name(&format!("{SPLICE_TABLE_PREFIX}{}_try", self.name))
    }

    /// Where contract keeps the old table until drop.
    pub fn quarantined_table(&self) -> QualifiedName {
        self.retired_table().in_schema(QUARANTINE_SCHEMA)
    }

    /// Replication slot and publication of forward sync (old → new).
    pub fn forward_slot(&self) -> String {
        format!("splice_{}_fwd", self.name)
    }

    /// Replication slot and publication of reverse sync (new → old), after cutover.
    pub fn reverse_slot(&self) -> String {
        format!("splice_{}_rev", self.name)
    }

    /// Replication origin forward sync's applier writes under, so capture skips its writes.
    pub fn origin(&self) -> String {
        format!("splice_{}", self.name)
    }

    /// Replication origin of reverse sync's applier (an origin is active in one session at a
    /// time, and cutover has both directions open).
    pub fn reverse_origin(&self) -> String {
        format!("splice_{}_rev", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = r#"
name = "orders_v2"
table = "public.orders"
target = """
CREATE TABLE orders (id bigint PRIMARY KEY, amount_cents bigint NOT NULL)
"""
[up]
amount_cents = "(amount * 100)::bigint"
[down]
amount = "amount_cents / 100.0"
"#;

    #[test]
    fn replicas_are_host_or_host_and_port_and_never_carry_credentials() {
        let file = format!("{ORDERS}\n[throttle]\nreplicas = [\"db-2\", \"10.0.0.7:3307\"]\n");
        let spec = MigrationSpec::parse(&file, "orders.toml").expect("valid");
        assert_eq!(spec.throttle.replicas, vec!["db-2", "10.0.0.7:3307"]);
        for bad in [
            "root:secret@db-2:3306",
            "db-2:0",
            "db-2:port",
            "",
            "mysql://db-2",
        ] {
            let file = format!("{ORDERS}\n[throttle]\nreplicas = [\"{bad}\"]\n");
            let e = MigrationSpec::parse(&file, "orders.toml")
                .expect_err(bad)
                .to_string();
            assert!(e.contains("is not host or host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let spec = MigrationSpec::parse(ORDERS, "orders.toml").expect("valid");
        assert_eq!(spec.name, "orders_v2");
        assert_eq!(spec.up["amount_cents"], "(amount * 100)::bigint");
        assert_eq!(spec.down["amount"], "amount_cents / 100.0");
        assert_eq!(spec.quarantine, Duration::from_secs(30 * 86400));
        assert_eq!(spec.shadow_table().name, "_splice_orders_v2_new");
    }

    #[test]
    fn the_impact_budget_defaults_to_20_percent_and_reads_percentages_and_off() {
        let spec = MigrationSpec::parse(ORDERS, "f.toml").expect("valid");
        assert_eq!(spec.throttle.max_latency_increase, Some(0.2));
        let with = |v: &str| {
            MigrationSpec::parse(
                &format!("{ORDERS}\n[throttle]\nmax_latency_increase = {v}\n"),
                "f.toml",
            )
            .map(|s| s.throttle.max_latency_increase)
        };
        assert_eq!(with("\"50%\"").expect("50%"), Some(0.5));
        assert_eq!(with("\"off\"").expect("off"), None);
        assert_eq!(with("0").expect("0"), None);
        let err = with("20").expect_err("a bare number is ambiguous");
        assert!(err.0.contains("\"20%\""), "{err}");
        let err = with("\"fast\"").expect_err("not a percentage");
        assert!(err.0.contains("throttle.max_latency_increase"), "{err}");
    }

    #[test]
    fn rejects_a_name_that_cannot_name_a_slot() {
        let bad = ORDERS.replace("orders_v2", "Orders-V2");
        let err = MigrationSpec::parse(&bad, "f.toml").expect_err("invalid name");
        assert!(err.0.contains("a-z, 0-9 and _"), "{err}");
    }

    #[test]
    fn rejects_unknown_keys_and_names_the_fields() {
        let bad = format!("{ORDERS}\nbogus = 1\n");
        let err = MigrationSpec::parse(&bad, "f.toml").expect_err("unknown key");
        assert!(err.0.contains("bogus"), "{err}");
    }

    #[test]
    fn durations_are_checked() {
        let bad = format!("quarantine = \"forever\"\n{ORDERS}");
        let err = MigrationSpec::parse(&bad, "f.toml").expect_err("bad duration");
        assert!(err.0.contains("quarantine"), "{err}");
    }

    #[test]
    fn automation_defaults_to_manual_and_parses_its_gates() {
        let spec = MigrationSpec::parse(ORDERS, "f.toml").expect("valid");
        assert_eq!(spec.automation, Automation::default());
        assert_eq!(spec.automation.cutover, CutoverMode::Manual);
        let auto = format!(
            "{ORDERS}\n[automation]\ncutover = \"auto\"\nhold = \"10s\"\n\
             watch = \"SELECT count(*) = 0 FROM public.app_errors\"\nwatch_for = \"5m\"\n\
             window = \"09:00-17:00\"\n"
        );
        let a = MigrationSpec::parse(&auto, "f.toml")
            .expect("valid")
            .automation;
        assert_eq!(a.cutover, CutoverMode::Auto);
        assert_eq!(a.hold, Duration::from_secs(10));
        assert_eq!(a.watch_for, Duration::from_secs(300));
        assert_eq!(
            a.watch.as_deref(),
            Some("SELECT count(*) = 0 FROM public.app_errors")
        );
        assert_eq!(
            a.window,
            Some(DailyWindow {
                start: 540,
                end: 1020
            })
        );
    }

    #[test]
    fn automation_refuses_what_it_cannot_do() {
        let with = |table: &str| {
            MigrationSpec::parse(&format!("{ORDERS}\n[automation]\n{table}\n"), "f.toml")
        };
        let err = |table: &str| with(table).expect_err(table).0;
        assert!(err("cutover = \"yes\"").contains("\"manual\""));
        assert!(err("window = \"09:00-17:00\"").contains("cutover = \"auto\""));
        assert!(err("cutover = \"auto\"\nwindow = \"9-17\"").contains("HH:MM-HH:MM"));
        assert!(err("watch = \" \"").contains("automation.watch"));
        assert!(err("hold = \"soon\"").contains("automation.hold"));
        assert!(err("cutover = \"auto\"\nwatchfor = \"1m\"").contains("watchfor"));
        assert!(err("watch = \"SELECT true\"\nwatch_for = \"0s\"").contains("watch_for"));
    }

    #[test]
    fn a_daily_window_may_span_midnight() {
        let day = DailyWindow::parse("09:00-17:00").expect("valid");
        assert!(day.contains(9 * 60) && day.contains(17 * 60 - 1));
        assert!(!day.contains(17 * 60) && !day.contains(8 * 60 + 59));
        let night = DailyWindow::parse("22:00-02:00").expect("valid");
        assert!(night.contains(23 * 60) && night.contains(60) && night.contains(22 * 60));
        assert!(!night.contains(2 * 60) && !night.contains(12 * 60));
        assert_eq!(night.to_string(), "22:00-02:00 UTC");
        assert!(DailyWindow::parse("10:00-10:00").is_err());
        assert!(DailyWindow::parse("24:00-10:00").is_err());
    }

    #[test]
    fn qualified_names_follow_postgres_case_rules() {
        let q = QualifiedName::parse("Sales.\"Order Lines\"").expect("valid");
        assert_eq!(q.schema, "sales");
        assert_eq!(q.name, "Order Lines");
        assert_eq!(
            QualifiedName::parse("orders").expect("valid").schema,
            "public"
        );
        assert!(QualifiedName::parse("a.b.c").is_err());
        assert!(QualifiedName::parse("drop table x; --").is_err());
    }
}
