//! Time, from one place, so that consent expiry (and later retention) can be
//! tested with a clock the test moves.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> Millis;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now_ms(&self) -> Millis {
        to_ms(SystemTime::now())
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(ms: Millis) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }

    pub fn set(&self, ms: Millis) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn to_ms(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as Millis,
        Err(e) => -(e.duration().as_millis() as Millis),
    }
}

pub fn from_ms(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T08:00:00.000Z`.
pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(from_ms(ms)).to_string()
}

/// Parses an RFC 3339 timestamp in UTC (`...Z`).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    humantime::parse_rfc3339_weak(s.trim()).ok().map(to_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ms = parse_rfc3339("2026-11-27T08:00:00Z").unwrap();
        assert_eq!(rfc3339(ms), "2026-11-27T08:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-11-27T08:00:00.250Z"), Some(ms + 250));
        assert_eq!(parse_rfc3339("yesterday"), None);
        let c = ManualClock::at(ms);
        c.advance(Duration::from_secs(60));
        assert_eq!(c.now_ms(), ms + 60_000);
    }
}
