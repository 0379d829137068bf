//! The time axis: tick positions on round local times and labels that fit the
//! range — `HH:MM` within a day, day names over days, dates over weeks and
//! month names over a year, as rrdtool and Grafana write them.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike};

/// One labelled tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub t: i64,
    pub label: String,
}

#[derive(Debug, Clone, Copy)]
enum Every {
    Secs(i64),
    Months(u32),
}

const MIN: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Candidate tick intervals, finest first.
const LADDER: [Every; 22] = [
    Every::Secs(10),
    Every::Secs(30),
    Every::Secs(MIN),
    Every::Secs(2 * MIN),
    Every::Secs(5 * MIN),
    Every::Secs(10 * MIN),
    Every::Secs(15 * MIN),
    Every::Secs(30 * MIN),
    Every::Secs(HOUR),
    Every::Secs(2 * HOUR),
    Every::Secs(3 * HOUR),
    Every::Secs(4 * HOUR),
    Every::Secs(6 * HOUR),
    Every::Secs(12 * HOUR),
    Every::Secs(DAY),
    Every::Secs(2 * DAY),
    Every::Secs(7 * DAY),
    Every::Months(1),
    Every::Months(2),
    Every::Months(3),
    Every::Months(6),
    Every::Months(12),
];

/// Ticks in (from, to] for an axis `px` pixels wide, in the zone `offset`
/// seconds east of UTC.
pub fn ticks(from: i64, to: i64, offset: i32, px: u32) -> Vec<Tick> {
    let tz = FixedOffset::east_opt(offset).unwrap_or(FixedOffset::east_opt(0).expect("UTC"));
    let span = (to - from).max(1);
    for every in LADDER {
        // Labels are about 6–7 characters; leave room between them.
        let width = match every {
            Every::Secs(s) if s < MIN => 80,
            Every::Secs(s) if s < DAY => 75,
            Every::Secs(_) => 80,
            Every::Months(_) => 50,
        };
        let max = (px / width).max(2) as i64;
        let approx = match every {
            Every::Secs(s) => s,
            Every::Months(m) => i64::from(m) * 30 * DAY,
        };
        if span / approx <= max {
            return place(from, to, &tz, every, span);
        }
    }
    place(from, to, &tz, Every::Months(12), span)
}

fn place(from: i64, to: i64, tz: &FixedOffset, every: Every, span: i64) -> Vec<Tick> {
    let mut out = Vec::new();
    match every {
        Every::Secs(step) => {
            let offset = i64::from(tz.local_minus_utc());
            // Weeks start on Monday; 1970-01-01 was a Thursday.
            let shift = if step == 7 * DAY { 4 * DAY } else { 0 };
            let mut t = (from + offset - shift).div_euclid(step) * step + shift - offset;
            while t <= to {
                if t >= from {
                    if let Some(d) = tz.timestamp_opt(t, 0).single() {
                        out.push(Tick {
                            t,
                            label: label_secs(&d, step, span),
                        });
                    }
                }
                t += step;
            }
        }
        Every::Months(n) => {
            let Some(start) = tz.timestamp_opt(from, 0).single() else {
                return out;
            };
            let (mut y, mut m) = (start.year(), start.month0());
            m -= m % n;
            for _ in 0..400 {
                let Some(d) = NaiveDate::from_ymd_opt(y, m + 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(|d| tz.from_local_datetime(&d).single())
                else {
                    break;
                };
                let t = d.timestamp();
                if t > to {
                    break;
                }
                if t >= from {
                    let label = if d.month() == 1 {
                        d.format("%Y").to_string()
                    } else {
                        d.format("%b").to_string()
                    };
                    out.push(Tick { t, label });
                }
                m += n;
                if m >= 12 {
                    m -= 12;
                    y += 1;
                }
            }
        }
    }
    out
}

fn label_secs(d: &DateTime<FixedOffset>, step: i64, span: i64) -> String {
    let midnight = d.hour() == 0 && d.minute() == 0 && d.second() == 0;
    if step < MIN {
        d.format("%H:%M:%S").to_string()
    } else if step < DAY {
        // Mark the day boundary where the range crosses one.
        if midnight && span > 6 * HOUR {
            d.format("%a %d").to_string()
        } else {
            d.format("%H:%M").to_string()
        }
    } else if step < 7 * DAY {
        d.format("%a %d").to_string()
    } else {
        d.format("%b %d").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-03-13 (a Wednesday) 12:00:00 UTC.
    const NOON: i64 = 1_710_331_200;

    fn labels(from: i64, to: i64, px: u32) -> Vec<String> {
        ticks(from, to, 0, px)
            .into_iter()
            .map(|t| t.label)
            .collect()
    }

    #[test]
    fn an_hour_gets_clock_times() {
        let l = labels(NOON - HOUR, NOON, 700);
        assert_eq!(
            l,
            ["11:00", "11:10", "11:20", "11:30", "11:40", "11:50", "12:00"]
        );
    }

    #[test]
    fn a_day_marks_midnight_with_the_day_name() {
        let l = labels(NOON - DAY, NOON, 700);
        assert!(l.contains(&"Wed 13".to_string()), "{l:?}");
        assert!(l.contains(&"15:00".to_string()), "{l:?}");
    }

    #[test]
    fn a_week_gets_day_names_and_a_year_month_names() {
        let l = labels(NOON - 7 * DAY, NOON, 700);
        assert_eq!(l.len(), 7, "{l:?}");
        assert!(l.iter().all(|s| s.len() == 6 && s.contains(' ')), "{l:?}");
        let l = labels(NOON - 365 * DAY, NOON, 700);
        assert!(
            l.contains(&"Jun".to_string()) && l.contains(&"2024".to_string()),
            "{l:?}"
        );
    }

    #[test]
    fn ticks_follow_the_zone_and_fit_the_width() {
        // UTC+2: local 14:00 is 12:00 UTC.
        let t = ticks(NOON - HOUR, NOON, 7200, 700);
        assert_eq!(t.last().unwrap().label, "14:00");
        assert_eq!(t.last().unwrap().t, NOON);
        // A narrow axis gets fewer ticks.
        assert!(ticks(NOON - DAY, NOON, 0, 200).len() <= 4);
    }
}
