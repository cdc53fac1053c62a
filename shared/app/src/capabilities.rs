//! What a function may do, as the IAM grants see it: [`Needs`]. A function's needs are not
//! written by hand: they follow from the types of its dependencies (`crate::ports::Port::NEEDS`),
//! and `crate::permissions` turns them into IAM statements.

/// How a function uses a store: the IAM actions it is granted follow from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Use {
    #[default]
    No,
    Read,
    Write,
}

impl Use {
    pub const fn any(self) -> bool {
        !matches!(self, Use::No)
    }

    /// The wider of two uses.
    pub const fn and(self, other: Use) -> Use {
        match (self, other) {
            (Use::Write, _) | (_, Use::Write) => Use::Write,
            (Use::Read, _) | (_, Use::Read) => Use::Read,
            (Use::No, Use::No) => Use::No,
        }
    }
}

/// What a function uses: the union of its ports' needs (`crate::ports`). Its cold start builds
/// only this, and its IAM permissions follow from it (`crate::permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub users: Use,
    /// Sessions (refresh tokens, users table): which of start, rotate, end.
    pub sessions: SessionUse,
    /// The catalogue (products table).
    pub products: Use,
    /// Reservations (products table): reserve, release, commit (`Write`), or only purge the
    /// finished ones (`Read`: the relay; DynamoDB's TTL does that, so it grants nothing).
    pub inventory: Use,
    pub orders: Use,
    /// The outbox (orders table).
    pub outbox: Use,
    /// Where it sends messages (SQS queues, the SNS topic).
    pub sends: Sends,
    /// Replace a user's password hash (users-login's rehash): `UpdateItem` of those attributes.
    pub rehash: bool,
    /// Sign access tokens: `kms:Sign` and `kms:GetPublicKey` on the signing key (users-login,
    /// users-refresh). No other function is built with a signer.
    pub sign: bool,
    /// Send account notices (an e-mail change's code): `sns:Publish` on the account-notices
    /// topic (users-update).
    pub notify: bool,
    /// The cache (catalogue views, per-client limits).
    pub cache: bool,
    /// `DescribeTable` on every table, and the other stores' pings.
    pub health: bool,
}

impl Needs {
    pub const NONE: Needs = Needs {
        users: Use::No,
        sessions: SessionUse::NONE,
        products: Use::No,
        inventory: Use::No,
        orders: Use::No,
        outbox: Use::No,
        sends: Sends::NONE,
        rehash: false,
        sign: false,
        notify: false,
        cache: false,
        health: false,
    };
    /// Everything: the local gateway and the tests, which run every function in one process.
    pub const ALL: Needs = Needs {
        users: Use::Write,
        sessions: SessionUse::ALL,
        products: Use::Write,
        inventory: Use::Write,
        orders: Use::Write,
        outbox: Use::Write,
        sends: Sends::ALL,
        rehash: true,
        sign: true,
        notify: true,
        cache: true,
        health: true,
    };
    /// What two sets of needs together need.
    pub const fn and(self, other: Needs) -> Needs {
        Needs {
            users: self.users.and(other.users),
            sessions: self.sessions.and(other.sessions),
            products: self.products.and(other.products),
            inventory: self.inventory.and(other.inventory),
            orders: self.orders.and(other.orders),
            outbox: self.outbox.and(other.outbox),
            sends: self.sends.and(other.sends),
            rehash: self.rehash || other.rehash,
            sign: self.sign || other.sign,
            notify: self.notify || other.notify,
            cache: self.cache || other.cache,
            health: self.health || other.health,
        }
    }

    /// Whether the function reaches a store (and so, with Postgres, connects to the database).
    pub const fn uses_a_store(&self) -> bool {
        self.users.any()
            || self.sessions.any()
            || self.products.any()
            || self.inventory.any()
            || self.orders.any()
            || self.outbox.any()
            || self.health
    }
}

/// What a function does with sessions: each is its own set of IAM actions
/// (`zx_store_dynamodb::iam::SESSIONS_*`), each the need of one port (`crate::ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionUse {
    /// Store a new session (login).
    pub start: bool,
    /// Read a session, replace its token, revoke it on a replay (refresh).
    pub rotate: bool,
    /// Read a session and revoke it (logout).
    pub end: bool,
    /// Read a session and its user's epoch and role: the standing of an access token on admin
    /// routes and writes.
    pub check: bool,
}

