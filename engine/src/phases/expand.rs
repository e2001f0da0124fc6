//! `splice plan` and `splice expand`: check the file against the live schema; register the
//! migration and create the shadow table (additive DDL only, lint-clean).

use super::Engine;
use crate::adapter::Adapter;
use crate::drift::SourceShape;
use crate::error::Refusal;
use crate::plan;
use crate::seam::Plan;
use crate::spec::MigrationSpec;
use crate::state::{Phase, PhaseChange};
use crate::EngineError;
use serde_json::json;
use tracing::info;

impl<A: Adapter> Engine<A> {
    /// `splice plan`: checks the file against the live schema. Changes nothing.
    pub async fn plan(&self, spec: &MigrationSpec) -> Result<Plan, EngineError> {
        let db = self.db().await?;
        plan::build(&self.adapter, &db, spec).await
    }

    /// Every phase of `plan` with the statements it runs and the locks it takes.
    pub fn render(&self, plan: &Plan) -> String {
        self.adapter.render_plan(plan)
    }

    /// The statements expand runs, as one script, linted before they run.
    pub fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String {
        self.adapter.expand_script(spec, plan)
    }

    /// `splice expand`: registers the migration and creates the shadow table.
    pub async fn expand(&self, spec_text: &str, origin: &str) -> Result<Plan, EngineError> {
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
                return plan::build(&self.adapter, &db, &spec).await;
            }
        }
        let plan = plan::build(&self.adapter, &db, &spec).await?;
        refuse_not_carried(&plan)?;
        let script = self.adapter.expand_script(&spec, &plan);
        let findings: Vec<_> = lint::check(&script, &lint::Options::default())
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
            _ => return Ok(plan),
        }
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
        Ok(plan)
    }
}

/// Refuses a plan whose new shape silently lacks indexes or constraints of the live table.
pub(super) fn refuse_not_carried(plan: &Plan) -> Result<(), EngineError> {
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
