//! Alarm marks: where an alarm judging the drawn metric changed state, so an
//! operator sees on the graph itself when a threshold fired and cleared.

use metrolog_protocol::nagios::CheckStatus;

/// Most marks one graph draws; a flapping alarm over a week would otherwise
/// paint the plot solid. The newest are kept.
pub const MAX_MARKS: usize = 200;

/// One transition of an alarm, drawn as a short tick from the top of the plot
/// in the colour of the state it went to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// When the alarm changed state (unix seconds).
    pub at: i64,
    /// The state it went to.
    pub to: CheckStatus,
    /// Whether the new state is hard (only hard states notify; soft ones are
    /// drawn thinner).
    pub hard: bool,
}
