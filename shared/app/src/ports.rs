//! Capabilities as types: each thing a function may do is a type (a narrow repository trait
//! object, a sender to a set of destinations, the signer, the cache...), and [`Port`] says what
//! each needs of IAM ([`Port::NEEDS`]) and how a cold start builds it ([`Port::wire`]). A
//! function's dependencies are a tuple or a use case's struct of ports, so its needs are
//! computed by the compiler from the types its handler takes: a handler cannot call what its
//! ports do not offer (`Arc<dyn OrderReader>` has no `update_order`), and the function is
//! granted exactly what its ports need.

use std::marker::PhantomData;
use std::sync::Arc;

use zx_auth::{PasswordHasher, TokenIssuer};
use zx_cache::{Cache, ClientLimits};
use zx_domain::{
    CategoryReader, InventoryRepository, MessageSender, Notifier, OrderExpiry, OrderReader,
    OrderStore, OrderWriter, Outbox, ProductReader, ProductRepository, ReservationPurge,
    SessionEnding, SessionRotation, SessionStarter, StandingReader, UserReader, UserRepository,
    UserSignIn,
};
use zx_orders::usecases::{
    Dispatch, InventorySteps, Placement, Relay, SagaSettings, StaleViews, Transitions,
};
use zx_products::CatalogueCache;
use zx_users::PasswordGuard;

use crate::capabilities::{InventoryAnswers, Needs, OrderMoves, SendSet, SessionUse, Use};
use crate::health::HealthCheck;
use crate::{ConfigError, Services};

/// Something a function may use: what IAM must grant for it, and how its cold start gets it.
pub trait Port: Sized + Clone + Send + Sync + 'static {
    const NEEDS: Needs;
    fn wire(services: &Services) -> Result<Self, ConfigError>;
}

/// A repository trait object as a port: the adapter of the configured store, seen through the
/// narrow trait only.
macro_rules! store_ports {
    ($($(#[$doc:meta])* $trait:path => $store:ident, $needs:expr;)*) => {$(
        $(#[$doc])*
        impl Port for Arc<dyn $trait> {
            const NEEDS: Needs = $needs;
            fn wire(services: &Services) -> Result<Self, ConfigError> {
                let port: Arc<dyn $trait> = services.$store()?;
                Ok(port)
            }
        }
    )*};
}

const CACHE: Needs = Needs {
    cache: true,
    ..Needs::NONE
};

store_ports! {
    UserReader => users, Needs { users: Use::Read, ..Needs::NONE };
    /// Reads users and replaces a password hash (a login's rehash): those attributes only.
    UserSignIn => users, Needs { users: Use::Read, rehash: true, ..Needs::NONE };
    UserRepository => users, Needs { users: Use::Write, ..Needs::NONE };
    SessionStarter => sessions, Needs { sessions: SessionUse::START, ..Needs::NONE };
    SessionRotation => sessions, Needs { sessions: SessionUse::ROTATE, ..Needs::NONE };
    SessionEnding => sessions, Needs { sessions: SessionUse::END, ..Needs::NONE };
    StandingReader => sessions, Needs { sessions: SessionUse::CHECK, ..Needs::NONE };
    ProductReader => products, Needs { products: Use::Read, ..Needs::NONE };
    CategoryReader => products, Needs { products: Use::Read, ..Needs::NONE };
    ProductRepository => products, Needs { products: Use::Write, ..Needs::NONE };
    InventoryRepository => inventory, Needs { inventory: Use::Write, ..Needs::NONE };
    /// Purges finished reservations (Postgres; DynamoDB's TTL does it, so it grants nothing).
    ReservationPurge => inventory, Needs { inventory: Use::Read, ..Needs::NONE };
    OrderReader => orders, Needs { orders: Use::Read, ..Needs::NONE };
    OrderWriter => orders, Needs { orders: Use::Write, ..Needs::NONE };
    OrderStore => orders, Needs { orders: Use::Write, ..Needs::NONE };
    OrderExpiry => orders, Needs { orders: Use::Write, ..Needs::NONE };
    Outbox => outbox, Needs { outbox: Use::Write, ..Needs::NONE };
}

/// A sender to the destinations of `S` only: the one guard left at run time, because the
/// relay sends by each message's destination.
pub struct Sender<S>(pub Arc<dyn MessageSender>, PhantomData<S>);

impl<S> Clone for Sender<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<S: SendSet> Port for Sender<S> {
    const NEEDS: Needs = Needs {
        sends: S::SENDS,
        ..Needs::NONE
    };
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(Self(services.sender(S::SENDS)?, PhantomData))
    }
}

impl Port for () {
    const NEEDS: Needs = Needs::NONE;
    fn wire(_: &Services) -> Result<Self, ConfigError> {
        Ok(())
    }
}

/// The cache when configured (catalogue views, limits): used when present.
impl Port for Option<Cache> {
    const NEEDS: Needs = CACHE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(services.cache.clone())
    }
}

