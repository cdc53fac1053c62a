//! The repository contract: one suite, run unchanged against every backend (DynamoDB through
//! LocalStack, Postgres), each test on a table or schema of its own.

use std::sync::Arc;

use zx_domain::{
    Email, PasswordHash, RepositoryError, Role, UniqueField, User, UserId, UserRepository, Username,
};

fn hash() -> PasswordHash {
    PasswordHash::from_stored(format!("$2b$04${}", "x".repeat(53))).unwrap()
}

fn user(username: &str, email: &str) -> User {
    User::new(
        Username::parse(username).unwrap(),
        Email::parse(email).unwrap(),
        hash(),
        Role::Customer,
    )
}

async fn create_then_find_by_id_and_email(users: Arc<dyn UserRepository>) {
    // Arrange
    let alice = user("alice", "alice@example.com");
    // Act
    users.create(&alice).await.unwrap();
    // Assert
    assert_eq!(
        users.find_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    let by_email = users
        .find_by_email(&Email::parse(" ALICE@Example.COM ").unwrap())
        .await
        .unwrap();
    assert_eq!(by_email, Some(alice));
}

async fn missing_users_are_none(users: Arc<dyn UserRepository>) {
    assert_eq!(users.find_by_id(&UserId::generate()).await.unwrap(), None);
    assert_eq!(
        users
            .find_by_email(&Email::parse("nobody@example.com").unwrap())
            .await
            .unwrap(),
        None
    );
}

async fn duplicate_email_is_a_conflict(users: Arc<dyn UserRepository>) {
    users.create(&user("bob", "bob@example.com")).await.unwrap();
    let error = users
        .create(&user("bobby", "BOB@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RepositoryError::Conflict(UniqueField::Email)),
        "{error:?}"
    );
}

async fn duplicate_username_in_any_case_is_a_conflict(users: Arc<dyn UserRepository>) {
    users
        .create(&user("Carol", "carol@example.com"))
        .await
        .unwrap();
    let error = users
        .create(&user("cAROL", "carol2@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RepositoryError::Conflict(UniqueField::Username)),
        "{error:?}"
    );
    // Nothing of the failed creation remains: its e-mail is still free.
    users
        .create(&user("carol2", "carol2@example.com"))
        .await
        .unwrap();
}

/// Finding 10: look-alike usernames cannot coexist, on either backend (the key is computed in
/// Rust, stored as is), and one of them may take a name again after the first is renamed.
async fn look_alike_usernames_cannot_coexist(users: Arc<dyn UserRepository>) {
    let admin = user("admin", "admin@example.com");
    users.create(&admin).await.unwrap();
    for (i, alike) in [
        "\u{430}dmin",
        "\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}",
        "Admin",
        "ADMIN",
    ]
    .into_iter()
    .enumerate()
    {
        let error = users
            .create(&user(alike, &format!("alike{i}@example.com")))
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::Conflict(UniqueField::Username)),
            "{alike:?}: {error:?}"
        );
    }
    let mut renamed = admin.next_version();
    renamed.username = Username::parse("root_admin").unwrap();
    users.update(&admin, &renamed).await.unwrap();
    users
        .create(&user("\u{430}dmin", "cyrillic@example.com"))
        .await
        .unwrap();
}

async fn update_changes_fields_and_moves_uniqueness(users: Arc<dyn UserRepository>) {
    let dave = user("dave", "dave@example.com");
    users.create(&dave).await.unwrap();
    let mut next = dave.next_version();
    next.email = Email::parse("david@example.com").unwrap();
    next.username = Username::parse("david").unwrap();
    next.role = Role::Admin;
    users.update(&dave, &next).await.unwrap();

    assert_eq!(
        users.find_by_id(&dave.id).await.unwrap(),
        Some(next.clone())
    );
    assert_eq!(users.find_by_email(&dave.email).await.unwrap(), None);
    assert_eq!(users.find_by_email(&next.email).await.unwrap(), Some(next));
    // The old e-mail and username are free again.
    users
        .create(&user("dave", "dave@example.com"))
        .await
        .unwrap();
}

async fn update_to_a_taken_email_conflicts_and_changes_nothing(users: Arc<dyn UserRepository>) {
    let erin = user("erin", "erin@example.com");
    let frank = user("frank", "frank@example.com");
    users.create(&erin).await.unwrap();
    users.create(&frank).await.unwrap();
    let mut next = erin.next_version();
    next.email = frank.email.clone();
    let error = users.update(&erin, &next).await.unwrap_err();
    assert!(
        matches!(error, RepositoryError::Conflict(UniqueField::Email)),
        "{error:?}"
    );
    assert_eq!(
        users.find_by_id(&erin.id).await.unwrap(),
        Some(erin.clone())
    );
    let mut next = erin.next_version();
    next.username = Username::parse("FRANK").unwrap();
    let error = users.update(&erin, &next).await.unwrap_err();
    assert!(
        matches!(error, RepositoryError::Conflict(UniqueField::Username)),
        "{error:?}"
    );
}

async fn stale_updates_are_rejected(users: Arc<dyn UserRepository>) {
    let gina = user("gina", "gina@example.com");
    users.create(&gina).await.unwrap();
    let first = gina.next_version();
    users.update(&gina, &first).await.unwrap();
    let mut stale = gina.next_version();
    stale.role = Role::Admin;
    let error = users.update(&gina, &stale).await.unwrap_err();
    assert!(
        matches!(error, RepositoryError::ConcurrentUpdate),
        "{error:?}"
    );
    assert_eq!(
        users.find_by_id(&gina.id).await.unwrap().unwrap().role,
        Role::Customer
    );
}

async fn twenty_concurrent_registrations_with_one_email_give_one_success(
    users: Arc<dyn UserRepository>,
) {
    let attempts = (0..20).map(|i| {
        let users = users.clone();
        tokio::spawn(async move {
            users
                .create(&user(&format!("racer{i}"), "race@example.com"))
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let (mut created, mut conflicts) = (0, 0);
    for result in results {
        match result.unwrap() {
            Ok(()) => created += 1,
            Err(RepositoryError::Conflict(UniqueField::Email)) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((created, conflicts), (1, 19));
    assert!(
        users
            .find_by_email(&Email::parse("race@example.com").unwrap())
            .await
            .unwrap()
            .is_some()
    );
}

/// One test per (backend, case): `$module::{dynamodb,postgres}::$case` runs `$cases::$case`
/// against a fresh, isolated backend of type `$backend` and removes it afterwards.
macro_rules! contract_suites {
    ($module:ident = $backend:path, field $field:ident, cases $cases:path: $($case:ident),* $(,)?) => {
        mod $module {
            contract_suites!(@backend dynamodb, $backend, $field, $cases: $($case),*);
            contract_suites!(@backend postgres, $backend, $field, $cases: $($case),*);
        }
    };
    (@backend $kind:ident, $backend:path, $field:ident, $cases:path: $($case:ident),*) => {
        mod $kind {
            use $backend as Backend;
            use $cases as cases;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = Backend::$kind().await;
                    cases::$case(backend.$field.clone()).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

contract_suites!(users = zx_tests::Backend, field users, cases crate:
    create_then_find_by_id_and_email,
    missing_users_are_none,
    duplicate_email_is_a_conflict,
    duplicate_username_in_any_case_is_a_conflict,
    look_alike_usernames_cannot_coexist,
    update_changes_fields_and_moves_uniqueness,
    update_to_a_taken_email_conflicts_and_changes_nothing,
    stale_updates_are_rejected,
    twenty_concurrent_registrations_with_one_email_give_one_success,
);

// ---------------------------------------------------------------- sessions

mod sessions {
    use std::time::Duration;

    use zx_domain::{
        RepositoryError, Session, SessionId, Timestamp, TokenHash, User, UserRepository,
    };
    use zx_tests::SessionStores;

    fn token_hash(seed: u8) -> TokenHash {
        TokenHash::from_hex(&format!("{seed:02x}").repeat(32)).unwrap()
    }

    async fn stored_user(users: &dyn UserRepository) -> User {
        let id = zx_domain::UserId::generate();
        let user = super::user(
            &format!("u{}", &id.as_str()[24..]),
            &format!("{id}@example.com"),
        );
        users.create(&user).await.unwrap();
        user
    }

    fn session_of(user: &User, hash: u8) -> Session {
        let now = Timestamp::now();
        Session {
            id: SessionId::generate(),
            user_id: user.id.clone(),
            token_hash: token_hash(hash),
            user_epoch: user.session_epoch,
            created_at: now,
            expires_at: now.plus(Duration::from_secs(3600)),
            revoked: false,
            used_hashes: Vec::new(),
        }
    }

    /// Rotating `current` to `next` is refused and changes nothing.
    async fn rotation_refused(stores: &SessionStores, current: &Session, next: &Session) {
        let before = stores.sessions.find_session(&current.id).await.unwrap();
        let error = stores
            .sessions
            .rotate_session(current, next)
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::ConcurrentUpdate),
            "{error:?}"
        );
        assert_eq!(
            stores.sessions.find_session(&current.id).await.unwrap(),
            before
        );
    }

    pub async fn create_then_find(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let session = session_of(&user, 1);
        stores.sessions.create_session(&session).await.unwrap();
        assert_eq!(
            stores.sessions.find_session(&session.id).await.unwrap(),
            Some(session.clone())
        );
        assert_eq!(
            stores
                .sessions
                .find_session(&SessionId::generate())
                .await
                .unwrap(),
            None
        );
        let again = stores.sessions.create_session(&session).await.unwrap_err();
        assert!(
            matches!(again, RepositoryError::ConcurrentUpdate),
            "{again:?}"
        );
    }

    pub async fn a_token_rotates_once(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let session = session_of(&user, 1);
        stores.sessions.create_session(&session).await.unwrap();
        let later = Timestamp::now().plus(Duration::from_secs(7200));
        let next = session.rotated(token_hash(2), later);
        stores
            .sessions
            .rotate_session(&session, &next)
            .await
            .unwrap();
        assert_eq!(
            stores.sessions.find_session(&session.id).await.unwrap(),
            Some(next.clone())
        );
        // The first token again: refused, nothing changes.
        let replay = session.rotated(token_hash(3), later);
        rotation_refused(&stores, &session, &replay).await;
        assert_eq!(
            stores.sessions.find_session(&session.id).await.unwrap(),
            Some(next.clone())
        );
        // The current one still rotates.
        stores
            .sessions
            .rotate_session(&next, &next.rotated(token_hash(4), later))
            .await
            .unwrap();
    }

    pub async fn a_revoked_session_never_rotates(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let session = session_of(&user, 1);
        stores.sessions.create_session(&session).await.unwrap();
        stores.sessions.revoke_session(&session.id).await.unwrap();
        stores.sessions.revoke_session(&session.id).await.unwrap();
        stores
            .sessions
            .revoke_session(&SessionId::generate())
            .await
            .unwrap();
        let found = stores
            .sessions
            .find_session(&session.id)
            .await
            .unwrap()
            .unwrap();
        assert!(found.revoked);
        let next = session.rotated(token_hash(2), session.expires_at);
        rotation_refused(&stores, &session, &next).await;
    }

    /// A password or role change moves the user's epoch on: every session of the user stops.
    pub async fn moving_the_user_epoch_revokes_every_session(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let (first, second) = (session_of(&user, 1), session_of(&user, 2));
        stores.sessions.create_session(&first).await.unwrap();
        stores.sessions.create_session(&second).await.unwrap();
        let changed = user.next_version().with_sessions_revoked();
        stores.users.update(&user, &changed).await.unwrap();
        assert_eq!(
            stores
                .users
                .find_by_id(&user.id)
                .await
                .unwrap()
                .unwrap()
                .session_epoch,
            user.session_epoch + 1
        );
        for session in [first, second] {
            let next = session.rotated(token_hash(9), session.expires_at);
            rotation_refused(&stores, &session, &next).await;
        }
        // A session begun in the new epoch rotates.
        let fresh = session_of(&changed, 3);
        stores.sessions.create_session(&fresh).await.unwrap();
        stores
            .sessions
            .rotate_session(&fresh, &fresh.rotated(token_hash(4), fresh.expires_at))
            .await
            .unwrap();
    }

    /// The standing of an access token's session: its user's epoch and role as stored now, and
    /// whether the session is revoked; nothing for an unknown session or user.
    pub async fn standing_reads_the_session_and_its_users_epoch_and_role(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let session = session_of(&user, 1);
        stores.sessions.create_session(&session).await.unwrap();
        let standing = stores
            .sessions
            .find_standing(&session.id, &user.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(standing.user_id, user.id);
        assert_eq!(standing.role, user.role);
        assert_eq!(
            standing.role_for(&user.id, user.session_epoch),
            Some(user.role)
        );
        // Promoted and moved on: the store says so at once.
        let mut changed = user.next_version().with_sessions_revoked();
        changed.role = zx_domain::Role::Admin;
        stores.users.update(&user, &changed).await.unwrap();
        let standing = stores
            .sessions
            .find_standing(&session.id, &user.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (standing.role, standing.user_epoch, standing.session_epoch),
            (
                zx_domain::Role::Admin,
                user.session_epoch + 1,
                user.session_epoch
            )
        );
        assert_eq!(standing.role_for(&user.id, user.session_epoch), None);
        // Revoked.
        let fresh = session_of(&changed, 2);
        stores.sessions.create_session(&fresh).await.unwrap();
        stores.sessions.revoke_session(&fresh.id).await.unwrap();
        let standing = stores
            .sessions
            .find_standing(&fresh.id, &user.id)
            .await
            .unwrap()
            .unwrap();
        assert!(standing.revoked);
        assert_eq!(standing.role_for(&user.id, changed.session_epoch), None);
        // Unknown session, unknown user.
        let unknown = session_of(&user, 3);
        assert_eq!(
            stores
                .sessions
                .find_standing(&unknown.id, &user.id)
                .await
                .unwrap(),
            None
        );
        let ghost = super::user("ghost2", "ghost2@example.com");
        assert_eq!(
            stores
                .sessions
                .find_standing(&session.id, &ghost.id)
                .await
                .unwrap(),
            None
        );
    }

    /// A session whose user is gone never rotates (epoch 0 included: no epoch attribute is not
    /// the same as no user).
    pub async fn a_session_of_a_missing_user_never_rotates(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let ghost = super::user("ghost", "ghost@example.com");
        let mut session = session_of(&user, 1);
        session.user_id = ghost.id.clone();
        // Postgres refuses the insert (its foreign key); DynamoDB stores it, and the rotation
        // must refuse it.
        match stores.sessions.create_session(&session).await {
            Ok(()) => {
                let next = session.rotated(token_hash(2), session.expires_at);
                rotation_refused(&stores, &session, &next).await;
            }
            Err(error) => assert!(matches!(error, RepositoryError::Failed { .. }), "{error:?}"),
        }
    }

    pub async fn of_ten_concurrent_rotations_of_one_token_one_wins(stores: SessionStores) {
        let user = stored_user(&*stores.users).await;
        let session = session_of(&user, 1);
        stores.sessions.create_session(&session).await.unwrap();
        let attempts = (0..10u8).map(|i| {
            let (sessions, session) = (stores.sessions.clone(), session.clone());
            tokio::spawn(async move {
                let next = session.rotated(token_hash(10 + i), session.expires_at);
                sessions.rotate_session(&session, &next).await
            })
        });
        let mut wins = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(()) => wins += 1,
                Err(RepositoryError::ConcurrentUpdate) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(wins, 1);
    }
}

/// Postgres has no TTL: logins delete expired sessions (DynamoDB's TTL does it there, on its
/// own schedule, which a test cannot wait for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logins_purge_expired_sessions() {
    use std::time::Duration;
    use zx_domain::{Session, SessionId, Timestamp, TokenHash};
    let backend = zx_tests::Backend::postgres().await;
    let stores = backend.sessions.clone();
    let alice = user("alice", "alice@example.com");
    stores.users.create(&alice).await.unwrap();
    let session = |expires_at: Timestamp, seed: u8| Session {
        id: SessionId::generate(),
        user_id: alice.id.clone(),
        token_hash: TokenHash::from_hex(&format!("{seed:02x}").repeat(32)).unwrap(),
        user_epoch: 0,
        created_at: Timestamp::now().minus(Duration::from_secs(7200)),
        expires_at,
        revoked: false,
        used_hashes: Vec::new(),
    };
    let expired = session(Timestamp::now().minus(Duration::from_secs(60)), 1);
    let live = session(Timestamp::now().plus(Duration::from_secs(3600)), 2);
    stores.sessions.create_session(&expired).await.unwrap();
    stores.sessions.create_session(&live).await.unwrap();
    // The second creation purged the first, and only it.
    assert_eq!(
        stores.sessions.find_session(&expired.id).await.unwrap(),
        None
    );
    assert!(
        stores
            .sessions
            .find_session(&live.id)
            .await
            .unwrap()
            .is_some()
    );
    backend.cleanup().await;
}

contract_suites!(session_store = zx_tests::Backend, field sessions, cases crate::sessions:
    create_then_find,
    a_token_rotates_once,
    a_revoked_session_never_rotates,
    moving_the_user_epoch_revokes_every_session,
    a_session_of_a_missing_user_never_rotates,
    of_ten_concurrent_rotations_of_one_token_one_wins,
    standing_reads_the_session_and_its_users_epoch_and_role,
);

// ---------------------------------------------------------------- products and stock

mod catalogue {
    use std::collections::HashSet;
    use std::sync::Arc;

    use zx_domain::{
        CategoryId, PageLimit, Price, ProductId, ProductQuery, ProductRepository, RepositoryError,
        SearchTerm, Stock, StockChange, StockChangeId, Timestamp,
    };

    use zx_tests::sample_product as product;

    async fn names(products: &dyn ProductRepository, query: ProductQuery) -> Vec<String> {
        let page = products.list_products(&query).await.unwrap();
        page.items
            .iter()
            .map(|p| p.name.as_str().to_owned())
            .collect()
    }

    fn query() -> ProductQuery {
        ProductQuery {
            limit: PageLimit::parse("100").unwrap(),
            ..ProductQuery::default()
        }
    }

    /// Finding 6: a search (or a price filter) examines at most `MAX_EXAMINED` products a
    /// request. Over a catalogue larger than that, a term nobody uses answers an empty page
    /// with a cursor, the next request goes on from there, and the walk ends; a match among the
    /// oldest products is found on a later page, after partial ones.
    pub async fn searches_examine_a_bounded_number_of_products(
        products: Arc<dyn ProductRepository>,
    ) {
        // The needle is the oldest; the rest are a second newer, made 50 at a time.
        let needle = product("Oolong needle", "the oldest one", "bulk", 100, 1);
        products.create_product(&needle).await.unwrap();
        let later = needle.created_at.plus(std::time::Duration::from_secs(1));
        let made: Vec<_> = (1..zx_domain::MAX_EXAMINED + 120)
            .map(|i| {
                let mut p = product(&format!("Item {i}"), "plain", "bulk", 100, 1);
                (p.created_at, p.updated_at) = (later, later);
                p
            })
            .collect();
        futures::future::join_all(made.chunks(50).map(|chunk| {
            let products = products.clone();
            async move {
                for p in chunk {
                    products.create_product(p).await.unwrap();
                }
            }
        }))
        .await;
        let walk = |term: &'static str| {
            let products = products.clone();
            async move {
                let mut query = ProductQuery {
                    search: Some(SearchTerm::parse(term).unwrap()),
                    ..query()
                };
                let mut pages = Vec::new();
                loop {
                    let page = products.list_products(&query).await.unwrap();
                    pages.push(
                        page.items
                            .iter()
                            .map(|p| p.name.as_str().to_owned())
                            .collect::<Vec<_>>(),
                    );
                    match page.next {
                        Some(next) => query.after = Some(next),
                        None => break pages,
                    }
                    assert!(pages.len() < 10, "the walk does not end");
                }
            }
        };
        let nothing = walk("qzxv-no-such-thing-9").await;
        assert_eq!(
            nothing,
            [Vec::<String>::new(), Vec::new()],
            "two bounded requests, nothing found"
        );
        let oldest = walk("needle").await;
        assert_eq!(oldest.len(), 2, "{oldest:?}");
        assert!(oldest[0].is_empty());
        assert_eq!(oldest[1], ["Oolong needle"]);
    }

    pub async fn create_then_find(products: Arc<dyn ProductRepository>) {
        let phone = product("Phone X", "A phone", "phones", 399_900, 5);
        products.create_product(&phone).await.unwrap();
        assert_eq!(products.find_product(&phone.id).await.unwrap(), Some(phone));
        assert_eq!(
            products.find_product(&ProductId::generate()).await.unwrap(),
            None
        );
    }

    /// Creates, in this order (so newest first is the reverse): a..f.
    async fn catalogue(products: &dyn ProductRepository) {
        for (name, description, category, price) in [
            ("a Phone Case", "Fits the Phone X", "accessories", 1_999),
            ("b 50% off Charger", "USB-C, fast", "accessories", 2_999),
            ("c Cable_2m", "braided cable", "accessories", 999),
            ("d Phone X", "flagship PHONE", "phones", 399_900),
            ("e Phone Lite", "budget phone, 100%", "phones", 99_900),
            ("f Laptop", "13 inch", "computers", 699_900),
        ] {
            products
                .create_product(&product(name, description, category, price, 10))
                .await
                .unwrap();
        }
    }

    pub async fn filters_alone_and_combined(products: Arc<dyn ProductRepository>) {
        catalogue(&*products).await;
        let p = &*products;
        let category = |c: &str| Some(CategoryId::parse(c).unwrap());
        let price = |minor: i64| Some(Price::from_minor(minor).unwrap());
        let search = |t: &str| Some(SearchTerm::parse(t).unwrap());

        let all = names(p, query()).await;
        assert_eq!(
            all,
            [
                "f Laptop",
                "e Phone Lite",
                "d Phone X",
                "c Cable_2m",
                "b 50% off Charger",
                "a Phone Case"
            ]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    category: category("phones"),
                    ..query()
                }
            )
            .await,
            ["e Phone Lite", "d Phone X"]
        );
        // Exact bounds are included.
        assert_eq!(
            names(
                p,
                ProductQuery {
                    min_price: price(99_900),
                    ..query()
                }
            )
            .await,
            ["f Laptop", "e Phone Lite", "d Phone X"]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    max_price: price(1_999),
                    ..query()
                }
            )
            .await,
            ["c Cable_2m", "a Phone Case"]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    min_price: price(999),
                    max_price: price(2_999),
                    ..query()
                }
            )
            .await,
            ["c Cable_2m", "b 50% off Charger", "a Phone Case"]
        );
        // Search: case-insensitive, name or description, % and _ literal.
        assert_eq!(
            names(
                p,
                ProductQuery {
                    search: search("PHONE"),
                    ..query()
                }
            )
            .await,
            ["e Phone Lite", "d Phone X", "a Phone Case"]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    search: search("0%"),
                    ..query()
                }
            )
            .await,
            ["e Phone Lite", "b 50% off Charger"]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    search: search("e_"),
                    ..query()
                }
            )
            .await,
            ["c Cable_2m"]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    search: search("0%"),
                    ..query()
                }
            )
            .await,
            ["e Phone Lite", "b 50% off Charger"]
        );
        assert!(
            names(
                p,
                ProductQuery {
                    search: search("phone_"),
                    ..query()
                }
            )
            .await
            .is_empty()
        );
        // Everything at once.
        assert_eq!(
            names(
                p,
                ProductQuery {
                    category: category("phones"),
                    min_price: price(99_900),
                    max_price: price(99_900),
                    search: search("lite"),
                    ..query()
                }
            )
            .await,
            ["e Phone Lite"]
        );
        assert_eq!(
            names(
                p,
                ProductQuery {
                    category: category("accessories"),
                    search: search("fast"),
                    ..query()
                }
            )
            .await,
            ["b 50% off Charger"]
        );
        assert!(
            names(
                p,
                ProductQuery {
                    category: category("toys"),
                    ..query()
                }
            )
            .await
            .is_empty()
        );
    }

    pub async fn soft_deleted_products_are_invisible(products: Arc<dyn ProductRepository>) {
        let gone = product("Gone", "old model", "phones", 100, 1);
        let kept = product("Kept", "new model", "phones", 100, 1);
        products.create_product(&gone).await.unwrap();
        products.create_product(&kept).await.unwrap();
        let mut deleted = gone.clone();
        deleted.deleted_at = Some(Timestamp::now());
        deleted.version += 1;
        products.update_product(&gone, &deleted).await.unwrap();

        let category = Some(CategoryId::parse("phones").unwrap());
        assert_eq!(names(&*products, query()).await, ["Kept"]);
        assert_eq!(
            names(
                &*products,
                ProductQuery {
                    category,
                    ..query()
                }
            )
            .await,
            ["Kept"]
        );
        // Still readable by id (orders keep their history).
        assert!(
            products
                .find_product(&gone.id)
                .await
                .unwrap()
                .unwrap()
                .deleted_at
                .is_some()
        );
        // No stock changes on a deleted product.
        let error = products
            .change_stock(&gone.id, StockChange::Adjust(1), &StockChangeId::generate())
            .await
            .unwrap_err();
        assert!(matches!(error, RepositoryError::NotFound), "{error:?}");
    }

    pub async fn updates_are_versioned_and_move_categories(products: Arc<dyn ProductRepository>) {
        let item = product("Tablet", "10 inch", "phones", 200_000, 3);
        products.create_product(&item).await.unwrap();
        let mut next = item.clone();
        next.category = CategoryId::parse("computers").unwrap();
        next.price = Price::from_minor(180_000).unwrap();
        next.version += 1;
        products.update_product(&item, &next).await.unwrap();
        let stale = products.update_product(&item, &next).await.unwrap_err();
        assert!(
            matches!(stale, RepositoryError::ConcurrentUpdate),
            "{stale:?}"
        );

        let in_category = |c: &str| ProductQuery {
            category: Some(CategoryId::parse(c).unwrap()),
            ..query()
        };
        assert!(names(&*products, in_category("phones")).await.is_empty());
        assert_eq!(
            names(&*products, in_category("computers")).await,
            ["Tablet"]
        );
        let stored = products.find_product(&item.id).await.unwrap().unwrap();
        assert_eq!((stored.price.minor(), stored.version), (180_000, 2));
    }

    pub async fn pagination_is_stable_under_concurrent_inserts(
        products: Arc<dyn ProductRepository>,
    ) {
        let mut existing = HashSet::new();
        for i in 0..45 {
            let p = product(
                &format!("item {i}"),
                "",
                if i % 2 == 0 { "even" } else { "odd" },
                i,
                1,
            );
            products.create_product(&p).await.unwrap();
            existing.insert(p.id);
        }
        // Another task keeps adding products while we walk.
        let writer = {
            let products = products.clone();
            tokio::spawn(async move {
                for i in 0..30 {
                    products
                        .create_product(&product(&format!("new {i}"), "", "even", i, 1))
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = products
                .list_products(&ProductQuery {
                    limit: PageLimit::parse("7").unwrap(),
                    after: after.clone(),
                    ..ProductQuery::default()
                })
                .await
                .unwrap();
            assert!(page.items.len() <= 7);
            // Newest first within the page.
            assert!(
                page.items
                    .windows(2)
                    .all(|w| (w[0].created_at, &w[0].id) > (w[1].created_at, &w[1].id))
            );
            seen.extend(page.items.iter().map(|p| p.id.clone()));
            match page.next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        writer.await.unwrap();
        let unique: HashSet<ProductId> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "a product was returned twice");
        assert!(
            existing.is_subset(&unique),
            "{} of 45 existing products were skipped",
            existing.difference(&unique).count()
        );
    }

    /// A `Set` to `available` made against the stock as it is now (the tag `GET /stock` gives).
    async fn set_to(
        products: &dyn ProductRepository,
        id: &ProductId,
        available: i64,
    ) -> StockChange {
        let tag = products
            .stock_records(id)
            .await
            .unwrap()
            .map(|records| records.tag())
            .unwrap_or_default();
        StockChange::Set { available, tag }
    }

    pub async fn stock_changes_are_atomic_and_never_negative(products: Arc<dyn ProductRepository>) {
        let item = product("Mug", "", "kitchen", 1_500, 0);
        products.create_product(&item).await.unwrap();
        assert_eq!(
            products
                .change_stock(
                    &item.id,
                    set_to(&*products, &item.id, 10).await,
                    &StockChangeId::generate()
                )
                .await
                .unwrap(),
            Stock {
                available: 10,
                reserved: 0
            }
        );
        assert_eq!(
            products
                .change_stock(&item.id, StockChange::Adjust(5), &StockChangeId::generate())
                .await
                .unwrap()
                .available,
            15
        );
        let error = products
            .change_stock(
                &item.id,
                StockChange::Adjust(-16),
                &StockChangeId::generate(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::InsufficientStock),
            "{error:?}"
        );
        let error = products
            .change_stock(
                &item.id,
                set_to(&*products, &item.id, -1).await,
                &StockChangeId::generate(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::InsufficientStock),
            "{error:?}"
        );
        let error = products
            .change_stock(
                &ProductId::generate(),
                StockChange::Set {
                    available: 1,
                    tag: "\"s0\"".into(),
                },
                &StockChangeId::generate(),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, RepositoryError::NotFound), "{error:?}");

        // 20 concurrent decrements of 1 from 15: exactly 15 succeed.
        let attempts = (0..20).map(|_| {
            let products = products.clone();
            let id = item.id.clone();
            tokio::spawn(async move {
                products
                    .change_stock(&id, StockChange::Adjust(-1), &StockChangeId::generate())
                    .await
            })
        });
        let results = futures::future::join_all(attempts).await;
        let succeeded = results
            .into_iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        assert_eq!(succeeded, 15);
        assert_eq!(
            products
                .find_product(&item.id)
                .await
                .unwrap()
                .unwrap()
                .stock
                .available,
            0
        );
        // Catalogue updates leave stock alone.
        let current = products.find_product(&item.id).await.unwrap().unwrap();
        let mut next = current.clone();
        next.stock.available = 999;
        next.version += 1;
        products.update_product(&current, &next).await.unwrap();
        assert_eq!(
            products
                .find_product(&item.id)
                .await
                .unwrap()
                .unwrap()
                .stock
                .available,
            0
        );
    }

    pub async fn stock_stays_within_bounds_and_retried_changes_apply_once(
        products: Arc<dyn ProductRepository>,
    ) {
        let item = product("Crate", "", "kitchen", 100, 10);
        products.create_product(&item).await.unwrap();
        let available = |products: Arc<dyn ProductRepository>, id: ProductId| async move {
            products
                .find_product(&id)
                .await
                .unwrap()
                .unwrap()
                .stock
                .available
        };
        // The bound is a condition of the write: nothing changes when it would be crossed.
        for change in [
            set_to(&*products, &item.id, Stock::MAX_UNITS + 1).await,
            StockChange::Adjust(Stock::MAX_UNITS - 9),
            StockChange::Adjust(i64::MAX),
        ] {
            let error = products
                .change_stock(&item.id, change.clone(), &StockChangeId::generate())
                .await
                .unwrap_err();
            assert!(
                matches!(error, RepositoryError::StockLimitExceeded),
                "{change:?}: {error:?}"
            );
        }
        assert_eq!(available(products.clone(), item.id.clone()).await, 10);
        let at_max = products
            .change_stock(
                &item.id,
                StockChange::Adjust(Stock::MAX_UNITS - 10),
                &StockChangeId::generate(),
            )
            .await
            .unwrap();
        assert_eq!(at_max.available, Stock::MAX_UNITS);
        let error = products
            .change_stock(&item.id, StockChange::Adjust(1), &StockChangeId::generate())
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::StockLimitExceeded),
            "{error:?}"
        );
        let error = products
            .change_stock(
                &item.id,
                StockChange::Adjust(i64::MIN),
                &StockChangeId::generate(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::InsufficientStock),
            "{error:?}"
        );
        products
            .change_stock(
                &item.id,
                set_to(&*products, &item.id, 10).await,
                &StockChangeId::generate(),
            )
            .await
            .unwrap();

        // A lost response, retried with the same change id: applied once.
        let change_id = StockChangeId::generate();
        let first = products
            .change_stock(&item.id, StockChange::Adjust(5), &change_id)
            .await
            .unwrap();
        let retried = products
            .change_stock(&item.id, StockChange::Adjust(5), &change_id)
            .await
            .unwrap();
        assert_eq!((first.available, retried.available), (15, 15));
        assert_eq!(available(products.clone(), item.id.clone()).await, 15);
        // Concurrent retries of one change: still once.
        let change_id = StockChangeId::generate();
        let retries = (0..5).map(|_| {
            let (products, id, change_id) = (products.clone(), item.id.clone(), change_id.clone());
            tokio::spawn(async move {
                products
                    .change_stock(&id, StockChange::Adjust(-3), &change_id)
                    .await
            })
        });
        for result in futures::future::join_all(retries).await {
            result.unwrap().unwrap();
        }
        assert_eq!(available(products.clone(), item.id.clone()).await, 12);

        // The same id for another change, or for another product: refused, nothing applied.
        let other = product("Other crate", "", "kitchen", 100, 7);
        products.create_product(&other).await.unwrap();
        for (id, change) in [
            (&item.id, StockChange::Adjust(-4)),
            (&item.id, set_to(&*products, &item.id, 50).await),
            (&other.id, StockChange::Adjust(-3)),
        ] {
            let error = products
                .change_stock(id, change.clone(), &change_id)
                .await
                .unwrap_err();
            assert!(
                matches!(error, RepositoryError::IdempotencyKeyReused),
                "{change:?}: {error:?}"
            );
        }
        assert_eq!(available(products.clone(), item.id.clone()).await, 12);
        assert_eq!(available(products.clone(), other.id.clone()).await, 7);
    }

    pub async fn retried_creates_succeed_once(products: Arc<dyn ProductRepository>) {
        let item = product("Lamp", "desk lamp", "home", 5_000, 3);
        products.create_product(&item).await.unwrap();
        // The same product again (a retry whose first response was lost): success, no change.
        products.create_product(&item).await.unwrap();
        assert_eq!(names(&*products, query()).await, ["Lamp"]);
        // Another product under the same id is a conflict.
        let mut other = product("Other", "", "home", 1, 1);
        other.id = item.id.clone();
        other.created_at = Timestamp::from_unix_millis(1).unwrap();
        let error = products.create_product(&other).await.unwrap_err();
        assert!(
            matches!(error, RepositoryError::ConcurrentUpdate),
            "{error:?}"
        );
        assert_eq!(
            products.find_product(&item.id).await.unwrap().unwrap().name,
            item.name
        );
    }

    /// `GET /categories`: live products counted by category, kept right by creations, moves,
    /// soft deletes, a stale write and a retried creation; an emptied category is not listed.
    pub async fn categories_count_live_products(products: Arc<dyn ProductRepository>) {
        let counts = |products: Arc<dyn ProductRepository>| async move {
            crate::category_counts(&*products).await
        };
        let owned = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
        };
        assert!(counts(products.clone()).await.is_empty());
        let a = product("A", "", "phones", 1, 1);
        let b = product("B", "", "phones", 1, 1);
        let c = product("C", "", "books", 1, 1);
        for p in [&a, &b, &c] {
            products.create_product(p).await.unwrap();
        }
        // A retried creation counts once.
        products.create_product(&a).await.unwrap();
        assert_eq!(
            counts(products.clone()).await,
            owned(&[("books", 1), ("phones", 2)])
        );
        // B moves to books; a stale write of B changes nothing.
        let mut moved = b.clone();
        moved.category = CategoryId::parse("books").unwrap();
        moved.version += 1;
        products.update_product(&b, &moved).await.unwrap();
        assert!(matches!(
            products.update_product(&b, &moved).await,
            Err(RepositoryError::ConcurrentUpdate)
        ));
        // A price change leaves the counts alone.
        let mut repriced = c.clone();
        repriced.price = Price::from_minor(2).unwrap();
        repriced.version += 1;
        products.update_product(&c, &repriced).await.unwrap();
        assert_eq!(
            counts(products.clone()).await,
            owned(&[("books", 2), ("phones", 1)])
        );
        // A soft delete takes A out; phones is then empty and not listed.
        let mut deleted = a.clone();
        deleted.deleted_at = Some(Timestamp::now());
        deleted.version += 1;
        products.update_product(&a, &deleted).await.unwrap();
        assert_eq!(counts(products.clone()).await, owned(&[("books", 2)]));
        // A change to a deleted product counts nowhere; a restore counts again.
        let mut renamed = deleted.clone();
        renamed.version += 1;
        products.update_product(&deleted, &renamed).await.unwrap();
        assert_eq!(counts(products.clone()).await, owned(&[("books", 2)]));
        let mut restored = renamed.clone();
        restored.deleted_at = None;
        restored.version += 1;
        products.update_product(&renamed, &restored).await.unwrap();
        assert_eq!(
            counts(products.clone()).await,
            owned(&[("books", 2), ("phones", 1)])
        );
    }

    pub async fn find_products_reads_many_at_once(products: Arc<dyn ProductRepository>) {
        let a = product("Alpha", "", "misc", 1, 1);
        let b = product("Beta", "", "misc", 2, 2);
        products.create_product(&a).await.unwrap();
        products.create_product(&b).await.unwrap();
        let mut found = products
            .find_products(&[
                b.id.clone(),
                ProductId::generate(),
                a.id.clone(),
                b.id.clone(),
            ])
            .await
            .unwrap();
        found.sort_by(|x, y| x.name.as_str().cmp(y.name.as_str()));
        assert_eq!(found, vec![a, b]);
        assert!(products.find_products(&[]).await.unwrap().is_empty());
    }
}

