//! IAM authentication to RDS Proxy: no database password in any function's configuration.
//! A function that uses Postgres (`DATABASE_IAM_AUTH=true`) signs a connection token with its
//! own role's credentials (SigV4, service `rds-db`, 15 minutes) and uses it as the password of
//! new connections; its role is granted `rds-db:connect` on the proxy's database user, and the
//! proxy requires IAM authentication. A token is made at cold start (local work: the Lambda
//! credentials are in the environment) and renewed every 5 minutes, so every connection the
//! pool opens presents one with at least 10 minutes left. Open connections are not affected
//! by a token's expiry.

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

/// Keeps `pool`'s password a fresh token for `options`' host, port and user: now, then every
/// [`RENEW_EVERY`], in a task that lives as long as the instance.
pub fn keep_tokens_fresh(pool: PgPool, options: PgConnectOptions, aws: &aws_config::SdkConfig) {
    let Some(provider) = aws.credentials_provider() else {
        tracing::error!("DATABASE_IAM_AUTH is set but no AWS credentials are configured");
        return;
    };
    let region = aws
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_default();
    let options = Arc::new(options);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RENEW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            let renewed = match provider.provide_credentials().await {
                Ok(credentials) => auth_token(
                    &credentials,
                    &region,
                    options.get_host(),
                    options.get_port(),
                    options.get_username(),
                    SystemTime::now(),
                ),
                Err(error) => Err(error.to_string()),
            };
            match renewed {
                Ok(token) => pool.set_connect_options((*options).clone().password(&token)),
                Err(error) => {
                    tracing::error!(%error, "could not renew the database token: new connections may fail")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
