//! Users, bearer tokens and dashboard sessions.

use super::{now, Result, Store, StoreError};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub host_id: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user_name: String,
    pub role: String,
    pub csrf: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn create_user(&self, name: &str, password_hash: &str, role: &str) -> Result<i64> {
        let _w = self.write.lock().await;
        let res = sqlx::query(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role)
        .bind(now())
        .execute(&self.pool)
        .await;
        match res {
            Ok(r) => Ok(r.last_insert_rowid()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("user {name:?} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT id, name, password_hash, role FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| UserRow {
            id: r.get(0),
            name: r.get(1),
            password_hash: r.get(2),
            role: r.get(3),
        }))
    }

    /// Stores a token's hash. `host_id` ties an agent credential to its host.
    pub async fn insert_token(
        &self,
        name: &str,
        role: &str,
        token_hash: &[u8],
        host_id: Option<i64>,
    ) -> Result<i64> {
        let _w = self.write.lock().await;
        let r = sqlx::query(
            "INSERT INTO tokens (name, role, token_hash, host_id, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(role)
        .bind(token_hash)
        .bind(host_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_rowid())
    }

    /// Finds a live (not revoked) token by its hash.
    pub async fn token_by_hash(&self, token_hash: &[u8]) -> Result<Option<TokenRow>> {
        let row = sqlx::query(
            "SELECT id, name, role, host_id FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TokenRow {
            id: r.get(0),
            name: r.get(1),
            role: r.get(2),
            host_id: r.get(3),
        }))
    }

    /// Revokes every live token of `role` named `name` (used to rotate the local
    /// agent's enrollment token at each start).
    pub async fn revoke_tokens_named(&self, name: &str, role: &str) -> Result<u64> {
        let _w = self.write.lock().await;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = ? WHERE name = ? AND role = ? AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(name)
        .bind(role)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn create_session(
        &self,
        id_hash: &[u8],
        user_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<()> {
        let _w = self.write.lock().await;
        // Expired sessions are purged here so the table stays bounded by the
        // number of live logins.
        sqlx::query("DELETE FROM sessions WHERE expires_at < ?")
            .bind(now())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf)
        .bind(now())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &[u8]) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT u.name, u.role, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = ? AND s.expires_at > ?",
        )
        .bind(id_hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow {
            user_name: r.get(0),
            role: r.get(1),
            csrf: r.get(2),
            expires_at: r.get(3),
        }))
    }

    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<()> {
        let _w = self.write.lock().await;
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Tokens ever created under `name`, revoked ones included.
    pub async fn count_tokens_named(&self, name: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM tokens WHERE name = ?")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
