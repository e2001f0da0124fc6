//! Human units for figures splice prints: bytes in binary units.

/// `1536` → `1.5 KiB`; under 1 KiB in bytes.
pub fn bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(13_019_136), "12.4 MiB");
    }
}