contract_suites!(products = zx_tests::ProductBackend, field products, cases crate::catalogue:
    create_then_find,
    filters_alone_and_combined,
    soft_deleted_products_are_invisible,
    updates_are_versioned_and_move_categories,
    pagination_is_stable_under_concurrent_inserts,
    stock_changes_are_atomic_and_never_negative,
    stock_stays_within_bounds_and_retried_changes_apply_once,
    retried_creates_succeed_once,
    find_products_reads_many_at_once,
    searches_examine_a_bounded_number_of_products,
    categories_count_live_products,
);

/// Loses the response of the first `TransactWriteItems` after DynamoDB applied it: the SDK sees
/// a 500 and retries the very same request, as it would after a dropped connection.
#[derive(Debug, Clone, Default)]
struct LoseFirstTransactionResponse {
    transaction_in_flight: Arc<std::sync::atomic::AtomicBool>,
    lost: Arc<std::sync::atomic::AtomicUsize>,
}

impl aws_sdk_dynamodb::config::Intercept for LoseFirstTransactionResponse {
    fn name(&self) -> &'static str {
        "LoseFirstTransactionResponse"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime: &aws_sdk_dynamodb::config::RuntimeComponents,
        _config: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context.request().headers().get("x-amz-target");
        self.transaction_in_flight.store(
            target.is_some_and(|t| t.ends_with(".TransactWriteItems")),
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _runtime: &aws_sdk_dynamodb::config::RuntimeComponents,
        _config: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        let applied = context.response().status().is_success();
        if self.transaction_in_flight.swap(false, SeqCst)
            && applied
            && self.lost.compare_exchange(0, 1, SeqCst, SeqCst).is_ok()
        {
            let response = context.response_mut();
            *response.status_mut() = 500.try_into()?;
            *response.body_mut() = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"response lost"}"#.into();
        }
        Ok(())
    }
}

