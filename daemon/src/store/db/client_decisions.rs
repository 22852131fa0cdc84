//! The `client_decisions` table: `confirm_clients` answers kept per grant and program.

use mcp_authd_ipc::clients::{Answer, ClientDecision};

use super::{Db, DbError};

/// `grant_id, program, decision, decided_at`.
type DecisionRow = (String, String, String, i64);

impl Db {
    /// Every remembered decision, for the daemon's memory at start.
    pub async fn all_client_decisions(&self) -> Result<Vec<(String, ClientDecision)>, DbError> {
        let rows: Vec<DecisionRow> =
            sqlx::query_as("SELECT grant_id, program, decision, decided_at FROM client_decisions")
                .fetch_all(&self.pool)
                .await
                .map_err(self.err())?;
        rows.into_iter()
            .map(|(grant, program, decision, decided_at)| {
                let decision = Answer::parse(&decision).ok_or_else(|| {
                    DbError::Corrupt(format!("client decision `{decision}` of grant {grant}"))
                })?;
                Ok((
                    grant,
                    ClientDecision {
                        program,
                        decision,
                        decided_at,
                    },
                ))
            })
            .collect()
    }

    /// Stores (or replaces) the decision for a program on a grant.
    pub async fn save_client_decision(
        &self,
        grant_id: &str,
        d: &ClientDecision,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO client_decisions (grant_id, program, decision, decided_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (grant_id, program) DO UPDATE SET decision = excluded.decision, decided_at = excluded.decided_at",
        )
        .bind(grant_id)
        .bind(&d.program)
        .bind(d.decision.as_str())
        .bind(d.decided_at)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// Removes a decision; true when there was one.
    pub async fn delete_client_decision(
        &self,
        grant_id: &str,
        program: &str,
    ) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM client_decisions WHERE grant_id = ? AND program = ?")
            .bind(grant_id)
            .bind(program)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(done.rows_affected() > 0)
    }
}
