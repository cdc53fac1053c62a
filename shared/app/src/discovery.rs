//! Finds the cache endpoint by name with the ElastiCache API, once per cold start, when
//! `CACHE_URL` is not set but `CACHE_NAME` is: a serverless cache of that name (always TLS), or
//! else a replication group (TLS when its transit encryption is on; the configuration endpoint
//! of a cluster-mode group, else its primary endpoint).

use aws_sdk_elasticache::Client;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no ElastiCache serverless cache or replication group is named {0:?}")]
    NotFound(String),
    #[error("ElastiCache {0:?} has no endpoint yet (is it still being created?)")]
    NoEndpoint(String),
    #[error("the ElastiCache API call {operation} failed")]
    Api {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn url(tls: bool, address: &str, port: i32) -> String {
    format!(
        "{}://{address}:{port}",
        if tls { "rediss" } else { "redis" }
    )
}

/// The `redis://` or `rediss://` URL of the cache called `name`.
pub async fn resolve_cache_url(client: &Client, name: &str) -> Result<String, DiscoveryError> {
    let api = |operation| {
        move |e: Box<dyn std::error::Error + Send + Sync>| DiscoveryError::Api {
            operation,
            source: e,
        }
    };
    match client
        .describe_serverless_caches()
        .serverless_cache_name(name)
        .send()
        .await
    {
        Ok(output) => {
            if let Some(cache) = output.serverless_caches().first() {
                let endpoint = cache
                    .endpoint()
                    .ok_or_else(|| DiscoveryError::NoEndpoint(name.to_owned()))?;
                let (Some(address), Some(port)) = (endpoint.address(), endpoint.port()) else {
                    return Err(DiscoveryError::NoEndpoint(name.to_owned()));
                };
                // Serverless caches only accept TLS.
                return Ok(url(true, address, port));
            }
        }
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_serverless_cache_not_found_fault()) => {}
        Err(error) => return Err(api("DescribeServerlessCaches")(Box::new(error))),
    }
    let output = match client
        .describe_replication_groups()
        .replication_group_id(name)
        .send()
        .await
    {
        Ok(output) => output,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_replication_group_not_found_fault()) =>
        {
            return Err(DiscoveryError::NotFound(name.to_owned()));
        }
        Err(error) => return Err(api("DescribeReplicationGroups")(Box::new(error))),
    };
    let group = output
        .replication_groups()
        .first()
        .ok_or_else(|| DiscoveryError::NotFound(name.to_owned()))?;
    let tls = group.transit_encryption_enabled().unwrap_or(false);
    let endpoint = group
        .configuration_endpoint()
        .or_else(|| {
            group
                .node_groups()
                .first()
                .and_then(|g| g.primary_endpoint())
        })
        .ok_or_else(|| DiscoveryError::NoEndpoint(name.to_owned()))?;
    match (endpoint.address(), endpoint.port()) {
        (Some(address), Some(port)) => Ok(url(tls, address, port)),
        _ => Err(DiscoveryError::NoEndpoint(name.to_owned())),
    }
}

/// The IAM actions resolving `CACHE_NAME` calls (`crate::permissions`).
pub const ACTIONS: &[&str] = &[
    "elasticache:DescribeServerlessCaches",
    "elasticache:DescribeReplicationGroups",
];

#[cfg(test)]
pub(crate) mod tests {
    use aws_sdk_elasticache::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    const NS: &str = "http://elasticache.amazonaws.com/doc/2015-02-02/";

    /// An HTTP client that answers with these recorded (status, XML body) responses, in order.
    pub(crate) fn replay(answers: &[(u16, String)]) -> StaticReplayClient {
        let events = answers
            .iter()
            .map(|(status, body)| {
                ReplayEvent::new(
                    http::Request::builder()
                        .uri("https://elasticache.us-east-1.amazonaws.com/")
                        .body(SdkBody::empty())
                        .unwrap(),
                    http::Response::builder()
                        .status(*status)
                        .header("content-type", "text/xml")
                        .body(SdkBody::from(body.clone()))
                        .unwrap(),
                )
            })
            .collect();
        StaticReplayClient::new(events)
    }

