//! What the daemon runs: the command line merged with an optional config file (TOML). The
//! command line wins; migration files named on it use the command line's database.

use crate::db_url;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default `--listen`: loopback only, so nothing is exposed without a decision.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
/// The default time between two verify passes (the first full, the next incremental).
pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(300);

/// The config file (`--config FILE`). Every key is optional; paths are relative to the file.
///
/// ```toml
/// listen = "0.0.0.0:9187"
/// token_file = "/etc/splice/token"
/// database_url = "postgres://splice@db.internal/app"
/// verify_interval = "5m"
///
/// [[migration]]
/// file = "orders_v2.toml"
/// database_url = "postgres://splice@other.internal/app"   # optional, per migration
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    pub database_url: Option<String>,
    pub verify_interval: Option<String>,
    #[serde(default, rename = "migration")]
    pub migrations: Vec<MigrationEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationEntry {
    pub file: PathBuf,
    pub database_url: Option<String>,
}

/// One migration the daemon drives: its file and the database it runs in.
#[derive(Debug, Clone)]
pub struct MigrationSource {
    pub file: PathBuf,
    pub database_url: String,
}

/// Everything the daemon needs to start.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub verify_interval: Duration,
    pub migrations: Vec<MigrationSource>,
}

/// What the command line said (before the config file is merged in).
pub struct CommandLine {
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub database_url: Option<String>,
    pub verify_interval: Option<Duration>,
    pub files: Vec<PathBuf>,
}

impl Settings {
    /// Merges the command line with the config file it names; every error says what to fix.
    pub fn resolve(cli: CommandLine) -> Result<Settings, String> {
        let (file, base) = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                let file: ConfigFile = toml::from_str(&text)
                    .map_err(|e| format!("config file {}: {e}", path.display()))?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (file, base)
            }
            None => (ConfigFile::default(), PathBuf::new()),
        };
        let listen_text = cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            format!("--listen {listen_text:?} is not an address; write e.g. 127.0.0.1:9187")
        })?;
        let verify_interval = match (cli.verify_interval, &file.verify_interval) {
            (Some(d), _) => d,
            (None, Some(text)) => crate::duration::parse_duration(text)
                .map_err(|e| format!("config file: verify_interval: {e}"))?,
            (None, None) => DEFAULT_VERIFY_INTERVAL,
        };
        let token_file = cli
            .token_file
            .or_else(|| file.token_file.as_ref().map(|p| base.join(p)));
        let token = match token_file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    return Err(format!("token file {} is empty", path.display()));
                }
                Some(token)
            }
            None => None,
        };
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(format!(
                "--listen {listen} is beyond localhost: give a bearer token with --token-file \
                 FILE (control endpoints then require `Authorization: Bearer <token>`), or \
                 listen on 127.0.0.1"
            ));
        }
        // The database of the command line (flag, then environment); the config file's
        // `database_url` when neither is given.
        let default_url = db_url::resolve(cli.database_url.clone())
            .or_else(|e| file.database_url.clone().ok_or(e));
        let mut migrations = Vec::new();
        for entry in file.migrations {
            let database_url = match entry.database_url {
                Some(url) => url,
                None => default_url.clone()?,
            };
            migrations.push(MigrationSource {
                file: base.join(entry.file),
                database_url,
            });
        }
        for file in cli.files {
            let database_url = default_url.clone()?;
            migrations.push(MigrationSource { file, database_url });
        }
        if migrations.is_empty() {
            return Err(
                "no migration to drive: name migration files (splice daemon migrations/orders_v2.toml) \
                 or list them in the config file's [[migration]] tables"
                    .into(),
            );
        }
        Ok(Settings {
            listen,
            token,
            verify_interval,
            migrations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(files: &[&str]) -> CommandLine {
        CommandLine {
            listen: None,
            config: None,
            token_file: None,
            database_url: Some("postgres://cli/db".into()),
            verify_interval: None,
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn listening_beyond_localhost_without_a_token_is_refused() {
        let mut c = cli(&["m.toml"]);
        c.listen = Some("0.0.0.0:9187".into());
        let err = Settings::resolve(c).expect_err("refused");
        assert!(err.contains("--token-file"), "{err}");
    }

    #[test]
    fn the_defaults_listen_on_loopback_and_verify_every_five_minutes() {
        let s = Settings::resolve(cli(&["m.toml"])).expect("resolves");
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.verify_interval, DEFAULT_VERIFY_INTERVAL);
        assert_eq!(s.migrations[0].database_url, "postgres://cli/db");
    }

    #[test]
    fn config_file_migrations_are_relative_to_it_and_may_name_their_own_database() {
        let dir = std::env::temp_dir().join(format!("splice-daemon-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("daemon.toml");
        std::fs::write(
            &path,
            "verify_interval = \"30s\"\n[[migration]]\nfile = \"a.toml\"\n\
             [[migration]]\nfile = \"b.toml\"\ndatabase_url = \"postgres://other/db\"\n",
        )
        .expect("write");
        let mut c = cli(&[]);
        c.config = Some(path);
        let s = Settings::resolve(c).expect("resolves");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.verify_interval, Duration::from_secs(30));
        assert_eq!(s.migrations.len(), 2);
        assert_eq!(s.migrations[0].file, dir.join("a.toml"));
        assert_eq!(s.migrations[0].database_url, "postgres://cli/db");
        assert_eq!(s.migrations[1].database_url, "postgres://other/db");
    }

    #[test]
    fn no_migration_at_all_is_a_usage_error() {
        let err = Settings::resolve(cli(&[])).expect_err("nothing to do");
        assert!(err.contains("no migration"), "{err}");
    }
}
