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
            "SELECT c.oid, c.reltuples::bigint, c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await
        .map_err(|e| EngineError::db(format!("reading table {name}"), e))?;
    let Some(row) = row else { return Ok(None) };
    if row.get::<_, bool>(2) {
        return Err(EngineError::Plan(format!(
            "{name} is a partitioned table; splice cannot migrate partitioned tables yet \
             (migrate each partition as a table of its own, or use a plain table)"
        )));
    }
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
    // The owner first: a sequence can be re-owned only by a column of a table of its owner.
    let mut out = properties(db, table).await?;
    for r in db
        .query(
            "WITH RECURSIVE deps(oid, depth) AS (
                SELECT rw.ev_class, 1 FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid
                 WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND rw.ev_class <> $1
                UNION
                SELECT rw.ev_class, deps.depth + 1 FROM deps
                  JOIN pg_depend d ON d.refobjid = deps.oid AND d.classid = 'pg_rewrite'::regclass
                  JOIN pg_rewrite rw ON rw.oid = d.objid
                 WHERE rw.ev_class <> deps.oid AND deps.depth < 50
             )
             SELECT n.nspname::text, v.relname::text, pg_get_viewdef(v.oid), v.relkind = 'm',
                    max(deps.depth)::int4, array_to_string(v.reloptions, ', '),
                    quote_ident(pg_get_userbyid(v.relowner)), obj_description(v.oid, 'pg_class'),
                    (SELECT array_agg(format('GRANT %s ON {view} TO %s', a.privilege_type,
                                             CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                  ELSE quote_ident(pg_get_userbyid(a.grantee)) END))
                       FROM aclexplode(v.relacl) a WHERE a.grantee <> v.relowner)
             FROM deps JOIN pg_class v ON v.oid = deps.oid
             JOIN pg_namespace n ON n.oid = v.relnamespace
             GROUP BY v.oid, n.nspname, v.relname
             ORDER BY 5, 1, 2",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("views"), e))?
    {
        let owner: String = r.get(6);
        let mut extras = vec![format!("ALTER VIEW {{view}} OWNER TO {owner}")];
        if let Some(c) = r.get::<_, Option<String>>(7) {
            extras.push(format!(
                "COMMENT ON VIEW {{view}} IS {}",
                super::sql::quote_literal(&c)
            ));
        }
        extras.extend(r.get::<_, Option<Vec<String>>>(8).unwrap_or_default());
        out.push(Dependent::View {
            name: QualifiedName {
                schema: r.get(0),
                name: r.get(1),
            },
            definition: r.get(2),
            materialized: r.get(3),
            depth: r.get(4),
            extras,
            options: r.get::<_, Option<String>>(5).filter(|o| !o.is_empty()),
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
             WHERE d.refobjid = $1 AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'",
            // Serial sequences only ('a'): an identity sequence ('i') belongs to its table for
            // good; the new table has its own, advanced past the highest key at cutover.
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("sequences"), e))?
    {
        out.push(Dependent::OwnedSequence {
            sequence: QualifiedName {
                schema: r.get(0),
                name: r.get(1),
            },
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

/// What else the table carries, as [`Dependent::Property`] entries: owner, row-level security
/// and policies, column grants, publication membership, replica identity, storage parameters,
/// comments and statistics targets.
async fn properties(db: &impl GenericClient, table: &Table) -> Result<Vec<Dependent>, EngineError> {
    let ctx = |what: &str| format!("reading the {what} of {}", table.name);
    let prop =
        |what: String, column: Option<String>, statements: Vec<String>| Dependent::Property {
            what,
            column,
            statements,
        };
    let mut out = Vec::new();
    let row = db
        .query_one(
            "SELECT quote_ident(pg_get_userbyid(c.relowner)), pg_get_userbyid(c.relowner) = current_user,
                    c.relrowsecurity, c.relforcerowsecurity, c.relreplident::text,
                    (SELECT quote_ident(i.relname) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                      WHERE x.indrelid = c.oid AND x.indisreplident),
                    array_to_string(c.reloptions, ', '), obj_description(c.oid, 'pg_class')
             FROM pg_class c WHERE c.oid = $1",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("properties"), e))?;
    let owner: String = row.get(0);
    let owned_by_runner: bool = row.get(1);
    if !owned_by_runner {
        out.push(prop(
            format!("owner {owner}"),
            None,
            vec![format!("ALTER TABLE {{table}} OWNER TO {owner}")],
        ));
    }
    let (rls, force): (bool, bool) = (row.get(2), row.get(3));
    if rls {
        out.push(prop(
            "row-level security".into(),
            None,
            vec!["ALTER TABLE {table} ENABLE ROW LEVEL SECURITY".into()],
        ));
    }
    if force {
        out.push(prop(
            "forced row-level security".into(),
            None,
            vec!["ALTER TABLE {table} FORCE ROW LEVEL SECURITY".into()],
        ));
    }
    let replident: String = row.get(4);
    let replident_index: Option<String> = row.get(5);
    let identity = match (replident.as_str(), replident_index) {
        ("f", _) => Some("FULL".to_string()),
        ("n", _) => Some("NOTHING".to_string()),
        // Index names are traded before properties are carried: the incoming table's index
        // of the same definition has this name by then.
        ("i", Some(index)) => Some(format!("USING INDEX {index}")),
        _ => None,
    };
    if let Some(identity) = identity {
        out.push(prop(
            format!("replica identity {identity}"),
            None,
            vec![format!("ALTER TABLE {{table}} REPLICA IDENTITY {identity}")],
        ));
    }
    if let Some(opts) = row.get::<_, Option<String>>(6).filter(|o| !o.is_empty()) {
        out.push(prop(
            format!("storage parameters ({opts})"),
            None,
            vec![format!("ALTER TABLE {{table}} SET ({opts})")],
        ));
    }
    if let Some(comment) = row.get::<_, Option<String>>(7) {
        out.push(prop(
            "table comment".into(),
            None,
            vec![format!(
                "COMMENT ON TABLE {{table}} IS {}",
                super::sql::quote_literal(&comment)
            )],
        ));
    }
    for r in db
        .query(
            "SELECT quote_ident(p.polname), p.polname::text,
                    CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                    CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                  WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                    CASE WHEN p.polroles = '{0}' THEN 'PUBLIC'
                         ELSE (SELECT string_agg(quote_ident(rolname), ', ') FROM pg_roles
                               WHERE oid = ANY (p.polroles)) END,
                    pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
             FROM pg_policy p WHERE p.polrelid = $1 ORDER BY p.polname",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("policies"), e))?
    {
        let (quoted, name, kind, cmd, roles): (String, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let using: Option<String> = r.get(5);
        let check: Option<String> = r.get(6);
        let mut create = format!("CREATE POLICY {quoted} ON {{table}} AS {kind} FOR {cmd} TO {roles}");
        if let Some(u) = using {
            create.push_str(&format!(" USING ({u})"));
        }
        if let Some(c) = check {
            create.push_str(&format!(" WITH CHECK ({c})"));
        }
        out.push(prop(
            format!("policy {name}"),
            None,
            // A swap back finds the policy still on the table it returns to.
            vec![format!("DROP POLICY IF EXISTS {quoted} ON {{table}}"), create],
        ));
    }
    for r in db
        .query(
            "SELECT a.attname::text, quote_ident(a.attname),
                    CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
                    g.privilege_type
             FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) g
             LEFT JOIN pg_roles r ON r.oid = g.grantee
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum, 3, 4",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("column grants"), e))?
    {
        let (column, quoted, grantee, privilege): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        out.push(prop(
            format!("grant {privilege} ({column}) to {grantee}"),
            Some(column),
            vec![format!(
                "GRANT {privilege} ({quoted}) ON {{table}} TO {grantee}"
            )],
        ));
    }
    for r in db
        .query(
            "SELECT a.attname::text, quote_ident(a.attname), col_description(a.attrelid, a.attnum),
                    a.attstattarget::int4
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
               AND (col_description(a.attrelid, a.attnum) IS NOT NULL OR a.attstattarget >= 0)
             ORDER BY a.attnum",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("column comments and statistics targets"), e))?
    {
        let (column, quoted): (String, String) = (r.get(0), r.get(1));
        let comment: Option<String> = r.get(2);
        let target: i32 = r.get(3);
        if let Some(c) = comment {
            out.push(prop(
                format!("comment on column {column}"),
                Some(column.clone()),
                vec![format!(
                    "COMMENT ON COLUMN {{table}}.{quoted} IS {}",
                    super::sql::quote_literal(&c)
                )],
            ));
        }
        if target >= 0 {
            out.push(prop(
                format!("statistics target {target} on column {column}"),
                Some(column),
                vec![format!(
                    "ALTER TABLE {{table}} ALTER COLUMN {quoted} SET STATISTICS {target}"
                )],
            ));
        }
    }
    for r in db
        .query(
            "SELECT quote_ident(p.pubname), p.pubname::text FROM pg_publication_rel pr
             JOIN pg_publication p ON p.oid = pr.prpubid
             WHERE pr.prrelid = $1 AND p.pubname NOT LIKE 'splice\\_%' AND NOT p.puballtables
             ORDER BY 1",
            &[&table.oid],
        )
        .await
        .map_err(|e| EngineError::db(ctx("publications"), e))?
    {
        let (quoted, name): (String, String) = (r.get(0), r.get(1));
        out.push(prop(
            format!("membership of publication {name}"),
            None,
            // Its consumers follow the live name: the table giving it up leaves.
            vec![
                format!("ALTER PUBLICATION {quoted} DROP TABLE {{old}}"),
                format!("ALTER PUBLICATION {quoted} ADD TABLE {{table}}"),
            ],
        ));
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

/// The SQL giving each index of the tables `$1::oid[]` a shape independent of its name and its
/// table's name (access method, uniqueness, key and included columns, predicate), so the same
/// index on two tables compares equal. Columns: table oid, index name, shape, backs a
/// constraint (primary key, unique, exclusion).
const INDEX_SHAPES: &str = "
    SELECT x.indrelid, c.relname::text,
           am.amname || '|' || x.indisunique || '|' || x.indisprimary || '|' || x.indnkeyatts
             || '|' || (SELECT string_agg(pg_get_indexdef(x.indexrelid, k, true), ',' ORDER BY k)
                        FROM generate_series(1, x.indnatts) k)
             || '|' || coalesce(pg_get_expr(x.indpred, x.indrelid, true), ''),
           EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid
                   AND k.conrelid = x.indrelid)
    FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am am ON am.oid = c.relam
    WHERE x.indrelid = ANY($1::oid[])
    ORDER BY c.relname";

/// The indexes, check constraints and outgoing foreign keys of table `oid`, each with a
/// name-independent shape.
pub async fn structures(
    db: &impl GenericClient,
    oid: u32,
) -> Result<Vec<crate::catalog::Structure>, EngineError> {
    use crate::catalog::{Structure, StructureKind};
    let mut out = Vec::new();
    for r in db
        .query(INDEX_SHAPES, &[&vec![oid]])
        .await
        .map_err(|e| EngineError::db("reading the table's indexes", e))?
    {
        out.push(Structure {
            kind: StructureKind::Index,
            name: r.get(1),
            shape: r.get(2),
        });
    }
    for r in db
        .query(
            "SELECT contype::text, conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint WHERE conrelid = $1 AND contype IN ('c', 'f') ORDER BY conname",
            &[&oid],
        )
        .await
        .map_err(|e| EngineError::db("reading the table's constraints", e))?
    {
        let kind: String = r.get(0);
        let definition: String = r.get(2);
        out.push(Structure {
            kind: if kind == "f" {
                StructureKind::ForeignKey
            } else {
                StructureKind::Check
            },
            name: r.get(1),
            shape: definition.trim_end_matches(" NOT VALID").to_string(),
        });
    }
    Ok(out)
}

/// Pairs each index of `outgoing` with the index of `incoming` of the same shape and a
/// different name, one to one: (outgoing's name, incoming's name).
pub async fn matching_indexes(
    db: &impl GenericClient,
    outgoing: &QualifiedName,
    incoming: &QualifiedName,
) -> Result<Vec<(String, String)>, EngineError> {
    let oid_of = |q: &QualifiedName| {
        format!(
            "{}.{}",
            super::sql::quote_ident(&q.schema),
            super::sql::quote_ident(&q.name)
        )
    };
    let oids = db
        .query_one(
            "SELECT to_regclass($1)::oid, to_regclass($2)::oid",
            &[&oid_of(outgoing), &oid_of(incoming)],
        )
        .await
        .map_err(|e| EngineError::db("looking up the swapped tables", e))?;
    let (out_oid, in_oid): (Option<u32>, Option<u32>) = (oids.get(0), oids.get(1));
    let (Some(out_oid), Some(in_oid)) = (out_oid, in_oid) else {
        return Ok(Vec::new());
    };
    let rows = db
        .query(INDEX_SHAPES, &[&vec![out_oid, in_oid]])
        .await
        .map_err(|e| EngineError::db("reading the swapped tables' indexes", e))?;
    let mut incoming_left: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.get::<_, u32>(0) == in_oid)
        .map(|r| (r.get(1), r.get(2)))
        .collect();
    let mut pairs = Vec::new();
    for r in rows.iter().filter(|r| r.get::<_, u32>(0) == out_oid) {
        let (name, shape): (String, String) = (r.get(1), r.get(2));
        if let Some(i) = incoming_left.iter().position(|(_, s)| *s == shape) {
            let (in_name, _) = incoming_left.remove(i);
            if in_name != name {
                pairs.push((name, in_name));
            }
        }
    }
    Ok(pairs)
}
