//! `splice plan` and `splice expand`: check the file against the live schema; register the
//! migration and create the shadow table (additive DDL only, lint-clean).

use super::Engine;
use crate::adapter::Adapter;
use crate::drift::SourceShape;
use crate::error::Refusal;
use crate::plan;
use crate::seam::Plan;
use crate::spec::MigrationSpec;
use crate::state::{MigrationRecord, Phase, PhaseChange};
use crate::EngineError;
use serde_json::json;
use tracing::info;

impl<A: Adapter> Engine<A> {
    /// `splice plan`: checks the file against the live schema, and the server for everything
    /// sync will need ([`Refusal::ServerNotReady`] lists what it lacks). Changes nothing.
    pub async fn plan(&self, spec: &MigrationSpec) -> Result<Plan, EngineError> {
        let db = self.db().await?;
        let plan = plan::build(&self.adapter, &db, spec).await?;
        let mut problems = self
            .adapter
            .capture_problems(&db, &[spec.forward_slot(), spec.reverse_slot()])
            .await?;
        let key: Vec<String> = plan.key.iter().map(|k| k.name.clone()).collect();
        problems.extend(self.adapter.table_problems(&db, &plan.source, &key).await?);
        if !problems.is_empty() {
            return Err(Refusal::ServerNotReady { problems }.into());
        }
        Ok(plan)
    }

    /// Every phase of `plan` with the statements it runs and the locks it takes.
    pub fn render(&self, plan: &Plan) -> String {
        self.adapter.render_plan(plan)
    }

    /// The statements expand runs, as one script, linted before they run.
    pub fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String {
        self.adapter.expand_script(spec, plan)
    }

    /// `splice expand`: registers the migration and creates the shadow table. Refuses while
    /// another migration of the same live table is in flight ([`Refusal::TableInFlight`]);
    /// a migration already expanded reports it and changes nothing.
    pub async fn expand(&self, spec_text: &str, origin: &str) -> Result<ExpandReport, EngineError> {
        let spec = MigrationSpec::parse(spec_text, origin)?;
        let db = self.db().await?;
        let different_file = || EngineError::DifferentFile {
            name: spec.name.clone(),
        };
        if let Some(existing) = self.adapter.load_record(&db, &spec.name).await? {
            if existing.phase != Phase::RolledBack && existing.spec != spec_text {
                return Err(different_file());
            }
            if !matches!(existing.phase, Phase::Planned | Phase::RolledBack) {
                info!(phase = %existing.phase, "already expanded");
                let plan = plan::build(&self.adapter, &db, &spec).await?;
                return Ok(ExpandReport::already(plan, &existing));
            }
        }
        // Checked before anything is written, so a refusal leaves nothing behind.
        let follows = self.one_migration_per_table(&db, &spec).await?;
        let plan = plan::build(&self.adapter, &db, &spec).await?;
        refuse_not_carried(&plan)?;
        let script = self.adapter.expand_script(&spec, &plan);
        let options = lint::Options {
            dialect: self.adapter.lint_dialect(),
            ..lint::Options::default()
        };
        let findings: Vec<_> = lint::check(&script, &options)
            .into_iter()
            .filter(|d| d.severity == lint::Severity::Error)
            .collect();
        if let Some(d) = findings.first() {
            return Err(EngineError::Plan(format!(
                "expand's DDL does not pass splice lint ({}: {}); this is a splice bug — \
                 please report it with the migration file",
                d.rule, d.message
            )));
        }
        self.adapter.ensure_state(&db).await?;
        self.adapter.register(&db, &spec.name, spec_text).await?;
        let lock = self.locked(&spec.name).await?;
        let record = self.record(&db, &spec.name).await?;
        match record.phase {
            // A rolled-back migration left nothing behind: expand starts it again, from the
            // file as it is now, under the lock. Its history stays.
            Phase::RolledBack => self.adapter.reregister(&lock, spec_text).await?,
            _ if record.spec != spec_text => return Err(different_file()),
            Phase::Planned => {}
            _ => return Ok(ExpandReport::already(plan, &record)),
        }
        // Checked again now that this migration is registered: of two expands of one table
        // racing, at least one sees the other here. The loser steps aside (planned →
        // rolled_back) so it does not block the winner.
        if let Err(e) = self.one_migration_per_table(&db, &spec).await {
            if record.phase == Phase::Planned {
                self.adapter
                    .transition(
                        &lock,
                        &PhaseChange::new(
                            Phase::Planned,
                            Phase::RolledBack,
                            json!({ "refused": e.to_string() }),
                        ),
                    )
                    .await?;
            }
            return Err(e);
        }
        // A throttle override belonged to the earlier run; this one starts from the file.
        self.adapter.set_rate_limit(&db, &spec.name, None).await?;
        // Verify ranges of an earlier run vouch for a table that is about to be made anew.
        self.adapter.forget_verify_ranges(&lock).await?;
        // The shadow table and the phase change commit together.
        let deferred = self
            .adapter
            .create_shadow(
                &db,
                &spec,
                &plan.expand_ddl,
                &lock,
                &PhaseChange::new(
                    record.phase,
                    Phase::Expanded,
                    json!({
                        "shadow_table": spec.shadow_table().to_string(),
                        "source_shape": SourceShape::of(&plan.source),
                        "follows": follows,
                    }),
                ),
            )
            .await?;
        if !deferred.is_empty() {
            info!(
                indexes = deferred.len(),
                "secondary indexes are built after the backfill"
            );
        }
        Ok(ExpandReport {
            plan,
            already: false,
            phase: Phase::Expanded,
        })
    }

