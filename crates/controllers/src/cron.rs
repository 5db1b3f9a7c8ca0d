//! Cron schedules: the five standard fields (minute hour day-of-month month day-of-week) with
//! `*`, `?`, lists, ranges, steps, month and weekday names, and the @hourly/@daily/...
//! macros. Day-of-month and day-of-week restrict together with OR, as in cron.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    dom: Vec<bool>,
    months: Vec<bool>,
    dow: Vec<bool>,
    dom_star: bool,
    dow_star: bool,
}

fn field(spec: &str, min: u32, max: u32, names: &[&str]) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; (max + 1) as usize];
    let star = spec == "*" || spec == "?";
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("invalid step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("step must be positive".into());
        }
        let value = |s: &str| -> Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
                return Ok(i as u32 + min);
            }
            s.parse::<u32>().map_err(|_| format!("invalid value {s:?}"))
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("value out of range in {spec:?}"));
        }
        let mut v = lo;
        while v <= hi {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok((set, star))
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!("expected exactly 5 fields, found {}: {s}", f.len()));
        }
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (minutes, _) = field(f[0], 0, 59, &[])?;
        let (hours, _) = field(f[1], 0, 23, &[])?;
        let (dom, dom_star) = field(f[2], 1, 31, &[])?;
        let (months, _) = field(f[3], 1, 12, &months)?;
        // Day of week 7 is Sunday too.
        let (mut dow, dow_star) = field(f[4], 0, 7, &days)?;
        if dow[7] {
            dow[0] = true;
        }
        dow.truncate(7);
        Ok(Schedule { minutes, hours, dom, months, dow, dom_star, dow_star })
    }

    fn matches(&self, t: &DateTime<Utc>) -> bool {
        let day_ok = {
            let d = self.dom[t.day() as usize];
            let w = self.dow[t.weekday().num_days_from_sunday() as usize];
            match (self.dom_star, self.dow_star) {
                (true, true) => true,
                (true, false) => w,
                (false, true) => d,
                (false, false) => d || w,
            }
        };
        self.minutes[t.minute() as usize] && self.hours[t.hour() as usize] && self.months[t.month() as usize] && day_ok
    }

    /// The first scheduled time strictly after `after` (minute precision), within ~5 years.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        for _ in 0..(5 * 366 * 24 * 60) {
            if self.matches(&t) {
                return Some(t);
            }
            // Skip whole hours/days that cannot match, to keep this cheap.
            if !self.months[t.month() as usize] || !self.hours[t.hour() as usize] {
                t = t.with_minute(0)? + Duration::hours(1);
                continue;
            }
            t += Duration::minutes(1);
        }
        None
    }

    /// The latest scheduled time in (after, until], if any.
    pub fn last_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut last = None;
        let mut t = after;
        let mut n = 0;
        while let Some(next) = self.next_after(t) {
            if next > until {
                break;
            }
            last = Some(next);
            t = next;
            n += 1;
            if n > 100 {
                // Too many missed runs: upstream gives up counting too; take the latest.
                return self.last_between(until - Duration::minutes(61), until).or(last);
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_and_steps() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 7, 0).unwrap(); // a Friday
        assert_eq!(s.next_after(t).unwrap(), Utc.with_ymd_and_hms(2026, 11, 27, 9, 15, 0).unwrap());
        let late = Utc.with_ymd_and_hms(2026, 11, 27, 17, 50, 0).unwrap();
        assert_eq!(s.next_after(late).unwrap(), Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap());
        assert!(Schedule::parse("* * *").is_err());
        // 7 is Sunday, in ranges too (2026-11-28 is a Saturday).
        let sat_noon = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let sunday = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        assert_eq!(Schedule::parse("0 0 * * 7").unwrap().next_after(sat_noon).unwrap(), sunday);
        assert_eq!(Schedule::parse("0 0 * * 1-7").unwrap().next_after(sat_noon).unwrap(), sunday);
        assert_eq!(Schedule::parse("0 0 * * sun").unwrap().next_after(sat_noon).unwrap(), sunday);
        assert!(Schedule::parse("61 * * * *").is_err());
        assert_eq!(Schedule::parse("@hourly").unwrap(), Schedule::parse("0 * * * *").unwrap());
    }

    #[test]
    fn last_missed_run() {
        let s = Schedule::parse("* * * * *").unwrap();
        let a = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 30).unwrap();
        let b = Utc.with_ymd_and_hms(2026, 1, 1, 0, 3, 10).unwrap();
        assert_eq!(s.last_between(a, b).unwrap(), Utc.with_ymd_and_hms(2026, 1, 1, 0, 3, 0).unwrap());
        assert!(s.last_between(a, a + Duration::seconds(20)).is_none());
    }
}
