//! The `application_name` every session splice opens carries (`splice sync orders_v2`), so a
//! DBA recognises splice in `pg_stat_activity` and a second runner can name the first.

/// `url` with `application_name` set to `name`, unless the URL already sets one (the user's
/// choice wins). Works for both URL forms libpq and tokio-postgres accept. A MySQL/MariaDB URL
/// stays as it is: MySQL has no application name.
pub fn with_application_name(url: &str, name: &str) -> String {
    if url.contains("application_name") || crate::db_url::is_mysql(url) {
        return url.to_string();
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}application_name={}", percent_encode(name))
    } else {
        let quoted = name.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{url} application_name='{quoted}'")
    }
}

/// The command as an application name: `splice` and the first words of the command line up
/// to the first option (never an option's value, which could hold a password), at most 63
/// bytes (PostgreSQL's limit).
pub fn of_command(words: &[&str]) -> String {
    let mut name = String::from("splice");
    for w in words.iter().filter(|w| !w.is_empty()) {
        if name.len() + 1 + w.len() > 63 {
            break;
        }
        name.push(' ');
        name.push_str(w);
    }
    name
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_url_forms_carry_the_application_name_and_a_given_one_wins() {
        assert_eq!(
            with_application_name("postgres://app@db/app", "splice sync orders_v2"),
            "postgres://app@db/app?application_name=splice%20sync%20orders_v2"
        );
        assert_eq!(
            with_application_name("postgres://db/app?sslmode=require", "splice x"),
            "postgres://db/app?sslmode=require&application_name=splice%20x"
        );
        assert_eq!(
            with_application_name("host=db dbname=app", "splice it's"),
            "host=db dbname=app application_name='splice it\\'s'"
        );
        assert_eq!(
            with_application_name("postgres://db/app?application_name=mine", "splice x"),
            "postgres://db/app?application_name=mine"
        );
        assert_eq!(
            with_application_name("mysql://app@db/shop", "splice x"),
            "mysql://app@db/shop"
        );
    }

    #[test]
    fn a_long_command_is_cut_at_a_word_within_63_bytes() {
        assert_eq!(of_command(&["sync", "orders_v2"]), "splice sync orders_v2");
        assert_eq!(of_command(&["status", ""]), "splice status");
        let long = "x".repeat(60);
        assert_eq!(of_command(&["sync", &long]), "splice sync");
    }
}