impl LoseFirstTransactionResponse {
    /// A DynamoDB catalogue whose client loses the first applied transaction's response.
    async fn catalogue() -> (Self, zx_tests::ProductBackend) {
        let lose = Self::default();
        let backend = zx_tests::ProductBackend::dynamodb_with({
            let lose = lose.clone();
            move |config| config.interceptor(lose)
        })
        .await;
        (lose, backend)
    }
}

/// The categories as (id, count) pairs.
async fn category_counts(categories: &dyn zx_domain::CategoryReader) -> Vec<(String, u64)> {
    categories
        .categories()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id.as_str().to_owned(), c.products))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_change_whose_response_is_lost_and_retried_by_the_sdk_applies_once() {
    use zx_domain::{StockChange, StockChangeId};
    let (lose, backend) = LoseFirstTransactionResponse::catalogue().await;
    let item = zx_tests::sample_product("Retried", "", "kitchen", 100, 10);
    backend.products.create_product(&item).await.unwrap();

    let stock = backend
        .products
        .change_stock(&item.id, StockChange::Adjust(5), &StockChangeId::generate())
        .await
        .unwrap();

    assert_eq!(
        lose.lost.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no response was lost"
    );
    assert_eq!(stock.available, 15);
    let stored = backend
        .products
        .find_product(&item.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.stock.available, 15, "the delta was applied twice");
    backend.cleanup().await;
}

