//! Account notices: messages to a person about their account (an e-mail change's code, an
//! address already in use), handed to the shop's mailer through a [`Notifier`].

use std::fmt;

use async_trait::async_trait;

use crate::{Email, RepositoryError, Timestamp, UserId};

/// A one-time code sent to a new address to prove it belongs to the user changing to it.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeCode(String);

impl OneTimeCode {
    pub fn new(code: String) -> Self {
        Self(code)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode(..)")
    }
}

/// What to tell whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountNotice {
    /// `to` was asked for as the new address of `user`: the code confirms it until
    /// `expires_at`.
    EmailChangeCode {
        to: Email,
        user: UserId,
        code: OneTimeCode,
        expires_at: Timestamp,
    },
    /// Someone asked for `to`, which belongs to an account already, as another account's
    /// address: its owner is told (nothing is changed), and the asker learns nothing.
    EmailInUse { to: Email },
}

impl AccountNotice {
    /// The notice's `type`, as its consumers filter on it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmailChangeCode { .. } => "account.email_change_code",
            Self::EmailInUse { .. } => "account.email_in_use",
        }
    }

    /// The address it goes to.
    pub fn to(&self) -> &Email {
        match self {
            Self::EmailChangeCode { to, .. } | Self::EmailInUse { to } => to,
        }
    }
}

/// Delivers account notices (to the topic the shop's mailer reads).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Hands `notice` over for delivery. Failing is [`RepositoryError::Unavailable`] when
    /// retrying may help.
    async fn notify(&self, notice: &AccountNotice) -> Result<(), RepositoryError>;
}
