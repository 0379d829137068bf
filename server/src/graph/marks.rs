//! Marks: moments drawn on a graph as a vertical line with a small shape at
//! its end, so an operator sees on the graph itself when something judged the
//! drawn metric: an alarm changing state, or a scaling policy asking the
//! group to grow, shrink or heal (fired, or what a dry-run would have fired).

use metrolog_protocol::nagios::CheckStatus;

/// Most marks one graph draws; a flapping alarm over a week would otherwise
/// paint the plot solid. The newest are kept.
pub const MAX_MARKS: usize = 200;

/// One moment drawn on a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// When it happened (unix seconds).
    pub at: i64,
    pub kind: MarkKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MarkKind {
    /// A transition of an alarm: a tick from the top of the plot in the
    /// colour of the state it went to.
    Alarm {
        /// The state it went to.
        to: CheckStatus,
        /// Whether the new state is hard (only hard states notify; soft
        /// ones are drawn as the line alone).
        hard: bool,
    },
    /// A scaling event of a policy: a filled shape at the top of the plot
    /// for one that fired, an outlined one at the bottom for one a dry-run
    /// would have fired (so both show when they coincide).
    Scaling { event: ScaleMark, dry_run: bool },
}

/// What a scaling event asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleMark {
    Out,
    In,
    Heal,
}

impl ScaleMark {
    /// The mark of an event type (`scale_out`, `scale_in`, `heal`); the
    /// membership events are not marks.
    pub fn of_event_type(t: &str) -> Option<ScaleMark> {
        match t {
            "scale_out" => Some(ScaleMark::Out),
            "scale_in" => Some(ScaleMark::In),
            "heal" => Some(ScaleMark::Heal),
            _ => None,
        }
    }
}

impl Mark {
    pub fn alarm(at: i64, to: CheckStatus, hard: bool) -> Mark {
        Mark {
            at,
            kind: MarkKind::Alarm { to, hard },
        }
    }

    pub fn scaling(at: i64, event: ScaleMark, dry_run: bool) -> Mark {
        Mark {
            at,
            kind: MarkKind::Scaling { event, dry_run },
        }
    }
}
