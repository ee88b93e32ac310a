//! Month-end spend projection: month-to-date plus the current velocity for the rest of the UTC
//! calendar month (the same months the spend ledger keys on).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

/// Spend at the end of the UTC month containing `now`, in micro-dollars, if spending goes on
/// at `velocity_micro_per_sec`. Negative or non-finite velocities count as zero; the result
/// saturates instead of overflowing.
pub fn projected_month_end(mtd_micro: u64, velocity_micro_per_sec: f64, now: SystemTime) -> u64 {
    let velocity = if velocity_micro_per_sec.is_finite() {
        velocity_micro_per_sec.max(0.0)
    } else {
        0.0
    };
    let extra = velocity * until_month_end(now).as_secs_f64();
    // `as` saturates for floats out of range.
    mtd_micro.saturating_add(extra as u64)
}

/// Time from `now` to the first instant of the next UTC calendar month.
pub fn until_month_end(now: SystemTime) -> Duration {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let days = since_epoch.as_secs() / DAY;
    let (year, month, _) = civil_from_days(days);
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let end = Duration::from_secs(days_from_civil(next_year, next_month, 1) * DAY);
    end.saturating_sub(since_epoch)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date on or after the epoch.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn month_end_handles_month_lengths_leap_years_and_december() {
        assert_eq!(
            until_month_end(at("2026-01-31T00:00:00Z")),
            Duration::from_secs(DAY)
        );
        assert_eq!(
            until_month_end(at("2028-02-28T12:00:00Z")),
            Duration::from_secs(DAY + DAY / 2)
        );
        assert_eq!(
            until_month_end(at("2027-02-28T12:00:00Z")),
            Duration::from_secs(DAY / 2)
        );
        assert_eq!(
            until_month_end(at("2026-12-31T23:59:59Z")),
            Duration::from_secs(1)
        );
        assert_eq!(
            until_month_end(at("2026-04-01T00:00:00Z")),
            Duration::from_secs(30 * DAY)
        );
    }

    #[test]
    fn civil_round_trips() {
        for days in (0..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn projection_adds_velocity_for_the_rest_of_the_month() {
        // 11 days left in June at $1/h = $264 on top of $100.
        let p = projected_month_end(
            100_000_000,
            1_000_000.0 / 3600.0,
            at("2026-06-20T00:00:00Z"),
        );
        assert!((p as i64 - 364_000_000).abs() < 10, "{p}");
        assert_eq!(projected_month_end(5, 0.0, at("2026-06-20T00:00:00Z")), 5);
        assert_eq!(projected_month_end(5, -3.0, at("2026-06-20T00:00:00Z")), 5);
        assert_eq!(
            projected_month_end(5, f64::NAN, at("2026-06-20T00:00:00Z")),
            5
        );
        assert_eq!(
            projected_month_end(u64::MAX - 1, 1e30, at("2026-06-20T00:00:00Z")),
            u64::MAX
        );
    }
}
