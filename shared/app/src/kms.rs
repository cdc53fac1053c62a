//! Token signing in AWS KMS: the private key never leaves KMS; the issuing functions (and only
//! they) are granted `kms:Sign` and `kms:GetPublicKey` on it. An ECC_NIST_P256 key signs ES256
//! (KMS's DER signature turned into JOSE's `R || S`); an ECC_NIST_EDWARDS25519 key, where KMS
//! offers it, signs EdDSA. Locally LocalStack's KMS plays the part (P-256 only: see
//! `localstack/README.md`).

use aws_sdk_kms::Client;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use tokio::sync::OnceCell;
use zx_auth::Algorithm;
use zx_auth::{PublicKey, RemoteError, RemoteSigner, ecdsa_der_to_jose};

/// A KMS call's failure: transient for timeouts, dropped connections, throttling and KMS's own
/// faults; permanent for the rest (access denied, a disabled or missing key, a wrong key type).
fn failure<E, R>(operation: &str, error: SdkError<E, R>) -> RemoteError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "KMSInternalException"
                    | "DependencyTimeoutException"
                    | "ThrottlingException"
                    | "LimitExceededException"
            )
        ),
        _ => false,
    };
    RemoteError {
        transient,
        message: format!("KMS {operation}: {}", DisplayErrorContext(error)),
    }
}

/// Signs with one KMS key.
pub struct KmsSigner {
    client: Client,
    key_id: String,
    public: OnceCell<PublicKey>,
}

impl KmsSigner {
    /// Builds the client without any I/O; the key's public half is asked at the first token.
    pub fn new(aws: &aws_config::SdkConfig, key_id: String) -> Self {
        Self {
            client: Client::new(aws),
            key_id,
            public: OnceCell::new(),
        }
    }

    async fn fetch_public_key(&self) -> Result<PublicKey, RemoteError> {
        let output = self
            .client
            .get_public_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| failure("GetPublicKey", e))?;
        let der = output
            .public_key()
            .ok_or_else(|| RemoteError::permanent("KMS GetPublicKey answered no key"))?;
        PublicKey::from_spki_der(der.as_ref()).map_err(RemoteError::permanent)
    }
}

#[async_trait::async_trait]
impl RemoteSigner for KmsSigner {
    async fn public_key(&self) -> Result<PublicKey, RemoteError> {
        self.public
            .get_or_try_init(|| self.fetch_public_key())
            .await
            .cloned()
    }

    #[tracing::instrument(skip_all)]
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let algorithm = self.public_key().await?.algorithm();
        let spec = match algorithm {
            Algorithm::ES256 => SigningAlgorithmSpec::EcdsaSha256,
            _ => SigningAlgorithmSpec::from("ED25519_SHA_512"),
        };
        let output = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(spec)
            .send()
            .await
            .map_err(|e| failure("Sign", e))?;
        let signature = output
            .signature()
            .ok_or_else(|| RemoteError::permanent("KMS Sign answered no signature"))?;
        match algorithm {
            Algorithm::ES256 => {
                ecdsa_der_to_jose(signature.as_ref(), 32).map_err(RemoteError::permanent)
            }
            _ => Ok(signature.as_ref().to_vec()),
        }
    }
}
