//! Resource quantities ("100m", "64Mi", "1.5Gi", "2", "1e3"): parsing to numbers and writing
//! them back in canonical form, for admission and controllers that do arithmetic on them.

/// Parses a quantity into a plain number (cores, bytes, counts).
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with('e') || e.starts_with('E') => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Thousandths of a quantity (cpu in millicores), rounded up as upstream's MilliValue.
pub fn parse_milli(s: &str) -> Option<i64> {
    parse(s).map(|v| (v * 1000.0 - 1e-9).ceil() as i64)
}

/// Writes thousandths back: whole numbers plainly ("2"), else with the `m` suffix ("500m");
/// values that are whole multiples of a binary unit with it ("64Mi", "1Gi").
pub fn format_milli(m: i64) -> String {
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let v = m / 1000;
    if v != 0 {
        for (suffix, unit) in [("Ei", 1i64 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("64Mi"), Some(64 * 1048576 * 1000));
        assert_eq!(format_milli(500), "500m");
        assert_eq!(format_milli(2000), "2");
        assert_eq!(format_milli(64 * 1048576 * 1000), "64Mi");
        assert_eq!(format_milli(1000 * 1000), "1000");
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("x"), None);
    }
}
