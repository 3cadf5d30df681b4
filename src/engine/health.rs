//! Healthchecks: docker's `HEALTHCHECK` (from the image, or `--health-*` on create) run in the
//! container by the engine while it runs, with the status (`starting`, `healthy`,
//! `unhealthy`), the failing streak and the last results kept in the container's row and a
//! `health_status` event at each change.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::EngineError;

/// What to run and how often (durations in nanoseconds, as docker's API has them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Healthcheck {
    /// `["CMD", prog, args…]`, `["CMD-SHELL", "command"]`, or `["NONE"]` (no check, even one
    /// the image has). Empty: the image's.
    #[serde(default)]
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub retries: Option<u32>,
    pub start_period: Option<u64>,
}

/// docker's defaults.
const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: u32 = 3;
/// Results kept, newest last, and output kept per result.
const LOG_ENTRIES: usize = 5;
pub const OUTPUT_BYTES: usize = 4096;

/// The healthcheck a container runs: the request's fields over the image's `Healthcheck`.
pub fn effective(
    request: Option<&Healthcheck>,
    image: &serde_json::Value,
) -> Result<Option<Healthcheck>, EngineError> {
    let from_image = |key: &str| image.get(key).and_then(serde_json::Value::as_u64);
    let image_test: Vec<String> = image["Test"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let request = request.cloned().unwrap_or_default();
    let check = Healthcheck {
        test: if request.test.is_empty() {
            image_test
        } else {
            request.test
        },
        interval: request.interval.or_else(|| from_image("Interval")),
        timeout: request.timeout.or_else(|| from_image("Timeout")),
        retries: request
            .retries
            .or_else(|| from_image("Retries").map(|r| r as u32)),
        start_period: request.start_period.or_else(|| from_image("StartPeriod")),
    };
    match check.test.first().map(String::as_str) {
        None | Some("NONE") => Ok(None),
        Some("CMD") if check.test.len() > 1 => Ok(Some(check)),
        Some("CMD-SHELL") if check.test.len() == 2 => Ok(Some(check)),
        _ => Err(EngineError::Invalid(format!(
            "healthcheck test {:?}: give [\"CMD\", program, args…], [\"CMD-SHELL\", command] or [\"NONE\"]",
            check.test
        ))),
    }
}

impl Healthcheck {
    /// The probe's command line.
    pub fn command(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1].clone()],
            _ => self.test[1..].to_vec(),
        }
    }

    fn duration(ns: Option<u64>, default: Duration) -> Duration {
        match ns {
            Some(0) | None => default,
            Some(ns) => Duration::from_nanos(ns),
        }
    }

    pub fn interval(&self) -> Duration {
        Self::duration(self.interval, INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        Self::duration(self.timeout, TIMEOUT)
    }

    pub fn retries(&self) -> u32 {
        self.retries.filter(|r| *r > 0).unwrap_or(RETRIES)
    }

    pub fn start_period(&self) -> Duration {
        Duration::from_nanos(self.start_period.unwrap_or(0))
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProbeResult {
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
    pub exit_code: i64,
    pub output: String,
}

/// A container's health, as inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<ProbeResult>,
}

impl Health {
    pub fn starting() -> Health {
        Health {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Counts a result; failures within the start period do not count against the container.
    /// Returns whether the status changed.
    pub fn record(&mut self, result: ProbeResult, retries: u32, in_start_period: bool) -> bool {
        let before = self.status.clone();
        if result.exit_code == 0 {
            self.failing_streak = 0;
            self.status = "healthy".into();
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(result);
        if self.log.len() > LOG_ENTRIES {
            self.log.remove(0);
        }
        self.status != before
    }
}

/// Output of a probe as kept: at most [`OUTPUT_BYTES`], lossy UTF-8.
pub fn kept_output(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(OUTPUT_BYTES)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(code: i64) -> ProbeResult {
        ProbeResult {
            start: 1,
            end: 2,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn the_request_overrides_the_image_field_by_field() {
        let image =
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64, "Retries": 7});
        let check = effective(None, &image).unwrap().unwrap();
        assert_eq!(check.command(), ["/bin/sh", "-c", "true"]);
        assert_eq!(
            (check.interval(), check.retries()),
            (Duration::from_secs(5), 7)
        );
        assert_eq!(check.timeout(), TIMEOUT);
        let request = Healthcheck {
            retries: Some(1),
            ..Default::default()
        };
        assert_eq!(
            effective(Some(&request), &image)
                .unwrap()
                .unwrap()
                .retries(),
            1
        );
        let none = Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(effective(Some(&none), &image).unwrap(), None);
        assert_eq!(effective(None, &json!(null)).unwrap(), None);
        let cmd = Healthcheck {
            test: vec!["CMD".into(), "/bin/check".into(), "-q".into()],
            ..Default::default()
        };
        assert_eq!(
            effective(Some(&cmd), &json!(null))
                .unwrap()
                .unwrap()
                .command(),
            ["/bin/check", "-q"]
        );
        let bad = Healthcheck {
            test: vec!["SHELL".into()],
            ..Default::default()
        };
        assert!(effective(Some(&bad), &json!(null)).is_err());
    }

    #[test]
    fn retries_in_a_row_make_it_unhealthy_and_one_success_heals() {
        let mut h = Health::starting();
        assert!(
            !h.record(result(1), 2, true),
            "the start period does not count"
        );
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        assert!(!h.record(result(1), 2, false));
        assert!(h.record(result(1), 2, false));
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        assert!(h.record(result(0), 2, false));
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        for _ in 0..10 {
            h.record(result(0), 2, false);
        }
        assert_eq!(h.log.len(), LOG_ENTRIES);
    }
}
