//! Threshold lines: the finite bounds of a rule's Nagios ranges (`10`,
//! `10:`, `~:10`, `10:20`, `@10:20`), drawn where an alarm would change state,
//! and a scaling policy's two thresholds (`scale_out_above`,
//! `scale_in_below`).

/// What crossing a line means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Warning,
    Critical,
    /// Above it a scaling policy asks for more members.
    ScaleOut,
    /// Below it a scaling policy asks for fewer.
    ScaleIn,
}

impl Level {
    /// A policy's line: always drawn, even far from the data (the graph
    /// is about it).
    pub fn is_scaling(self) -> bool {
        matches!(self, Level::ScaleOut | Level::ScaleIn)
    }
}

/// One horizontal line on a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub value: f64,
    pub level: Level,
}

/// The bounds of a Nagios range worth drawing: the explicit finite ones. The
/// implicit start of `10` (which means `0:10`) is left out, so a plain upper
/// limit draws one line. `None` when the text is not a range. The range is
/// read by the one parser supervision judges with
/// ([`metrolog_protocol::nagios::Range`]).
pub fn range_bounds(text: &str) -> Option<Vec<f64>> {
    metrolog_protocol::nagios::Range::parse(text)
        .ok()
        .map(|r| r.bounds().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nagios_ranges() {
        assert_eq!(range_bounds("80"), Some(vec![80.0]));
        assert_eq!(range_bounds("~:80"), Some(vec![80.0]));
        assert_eq!(range_bounds("10:"), Some(vec![10.0]));
        assert_eq!(range_bounds("10:20"), Some(vec![10.0, 20.0]));
        assert_eq!(range_bounds("@10:20"), Some(vec![10.0, 20.0]));
        assert_eq!(range_bounds("-5.5:"), Some(vec![-5.5]));
        assert_eq!(range_bounds("20:10"), None);
        assert_eq!(range_bounds("abc"), None);
        assert_eq!(range_bounds(""), None);
        assert_eq!(range_bounds("inf"), None);
    }
}