/// A product's creation and its move to another category, each with its response lost after
/// DynamoDB applied it and the request retried by the SDK: the counters count each once.
#[tokio::test]
async fn category_counts_survive_lost_responses() {
    use std::sync::atomic::Ordering::SeqCst;
    use zx_domain::{CategoryId, RepositoryError};
    let (lose, backend) = LoseFirstTransactionResponse::catalogue().await;
    let counts = || category_counts(&*backend.products);
    let item = zx_tests::sample_product("Lost", "", "kitchen", 100, 1);
    backend.products.create_product(&item).await.unwrap();
    assert_eq!(lose.lost.load(SeqCst), 1, "no response was lost");
    assert_eq!(counts().await, [("kitchen".to_owned(), 1)]);

    lose.lost.store(0, SeqCst);
    let mut moved = item.clone();
    moved.category = CategoryId::parse("books").unwrap();
    moved.version += 1;
    // Applied once; the retry may find it applied (the caller re-reads on a conflict).
    let outcome = backend.products.update_product(&item, &moved).await;
    assert!(
        matches!(outcome, Ok(()) | Err(RepositoryError::ConcurrentUpdate)),
        "{outcome:?}"
    );
    assert_eq!(lose.lost.load(SeqCst), 1, "no response was lost");
    assert_eq!(counts().await, [("books".to_owned(), 1)]);
    let stored = backend
        .products
        .find_product(&item.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.category.as_str(), "books");
    backend.cleanup().await;
}

