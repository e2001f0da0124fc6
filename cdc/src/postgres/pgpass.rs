//! The libpq password file (`~/.pgpass`, or `PGPASSFILE`): one `host:port:database:user:password`
//! a line, `*` matches anything, `\:` and `\\` escape, the first matching line wins.

use std::path::{Path, PathBuf};

/// What a password is looked up for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PgpassQuery<'a> {
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// `PGPASSFILE`, else `$HOME/.pgpass`.
pub(crate) fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".pgpass")))
}

/// The password for `query` from the file at `path`, if the file exists, is private to its
/// owner (libpq ignores a group- or world-readable file, with a warning, and so do we) and has
/// a matching line.
pub(crate) fn password_from_file(path: &Path, query: &PgpassQuery<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access and is ignored; \
                 run chmod 0600 {} to use it",
                path.display(),
                path.display()
            );
            return None;
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => lookup(&text, query),
        Err(e) => {
            tracing::warn!("cannot read password file {}: {e}", path.display());
            None
        }
    }
}

/// The password of the first line of `text` that matches `query`.
pub(crate) fn lookup(text: &str, query: &PgpassQuery<'_>) -> Option<String> {
    let port = query.port.to_string();
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let fields = split_fields(line)?;
            let matches = |field: &str, value: &str| field == "*" || field == value;
            (matches(&fields[0], query.host)
                && matches(&fields[1], &port)
                && matches(&fields[2], query.database)
                && matches(&fields[3], query.user))
            .then(|| fields[4].clone())
        })
}

/// The five fields of a line, unescaped; the password is the rest of the line. `None` for a
/// line with fewer than five fields.
fn split_fields(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = Vec::with_capacity(5);
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    current.push(escaped);
                }
            }
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query<'a>(host: &'a str, port: u16, database: &'a str, user: &'a str) -> PgpassQuery<'a> {
        PgpassQuery {
            host,
            port,
            database,
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_and_stars_match_anything() {
        let text = "# comment\n\
                    db.example.com:5432:app:alice:first\n\
                    *:*:app:alice:second\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            lookup(text, &query("db.example.com", 5432, "app", "alice")).as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, &query("other", 6543, "app", "alice")).as_deref(),
            Some("second")
        );
        assert_eq!(
            lookup(text, &query("other", 6543, "postgres", "bob")).as_deref(),
            Some("fallback")
        );
    }

    #[test]
    fn no_matching_line_means_no_password() {
        let text = "db:5432:app:alice:pw\n";
        assert_eq!(lookup(text, &query("db", 5433, "app", "alice")), None);
        assert_eq!(lookup(text, &query("db", 5432, "app", "bob")), None);
        assert_eq!(
            lookup("too:few:fields\n", &query("too", 5432, "x", "y")),
            None
        );
    }

    #[test]
    fn escaped_colons_and_backslashes_are_literal_and_the_password_keeps_its_colons() {
        let text = "h\\:x:5432:d\\\\b:u:pa\\:ss:word\n";
        assert_eq!(
            lookup(text, &query("h:x", 5432, "d\\b", "u")).as_deref(),
            Some("pa:ss:word")
        );
    }

    #[test]
    fn a_file_readable_by_others_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("splice-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").expect("write");
        let q = query("h", 5432, "d", "u");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(password_from_file(&path, &q), None);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(password_from_file(&path, &q).as_deref(), Some("secret"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pgpassfile_overrides_the_home_default() {
        let env = |k: &str| match k {
            "PGPASSFILE" => Some("/etc/splice/pgpass".to_string()),
            "HOME" => Some("/home/a".to_string()),
            _ => None,
        };
        assert_eq!(
            default_path(&env),
            Some(PathBuf::from("/etc/splice/pgpass"))
        );
        let env = |k: &str| (k == "HOME").then(|| "/home/a".to_string());
        assert_eq!(default_path(&env), Some(PathBuf::from("/home/a/.pgpass")));
    }
}