    /// An ElastiCache client over [`replay`].
    fn client(answers: &[(u16, String)]) -> (Client, StaticReplayClient) {
        let replay = replay(answers);
        let config = aws_sdk_elasticache::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .http_client(replay.clone())
            .build();
        (Client::from_conf(config), replay)
    }

    pub(crate) fn not_found(code: &str) -> (u16, String) {
        (
            404,
            format!(
                "<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{code}</Code>\
                 <Message>not found</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
            ),
        )
    }

    fn serverless(address: &str) -> (u16, String) {
        (
            200,
            format!(
                "<DescribeServerlessCachesResponse xmlns=\"{NS}\"><DescribeServerlessCachesResult>\
                 <ServerlessCaches><member><ServerlessCacheName>zx-cache</ServerlessCacheName>\
                 <Status>available</Status><Engine>valkey</Engine>\
                 <Endpoint><Address>{address}</Address><Port>6379</Port></Endpoint>\
                 </member></ServerlessCaches></DescribeServerlessCachesResult>\
                 <ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></DescribeServerlessCachesResponse>"
            ),
        )
    }

    fn replication_group(address: &str, tls: bool) -> (u16, String) {
        (
            200,
            format!(
                "<DescribeReplicationGroupsResponse xmlns=\"{NS}\"><DescribeReplicationGroupsResult>\
                 <ReplicationGroups><ReplicationGroup><ReplicationGroupId>zx-rg</ReplicationGroupId>\
                 <Status>available</Status><NodeGroups><NodeGroup><NodeGroupId>0001</NodeGroupId>\
                 <PrimaryEndpoint><Address>{address}</Address><Port>6380</Port></PrimaryEndpoint>\
                 </NodeGroup></NodeGroups><TransitEncryptionEnabled>{tls}</TransitEncryptionEnabled>\
                 </ReplicationGroup></ReplicationGroups></DescribeReplicationGroupsResult>\
                 <ResponseMetadata><RequestId>r-3</RequestId></ResponseMetadata></DescribeReplicationGroupsResponse>"
            ),
        )
    }

    fn sent(replay: &StaticReplayClient) -> Vec<String> {
        replay
            .actual_requests()
            .map(|r| String::from_utf8_lossy(r.body().bytes().unwrap_or_default()).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn finds_a_serverless_cache_over_tls() {
        let (client, replay) = client(&[serverless(
            "zx-cache-abc.serverless.use1.cache.amazonaws.com",
        )]);
        let url = resolve_cache_url(&client, "zx-cache").await.unwrap();
        assert_eq!(
            url,
            "rediss://zx-cache-abc.serverless.use1.cache.amazonaws.com:6379"
        );
        let requests = sent(&replay);
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].contains("Action=DescribeServerlessCaches"),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].contains("ServerlessCacheName=zx-cache"),
            "{}",
            requests[0]
        );
    }

    #[tokio::test]
    async fn falls_back_to_a_replication_group_honouring_its_tls_flag() {
        for (tls, scheme) in [(true, "rediss"), (false, "redis")] {
            let (client, replay) = client(&[
                not_found("ServerlessCacheNotFoundFault"),
                replication_group("zx-rg.abc.ng.0001.use1.cache.amazonaws.com", tls),
            ]);
            let url = resolve_cache_url(&client, "zx-rg").await.unwrap();
            assert_eq!(
                url,
                format!("{scheme}://zx-rg.abc.ng.0001.use1.cache.amazonaws.com:6380")
            );
            let requests = sent(&replay);
            assert!(
                requests[1].contains("Action=DescribeReplicationGroups"),
                "{}",
                requests[1]
            );
            assert!(
                requests[1].contains("ReplicationGroupId=zx-rg"),
                "{}",
                requests[1]
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_name_is_a_clear_error() {
        let (client, _) = client(&[
            not_found("ServerlessCacheNotFoundFault"),
            not_found("ReplicationGroupNotFoundFault"),
        ]);
        let error = resolve_cache_url(&client, "no-such-cache")
            .await
            .unwrap_err();
        assert!(matches!(error, DiscoveryError::NotFound(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "no ElastiCache serverless cache or replication group is named \"no-such-cache\""
        );
    }
}