/// The cache, required (pending e-mail changes).
impl Port for Cache {
    const NEEDS: Needs = CACHE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        services
            .cache
            .clone()
            .ok_or(ConfigError::Missing("CACHE_URL"))
    }
}

impl Port for Option<CatalogueCache> {
    const NEEDS: Needs = CACHE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(services.catalogue_cache())
    }
}

/// Views made stale by stock changes: the catalogue cache, when there is one.
impl Port for Option<Arc<dyn StaleViews>> {
    const NEEDS: Needs = CACHE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(services
            .catalogue_cache()
            .map(|cache| Arc::new(cache) as Arc<dyn StaleViews>))
    }
}

/// Per-client limits of searches.
impl Port for Arc<ClientLimits> {
    const NEEDS: Needs = CACHE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(Arc::new(services.limits.clone()))
    }
}

/// The limits of password checks, which fail closed: required, with a cache to count in.
impl Port for Arc<PasswordGuard> {
    const NEEDS: Needs = CACHE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(Arc::new(services.password_guard()?))
    }
}

impl Port for PasswordHasher {
    const NEEDS: Needs = Needs::NONE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(services.hasher.clone())
    }
}

/// Signs access tokens (KMS): users-login and users-refresh only.
impl Port for Arc<TokenIssuer> {
    const NEEDS: Needs = Needs {
        sign: true,
        ..Needs::NONE
    };
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        services.issuer()
    }
}

/// Sends account notices (an e-mail change's code).
impl Port for Arc<dyn Notifier> {
    const NEEDS: Needs = Needs {
        notify: true,
        ..Needs::NONE
    };
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        services.notifier()
    }
}

impl Port for SagaSettings {
    const NEEDS: Needs = Needs::NONE;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(services.saga)
    }
}

/// Every configured dependency's check and their deadline (`GET /health`).
#[derive(Clone)]
pub struct HealthChecks {
    pub checks: Arc<Vec<Arc<dyn HealthCheck>>>,
    pub timeout: std::time::Duration,
}

impl Port for HealthChecks {
    /// `DescribeTable` on every table, the other stores' pings, and the cache's.
    const NEEDS: Needs = Needs {
        health: true,
        cache: true,
        ..Needs::NONE
    };
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        Ok(Self {
            checks: Arc::new(services.health_checks()),
            timeout: services.health_timeout,
        })
    }
}

/// Ports together: their needs together.
macro_rules! tuple_ports {
    ($(($($name:ident),+))*) => {$(
        impl<$($name: Port),+> Port for ($($name,)+) {
            const NEEDS: Needs = Needs::NONE$(.and($name::NEEDS))+;
            fn wire(services: &Services) -> Result<Self, ConfigError> {
                Ok(($($name::wire(services)?,)+))
            }
        }
    )*};
}

tuple_ports! {
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
}

