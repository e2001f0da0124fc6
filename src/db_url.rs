//! Where the database URL comes from: `--database-url`, else `SPLICE_DATABASE_URL`, else
//! `DATABASE_URL`.

/// The URL to connect to, or an error that says how to give one.
pub fn resolve(flag: Option<String>) -> Result<String, String> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    flag.filter(|v| !v.trim().is_empty())
        .or_else(|| from_env("SPLICE_DATABASE_URL"))
        .or_else(|| from_env("DATABASE_URL"))
        .ok_or_else(|| {
            "no database given: pass --database-url postgres://USER@HOST/DB, or set \
             SPLICE_DATABASE_URL (or DATABASE_URL)"
                .to_string()
        })
}
