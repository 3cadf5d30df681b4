//! Networks and endpoints: which container holds which address on which network. The unique
//! index on (network, ip) is what makes an address impossible to hand out twice.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Db, DbError, now_secs, sql};

/// A network as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct NetworkRow {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    pub is_default: bool,
    pub created_at: i64,
}

/// A container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct EndpointRow {
    pub network_id: String,
    pub container_id: String,
    pub ip: String,
    pub host_veth: String,
    /// JSON list of extra names.
    pub aliases: String,
}

const NETWORK_COLUMNS: &str = "id, name, driver, subnet, gateway, bridge, is_default, created_at";

impl Db {
    pub async fn insert_network(&self, n: &NetworkRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO networks (id, name, driver, subnet, gateway, bridge, is_default, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&n.id)
        .bind(&n.name)
        .bind(&n.driver)
        .bind(&n.subnet)
        .bind(&n.gateway)
        .bind(&n.bridge)
        .bind(n.is_default)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict {
                what: format!(
                    "network {:?} (or its subnet {}) is already in use",
                    n.name, n.subnet
                ),
            },
            _ => DbError::Sql {
                action: "recording a network",
                source: e,
            },
        })?;
        Ok(())
    }

    /// A network by name, id or id prefix.
    pub async fn find_network(&self, key: &str) -> Result<Option<NetworkRow>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NETWORK_COLUMNS} FROM networks WHERE name = ?1 OR id = ?1 \
             OR (length(?1) >= 6 AND id LIKE ?1 || '%') ORDER BY name = ?1 DESC LIMIT 1"
        )))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking a network up"))
    }

    pub async fn list_networks(&self) -> Result<Vec<NetworkRow>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NETWORK_COLUMNS} FROM networks ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing networks"))
    }

    pub async fn delete_network(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM networks WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sql("removing a network"))?;
        Ok(())
    }

    /// Records an endpoint; `Ok(false)` when the address is taken on that network.
    pub async fn insert_endpoint(&self, e: &EndpointRow) -> Result<bool, DbError> {
        let done = sqlx::query(
            "INSERT INTO endpoints (network_id, container_id, ip, host_veth, aliases) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&e.network_id)
        .bind(&e.container_id)
        .bind(&e.ip)
        .bind(&e.host_veth)
        .bind(&e.aliases)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
            Err(e) => Err(DbError::Sql {
                action: "recording an endpoint",
                source: e,
            }),
        }
    }

    pub async fn endpoints_of_network(
        &self,
        network_id: &str,
    ) -> Result<Vec<EndpointRow>, DbError> {
        sqlx::query_as(
            "SELECT network_id, container_id, ip, host_veth, aliases FROM endpoints \
             WHERE network_id = ? ORDER BY ip",
        )
        .bind(network_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing a network's endpoints"))
    }

    pub async fn endpoints_of_container(
        &self,
        container_id: &str,
    ) -> Result<Vec<EndpointRow>, DbError> {
        sqlx::query_as(
            "SELECT network_id, container_id, ip, host_veth, aliases FROM endpoints \
             WHERE container_id = ? ORDER BY network_id",
        )
        .bind(container_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing a container's endpoints"))
    }

    pub async fn delete_endpoints_of_container(&self, container_id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM endpoints WHERE container_id = ?")
            .bind(container_id)
            .execute(&self.pool)
            .await
            .map_err(sql("releasing a container's addresses"))?;
        Ok(())
    }
}