/// A use case's dependency struct as a port: built field by field from the ports listed, its
/// needs theirs together. A listed type that is not the field's does not compile.
macro_rules! struct_port {
    ($(#[$doc:meta])* $ty:ident { $($field:ident: $port:ty),+ $(,)? }) => {
        $(#[$doc])*
        impl Port for $ty {
            const NEEDS: Needs = Needs::NONE$(.and(<$port as Port>::NEEDS))+;
            fn wire(services: &Services) -> Result<Self, ConfigError> {
                Ok($ty {
                    $($field: <$port as Port>::wire(services)?.into(),)+
                })
            }
        }
    };
}

/// A sender port seen as the sender it holds (a use case's field).
impl<S> From<Sender<S>> for Arc<dyn MessageSender> {
    fn from(sender: Sender<S>) -> Self {
        sender.0
    }
}

/// Moving orders whose messages go to the destinations of `S` (customers' and admins' moves,
/// the relay: [`OrderMoves`]; the order worker: `OrderAnswers`).
pub struct Moving<S>(pub Transitions, PhantomData<S>);

impl<S> Clone for Moving<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

/// The ports of [`Moving`]: the orders, and a dispatch (order writes to start a reserve's
/// clock, the outbox, the sender).
type MovingPorts<S> = (
    Arc<dyn OrderStore>,
    Arc<dyn OrderWriter>,
    Arc<dyn Outbox>,
    Sender<S>,
);

impl<S: SendSet> Port for Moving<S> {
    const NEEDS: Needs = <MovingPorts<S> as Port>::NEEDS;
    fn wire(services: &Services) -> Result<Self, ConfigError> {
        let (orders, writer, outbox, sender) = <MovingPorts<S> as Port>::wire(services)?;
        let dispatch = Dispatch {
            orders: writer,
            outbox,
            sender: sender.0,
        };
        Ok(Self(Transitions { orders, dispatch }, PhantomData))
    }
}

impl<S> From<Moving<S>> for Transitions {
    fn from(moving: Moving<S>) -> Self {
        moving.0
    }
}

impl<S> From<Moving<S>> for Dispatch {
    fn from(moving: Moving<S>) -> Self {
        moving.0.dispatch
    }
}

struct_port!(
    /// Placing an order: the catalogue read, the order and its messages written, the reserve
    /// and the event sent.
    Placement {
        orders: Arc<dyn OrderStore>,
        catalogue: Arc<dyn ProductReader>,
        views: Option<Arc<dyn StaleViews>>,
        dispatch: Moving<OrderMoves>,
        settings: SagaSettings,
    }
);

struct_port!(
    /// The inventory worker: reads the order a message names, takes or gives back stock,
    /// answers on the order queue directly (no outbox), marks cached views stale.
    InventorySteps {
        orders: Arc<dyn OrderReader>,
        inventory: Arc<dyn InventoryRepository>,
        sender: Sender<InventoryAnswers>,
        views: Option<Arc<dyn StaleViews>>,
    }
);

struct_port!(
    /// The relay: resends the outbox, expires overdue orders (as transitions), purges.
    Relay {
        outbox: Arc<dyn Outbox>,
        expiry: Arc<dyn OrderExpiry>,
        purge: Arc<dyn ReservationPurge>,
        transitions: Moving<OrderMoves>,
        settings: SagaSettings,
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{OrderAnswers, Sends};

    #[test]
    fn a_use_case_needs_what_its_ports_need_and_no_more() {
        let steps = <InventorySteps as Port>::NEEDS;
        assert_eq!(steps.orders, Use::Read);
        assert_eq!(steps.inventory, Use::Write);
        assert_eq!(steps.outbox, Use::No);
        assert_eq!(steps.sends, InventoryAnswers::SENDS);
        assert!(steps.cache && !steps.sign && !steps.sessions.any());
        let worker = <Moving<OrderAnswers> as Port>::NEEDS;
        assert!(
            !worker.sends.inventory_queue,
            "the order worker never sends a release"
        );
        assert_eq!(worker.products, Use::No);
        let placement = <Placement as Port>::NEEDS;
        assert_eq!(placement.products, Use::Read);
        assert_eq!(placement.sends, Sends::ORDER_MOVES);
        assert_eq!(placement.inventory, Use::No);
    }
}
