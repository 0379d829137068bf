//! Syslog severity and facility (RFC 5424 §6.2.1), as typed values.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// How urgent a log record is, from `Emerg` (0) to `Debug` (7).
///
/// The order is the numeric one, so *more severe is smaller*: a filter
/// "least severe level to include" of `min` keeps a record when
/// `severity <= min` (see [`Severity::is_at_least`]).
///
/// On the wire (JSON) a severity is its number; when deserializing, the
/// names accepted by [`FromStr`] are taken too, so configuration files can say
/// `"warning"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 8] = [
        Severity::Emerg,
        Severity::Alert,
        Severity::Crit,
        Severity::Err,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];

    /// What a message that carries no priority counts as: RFC 3164 §4.3.3
    /// has a relay give such a message PRI 13, user.notice.
    pub const DEFAULT: Severity = Severity::Notice;

    /// The severity with this number, `None` outside 0–7.
    pub fn from_u8(n: u8) -> Option<Severity> {
        Severity::ALL.get(usize::from(n)).copied()
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The canonical (syslog.conf) name: `emerg`, `alert`, `crit`, `err`,
    /// `warning`, `notice`, `info`, `debug`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Emerg => "emerg",
            Severity::Alert => "alert",
            Severity::Crit => "crit",
            Severity::Err => "err",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }

    /// `true` when `self` is `least_severe` or more severe than it: the test
    /// of a "least severe level to include" filter.
    pub fn is_at_least(self, least_severe: Severity) -> bool {
        self <= least_severe
    }
}

/// A severity or facility name (or number) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error(
        "unknown severity {0:?}: expected a number 0-7 or one of emerg, alert, crit, err, \
         warning, notice, info, debug (also error, warn, panic)"
    )]
    Severity(String),
    #[error(
        "unknown facility {0:?}: expected a number 0-23 or one of kern, user, mail, daemon, \
         auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, audit, alert, clock, \
         local0-local7"
    )]
    Facility(String),
}

impl FromStr for Severity {
    type Err = LevelError;

    /// Names are case-insensitive; the aliases of syslog.conf and common
    /// logging libraries are accepted (`error`, `warn`, `panic`, `critical`,
    /// `emergency`, `informational`), and so are the numbers 0–7.
    fn from_str(s: &str) -> Result<Self, LevelError> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u8>() {
            return Severity::from_u8(n).ok_or_else(|| LevelError::Severity(s.to_owned()));
        }
        let sev = match t.to_ascii_lowercase().as_str() {
            "emerg" | "emergency" | "panic" => Severity::Emerg,
            "alert" => Severity::Alert,
            "crit" | "critical" => Severity::Crit,
            "err" | "error" => Severity::Err,
            "warning" | "warn" => Severity::Warning,
            "notice" => Severity::Notice,
            "info" | "informational" => Severity::Info,
            "debug" => Severity::Debug,
            _ => return Err(LevelError::Severity(s.to_owned())),
        };
        Ok(sev)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of program logged a record (RFC 5424 §6.2.1), 0–23.
///
/// On the wire a facility is its number; names are accepted when
/// deserializing, as for [`Severity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Facility {
    Kern = 0,
    User = 1,
    Mail = 2,
    Daemon = 3,
    Auth = 4,
    Syslog = 5,
    Lpr = 6,
    News = 7,
    Uucp = 8,
    Cron = 9,
    Authpriv = 10,
    Ftp = 11,
    Ntp = 12,
    Audit = 13,
    Alert = 14,
    Clock = 15,
    Local0 = 16,
    Local1 = 17,
    Local2 = 18,
    Local3 = 19,
    Local4 = 20,
    Local5 = 21,
    Local6 = 22,
    Local7 = 23,
}

impl Facility {
    /// Every facility, in numeric order.
    pub const ALL: [Facility; 24] = [
        Facility::Kern,
        Facility::User,
        Facility::Mail,
        Facility::Daemon,
        Facility::Auth,
        Facility::Syslog,
        Facility::Lpr,
        Facility::News,
        Facility::Uucp,
        Facility::Cron,
        Facility::Authpriv,
        Facility::Ftp,
        Facility::Ntp,
        Facility::Audit,
        Facility::Alert,
        Facility::Clock,
        Facility::Local0,
        Facility::Local1,
        Facility::Local2,
        Facility::Local3,
        Facility::Local4,
        Facility::Local5,
        Facility::Local6,
        Facility::Local7,
    ];

