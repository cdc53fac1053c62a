//! Operator commands (run by a person or a deploy step, never by an API function):
//!
//!   zx-admin migrate                 apply pending Postgres migrations of every service
//!                                    (DATABASE_URL; USERS_SCHEMA, PRODUCTS_SCHEMA)
//!   zx-admin ensure-admin EMAIL USERNAME
//!                                    create that admin, or make the existing user an admin with
//!                                    that password; the password is read from ADMIN_PASSWORD
//!
//! The first admin exists only through `ensure-admin`: no endpoint can grant the role.

use std::process::ExitCode;

use zx_app::{Config, Services};
use zx_domain::{Email, Password, Role, User, Username};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => migrate().await,
        ["ensure-admin", email, username] => ensure_admin(email, username).await,
        _ => Err("usage: zx-admin migrate | zx-admin ensure-admin EMAIL USERNAME (password in ADMIN_PASSWORD)".into()),
    };
    match outcome {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("zx-admin: {error}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<String, Box<dyn std::error::Error>>;

async fn migrate() -> Outcome {
    let config = Config::from_env()?;
    let url = config
        .database_url
        .as_ref()
        .ok_or("DATABASE_URL is required for migrate")?;
    let mut report = Vec::new();
    for (schema, set) in [
        (&config.users_schema, zx_store_postgres::migrate::USERS),
        (
            &config.products_schema,
            zx_store_postgres::migrate::PRODUCTS,
        ),
    ] {
        let pool = zx_store_postgres::connect_lazy(url.expose(), schema, &config.pool)?;
        let applied = zx_store_postgres::migrate(&pool, schema, &set).await?;
        report.push(format!(
            "schema {schema} ({}): applied migrations {applied:?}",
            set.service
        ));
        pool.close().await;
    }
    Ok(report.join("\n"))
}

async fn ensure_admin(email: &str, username: &str) -> Outcome {
    let config = Config::from_env()?;
    let services = Services::build(&config, false).await?;
    let email = Email::parse(email).map_err(|e| format!("email {e}"))?;
    let username = Username::parse(username).map_err(|e| format!("username {e}"))?;
    let password = std::env::var("ADMIN_PASSWORD").map_err(|_| "ADMIN_PASSWORD is required")?;
    let password = Password::parse(&password).map_err(|e| format!("ADMIN_PASSWORD {e}"))?;
    let hash = services.hasher.hash(&password).await?;
    let users = &services.stores.users;
    match users.find_by_email(&email).await? {
        Some(current) => {
            let mut next = current.next_version();
            next.role = Role::Admin;
            next.password_hash = hash;
            users.update(&current, &next).await?;
            Ok(format!("{email} is an admin (user {})", next.id))
        }
        None => {
            let user = User::new(username, email.clone(), hash, Role::Admin);
            users.create(&user).await?;
            Ok(format!("{email} created as an admin (user {})", user.id))
        }
    }
}
