//! The PostgreSQL catalog queries behind [`crate::catalog`]: columns, key, unique indexes and
//! the objects that depend on a table; and [`ensure_own_schema`], which creates splice's own
//! schemas without ever adopting someone else's.

use crate::catalog::{Column, Dependent, Table};
use crate::spec::QualifiedName;
use crate::EngineError;
use tokio_postgres::GenericClient;

/// Reads a table's columns and primary key. `Ok(None)` when it does not exist.
pub async fn table(
    db: &impl GenericClient,
    name: &QualifiedName,
) -> Result<Option<Table>, EngineError> {
    let row = db
        .query_opt(
            "SELECT c.oid, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await
        .map_err(|e| EngineError::db(format!("reading table {name}"), e))?;
    let Some(row) = row else { return Ok(None) };
    let oid: u32 = row.get(0);
    let approx_rows: i64 = row.get(1);
    let cols = db
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    a.atthasdef, a.attgenerated <> '',
                    coalesce((SELECT c.collname::text FROM pg_collation c
                               WHERE c.oid = a.attcollation), '')
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| EngineError::db(format!("reading columns of {name}"), e))?;
    let columns = cols
        .iter()
        .map(|r| Column {
            name: r.get(0),
            sql_type: r.get(1),
            not_null: r.get(2),
            has_default: r.get(3),
            generated: r.get(4),
            collation: r.get(5),
        })
        .collect();
    let pk = db
        .query(
            "SELECT a.attname::text FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| EngineError::db(format!("reading the primary key of {name}"), e))?;
    Ok(Some(Table {
        name: name.clone(),
        oid,
        columns,
        primary_key: pk.iter().map(|r| r.get(0)).collect(),
        // -1: never analyzed (PostgreSQL 14+), so unknown.
        approx_rows: approx_rows.max(-1),
    }))
}

/// True when `columns` are exactly the columns of a unique, valid, non-partial index of `oid`.
pub async fn has_unique_index_on(
    db: &impl GenericClient,
    oid: u32,
    columns: &[String],
) -> Result<bool, EngineError> {
    let rows = db
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname)
             FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) AS k(attnum)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
             GROUP BY i.indexrelid",
            &[&oid],
        )
        .await
        .map_err(|e| EngineError::db("reading unique indexes", e))?;
    let mut want: Vec<String> = columns.to_vec();
    want.sort();
    Ok(rows.iter().any(|r| r.get::<_, Vec<String>>(0) == want))
}

