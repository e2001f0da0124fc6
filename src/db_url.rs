//! Where the database URL comes from: `--database-url`, else `SPLICE_DATABASE_URL`, else
//! `DATABASE_URL`, else libpq's `PGHOST`/`PGPORT`/`PGUSER`/`PGDATABASE` (when `PGHOST` or
//! `PGDATABASE` is set). Passwords, TLS settings and the password file are read when
//! connecting (`cdc::PgTarget`), the same way for every source of the URL.

/// The URL to connect to, or an error that says how to give one.
pub fn resolve(flag: Option<String>) -> Result<String, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    resolve_in(flag, &env)
}

fn resolve_in(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    flag.filter(|v| !v.trim().is_empty())
        .or_else(|| env("SPLICE_DATABASE_URL"))
        .or_else(|| env("DATABASE_URL"))
        .or_else(|| from_pg_env(env))
        .ok_or_else(|| {
            "no database given: pass --database-url postgres://USER@HOST/DB (or \
             mysql://USER@HOST:3306/), or set SPLICE_DATABASE_URL (or DATABASE_URL, or \
             PGHOST/PGDATABASE)"
                .to_string()
        })
}

/// Whether `url` names a MySQL/MariaDB server (`mysql://`, `mariadb://`).
pub fn is_mysql(url: &str) -> bool {
    let url = url.trim_start().to_ascii_lowercase();
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

/// The server `url` names, as shown to people (host, port and database; never a password).
pub fn describe(url: &str) -> Result<String, String> {
    if is_mysql(url) {
        cdc::mysql::MySqlTarget::from_url(url)
            .map(|t| t.describe())
            .map_err(|e| e.to_string())
    } else {
        cdc::PgTarget::from_url(url)
            .map(|t| t.describe())
            .map_err(|e| e.to_string())
    }
}

/// A libpq key=value string from the PG* variables, if `PGHOST` or `PGDATABASE` is set.
fn from_pg_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if env("PGHOST").is_none() && env("PGDATABASE").is_none() {
        return None;
    }
    let parts: Vec<String> = [
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
    ]
    .iter()
    .filter_map(|(key, var)| {
        let value = env(var)?;
        let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
        Some(format!("{key}='{quoted}'"))
    })
    .collect();
    Some(parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_flag_wins_then_splice_database_url_then_database_url() {
        let env = env_of(&[
            ("SPLICE_DATABASE_URL", "postgres://splice"),
            ("DATABASE_URL", "postgres://generic"),
            ("PGHOST", "pghost"),
        ]);
        assert_eq!(
            resolve_in(Some("postgres://flag".into()), &env).as_deref(),
            Ok("postgres://flag")
        );
        assert_eq!(resolve_in(None, &env).as_deref(), Ok("postgres://splice"));
        let env = env_of(&[("DATABASE_URL", "postgres://generic"), ("PGHOST", "h")]);
        assert_eq!(resolve_in(None, &env).as_deref(), Ok("postgres://generic"));
    }

    #[test]
    fn pg_variables_make_a_connection_string_when_no_url_is_given() {
        let env = env_of(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6432"),
            ("PGUSER", "o'brien"),
            ("PGDATABASE", "app"),
            ("PGPASSWORD", "never-in-the-url"),
        ]);
        let url = resolve_in(None, &env).expect("built from PG*");
        assert_eq!(
            url,
            "host='db.internal' port='6432' user='o\\'brien' dbname='app'"
        );
        let target = cdc::PgTarget::from_url_in(&url, &env).expect("parses");
        assert_eq!(target.describe(), "db.internal:6432/app");
        assert_eq!(target.config().get_user(), Some("o'brien"));
    }

    #[test]
    fn mysql_urls_are_told_apart() {
        assert!(is_mysql("mysql://app@db/shop"));
        assert!(is_mysql("MariaDB://app@db/"));
        assert!(!is_mysql("postgres://app@db/app"));
        assert!(!is_mysql("host=db dbname=mysql"));
    }

    #[test]
    fn pguser_alone_is_not_a_database() {
        let env = env_of(&[("PGUSER", "app")]);
        let err = resolve_in(None, &env).expect_err("no host or database");
        assert!(err.contains("PGHOST"), "{err}");
    }
}