/// Counters for a catalogue that predates them (or went wrong) are rebuilt from the live
/// products by `zx-admin recount-categories`; until then a bad counter is left out, not an
/// error.
#[tokio::test]
async fn category_counters_are_rebuilt_from_the_catalogue() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let aws = zx_tests::aws_config_for(&zx_tests::aws_endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let table = zx_tests::create_table(&client, "products").await;
    let products = zx_store_dynamodb::DynamoProductRepository::new(client.clone(), table.clone());
    for (name, category) in [("A", "phones"), ("B", "phones"), ("C", "books")] {
        let item = zx_tests::sample_product(name, "", category, 100, 1);
        zx_domain::ProductWriter::create_product(&products, &item)
            .await
            .unwrap();
    }
    // As if the products predated the counters, plus a corrupt and a negative counter.
    client
        .put_item()
        .table_name(&table)
        .item("pk", S("CATEGORIES".into()))
        .item("cat:books", S("not a number".into()))
        .item("cat:toys", N("-2".into()))
        .send()
        .await
        .unwrap();
    assert!(category_counts(&products).await.is_empty());
    let rebuilt = products.recount_categories().await.unwrap();
    let expected = [("books".to_owned(), 1), ("phones".to_owned(), 2)];
    assert_eq!(
        rebuilt
            .iter()
            .map(|c| (c.id.as_str().to_owned(), c.products))
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(category_counts(&products).await, expected);
    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
}

// ---------------------------------------------------------------- orders, outbox, inventory

mod saga {
    use std::collections::HashSet;
    use std::time::Duration;

    use zx_domain::{
        Commit, IdempotencyKey, IdempotencyRecord, Order, OrderCreation, OrderId, OrderLine,
        OrderQuery, OrderStatus, OutboxMessage, PageLimit, ProductId, Release, RepositoryError,
        Reservation, ReserveLine, Row, StatusChange, StockChange, StockChangeId, Timestamp, UserId,
    };
    use zx_orders::messages;
    use zx_tests::{OrderStores, sample_product};

    fn order(user: &UserId, created_at: Timestamp, lines: &[(&ProductId, u32)]) -> Order {
        let lines: Vec<OrderLine> = lines
            .iter()
            .map(|(id, quantity)| OrderLine {
                product_id: (*id).clone(),
                name: "thing".into(),
                unit_price: 250,
                quantity: *quantity,
            })
            .collect();
        Order {
            id: OrderId::generate(),
            user_id: user.clone(),
            status: OrderStatus::Pending,
            total: lines.iter().map(|l| l.line_total().unwrap()).sum(),
            lines,
            shipping_address: None,
            history: vec![StatusChange {
                from: None,
                to: OrderStatus::Pending,
                at: created_at,
                actor: format!("user:{user}"),
                reason: None,
            }],
            created_at,
            updated_at: created_at,
            version: 1,
        }
    }

    fn key(order: &Order, key: &str, fingerprint: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            user_id: order.user_id.clone(),
            key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: fingerprint.into(),
            order_id: order.id.clone(),
            expires_at: Timestamp::from_unix_millis(
                Timestamp::now().unix_millis() + 24 * 3600 * 1000,
            )
            .unwrap(),
        }
    }

    async fn place(stores: &OrderStores, order: &Order) {
        let outcome = stores
            .orders
            .create_order(
                order,
                &key(order, &order.id.to_string(), "f"),
                &[messages::reserve(order)],
                u32::MAX,
            )
            .await
            .unwrap();
        assert_eq!(outcome, OrderCreation::Created);
    }

    fn ago(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(Timestamp::now().unix_millis() - seconds * 1000).unwrap()
    }

    /// The messages of rows that must all be readable.
    fn messages_of(rows: Vec<Row<OutboxMessage>>) -> Vec<OutboxMessage> {
        rows.into_iter()
            .map(|row| row.value.expect("a readable row"))
            .collect()
    }

    fn query(user: Option<&UserId>, status: Option<OrderStatus>, limit: &str) -> OrderQuery {
        OrderQuery {
            user_id: user.cloned(),
            status,
            limit: PageLimit::parse(limit).unwrap(),
            after: None,
        }
    }

    /// An order, its key and its messages are stored together; the key taken again stores
    /// nothing and says what it was used for.
    pub async fn orders_keys_and_outbox_are_written_together(stores: OrderStores) {
        let user = UserId::generate();
        let first = order(&user, Timestamp::now(), &[(&ProductId::generate(), 2)]);
        let record = key(&first, "key-1", "fingerprint-a");
        // The first is written in a request's trace: its header is kept with the row.
        let traced = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let sent = [
            zx_http::trace::with_trace(zx_http::trace::TraceHeader::parse(traced), async {
                messages::reserve(&first)
            })
            .await,
            messages::order_created(&first),
        ];
        assert_eq!(sent[0].trace.as_deref(), Some(traced));
        let outcome = stores
            .orders
            .create_order(&first, &record, &sent, u32::MAX)
            .await
            .unwrap();
        assert_eq!(outcome, OrderCreation::Created);
        assert_eq!(
            stores.orders.find_order(&first.id).await.unwrap(),
            Some(first.clone())
        );
        let found = stores
            .orders
            .find_idempotency(&user, &record.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.order_id, found.fingerprint.as_str()),
            (first.id.clone(), "fingerprint-a")
        );
        // Another customer's identical key is another key.
        assert_eq!(
            stores
                .orders
                .find_idempotency(&UserId::generate(), &record.key)
                .await
                .unwrap(),
            None
        );

        let second = order(&user, Timestamp::now(), &[(&ProductId::generate(), 1)]);
        let outcome = stores
            .orders
            .create_order(
                &second,
                &key(&second, "key-1", "fingerprint-b"),
                &[messages::reserve(&second)],
                u32::MAX,
            )
            .await
            .unwrap();
        match outcome {
            OrderCreation::KeyTaken(existing) => {
                assert_eq!(existing.order_id, first.id);
                assert_eq!(existing.fingerprint, "fingerprint-a");
            }
            other => panic!("expected KeyTaken, got {other:?}"),
        }
        assert_eq!(stores.orders.find_order(&second.id).await.unwrap(), None);
        let later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 1000).unwrap();
        let unsent = messages_of(stores.outbox.unsent(later, None, 100).await.unwrap());
        let ids: HashSet<_> = unsent.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, sent.iter().map(|m| m.id.clone()).collect());
        assert!(unsent.iter().all(|m| m.order_id == first.id));
        assert!(unsent.iter().any(|m| m.body == sent[0].body));
        for message in &sent {
            let stored = unsent.iter().find(|m| m.id == message.id).unwrap();
            assert_eq!(
                stored.trace, message.trace,
                "the trace header is kept with its row"
            );
        }
        // Paging past a row (one the relay could not send) gives the ones after it.
        let page = stores.outbox.unsent(later, None, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        let first_id = page[0].value.as_ref().unwrap().id.clone();
        let next = messages_of(
            stores
                .outbox
                .unsent(later, Some(&page[0].key), 100)
                .await
                .unwrap(),
        );
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].id, first_id);
        assert_eq!(
            next[0].id,
            unsent.iter().find(|m| m.id != first_id).unwrap().id
        );

        stores.outbox.mark_sent(&unsent[..1]).await.unwrap();
        let rest = messages_of(stores.outbox.unsent(later, None, 100).await.unwrap());
        assert_eq!(rest.len(), 1);
        assert_ne!(rest[0].id, unsent[0].id);
        // Messages younger than the cutoff are left for their first send.
        assert!(
            stores
                .outbox
                .unsent(ago(60), None, 100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn ten_concurrent_creations_with_one_key_store_one_order(stores: OrderStores) {
        let user = UserId::generate();
        let product = ProductId::generate();
        let attempts = (0..10).map(|_| {
            let stores = stores.clone();
            let candidate = order(&user, Timestamp::now(), &[(&product, 1)]);
            let record = key(&candidate, "same-key", "same");
            tokio::spawn(async move {
                let outcome = stores
                    .orders
                    .create_order(
                        &candidate,
                        &record,
                        &[messages::reserve(&candidate)],
                        u32::MAX,
                    )
                    .await
                    .unwrap();
                (candidate.id, outcome)
            })
        });
        let results = futures::future::join_all(attempts).await;
        let created: Vec<OrderId> = results
            .iter()
            .filter_map(|r| match r.as_ref().unwrap() {
                (id, OrderCreation::Created) => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "{results:?}");
        for result in &results {
            if let (_, OrderCreation::KeyTaken(record)) = result.as_ref().unwrap() {
                assert_eq!(record.order_id, created[0]);
            }
        }
        let page = stores
            .orders
            .list_orders(&query(Some(&user), None, "100"))
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
    }

    /// Transitions are conditional on status and version: a stale one changes nothing, and of
    /// racing ones exactly one wins.
    pub async fn transitions_are_conditional_and_one_of_racing_ones_wins(stores: OrderStores) {
        let placed = order(
            &UserId::generate(),
            Timestamp::now(),
            &[(&ProductId::generate(), 1)],
        );
        place(&stores, &placed).await;
        let confirmed = placed
            .transitioned(OrderStatus::Confirmed, "system", None, Timestamp::now())
            .unwrap();
        stores
            .orders
            .update_order(
                &placed,
                &confirmed,
                &[messages::status_changed(placed.status, &confirmed)],
            )
            .await
            .unwrap();
        let stale = placed
            .transitioned(
                OrderStatus::Cancelled,
                "system",
                Some("timeout"),
                Timestamp::now(),
            )
            .unwrap();
        assert!(matches!(
            stores.orders.update_order(&placed, &stale, &[]).await,
            Err(RepositoryError::ConcurrentUpdate)
        ));
        let stored = stores.orders.find_order(&placed.id).await.unwrap().unwrap();
        assert_eq!(stored, confirmed);
        assert_eq!(stored.history.len(), 2);

        let racers = [OrderStatus::Paid, OrderStatus::Cancelled].map(|to| {
            let stores = stores.clone();
            let current = stored.clone();
            tokio::spawn(async move {
                let next = current
                    .transitioned(to, "user:x", None, Timestamp::now())
                    .unwrap();
                stores.orders.update_order(&current, &next, &[]).await
            })
        });
        let results = futures::future::join_all(racers).await;
        let wins = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        assert_eq!(wins, 1, "{results:?}");
        let after = stores.orders.find_order(&placed.id).await.unwrap().unwrap();
        assert_eq!(after.version, 3);
        assert_eq!(after.history.len(), 3);
    }

    /// Listings: newest first, paginated without gaps or repeats, by customer and by status,
    /// over every shard; stale pending orders oldest first.
    pub async fn listings_are_newest_first_by_customer_and_status(stores: OrderStores) {
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let product = ProductId::generate();
        let mut placed = Vec::new();
        for i in 0..24 {
            let owner = if i % 3 == 0 { &bob } else { &alice };
            let created = Timestamp::from_unix_millis(
                Timestamp::now().unix_millis() - 3_600_000 + i64::from(i) * 1000,
            )
            .unwrap();
            let o = order(owner, created, &[(&product, 1)]);
            place(&stores, &o).await;
            placed.push(o);
        }
        // Three of bob's are confirmed.
        for o in placed.iter().filter(|o| o.user_id == bob).take(3) {
            let next = o
                .transitioned(OrderStatus::Confirmed, "system", None, Timestamp::now())
                .unwrap();
            stores.orders.update_order(o, &next, &[]).await.unwrap();
        }
        let newest_first = |owner: Option<&UserId>| -> Vec<OrderId> {
            let mut orders: Vec<_> = placed
                .iter()
                .filter(|o| owner.is_none_or(|u| &o.user_id == u))
                .collect();
            orders
                .sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
            orders.iter().map(|o| o.id.clone()).collect()
        };
        for owner in [Some(&alice), Some(&bob), None] {
            let mut seen = Vec::new();
            let mut q = query(owner, None, "5");
            loop {
                let page = stores.orders.list_orders(&q).await.unwrap();
                assert!(page.items.len() <= 5);
                seen.extend(page.items.iter().map(|o| o.id.clone()));
                match page.next {
                    Some(next) => q.after = Some(next),
                    None => break,
                }
            }
            // Shop-wide listings may hold other tests' orders only on a shared table: ours
            // are isolated, so the walk is exactly ours.
            assert_eq!(seen, newest_first(owner), "owner {owner:?}");
        }
        let confirmed = stores
            .orders
            .list_orders(&query(None, Some(OrderStatus::Confirmed), "100"))
            .await
            .unwrap();
        assert_eq!(confirmed.items.len(), 3);
        assert!(
            confirmed
                .items
                .iter()
                .all(|o| o.user_id == bob && o.status == OrderStatus::Confirmed)
        );
        let bobs_pending = stores
            .orders
            .list_orders(&query(Some(&bob), Some(OrderStatus::Pending), "100"))
            .await
            .unwrap();
        assert_eq!(bobs_pending.items.len(), 5);

        // Pending orders are overdue by their clock (when their reserve was sent), never by
        // their age: these have none yet.
        let cutoff = ago(3_590);
        assert!(
            stores
                .orders
                .overdue(OrderStatus::Pending, Timestamp::now(), 100)
                .await
                .unwrap()
                .is_empty(),
            "no clock started, nothing overdue"
        );
        let still_pending: Vec<&Order> = placed
            .iter()
            .filter(|o| {
                !(o.user_id == bob
                    && placed
                        .iter()
                        .filter(|p| p.user_id == bob)
                        .take(3)
                        .any(|p| p.id == o.id))
            })
            .collect();
        for o in &still_pending {
            // Each clock starts as its reserve is sent (here: at creation); a second start
            // changes nothing.
            stores
                .orders
                .start_pending_clock(&o.id, o.created_at)
                .await
                .unwrap();
            stores
                .orders
                .start_pending_clock(&o.id, Timestamp::now())
                .await
                .unwrap();
        }
        let stale = stores
            .orders
            .overdue(OrderStatus::Pending, cutoff, 100)
            .await
            .unwrap();
        let stale: Vec<Order> = stale.into_iter().map(|r| r.value.unwrap()).collect();
        let expected: Vec<_> = still_pending
            .iter()
            .filter(|o| o.created_at < cutoff)
            .map(|o| o.id.clone())
            .collect();
        assert_eq!(
            stale.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(stale.windows(2).all(|w| w[0].created_at <= w[1].created_at));
        // Confirmed orders are overdue by when they were confirmed (just now): none yet.
        assert!(
            stores
                .orders
                .overdue(OrderStatus::Confirmed, cutoff, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            stores
                .orders
                .overdue(OrderStatus::Confirmed, Timestamp::now(), 100)
                .await
                .unwrap()
                .len(),
            3
        );
    }

    /// A row that cannot be read comes back as such (the rest of its page still reads);
    /// parked, it is never returned again but listed, and an operator can put it back. The
    /// same for an order that cannot be read: parked, it leaves expiry.
    pub async fn unreadable_rows_are_returned_as_such_and_parked_rows_stay_out(
        stores: OrderStores,
    ) {
        let user = UserId::generate();
        let good = order(&user, ago(30), &[(&ProductId::generate(), 1)]);
        place(&stores, &good).await;
        stores.raw.plant_unreadable_outbox_row(ago(3_600)).await;
        let later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 1000).unwrap();
        let rows = stores.outbox.unsent(later, None, 100).await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let bad = rows[0].clone();
        assert!(bad.value.is_err(), "the oldest row is the bad one: {bad:?}");
        assert_eq!(rows[1].value.as_ref().unwrap().order_id, good.id);

        stores
            .outbox
            .park(&bad.key, "unreadable: test")
            .await
            .unwrap();
        // Parking twice (a second relay run racing the first) is harmless.
        stores
            .outbox
            .park(&bad.key, "unreadable: again")
            .await
            .unwrap();
        let rows = messages_of(stores.outbox.unsent(later, None, 100).await.unwrap());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].order_id, good.id);
        let parked = stores.outbox.parked(100).await.unwrap();
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert!(parked[0].reason.contains("unreadable"), "{parked:?}");
        assert_eq!(parked[0].body, "{");
        assert!(parked[0].parked_at.is_some());

        assert!(stores.outbox.unpark(&parked[0].key).await.unwrap());
        assert!(!stores.outbox.unpark(&parked[0].key).await.unwrap());
        assert!(stores.outbox.parked(100).await.unwrap().is_empty());
        let rows = stores.outbox.unsent(later, None, 100).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].value.is_err());

        // An overdue order that cannot be read.
        let broken = order(&user, ago(120), &[(&ProductId::generate(), 1)]);
        place(&stores, &broken).await;
        stores
            .orders
            .start_pending_clock(&broken.id, ago(120))
            .await
            .unwrap();
        stores
            .orders
            .start_pending_clock(&good.id, ago(30))
            .await
            .unwrap();
        stores.raw.corrupt_order(&broken.id).await;
        let overdue = stores
            .orders
            .overdue(OrderStatus::Pending, ago(10), 100)
            .await
            .unwrap();
        assert_eq!(overdue.len(), 2, "{overdue:?}");
        assert!(overdue[0].value.is_err());
        assert_eq!(overdue[1].value.as_ref().unwrap().id, good.id);
        stores
            .orders
            .park_order(&overdue[0].key, "unreadable: test")
            .await
            .unwrap();
        let overdue = stores
            .orders
            .overdue(OrderStatus::Pending, ago(10), 100)
            .await
            .unwrap();
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].value.as_ref().unwrap().id, good.id);
    }

    /// A customer's open (pending or confirmed) orders are capped in the write that creates
    /// one; leaving pending/confirmed frees a place.
    pub async fn open_orders_are_capped(stores: OrderStores) {
        let user = UserId::generate();
        let product = ProductId::generate();
        let create = |o: &Order| {
            let stores = stores.clone();
            let o = o.clone();
            async move {
                stores
                    .orders
                    .create_order(&o, &key(&o, &o.id.to_string(), "f"), &[], 3)
                    .await
                    .unwrap()
            }
        };
        let mut open = Vec::new();
        for _ in 0..3 {
            let o = order(&user, Timestamp::now(), &[(&product, 1)]);
            assert_eq!(create(&o).await, OrderCreation::Created);
            open.push(o);
        }
        let fourth = order(&user, Timestamp::now(), &[(&product, 1)]);
        assert_eq!(create(&fourth).await, OrderCreation::TooManyOpen);
        assert_eq!(stores.orders.find_order(&fourth.id).await.unwrap(), None);
        // Another customer is not affected.
        let other = order(&UserId::generate(), Timestamp::now(), &[(&product, 1)]);
        assert_eq!(create(&other).await, OrderCreation::Created);
        // Confirmed is still open; paid is not.
        let confirmed = open[0]
            .transitioned(OrderStatus::Confirmed, "system", None, Timestamp::now())
            .unwrap();
        stores
            .orders
            .update_order(&open[0], &confirmed, &[])
            .await
            .unwrap();
        assert_eq!(create(&fourth).await, OrderCreation::TooManyOpen);
        let paid = confirmed
            .transitioned(OrderStatus::Paid, "user:admin", None, Timestamp::now())
            .unwrap();
        stores
            .orders
            .update_order(&confirmed, &paid, &[])
            .await
            .unwrap();
        assert_eq!(create(&fourth).await, OrderCreation::Created);
        let fifth = order(&user, Timestamp::now(), &[(&product, 1)]);
        assert_eq!(create(&fifth).await, OrderCreation::TooManyOpen);
        let cancelled = open[1]
            .transitioned(
                OrderStatus::Cancelled,
                "system",
                Some("timeout"),
                Timestamp::now(),
            )
            .unwrap();
        stores
            .orders
            .update_order(&open[1], &cancelled, &[])
            .await
            .unwrap();
        assert_eq!(create(&fifth).await, OrderCreation::Created);
    }

    /// Ten creations at once for a customer with room for three: exactly three are stored.
    pub async fn concurrent_creations_never_exceed_the_cap(stores: OrderStores) {
        let user = UserId::generate();
        let product = ProductId::generate();
        let attempts = (0..10).map(|_| {
            let stores = stores.clone();
            let o = order(&user, Timestamp::now(), &[(&product, 1)]);
            tokio::spawn(async move {
                loop {
                    match stores
                        .orders
                        .create_order(&o, &key(&o, &o.id.to_string(), "f"), &[], 3)
                        .await
                    {
                        Err(e) if e.is_transient() => tokio::task::yield_now().await,
                        other => return other.unwrap(),
                    }
                }
            })
        });
        let results = futures::future::join_all(attempts).await;
        let created = results
            .iter()
            .filter(|r| matches!(r.as_ref().unwrap(), OrderCreation::Created))
            .count();
        assert_eq!(created, 3, "{results:?}");
        let page = stores
            .orders
            .list_orders(&query(Some(&user), None, "100"))
            .await
            .unwrap();
        assert_eq!(page.items.len(), 3);
    }

    async fn stock(stores: &OrderStores, id: &ProductId) -> (i64, i64) {
        let p = stores.products.find_product(id).await.unwrap().unwrap();
        (p.stock.available, p.stock.reserved)
    }

    async fn product(stores: &OrderStores, available: i64) -> ProductId {
        let p = sample_product("Widget", "a widget", "tools", 250, available);
        stores.products.create_product(&p).await.unwrap();
        p.id
    }

    fn line(id: &ProductId, quantity: u32) -> ReserveLine {
        ReserveLine {
            product_id: id.clone(),
            quantity,
        }
    }

    /// All lines or none; a redelivered reserve or release changes stock once; a release that
    /// comes first leaves a tombstone so the late reserve takes nothing.
    pub async fn reservations_are_all_or_nothing_and_idempotent(stores: OrderStores) {
        let (a, b) = (product(&stores, 5).await, product(&stores, 1).await);
        let short = OrderId::generate();
        let outcome = stores
            .inventory
            .reserve(&short, &[line(&a, 2), line(&b, 2)])
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Reservation::Rejected {
                product_id: b.clone(),
                reason: "out_of_stock"
            }
        );
        assert_eq!(stock(&stores, &a).await, (5, 0));
        assert_eq!(stock(&stores, &b).await, (1, 0));

        let ok = OrderId::generate();
        for _ in 0..2 {
            assert_eq!(
                stores
                    .inventory
                    .reserve(&ok, &[line(&a, 3), line(&b, 1)])
                    .await
                    .unwrap(),
                Reservation::Held
            );
        }
        assert_eq!(stock(&stores, &a).await, (2, 3));
        assert_eq!(stock(&stores, &b).await, (0, 1));
        assert!(
            matches!(stores.inventory.release(&ok).await.unwrap(), Release::Restored(ids) if ids.len() == 2)
        );
        assert_eq!(
            stores.inventory.release(&ok).await.unwrap(),
            Release::Nothing
        );
        assert_eq!(stock(&stores, &a).await, (5, 0));
        assert_eq!(stock(&stores, &b).await, (1, 0));

        // Shipping commits a held reservation: `reserved` drops for good, once; nothing is
        // released afterwards, and a late reserve takes nothing.
        let shipped = OrderId::generate();
        assert_eq!(
            stores
                .inventory
                .reserve(&shipped, &[line(&a, 2)])
                .await
                .unwrap(),
            Reservation::Held
        );
        assert_eq!(stock(&stores, &a).await, (3, 2));
        assert_eq!(
            stores.inventory.commit(&shipped).await.unwrap(),
            Commit::Committed(vec![a.clone()])
        );
        assert_eq!(
            stores.inventory.commit(&shipped).await.unwrap(),
            Commit::Nothing
        );
        assert_eq!(
            stores.inventory.release(&shipped).await.unwrap(),
            Release::Nothing
        );
        assert_eq!(
            stores
                .inventory
                .reserve(&shipped, &[line(&a, 2)])
                .await
                .unwrap(),
            Reservation::Held
        );
        assert_eq!(stock(&stores, &a).await, (3, 0));
        assert_eq!(
            stores.inventory.commit(&OrderId::generate()).await.unwrap(),
            Commit::Nothing
        );
        // Back to 5 for what follows.
        stores
            .products
            .change_stock(
                &a,
                zx_domain::StockChange::Adjust(2),
                &zx_domain::StockChangeId::generate(),
            )
            .await
            .unwrap();

        let early = OrderId::generate();
        assert_eq!(
            stores.inventory.release(&early).await.unwrap(),
            Release::Nothing
        );
        assert_eq!(
            stores
                .inventory
                .reserve(&early, &[line(&a, 1)])
                .await
                .unwrap(),
            Reservation::AlreadyReleased
        );
        assert_eq!(stock(&stores, &a).await, (5, 0));

        let missing = ProductId::generate();
        assert_eq!(
            stores
                .inventory
                .reserve(&OrderId::generate(), &[line(&missing, 1)])
                .await
                .unwrap(),
            Reservation::Rejected {
                product_id: missing,
                reason: "unavailable"
            }
        );
    }

    /// 50 concurrent one-unit reservations of a product with 10: exactly 10 are held, and
    /// stock never goes below zero.
    pub async fn concurrent_reservations_never_oversell(stores: OrderStores) {
        let id = product(&stores, 10).await;
        let attempts = (0..50).map(|_| {
            let stores = stores.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(5);
                loop {
                    match stores
                        .inventory
                        .reserve(&OrderId::generate(), &[line(&id, 1)])
                        .await
                    {
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        other => return other.unwrap(),
                    }
                }
            })
        });
        let results = futures::future::join_all(attempts).await;
        let held = results
            .iter()
            .filter(|r| matches!(r.as_ref().unwrap(), Reservation::Held))
            .count();
        let rejected = results
            .iter()
            .filter(|r| {
                matches!(
                    r.as_ref().unwrap(),
                    Reservation::Rejected {
                        reason: "out_of_stock",
                        ..
                    }
                )
            })
            .count();
        assert_eq!((held, rejected), (10, 40));
        assert_eq!(stock(&stores, &id).await, (0, 10));
    }

    /// One batch of many orders: taken in turn, each all or nothing, a product's units from
    /// its shards (a line larger than any one shard spread over several); out of stock only
    /// when every shard together holds too little; the sold-out product is named; releases and
    /// commits give back or take out exactly what each order took, on the shards it took it
    /// from.
    pub async fn batches_take_from_every_shard_and_settle_exactly(stores: OrderStores) {
        let (hot, other) = (product(&stores, 10).await, product(&stores, 3).await);
        let records = stores.products.set_stock_shards(&hot, 4).await.unwrap();
        assert_eq!(records.active, 4);
        assert_eq!(
            records
                .shards
                .iter()
                .map(|s| s.available)
                .collect::<Vec<_>>(),
            [3, 3, 2, 2]
        );
        let orders: Vec<OrderId> = (0..6).map(|_| OrderId::generate()).collect();
        let batch = vec![
            (orders[0].clone(), vec![line(&hot, 5)]), // more than any one shard: spread
            (orders[1].clone(), vec![line(&hot, 2), line(&other, 3)]),
            (orders[2].clone(), vec![line(&hot, 4)]), // 3 left: out of stock
            (orders[3].clone(), vec![line(&hot, 3), line(&other, 1)]), // other is gone: nothing
            (orders[4].clone(), vec![line(&hot, 3)]),
            (orders[5].clone(), vec![line(&ProductId::generate(), 1)]),
        ];
        let result = stores.inventory.reserve_batch(&batch).await.unwrap();
        let reasons: Vec<&str> = result
            .outcomes
            .iter()
            .map(|o| match o {
                Reservation::Held => "held",
                Reservation::Rejected { reason, .. } => reason,
                Reservation::AlreadyReleased => "released",
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "held",
                "held",
                "out_of_stock",
                "out_of_stock",
                "held",
                "unavailable"
            ]
        );
        assert_eq!(stock(&stores, &hot).await, (0, 10));
        assert_eq!(stock(&stores, &other).await, (0, 3));
        let mut sold_out = result.sold_out.clone();
        sold_out.sort();
        let mut expected = vec![hot.clone(), other.clone()];
        expected.sort();
        assert_eq!(sold_out, expected);
        // The same batch again (a redelivery): nothing more taken, the same answers.
        let again = stores.inventory.reserve_batch(&batch[..2]).await.unwrap();
        assert!(
            again
                .outcomes
                .iter()
                .all(|o| matches!(o, Reservation::Held))
        );
        assert_eq!(stock(&stores, &hot).await, (0, 10));
        // Released and committed on the shards they came from.
        stores.inventory.release(&orders[0]).await.unwrap();
        assert_eq!(stock(&stores, &hot).await, (5, 5));
        stores.inventory.commit(&orders[1]).await.unwrap();
        assert_eq!(stock(&stores, &hot).await, (5, 3));
        assert_eq!(stock(&stores, &other).await, (0, 0));
        let records = stores.products.stock_records(&hot).await.unwrap().unwrap();
        assert!(
            records
                .shards
                .iter()
                .all(|s| s.available >= 0 && s.reserved >= 0)
        );
        assert_eq!(records.totals().available, 5);
    }

    /// Concurrent batches for one product while its shard count changes twice: no unit is lost
    /// or made, and exactly the stock is held.
    pub async fn resharding_while_batches_reserve_loses_nothing(stores: OrderStores) {
        let id = product(&stores, 60).await;
        let batches = (0..10).map(|_| {
            let stores = stores.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let batch: Vec<_> = (0..10)
                    .map(|_| (OrderId::generate(), vec![line(&id, 1)]))
                    .collect();
                let mut delay = Duration::from_millis(5);
                loop {
                    match stores.inventory.reserve_batch(&batch).await {
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        other => return other.unwrap(),
                    }
                }
            })
        });
        let reshard = {
            let stores = stores.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for n in [4, 2] {
                    stores.products.set_stock_shards(&id, n).await.unwrap();
                }
            })
        };
        let results = futures::future::join_all(batches).await;
        reshard.await.unwrap();
        let held = results
            .iter()
            .flat_map(|r| r.as_ref().unwrap().outcomes.iter())
            .filter(|o| matches!(o, Reservation::Held))
            .count();
        assert_eq!(held, 60);
        assert_eq!(stock(&stores, &id).await, (0, 60));
        let records = stores.products.stock_records(&id).await.unwrap().unwrap();
        assert_eq!(records.active, 2);
    }

    /// `Set` applies only to the stock its tag was read from: a reservation in between makes
    /// it `PreconditionFailed` and changes nothing.
    pub async fn a_set_applies_only_to_the_stock_it_was_read_from(stores: OrderStores) {
        let id = product(&stores, 10).await;
        let tag = stores
            .products
            .stock_records(&id)
            .await
            .unwrap()
            .unwrap()
            .tag();
        stores
            .inventory
            .reserve(&OrderId::generate(), &[line(&id, 3)])
            .await
            .unwrap();
        let error = stores
            .products
            .change_stock(
                &id,
                StockChange::Set {
                    available: 10,
                    tag: tag.clone(),
                },
                &StockChangeId::generate(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, RepositoryError::PreconditionFailed),
            "{error:?}"
        );
        assert_eq!(stock(&stores, &id).await, (7, 3));
        let fresh = stores
            .products
            .stock_records(&id)
            .await
            .unwrap()
            .unwrap()
            .tag();
        assert_ne!(fresh, tag);
        let set = stores
            .products
            .change_stock(
                &id,
                StockChange::Set {
                    available: 10,
                    tag: fresh,
                },
                &StockChangeId::generate(),
            )
            .await
            .unwrap();
        assert_eq!((set.available, set.reserved), (10, 3));
    }
}

contract_suites!(orders = zx_tests::OrderBackend, field stores, cases crate::saga:
    orders_keys_and_outbox_are_written_together,
    unreadable_rows_are_returned_as_such_and_parked_rows_stay_out,
    open_orders_are_capped,
    concurrent_creations_never_exceed_the_cap,
    ten_concurrent_creations_with_one_key_store_one_order,
    transitions_are_conditional_and_one_of_racing_ones_wins,
    listings_are_newest_first_by_customer_and_status,
    reservations_are_all_or_nothing_and_idempotent,
    concurrent_reservations_never_oversell,
    batches_take_from_every_shard_and_settle_exactly,
    resharding_while_batches_reserve_loses_nothing,
    a_set_applies_only_to_the_stock_it_was_read_from,
);
