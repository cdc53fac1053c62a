//! `local-gateway`: serves the API of `template.yaml` on 127.0.0.1 (`GATEWAY_PORT`, default
//! 3000) with every function in-process, configured from the environment like the functions;
//! polls the queues for the workers and runs the relay on its schedule.

use std::net::SocketAddr;
use std::sync::Arc;

use zx_local_gateway::{Functions, Gateway, Pollers, RouteTable, Workers, sources_from_template};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let services = zx_app::start("local-gateway", &zx_app::capabilities::Needs::ALL).await?;
    let template_path = std::env::var("TEMPLATE").unwrap_or_else(|_| "template.yaml".into());
    let template = std::fs::read_to_string(&template_path)
        .map_err(|e| format!("cannot read {template_path}: {e}"))?;
    let mut routes = RouteTable::from_template(&template)?;
    // The template's CorsAllowedOrigins, as a deployment would override it.
    if let Ok(origins) = std::env::var("CORS_ALLOWED_ORIGINS") {
        let origins = zx_local_gateway::cors::split_list(&origins);
        // As the template's rule: named origins only.
        if origins.iter().any(|o| o.contains('*')) {
            return Err("CORS_ALLOWED_ORIGINS must name origins; \"*\" is refused".into());
        }
        routes = routes.with_allowed_origins(origins);
    }
    let port: u16 = std::env::var("GATEWAY_PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()
        .map_err(|_| "GATEWAY_PORT must be a port number")?
        .unwrap_or(3000);
    let route_count = routes.routes.len();
    let gateway = Arc::new(Gateway::new(routes, Functions::new(&services)?)?);
    // The workers and the relay, fed as their event source mappings and schedule would.
    let (queues, schedules) = sources_from_template(&template)?;
    let workers = Workers::new(&services)?;
    let sqs = aws_sdk_sqs::Client::new(&zx_app::backend::aws_config().await);
    let _pollers = Pollers::start(&workers, &services, sqs, &queues, &schedules)?;
    tracing::info!(
        queues = queues.len(),
        schedules = schedules.len(),
        "local event sources running"
    );
    let (addr, task) = gateway
        .serve(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    tracing::info!(%addr, routes = route_count, "local gateway listening");
    println!(
        "Local gateway listening on http://{addr} ({route_count} routes from {template_path})"
    );
    tokio::select! {
        _ = task => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
