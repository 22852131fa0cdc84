//! `doctor`: what only the daemon can check — its database, and this machine's clock
//! against the authorization servers it uses (a skewed clock makes tokens look expired or
//! not yet valid).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::{ClockCheck, DoctorResult};

use super::Broker;
use crate::oauth::discovery::as_metadata_urls;
use crate::oauth::http::Http;
use crate::oauth::printable;
use crate::store::Db;

/// Authorization servers asked, at most: the check must stay quick.
const MAX_ISSUERS: usize = 3;
/// Each server gets this long to answer.
const CLOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl Broker {
    /// The database's integrity check and schema, and the clock against (at most
    /// [`MAX_ISSUERS`] of) the authorization servers of the grants.
    pub async fn doctor(&self) -> Result<DoctorResult, RpcError> {
        let issuers: BTreeSet<String> =
            self.grants().await?.into_iter().map(|g| g.issuer).collect();
        let mut clock = Vec::new();
        for issuer in issuers.into_iter().take(MAX_ISSUERS) {
            clock.push(clock_check(&self.http, issuer).await);
        }
        Ok(DoctorResult {
            database_integrity: self.db.integrity().await?,
            database_schema: self.db.schema_version().await?,
            database_schema_expected: Db::expected_schema_version(),
            clock,
        })
    }
}

/// Reads the `Date` header of the issuer's metadata URL (RFC 9110 §6.6.1 makes origin
/// servers with a clock send it).
async fn clock_check(http: &Http, issuer: String) -> ClockCheck {
    let url = match as_metadata_urls(&issuer) {
        Ok(urls) => urls.into_iter().next().unwrap_or_else(|| issuer.clone()),
        Err(e) => {
            return ClockCheck {
                url: issuer.clone(),
                issuer,
                skew_secs: None,
                error: Some(e.to_string()),
            };
        }
    };
    let asked = SystemTime::now();
    let answer = tokio::time::timeout(CLOCK_TIMEOUT, http.get(&url)).await;
    let (skew_secs, error) = match answer {
        Err(_) => (
            None,
            Some(format!("no answer within {} s", CLOCK_TIMEOUT.as_secs())),
        ),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Ok(Ok(body)) => match body.headers.get(reqwest::header::DATE) {
            None => (None, Some("the answer has no Date header".to_string())),
            Some(date) => match date
                .to_str()
                .ok()
                .and_then(|d| httpdate::parse_http_date(d).ok())
            {
                Some(server) => (Some(skew(asked, server)), None),
                None => (
                    None,
                    Some(format!(
                        "an unreadable Date header `{}`",
                        printable(&String::from_utf8_lossy(date.as_bytes()), 64)
                    )),
                ),
            },
        },
    };
    ClockCheck {
        issuer,
        url,
        skew_secs,
        error,
    }
}

/// Server time minus local time, whole seconds (the Date header has no fraction).
fn skew(local: SystemTime, server: SystemTime) -> i64 {
    match server.duration_since(local) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_signed_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(skew(t, t + Duration::from_millis(90_500)), 90);
        assert_eq!(skew(t, t - Duration::from_secs(3600)), -3600);
        assert_eq!(skew(t, t), 0);
    }
}
