//! First-start set-up: the `admin` user and an enrollment token, taken from the
//! environment when given, else generated and printed once.

use crate::auth::{hash_password_async, new_token, random_string, token_hash, Secret};
use crate::store::{Store, StoreError};

/// What the first start created and must show the operator once.
#[derive(Debug, Default)]
pub struct Bootstrapped {
    pub admin_password: Option<Secret>,
    pub enroll_token: Option<Secret>,
}

pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

pub async fn run(
    store: &Store,
    admin_password: Option<String>,
    enroll_token: Option<String>,
) -> Result<Bootstrapped, StoreError> {
    let mut out = Bootstrapped::default();
    if store.count_users().await? == 0 {
        let (password, generated) = match admin_password.filter(|p| !p.is_empty()) {
            Some(p) => (p, false),
            None => (random_string(18), true),
        };
        let hash = hash_password_async(password.clone()).await;
        store.create_user("admin", &hash, "admin").await?;
        if generated {
            out.admin_password = Some(Secret::new(password));
        }
    }
    match enroll_token.filter(|t| !t.is_empty()) {
        // A token from the environment is registered whenever it is new, so it
        // can be set after the first start too.
        Some(t) => {
            if store.token_by_hash(&token_hash(&t)).await?.is_none() {
                store
                    .insert_token(BOOTSTRAP_TOKEN_NAME, "enroll", &token_hash(&t), None)
                    .await?;
            }
        }
        None => {
            if store.count_tokens_named(BOOTSTRAP_TOKEN_NAME).await? == 0 {
                let t = new_token();
                store
                    .insert_token(
                        BOOTSTRAP_TOKEN_NAME,
                        "enroll",
                        &token_hash(t.expose()),
                        None,
                    )
                    .await?;
                out.enroll_token = Some(t);
            }
        }
    }
    Ok(out)
}
