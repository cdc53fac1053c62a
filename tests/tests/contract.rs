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

macro_rules! contract_suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = zx_tests::Backend::$backend().await;
                    super::$case(backend.users.clone()).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

macro_rules! contract_suites {
    ($($case:ident),* $(,)?) => {
        contract_suite!(dynamodb: $($case),*);
        contract_suite!(postgres: $($case),*);
    };
}

contract_suites!(
    create_then_find_by_id_and_email,
    missing_users_are_none,
    duplicate_email_is_a_conflict,
    duplicate_username_in_any_case_is_a_conflict,
    update_changes_fields_and_moves_uniqueness,
    update_to_a_taken_email_conflicts_and_changes_nothing,
    stale_updates_are_rejected,
    twenty_concurrent_registrations_with_one_email_give_one_success,
);