    /// Refuses when another migration of `spec`'s live table is in flight: in any phase but
    /// rolled_back, contracted and dropped (planned counts: an expand that has not finished).
    /// A contracted migration is done with the live table (its old table sits in quarantine),
    /// so a new one may start; returns those, which the new one records as `follows` so the
    /// contracted one's rollback can refuse ([`Refusal::TableMovedOn`]).
    async fn one_migration_per_table(
        &self,
        db: &A::Conn,
        spec: &MigrationSpec,
    ) -> Result<Vec<String>, EngineError> {
        let mut follows = Vec::new();
        for other in self.adapter.load_records(db).await? {
            if other.name == spec.name {
                continue;
            }
            let Ok(other_spec) = super::spec_of(&other) else {
                continue;
            };
            if other_spec.table != spec.table {
                continue;
            }
            match other.phase {
                Phase::RolledBack | Phase::Dropped => {}
                Phase::Contracted => follows.push(other.name.clone()),
                phase => {
                    return Err(Refusal::TableInFlight {
                        name: spec.name.clone(),
                        table: spec.table.to_string(),
                        other: other.name.clone(),
                        phase,
                    }
                    .into())
                }
            }
        }
        Ok(follows)
    }
}

/// What `splice expand` did.
#[derive(Debug, Clone)]
pub struct ExpandReport {
    pub plan: Plan,
    /// True when an earlier run had expanded it: nothing was done this time.
    pub already: bool,
    /// The migration's phase now.
    pub phase: Phase,
}

impl ExpandReport {
    fn already(plan: Plan, record: &MigrationRecord) -> ExpandReport {
        ExpandReport {
            plan,
            already: true,
            phase: record.phase,
        }
    }
}

/// Refuses a plan whose new shape silently lacks indexes or constraints of the live table, or
/// whose table carries something cutover cannot carry (materialized views): before any copy
/// work is done.
pub(super) fn refuse_not_carried(plan: &Plan) -> Result<(), EngineError> {
    let blocking = plan.cannot_carry();
    if !blocking.is_empty() {
        return Err(Refusal::CannotCarryOver {
            name: plan.spec.name.clone(),
            objects: blocking.join(", "),
        }
        .into());
    }
    if plan.not_carried.is_empty() {
        return Ok(());
    }
    Err(Refusal::NotCarried {
        name: plan.spec.name.clone(),
        objects: plan
            .not_carried
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
    .into())
}
