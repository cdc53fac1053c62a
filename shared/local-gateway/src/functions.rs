//! The function registry: each binary name of `template.yaml` mapped to its handler, called
//! in-process with the same shared services the functions build at cold start.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use lambda_http::{Body, Request, Response};
use zx_app::Services;
use zx_http::{ApiError, serve};

/// Every function the gateway can invoke.
pub struct Functions {
    services: Services,
    health_checks: Vec<std::sync::Arc<dyn zx_app::HealthCheck>>,
    catalogue_cache: Option<zx_products::CatalogueCache>,
}

impl Functions {
    pub fn new(services: Services) -> Self {
        let health_checks = services.health_checks();
        let catalogue_cache = services.cache.clone().map(zx_products::CatalogueCache::new);
        Self {
            services,
            health_checks,
            catalogue_cache,
        }
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Whether `binary` is an HTTP function this registry knows.
    pub fn knows(&self, binary: &str) -> bool {
        Self::HTTP_FUNCTIONS.contains(&binary)
    }

    pub const HTTP_FUNCTIONS: &'static [&'static str] = &[
        "health",
        "users-register",
        "users-login",
        "users-validate",
        "users-me",
        "users-get",
        "users-update",
        "products-list",
        "products-get",
        "products-create",
        "products-update",
        "products-delete",
        "stock-get",
        "stock-put",
    ];

    /// Invokes an HTTP function as Lambda would, through the same `serve` wrapper.
    pub async fn invoke_http(&self, binary: &str, request: Request) -> Response<Body> {
        let s = &self.services;
        let users = &*s.stores.users;
        let products = &*s.stores.products;
        let cache = self.catalogue_cache.as_ref();
        let result = match binary {
            "health" => {
                serve(request, |r| {
                    zx_app::health_handler(&self.health_checks, s.health_timeout, r)
                })
                .await
            }
            "users-register" => {
                serve(request, |r| {
                    zx_users::register(users, &s.hasher, &s.limits, r)
                })
                .await
            }
            "users-login" => {
                serve(request, |r| async move {
                    zx_users::login(users, &s.hasher, self.tokens()?, &s.limits, r).await
                })
                .await
            }
            "users-validate" => {
                serve(request, |r| async move {
                    zx_users::validate(self.tokens()?, r).await
                })
                .await
            }
            "users-me" => serve(request, |r| zx_users::me(users, r)).await,
            "users-get" => serve(request, |r| zx_users::get_user(users, r)).await,
            "users-update" => serve(request, |r| zx_users::update_user(users, &s.hasher, r)).await,
            "products-list" => {
                serve(request, |r| zx_products::list_products(products, cache, r)).await
            }
            "products-get" => {
                serve(request, |r| zx_products::get_product(products, cache, r)).await
            }
            "products-create" => {
                serve(request, |r| zx_products::create_product(products, cache, r)).await
            }
            "products-update" => {
                serve(request, |r| zx_products::update_product(products, cache, r)).await
            }
            "products-delete" => {
                serve(request, |r| zx_products::delete_product(products, cache, r)).await
            }
            "stock-get" => serve(request, |r| zx_products::get_stock(products, r)).await,
            "stock-put" => serve(request, |r| zx_products::put_stock(products, cache, r)).await,
            other => {
                serve(request, |_| async move {
                    Err(ApiError::internal(format!(
                        "the local gateway has no handler for function {other:?}"
                    )))
                })
                .await
            }
        };
        // `serve` never fails: it maps every error to a response.
        result.unwrap_or_else(|_| Response::new(Body::Empty))
    }

    /// Invokes the authorizer function.
    pub fn invoke_authorizer(
        &self,
        binary: &str,
        event: &ApiGatewayV2CustomAuthorizerV2Request,
    ) -> Option<ApiGatewayV2CustomAuthorizerSimpleResponse> {
        match binary {
            "authorizer" => self
                .services
                .tokens
                .as_deref()
                .map(|tokens| zx_users::authorize(tokens, event)),
            _ => None,
        }
    }

    fn tokens(&self) -> Result<&zx_auth::TokenService, ApiError> {
        self.services.tokens().map_err(ApiError::internal)
    }
}