    /// The facility with this number, `None` outside 0–23.
    pub fn from_u8(n: u8) -> Option<Facility> {
        Facility::ALL.get(usize::from(n)).copied()
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The Linux name (`kern`, `user`, … `local7`).
    pub fn as_str(self) -> &'static str {
        const NAMES: [&str; 24] = [
            "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
            "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
            "local3", "local4", "local5", "local6", "local7",
        ];
        NAMES[self as usize]
    }
}

impl FromStr for Facility {
    type Err = LevelError;

    /// Names as [`Facility::as_str`] prints them (case-insensitive), a few
    /// historical aliases (`security` = auth, `cron2`/`clockd` = clock), or
    /// the numbers 0–23.
    fn from_str(s: &str) -> Result<Self, LevelError> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u8>() {
            return Facility::from_u8(n).ok_or_else(|| LevelError::Facility(s.to_owned()));
        }
        let lower = t.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "security" => Some(Facility::Auth),
            "cron2" | "clockd" => Some(Facility::Clock),
            _ => None,
        };
        alias
            .or_else(|| Facility::ALL.iter().copied().find(|f| f.as_str() == lower))
            .ok_or_else(|| LevelError::Facility(s.to_owned()))
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decompose an RFC 5424 PRI value (0–191) into facility and severity.
pub fn split_pri(pri: u8) -> Option<(Facility, Severity)> {
    Some((Facility::from_u8(pri >> 3)?, Severity::from_u8(pri & 7)?))
}

macro_rules! number_or_name_serde {
    ($ty:ident, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u8(self.as_u8())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$ty, E> {
                        u8::try_from(n)
                            .ok()
                            .and_then($ty::from_u8)
                            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(n), &self))
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$ty, E> {
                        u8::try_from(n)
                            .ok()
                            .and_then($ty::from_u8)
                            .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(n), &self))
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

number_or_name_serde!(
    Severity,
    "a syslog severity (0-7 or a name such as \"warning\")"
);
number_or_name_serde!(
    Facility,
    "a syslog facility (0-23 or a name such as \"local0\")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_names_aliases_and_numbers() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
            assert_eq!(s.as_u8().to_string().parse::<Severity>(), Ok(s));
        }
        assert_eq!("error".parse(), Ok(Severity::Err));
        assert_eq!("WARN".parse(), Ok(Severity::Warning));
        assert_eq!("panic".parse(), Ok(Severity::Emerg));
        assert_eq!(" Info ".parse(), Ok(Severity::Info));
        assert!("8".parse::<Severity>().is_err());
        assert!("verbose".parse::<Severity>().is_err());
        assert!("".parse::<Severity>().is_err());
    }

    #[test]
    fn least_severe_filter_keeps_more_severe_records() {
        let min = Severity::Warning;
        assert!(Severity::Err.is_at_least(min));
        assert!(Severity::Warning.is_at_least(min));
        assert!(!Severity::Notice.is_at_least(min));
        assert!(Severity::Emerg < Severity::Debug);
    }

    #[test]
    fn facility_names_and_numbers() {
        for f in Facility::ALL {
            assert_eq!(f.as_str().parse::<Facility>(), Ok(f));
            assert_eq!(f.as_u8().to_string().parse::<Facility>(), Ok(f));
        }
        assert_eq!("LOCAL7".parse(), Ok(Facility::Local7));
        assert!("24".parse::<Facility>().is_err());
        assert!("local8".parse::<Facility>().is_err());
    }

    #[test]
    fn pri_splits_into_facility_and_severity() {
        assert_eq!(split_pri(13), Some((Facility::User, Severity::Notice)));
        assert_eq!(split_pri(165), Some((Facility::Local4, Severity::Notice)));
        assert_eq!(split_pri(191), Some((Facility::Local7, Severity::Debug)));
        assert_eq!(split_pri(192), None);
    }

    #[test]
    fn serde_is_numeric_and_accepts_names() {
        assert_eq!(serde_json::to_string(&Severity::Warning).unwrap(), "4");
        assert_eq!(serde_json::to_string(&Facility::Local0).unwrap(), "16");
        assert_eq!(
            serde_json::from_str::<Severity>("\"warn\"").unwrap(),
            Severity::Warning
        );
        assert_eq!(
            serde_json::from_str::<Severity>("3").unwrap(),
            Severity::Err
        );
        assert!(serde_json::from_str::<Severity>("9").is_err());
        assert!(serde_json::from_str::<Facility>("-1").is_err());
    }
}