impl SessionUse {
    pub const NONE: SessionUse = SessionUse {
        start: false,
        rotate: false,
        end: false,
        check: false,
    };
    pub const ALL: SessionUse = SessionUse {
        start: true,
        rotate: true,
        end: true,
        check: true,
    };
    /// Start sessions (login).
    pub const START: SessionUse = SessionUse {
        start: true,
        ..SessionUse::NONE
    };
    /// Rotate sessions (refresh).
    pub const ROTATE: SessionUse = SessionUse {
        rotate: true,
        ..SessionUse::NONE
    };
    /// End sessions (logout).
    pub const END: SessionUse = SessionUse {
        end: true,
        ..SessionUse::NONE
    };
    /// Only the standing of access tokens.
    pub const CHECK: SessionUse = SessionUse {
        check: true,
        ..SessionUse::NONE
    };
    pub const fn any(self) -> bool {
        self.start || self.rotate || self.end || self.check
    }

    pub const fn and(self, other: SessionUse) -> SessionUse {
        SessionUse {
            start: self.start || other.start,
            rotate: self.rotate || other.rotate,
            end: self.end || other.end,
            check: self.check || other.check,
        }
    }
}

/// The destinations a function sends to (the relay resends to all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sends {
    /// `inventory.reserve`, `inventory.release`, `inventory.commit`.
    pub inventory_queue: bool,
    /// `inventory.reserved`, `inventory.failed`.
    pub order_queue: bool,
    /// `order.created`, `order.status_changed`.
    pub order_events: bool,
    /// Malformed messages of the inventory queue, to its dead-letter queue (the inventory
    /// worker).
    pub inventory_dlq: bool,
    /// Malformed messages of the order queue, to its dead-letter queue (the order worker).
    pub order_dlq: bool,
}

impl Sends {
    pub const NONE: Sends = Sends {
        inventory_queue: false,
        order_queue: false,
        order_events: false,
        inventory_dlq: false,
        order_dlq: false,
    };
    pub const ALL: Sends = Sends {
        inventory_queue: true,
        order_queue: true,
        order_events: true,
        inventory_dlq: true,
        order_dlq: true,
    };
    /// What moving an order sends: the inventory command and the order event.
    pub const ORDER_MOVES: Sends = Sends {
        inventory_queue: true,
        order_events: true,
        ..Sends::NONE
    };
    pub const fn any(self) -> bool {
        self.inventory_queue
            || self.order_queue
            || self.order_events
            || self.inventory_dlq
            || self.order_dlq
    }

    pub const fn and(self, other: Sends) -> Sends {
        Sends {
            inventory_queue: self.inventory_queue || other.inventory_queue,
            order_queue: self.order_queue || other.order_queue,
            order_events: self.order_events || other.order_events,
            inventory_dlq: self.inventory_dlq || other.inventory_dlq,
            order_dlq: self.order_dlq || other.order_dlq,
        }
    }

    /// Whether these include `destination`.
    pub const fn includes(self, destination: zx_domain::Destination) -> bool {
        match destination {
            zx_domain::Destination::InventoryQueue => self.inventory_queue,
            zx_domain::Destination::OrderQueue => self.order_queue,
            zx_domain::Destination::OrderEvents => self.order_events,
        }
    }
}

/// A set of destinations as a type: a sender port (`crate::ports::Sender<S>`) sends there only.
pub trait SendSet: Send + Sync + 'static {
    const SENDS: Sends;
}

/// What moving an order sends: `inventory.*` commands and order events.
pub struct OrderMoves;
impl SendSet for OrderMoves {
    const SENDS: Sends = Sends::ORDER_MOVES;
}

/// The inventory worker's answers (`inventory.reserved`, `inventory.failed`) and its
/// dead-letter queue.
pub struct InventoryAnswers;
impl SendSet for InventoryAnswers {
    const SENDS: Sends = Sends {
        order_queue: true,
        inventory_dlq: true,
        ..Sends::NONE
    };
}

/// The order worker's events and its dead-letter queue. The release of a rejected order (a
/// tombstone: nothing is held) stays in the outbox for the relay, so the order worker may not
/// send to the inventory queue.
pub struct OrderAnswers;
impl SendSet for OrderAnswers {
    const SENDS: Sends = Sends {
        order_events: true,
        order_dlq: true,
        ..Sends::NONE
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_together_are_the_wider_of_each() {
        let read = Needs {
            users: Use::Read,
            sessions: SessionUse::CHECK,
            ..Needs::NONE
        };
        let write = Needs {
            users: Use::Write,
            sends: OrderAnswers::SENDS,
            cache: true,
            ..Needs::NONE
        };
        let both = read.and(write);
        assert_eq!(both.users, Use::Write);
        assert_eq!(both.sessions, SessionUse::CHECK);
        assert!(both.cache && both.sends.order_dlq && !both.sends.inventory_queue);
        assert_eq!(Needs::NONE.and(Needs::ALL), Needs::ALL);
        assert_eq!(read.and(Needs::NONE), read);
    }
}
