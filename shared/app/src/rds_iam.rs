//! IAM authentication to RDS Proxy: no database password in any function's configuration.
//! A function that uses Postgres (`DATABASE_IAM_AUTH=true`) signs a connection token with its
//! own role's credentials (SigV4, service `rds-db`, 15 minutes) and uses it as the password of
//! new connections; its role is granted `rds-db:connect` on the proxy's database user, and the
//! proxy requires IAM authentication. A token is made at the end of the cold start and, before
//! an invocation, whenever the last is 5 minutes old (local work: the Lambda credentials are in
//! the environment), so every connection the pool opens presents one with at least 10 minutes
//! left. Open connections are not affected by a token's expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

/// How long a token lets a connection be opened (RDS's fixed 15 minutes).
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How often a new token replaces the pool's.
pub const RENEW_EVERY: Duration = Duration::from_secs(300);

/// The token RDS Proxy accepts as the password of `user` at `host:port`: the presigned
/// `connect` request without its scheme.
pub fn auth_token(
    credentials: &Credentials,
    region: &str,
    host: &str,
    port: u16,
    user: &str,
    now: SystemTime,
) -> Result<String, String> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let user: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
    let url = format!("https://{host}:{port}/?Action=connect&DBUser={user}");
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(&url)
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = request.uri().to_string();
    Ok(signed
        .strip_prefix("https://")
        .unwrap_or(&signed)
        .to_owned())
}

/// A pool whose password is an IAM token, and when that token was signed.
struct Tokens {
    pool: PgPool,
    options: PgConnectOptions,
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    region: String,
    signed_at: tokio::sync::Mutex<Option<SystemTime>>,
}

/// The pools of this process that authenticate with IAM tokens (one in a Lambda function).
static POOLS: std::sync::Mutex<Vec<Arc<Tokens>>> = std::sync::Mutex::new(Vec::new());

/// Registers `pool` to be given IAM tokens for `options`' host, port and user: the first by
/// [`refresh_due_tokens`] at the end of the cold start (before any query), then before each
/// invocation whenever the last is older than [`RENEW_EVERY`]. Signing is local work (the
/// credentials are in the function's environment), so no timer or background task is
/// involved: a frozen instance that wakes after an hour signs a fresh token before its first
/// query.
pub fn register(
    pool: PgPool,
    options: PgConnectOptions,
    aws: &aws_config::SdkConfig,
) -> Result<(), String> {
    let provider = aws
        .credentials_provider()
        .ok_or("DATABASE_IAM_AUTH is set but no AWS credentials are configured")?;
    let region = aws
        .region()
        .map(|r| r.as_ref().to_owned())
        .ok_or("DATABASE_IAM_AUTH is set but no AWS region is configured")?;
    let tokens = Arc::new(Tokens {
        pool,
        options,
        provider,
        region,
        signed_at: tokio::sync::Mutex::new(None),
    });
    if let Ok(mut pools) = POOLS.lock() {
        pools.push(tokens);
    }
    Ok(())
}

/// Whether a token signed at `signed_at` (or none) must be replaced at `now`: after
/// [`RENEW_EVERY`], or if the clock went back.
fn is_due(signed_at: Option<SystemTime>, now: SystemTime) -> bool {
    signed_at.is_none_or(|at| {
        now.duration_since(at)
            .map_or(true, |age| age >= RENEW_EVERY)
    })
}

/// How many registered pools hold a token (for tests and health).
pub fn pools_with_a_token() -> usize {
    let pools: Vec<Arc<Tokens>> = POOLS.lock().map(|p| p.clone()).unwrap_or_default();
    pools
        .iter()
        .filter(|t| t.signed_at.try_lock().is_ok_and(|at| at.is_some()))
        .count()
}

/// Gives every registered pool a fresh token if its last one is older than [`RENEW_EVERY`] (or
/// it has none yet). A failure is logged: new connections may then fail (503) until the next
/// invocation tries again.
pub async fn refresh_due_tokens() {
    let pools: Vec<Arc<Tokens>> = POOLS.lock().map(|p| p.clone()).unwrap_or_default();
    for tokens in pools {
        let mut signed_at = tokens.signed_at.lock().await;
        let now = SystemTime::now();
        if !is_due(*signed_at, now) {
            continue;
        }
        let renewed = match tokens.provider.provide_credentials().await {
            Ok(credentials) => auth_token(
                &credentials,
                &tokens.region,
                tokens.options.get_host(),
                tokens.options.get_port(),
                tokens.options.get_username(),
                now,
            ),
            Err(error) => Err(error.to_string()),
        };
        match renewed {
            Ok(token) => {
                tokens
                    .pool
                    .set_connect_options(tokens.options.clone().password(&token));
                *signed_at = Some(now);
            }
            Err(error) => {
                tracing::error!(%error, "could not sign a database token: new connections may fail");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_five_minutes_after_it_was_signed() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(is_due(None, at));
        assert!(!is_due(Some(at), at + Duration::from_secs(299)));
        assert!(is_due(Some(at), at + RENEW_EVERY));
        // An instance frozen for an hour signs anew before its first query.
        assert!(is_due(Some(at), at + Duration::from_secs(3600)));
        assert!(
            is_due(Some(at), at - Duration::from_secs(1)),
            "the clock went back"
        );
    }

    #[test]
    fn a_token_is_a_presigned_connect_request_for_fifteen_minutes() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".into()),
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = auth_token(
            &credentials,
            "eu-west-1",
            "proxy.example",
            5432,
            "zhixuan",
            at,
        )
        .unwrap();
        assert!(token.starts_with("proxy.example:5432/?"), "{token}");
        for part in [
            "Action=connect",
            "DBUser=zhixuan",
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Feu-west-1%2Frds-db%2Faws4_request",
            "X-Amz-Expires=900",
            "X-Amz-Security-Token=session",
            "X-Amz-Signature=",
        ] {
            assert!(token.contains(part), "{part} missing from {token}");
        }
        assert!(!token.contains("https://"));
        // Deterministic for the same inputs; another user signs differently.
        assert_eq!(
            token,
            auth_token(
                &credentials,
                "eu-west-1",
                "proxy.example",
                5432,
                "zhixuan",
                at
            )
            .unwrap()
        );
        assert_ne!(
            token,
            auth_token(
                &credentials,
                "eu-west-1",
                "proxy.example",
                5432,
                "other",
                at
            )
            .unwrap()
        );
    }
}