/// Everything that depends on the table and must follow it through a swap.
pub async fn dependents(
    db: &impl GenericClient,
    table: &Table,
) -> Result<Vec<Dependent>, EngineError> {
    let ctx = |what: &str| format!("reading {what} that depend on {}", table.name);
    let mut out = Vec::new();
    for r in db
        .query(
            "SELECT DISTINCT n.nspname::text, v.relname::text, pg_get_viewdef(v.oid), v.relkind = 'm'
             FROM pg_depend d
             JOIN pg_rewrite rw ON rw.oid = d.objid
             JOIN pg_class v ON v.oid = rw.ev_class
             JOIN pg_namespace n ON n.oid = v.relnamespace
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND v.oid <> $1",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("views"), e))?
    {
        out.push(Dependent::View {
            name: QualifiedName { schema: r.get(0), name: r.get(1) },
            definition: r.get(2),
            materialized: r.get(3),
        });
    }
    for r in db
        .query(
            "SELECT n.nspname::text, c.relname::text, con.conname::text, pg_get_constraintdef(con.oid)
             FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conrelid <> $1",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("foreign keys"), e))?
    {
        out.push(Dependent::ForeignKeyIn {
            table: QualifiedName { schema: r.get(0), name: r.get(1) },
            constraint: r.get(2),
            definition: r.get(3),
        });
    }
    for r in db
        .query(
            "SELECT tgname::text, pg_get_triggerdef(oid), tgenabled::text FROM pg_trigger
             WHERE tgrelid = $1 AND NOT tgisinternal",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("triggers"), e))?
    {
        out.push(Dependent::Trigger {
            name: r.get(0),
            definition: r.get(1),
            enabled: r.get(2),
        });
    }
    for r in db
        .query(
            "SELECT sn.nspname::text, s.relname::text, a.attname::text
             FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.refobjid = $1 AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("sequences"), e))?
    {
        out.push(Dependent::OwnedSequence {
            sequence: QualifiedName { schema: r.get(0), name: r.get(1) },
            column: r.get(2),
        });
    }
    for r in db
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END, a.privilege_type
             FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
             LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE c.oid = $1 AND a.grantee <> c.relowner",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("grants"), e))?
    {
        out.push(Dependent::Grant { grantee: r.get(0), privilege: r.get(1) });
    }
    Ok(out)
}

/// Creates schema `name` when it is missing, and makes sure it is splice's own: owned by a role
/// the current user is a member of, with CREATE granted to no role outside that. A schema of
/// that name that another role controls is refused ([`EngineError::ForeignSchema`]), never
/// adopted the way `CREATE SCHEMA IF NOT EXISTS` would: its owner could read and rewrite
/// splice's state, or put functions and tables there that splice's statements would use.
///
/// Call it before using the state schema (`splice`) and the quarantine schema.
pub async fn ensure_own_schema(db: &impl GenericClient, name: &str) -> Result<(), EngineError> {
    let mut control = schema_control(db, name).await?;
    if control.is_none() {
        // IF NOT EXISTS: a schema created meanwhile by someone else is caught just below.
        db.execute(
            &format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                super::sql::quote_ident(name)
            ),
            &[],
        )
        .await
        .map_err(|e| EngineError::db(format!("creating schema {name}"), e))?;
        control = schema_control(db, name).await?;
    }
    let Some(control) = control else {
        return Err(EngineError::Missing(format!(
            "schema {name} was created but cannot be found; was it dropped at once by someone else?"
        )));
    };
    if !control.owner_is_ours {
        return Err(EngineError::ForeignSchema {
            schema: name.to_string(),
            why: format!(
                "already exists and is owned by {}, a role {} is not a member of",
                control.owner, control.user
            ),
        });
    }
    if !control.foreign_creators.is_empty() {
        return Err(EngineError::ForeignSchema {
            schema: name.to_string(),
            why: format!(
                "grants CREATE to {}, outside the roles {} is a member of (REVOKE CREATE ON \
                 SCHEMA {} FROM …)",
                control.foreign_creators,
                control.user,
                super::sql::quote_ident(name)
            ),
        });
    }
    Ok(())
}

/// Who controls a schema, as seen by the current user.
struct SchemaControl {
    owner: String,
    /// The current user is a member of the owner (superusers are members of every role).
    owner_is_ours: bool,
    user: String,
    /// Roles outside the current user's that may create objects in it (`PUBLIC` included),
    /// comma-separated; empty when none.
    foreign_creators: String,
}

/// `None` when schema `name` does not exist.
async fn schema_control(
    db: &impl GenericClient,
    name: &str,
) -> Result<Option<SchemaControl>, EngineError> {
    let row = db
        .query_opt(
            "SELECT n.nspowner::regrole::text, pg_has_role(n.nspowner, 'MEMBER'), current_user::text,
                    coalesce((SELECT string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                     ELSE a.grantee::regrole::text END, ', ')
                              FROM aclexplode(n.nspacl) a
                              WHERE a.privilege_type = 'CREATE'
                                AND CASE WHEN a.grantee = 0 THEN true
                                         ELSE NOT pg_has_role(a.grantee, 'MEMBER') END), '')
             FROM pg_namespace n WHERE n.nspname = $1",
            &[&name],
        )
        .await
        .map_err(|e| EngineError::db(format!("reading who owns schema {name}"), e))?;
    let Some(row) = row else { return Ok(None) };
    let read = |e| EngineError::db(format!("reading who owns schema {name}"), e);
    Ok(Some(SchemaControl {
        owner: row.try_get(0).map_err(read)?,
        owner_is_ours: row.try_get(1).map_err(read)?,
        user: row.try_get(2).map_err(read)?,
        foreign_creators: row.try_get(3).map_err(read)?,
    }))
}
