//! Number formatting shared by the report views.

/// `0.8734` -> `87.34%`; `-` for a non-finite value.
pub(super) fn pct(fraction: f64) -> String {
    if fraction.is_finite() {
        crate::table::pct(fraction)
    } else {
        "-".into()
    }
}

/// Optional fraction as a percentage, `-` when absent.
pub(super) fn opt_pct(fraction: Option<f64>) -> String {
    fraction.map_or_else(|| "-".into(), pct)
}

/// Wall time: `0.42 s`, `12.3 s`, `4 m 05 s`, `1 h 02 m`.
pub(super) fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        let s = seconds.round() as u64;
        format!("{} m {:02} s", s / 60, s % 60)
    } else {
        let m = (seconds / 60.0).round() as u64;
        format!("{} h {:02} m", m / 60, m % 60)
    }
}

/// A count with an SI suffix: `950`, `45.1 k`, `1.23 M`, `4.56 G`.
pub(super) fn count(n: u64) -> String {
    let v = n as f64;
    let scaled = |v: f64, unit: &str| {
        if v >= 100.0 {
            format!("{v:.0} {unit}")
        } else if v >= 10.0 {
            format!("{v:.1} {unit}")
        } else {
            format!("{v:.2} {unit}")
        }
    };
    if n < 1_000 {
        n.to_string()
    } else if n < 1_000_000 {
        scaled(v / 1e3, "k")
    } else if n < 1_000_000_000 {
        scaled(v / 1e6, "M")
    } else {
        scaled(v / 1e9, "G")
    }
}

/// A file size: `512 B`, `180.2 KiB`, `4.71 MiB`.
pub(super) fn bytes(n: u64) -> String {
    let v = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{:.2} MiB", v / (1024.0 * 1024.0))
    }
}

/// Milliseconds with three significant digits (at most three decimals).
pub(super) fn ms(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An axis tick: at most three significant digits, no trailing zeros (`0.1`, `2.5`, `100`).
pub(super) fn tick(v: f64) -> String {
    let s = ms(v);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A logit difference: `0` when exactly zero, else scientific (`2.1e-6`).
pub(super) fn diff(v: f32) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.is_finite() {
        format!("{v:.1e}")
    } else {
        v.to_string()
    }
}

/// A file-name-safe slug: lowercase ASCII letters and digits, other runs become one `-`.
pub(super) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "stage".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_compact() {
        assert_eq!(duration(0.5), "0.50 s");
        assert_eq!(duration(42.0), "42.0 s");
        assert_eq!(duration(245.0), "4 m 05 s");
        assert_eq!(duration(3720.0), "1 h 02 m");
        assert_eq!(count(950), "950");
        assert_eq!(count(45_100), "45.1 k");
        assert_eq!(count(1_234_567), "1.23 M");
        assert_eq!(bytes(184_525), "180.2 KiB");
        assert_eq!(ms(0.4321), "0.432");
        assert_eq!(ms(12.345), "12.3");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(250.0), "250");
        assert_eq!(diff(0.0), "0");
        assert_eq!(diff(2.1e-6), "2.1e-6");
        assert_eq!(slug("Student InDistill (b=3)"), "student-indistill-b-3");
        assert_eq!(slug("!!"), "stage");
    }
}
