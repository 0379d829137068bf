//! Placeholder until the outbox branch lands.

use super::Result;
use crate::notify::AlertNotice;

pub(crate) async fn enqueue_alerts(
    _conn: &mut sqlx::SqliteConnection,
    _alerts: &[AlertNotice],
    _now_ms: i64,
) -> Result<()> {
    Ok(())
}

pub(crate) async fn set_muted(
    _conn: &mut sqlx::SqliteConnection,
    _fingerprint: &str,
    _muted: bool,
) -> Result<()> {
    Ok(())
}
