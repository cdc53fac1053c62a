//! The functions' HTTP client for AWS calls: the SDK's own HTTPS client (rustls, aws-lc), with
//! its trust roots loaded when the first `https` request is made instead of when the SDK client
//! is built. The SDK's client reads and parses the system certificates (~3 ms on these machines,
//! half of a cold start's init: docs/benchmarks.md) in `validate_base_client_config`, that is
//! at every cold start, even for a function that answers from the cache or with a 401 and never
//! calls AWS; and for `http://` endpoints (the local stack), which never use them.

use std::sync::{Arc, OnceLock};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Plain HTTP for `http://` endpoints, the SDK's HTTPS client (set up on first use) otherwise.
#[derive(Debug, Clone)]
pub struct LazyTlsClient {
    http: SharedHttpClient,
    https: SharedHttpClient,
}

impl LazyTlsClient {
    /// The SDK's default clients, with TLS deferred.
    pub fn new() -> Self {
        use aws_smithy_http_client::tls;
        Self::with(
            aws_smithy_http_client::Builder::new().build_http(),
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https(),
        )
    }

    /// Any two clients (the tests give recording ones).
    pub fn with(http: SharedHttpClient, https: SharedHttpClient) -> Self {
        Self { http, https }
    }

    pub fn shared() -> SharedHttpClient {
        SharedHttpClient::new(Self::new())
    }
}

impl Default for LazyTlsClient {
    fn default() -> Self {
        Self::new()
    }
}

// No `validate_base_client_config`: that hook is where the HTTPS client loads its roots.
impl HttpClient for LazyTlsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ByScheme {
            http: self.http.http_connector(settings, components),
            https: Arc::new(LazyConnector {
                client: self.https.clone(),
                settings: settings.clone(),
                components: components.clone(),
                connector: OnceLock::new(),
            }),
        })
    }
}

#[derive(Debug)]
struct LazyConnector {
    client: SharedHttpClient,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
    connector: OnceLock<SharedHttpConnector>,
}

#[derive(Debug)]
struct ByScheme {
    http: SharedHttpConnector,
    https: Arc<LazyConnector>,
}

impl HttpConnector for ByScheme {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if request.uri().starts_with("http://") {
            return self.http.call(request);
        }
        let lazy = &self.https;
        lazy.connector
            .get_or_init(|| lazy.client.http_connector(&lazy.settings, &lazy.components))
            .call(request)
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_http_client::test_util::infallible_client_fn;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn answering(name: &'static str) -> SharedHttpClient {
        infallible_client_fn(move |_| {
            http::Response::builder()
                .status(200)
                .body(SdkBody::from(name))
                .unwrap()
        })
    }

    async fn who_answers(client: &LazyTlsClient, uri: &str) -> String {
        let components = RuntimeComponentsBuilder::for_tests().build().unwrap();
        let connector = client.http_connector(&HttpConnectorSettings::default(), &components);
        let request = HttpRequest::get(uri).unwrap();
        let response = connector.call(request).await.unwrap();
        String::from_utf8(response.body().bytes().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn http_endpoints_go_plain_and_https_ones_through_the_tls_client() {
        let client = LazyTlsClient::with(answering("plain"), answering("tls"));
        assert_eq!(
            who_answers(&client, "http://127.0.0.1:4566/").await,
            "plain"
        );
        assert_eq!(
            who_answers(&client, "https://dynamodb.us-east-1.amazonaws.com/").await,
            "tls"
        );
    }
}
