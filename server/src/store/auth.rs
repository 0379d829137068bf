//! Users, bearer tokens and dashboard sessions.

use super::{now, Result, Store, StoreError};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub disabled_at: Option<i64>,
}

/// A user as the admin page lists it (no password hash).
#[derive(Debug, Clone)]
pub struct UserListRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// An operator or enrollment token as the admin page lists it.
#[derive(Debug, Clone)]
pub struct TokenListRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub host_id: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The group of the token's host, read with the token (agent requests
    /// need it for their settings' version): `None` when the token has no
    /// host or its host was removed.
    pub host_group: Option<Option<String>>,
}

/// How stale a token's `last_used_at` may get before a use writes it again.
const TOUCH_EVERY: i64 = 60;

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
        let row = sqlx::query(
            "SELECT id, name, password_hash, role, disabled_at FROM users WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UserRow {
            id: r.get(0),
            name: r.get(1),
            password_hash: r.get(2),
            role: r.get(3),
            disabled_at: r.get(4),
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
            "SELECT t.id, t.name, t.role, t.host_id, t.last_used_at, h.id, h.group_name
             FROM tokens t LEFT JOIN hosts h ON h.id = t.host_id AND h.kind = 'host'
             WHERE t.token_hash = ? AND t.revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TokenRow {
            id: r.get(0),
            name: r.get(1),
            role: r.get(2),
            host_id: r.get(3),
            last_used_at: r.get(4),
            host_group: r
                .get::<Option<i64>, _>(5)
                .map(|_| r.get::<Option<String>, _>(6)),
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
             WHERE s.id_hash = ? AND s.expires_at > ? AND u.disabled_at IS NULL",
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

/// Administration: users and tokens as the admin pages change them.
impl Store {
    pub async fn users(&self) -> Result<Vec<UserListRow>> {
        let rows =
            sqlx::query("SELECT id, name, role, created_at, disabled_at FROM users ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| UserListRow {
                id: r.get(0),
                name: r.get(1),
                role: r.get(2),
                created_at: r.get(3),
                disabled_at: r.get(4),
            })
            .collect())
    }

    /// Fails with `Conflict` when the change would leave no enabled admin
    /// (nobody could administer the server from the dashboard any more).
    async fn keep_an_admin(&self, user_id: i64) -> Result<()> {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL AND id != ?",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        if others == 0 {
            return Err(StoreError::Conflict(
                "this is the last enabled admin; make another user admin first".into(),
            ));
        }
        Ok(())
    }

    /// Changes a user's role (`viewer` or `admin`); false when no such user.
    pub async fn set_user_role(&self, user_id: i64, role: &str) -> Result<bool> {
        let _w = self.write.lock().await;
        if role != "admin" {
            self.keep_an_admin(user_id).await?;
        }
        let r = sqlx::query("UPDATE users SET role = ? WHERE id = ?")
            .bind(role)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Disables (ending its sessions) or enables a user.
    pub async fn set_user_disabled(&self, user_id: i64, disabled: bool) -> Result<bool> {
        let _w = self.write.lock().await;
        if disabled {
            self.keep_an_admin(user_id).await?;
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE users SET disabled_at = ? WHERE id = ?")
            .bind(disabled.then(now))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets a new password hash and ends the user's sessions.
    pub async fn set_user_password(&self, user_id: i64, password_hash: &str) -> Result<bool> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Operator and enrollment tokens, newest first (agent credentials are
    /// listed with their hosts).
    pub async fn tokens(&self) -> Result<Vec<TokenListRow>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at, last_used_at FROM tokens
             WHERE role != 'agent' ORDER BY revoked_at IS NOT NULL, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TokenListRow {
                id: r.get(0),
                name: r.get(1),
                role: r.get(2),
                created_at: r.get(3),
                revoked_at: r.get(4),
                last_used_at: r.get(5),
            })
            .collect())
    }

    /// Revokes one operator or enrollment token; false when there is no such
    /// live token.
    pub async fn revoke_token(&self, id: i64) -> Result<bool> {
        let _w = self.write.lock().await;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND role != 'agent' AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Revokes a host's agent credentials: its agent gets 401 until it
    /// enrolls again. Returns how many were live.
    pub async fn revoke_agent_tokens(&self, host_id: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = ? WHERE host_id = ? AND role = 'agent' AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(host_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Notes a use of a token, at most once a minute (a write per request
    /// would queue every API call behind the write lock).
    pub async fn touch_token(&self, token: &TokenRow) -> Result<()> {
        let t = now();
        if token.role == "agent" || token.last_used_at.is_some_and(|u| t - u < TOUCH_EVERY) {
            return Ok(());
        }
        let _w = self.write.lock().await;
        sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ?")
            .bind(t)
            .bind(token.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Live agent credentials per host id (hosts without any are absent).
    pub async fn live_agent_tokens(&self) -> Result<std::collections::HashMap<i64, i64>> {
        let rows = sqlx::query(
            "SELECT host_id, count(*) FROM tokens
             WHERE role = 'agent' AND revoked_at IS NULL AND host_id IS NOT NULL GROUP BY host_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
