//! `alter` migrations end to end through the binary, against a real PostgreSQL: a wide table
//! with indexes of every kind, constraints, an enum, function defaults, an outgoing and 20
//! incoming foreign keys, migrated with a one-line ALTER under write load; and a `target` that
//! leaves an index out.

mod common;
use common::text;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::Postgres;

const SCHEMA: &str = "
CREATE EXTENSION pg_trgm;
CREATE TYPE community_kind AS ENUM ('open', 'closed', 'secret');
CREATE TABLE owners (id bigint PRIMARY KEY);
INSERT INTO owners SELECT g FROM generate_series(1, 50) g;
CREATE TABLE community (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text NOT NULL,
    title       varchar(50) NOT NULL,
    kind        community_kind NOT NULL DEFAULT 'open',
    owner_id    bigint NOT NULL REFERENCES owners (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    token       uuid NOT NULL DEFAULT gen_random_uuid(),
    score       numeric(10, 2) NOT NULL DEFAULT 0 CHECK (score >= 0),
    email       text,
    tags        text[] NOT NULL DEFAULT '{}',
    deleted_at  timestamptz,
    CONSTRAINT community_slug_key UNIQUE (slug),
    CONSTRAINT community_token_key UNIQUE (token),
    CONSTRAINT community_title_check CHECK (length(title) > 0)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05);
COMMENT ON TABLE community IS 'one row per community';
COMMENT ON COLUMN community.slug IS 'the URL name';
CREATE UNIQUE INDEX community_email_live ON community (lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX community_owner_created ON community (owner_id, created_at DESC) INCLUDE (title);
CREATE INDEX community_title_trgm ON community USING gin (title gin_trgm_ops);
CREATE INDEX community_tags ON community USING gin (tags);
CREATE INDEX community_live ON community (created_at) WHERE deleted_at IS NULL;
CREATE INDEX community_kind_idx ON community USING hash (kind);
INSERT INTO community (slug, title, kind, owner_id, email, tags, deleted_at)
SELECT 'c' || g, 'Community ' || g, (ARRAY['open','closed','secret'])[1 + g % 3]::community_kind,
       1 + g % 50, CASE WHEN g % 4 = 0 THEN NULL ELSE 'u' || g || '@example.com' END,
       ARRAY['t' || g % 7], CASE WHEN g % 10 = 0 THEN now() END
FROM generate_series(1, 3000) g;
";

/// Indexes and constraints of `community`, by definition with the table's name normalised.
const STRUCTURE: &str = "
SELECT string_agg(d, E'\n' ORDER BY d) FROM (
  SELECT 'index ' || indexname || ': ' ||
         regexp_replace(indexdef, 'ON public\\.\\S+ ', 'ON t ') AS d
  FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'community'
  UNION ALL
  SELECT 'constraint ' || conname || ' ' || convalidated || ': ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE conrelid = 'public.community'::regclass
) s";

struct Env {
    pg: Postgres,
    dir: std::path::PathBuf,
}

impl Env {
    fn new() -> Env {
        let pg = Postgres::start().expect("start PostgreSQL");
        pg.psql(SCHEMA).expect("schema");
        let mut fks = String::new();
        for i in 1..=20 {
            fks.push_str(&format!(
                "CREATE TABLE member_{i} (id bigint PRIMARY KEY, community_id bigint REFERENCES community (id));
                 INSERT INTO member_{i} SELECT g, 1 + g % 3000 FROM generate_series(1, 20) g;"
            ));
        }
        pg.psql(&fks).expect("incoming foreign keys");
        let dir =
            std::env::temp_dir().join(format!("splice-alter-{}-{}", std::process::id(), pg.port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Env { pg, dir }
    }

    fn splice(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_splice"))
            .args(args)
            .current_dir(&self.dir)
            .env("SPLICE_DATABASE_URL", self.pg.url())
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .output()
            .expect("run splice")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.splice(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(&self, file: &str, body: &str) {
        std::fs::write(self.dir.join(file), body).expect("write migration");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The application: updates, inserts and deletes on `community` until `stop`.
fn load(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let db = testkit::connect(&url).await.expect("connect");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = 1 + (n * 7919) % 3000;
                let sql = match n % 4 {
                    0 | 1 => format!("UPDATE community SET score = score + 1, title = 'T{n}' WHERE id = {id}"),
                    2 => format!(
                        "INSERT INTO community (slug, title, owner_id) VALUES ('n{n}', 'New {n}', 1 + {n} % 50)"
                    ),
                    _ => format!("UPDATE community SET deleted_at = now() WHERE id = {id}"),
                };
                let _ = db.batch_execute(&sql).await;
                n += 1;
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            n
        })
    })
}

#[test]
fn a_one_line_alter_keeps_every_index_constraint_and_property_through_cutover() {
    let env = Env::new();
    let before = env.pg.psql(STRUCTURE).expect("structure before");
    assert!(
        before.contains(
            "index community_title_trgm: CREATE INDEX community_title_trgm ON t USING gin"
        ) && before.contains("constraint community_owner_id_fkey true"),
        "{before}"
    );
    env.write(
        "widen.toml",
        "name = \"widen_title\"\ntable = \"public.community\"\n\
         alter = \"ALTER TABLE community ALTER COLUMN title TYPE varchar(200)\"\n",
    );
    let plan = env.ok(&["plan", "widen.toml"]);
    assert!(
        plan.contains("LIKE \"public\".\"community\" INCLUDING ALL"),
        "{plan}"
    );
    assert!(!plan.contains("NOT CARRIED"), "{plan}");

    let stop = Arc::new(AtomicBool::new(false));
    let app = load(env.pg.url(), stop.clone());
    env.ok(&["expand", "widen.toml"]);
    // The copy maintains only the indexes its upserts and constraints need; the six
    // secondary ones are built in bulk once it is done.
    let at_expand = env
        .pg
        .psql("SELECT count(*) FROM pg_indexes WHERE tablename = '_splice_widen_title_new'")
        .expect("indexes");
    assert_eq!(at_expand, "3");
    let synced = env.ok(&["sync", "widen_title", "--until-caught-up"]);
    assert!(synced.contains("built 6 deferred index(es)"), "{synced}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        env.ok(&["sync", "widen_title", "--until-caught-up"]);
        if env.splice(&["verify", "widen_title"]).status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "verify never passed");
    }
    env.ok(&["cutover", "widen_title"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let writes = app.join().expect("load");
    assert!(writes > 100, "the application ran ({writes} statements)");
    env.ok(&["sync", "widen_title", "--until-caught-up"]);

    // The one change: the column's type. Everything else, names included, is as it was.
    let title_type = env
        .pg
        .psql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.community'::regclass AND attname = 'title'")
        .expect("type");
    assert_eq!(title_type, "character varying(200)");
    let after = env.pg.psql(STRUCTURE).expect("structure after");
    assert_eq!(after, before, "indexes and constraints after cutover");
    let props = env
        .pg
        .psql(
            "SELECT array_to_string(reloptions, ',') || ' | ' || obj_description(oid, 'pg_class') || ' | ' ||
                    col_description(oid, 2) FROM pg_class WHERE oid = 'public.community'::regclass",
        )
        .expect("properties");
    assert_eq!(
        props,
        "fillfactor=80,autovacuum_vacuum_scale_factor=0.05 | one row per community | the URL name"
    );
    // The 20 incoming foreign keys point at the new table and are validated.
    let incoming = env
        .pg
        .psql(
            "SELECT count(*) FILTER (WHERE convalidated) || '/' || count(*) FROM pg_constraint
             WHERE confrelid = 'public.community'::regclass AND contype = 'f'",
        )
        .expect("incoming");
    assert_eq!(incoming, "20/20");
    // Identity continues past the highest key.
    env.pg
        .psql("INSERT INTO community (slug, title, owner_id) VALUES ('after', 'After', 1)")
        .expect("insert after cutover");
    // Every row matches the old table.
    let differing = env
        .pg
        .psql(
            "SELECT count(*) FROM public._splice_widen_title_old o FULL JOIN public.community n USING (id)
             WHERE (o.slug, o.title::text, o.kind, o.owner_id, o.created_at, o.token, o.score, o.email, o.tags, o.deleted_at)
                   IS DISTINCT FROM (n.slug, n.title::text, n.kind, n.owner_id, n.created_at, n.token, n.score, n.email, n.tags, n.deleted_at)
               AND n.slug IS DISTINCT FROM 'after'",
        )
        .expect("compare");
    assert_eq!(differing, "0");

    // Rollback swaps the names back too.
    env.ok(&["rollback", "widen_title"]);
    let back = env.pg.psql(STRUCTURE).expect("structure after rollback");
    assert_eq!(back, before, "indexes and constraints after rollback");
}

#[test]
fn a_target_that_leaves_an_index_out_is_named_by_plan_and_refused_unless_declared() {
    let env = Env::new();
    let target = "name = \"narrow\"\ntable = \"public.community\"\ntarget = \"\"\"
CREATE TABLE community (
    id bigint PRIMARY KEY, slug text NOT NULL, title varchar(200) NOT NULL,
    kind community_kind NOT NULL DEFAULT 'open', owner_id bigint NOT NULL REFERENCES owners (id),
    created_at timestamptz NOT NULL DEFAULT now(), token uuid NOT NULL DEFAULT gen_random_uuid(),
    score numeric(10, 2) NOT NULL DEFAULT 0 CHECK (score >= 0), email text,
    tags text[] NOT NULL DEFAULT '{}', deleted_at timestamptz
)\"\"\"\n";
    env.write("narrow.toml", target);
    let out = env.splice(&["plan", "narrow.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    for missing in [
        "index community_slug_key",
        "index community_email_live",
        "index community_title_trgm",
        "check constraint community_title_check",
    ] {
        assert!(plan.contains(missing), "plan names {missing}: {plan}");
    }
    assert!(
        !plan.contains("index community_pkey"),
        "the key is there: {plan}"
    );
    let out = env.splice(&["expand", "narrow.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("drop_indexes"),
        "{}",
        text(&out)
    );
    // Declared on purpose, the same target passes.
    let declared = target.replace(
        "target = ",
        "drop_indexes = [\"community_slug_key\", \"community_token_key\", \"community_email_live\", \
         \"community_owner_created\", \"community_title_trgm\", \"community_tags\", \"community_live\", \
         \"community_kind_idx\"]\ndrop_constraints = [\"community_title_check\"]\ntarget = ",
    );
    env.write("narrow.toml", &declared);
    let plan = env.ok(&["plan", "narrow.toml"]);
    assert!(plan.contains("dropped on purpose"), "{plan}");
    env.ok(&["expand", "narrow.toml"]);
}

#[test]
fn splice_new_writes_the_migration_a_lint_error_suggests_and_it_plans() {
    let env = Env::new();
    // The linter's help names the command that runs the flagged ALTER online.
    let sql = env.dir.join("001_widen.sql");
    std::fs::write(
        &sql,
        "SET lock_timeout = '2s';\nALTER TABLE community ALTER COLUMN title TYPE varchar(200);\n",
    )
    .expect("write sql");
    let out = env.splice(&["lint", "001_widen.sql"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lint = String::from_utf8_lossy(&out.stdout);
    let suggested =
        "splice new <name> --alter 'ALTER TABLE community ALTER COLUMN title TYPE varchar(200)'";
    assert!(lint.contains(suggested), "{lint}");

    env.ok(&[
        "new",
        "widen_title",
        "--alter",
        "ALTER TABLE community ALTER COLUMN title TYPE varchar(200)",
    ]);
    let plan = env.ok(&["plan", "widen_title.toml"]);
    assert!(
        plan.contains("TYPE VARCHAR(200)") || plan.contains("TYPE varchar(200)"),
        "{plan}"
    );
    // A second `new` does not overwrite the file.
    let out = env.splice(&[
        "new",
        "widen_title",
        "--alter",
        "ALTER TABLE community ADD COLUMN x int",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}
