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

    /// A network by name, id, or an id prefix of at least 6 characters that names one only.
    pub async fn find_network(&self, key: &str) -> Result<Option<NetworkRow>, DbError> {
        let exact: Option<NetworkRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NETWORK_COLUMNS} FROM networks WHERE name = ?1 OR id = ?1 \
             ORDER BY name = ?1 DESC LIMIT 1"
        )))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking a network up"))?;
        if exact.is_some() || key.len() < 6 {
            return Ok(exact);
        }
        // A prefix compared as text (LIKE would read % and _ in it as patterns).
        let mut by_prefix: Vec<NetworkRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NETWORK_COLUMNS} FROM networks WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2"
        )))
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("looking a network up"))?;
        Ok(if by_prefix.len() == 1 {
            by_prefix.pop()
        } else {
            None
        })
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

    /// The endpoints `rest` of the query selects (`WHERE …` with at most one `?`, bound to
    /// `value`, and `ORDER BY …`; always a literal of this module).
    async fn select_endpoints(
        &self,
        rest: &'static str,
        value: Option<&str>,
        action: &'static str,
    ) -> Result<Vec<EndpointRow>, DbError> {
        let query = sqlx::AssertSqlSafe(format!(
            "SELECT network_id, container_id, ip, host_veth, aliases FROM endpoints {rest}"
        ));
        let mut query = sqlx::query_as(query);
        if let Some(value) = value {
            query = query.bind(value.to_owned());
        }
        query.fetch_all(&self.pool).await.map_err(sql(action))
    }

    pub async fn endpoints_of_network(
        &self,
        network_id: &str,
    ) -> Result<Vec<EndpointRow>, DbError> {
        self.select_endpoints(
            "WHERE network_id = ? ORDER BY ip",
            Some(network_id),
            "listing a network's endpoints",
        )
        .await
    }

    pub async fn endpoints_of_container(
        &self,
        container_id: &str,
    ) -> Result<Vec<EndpointRow>, DbError> {
        self.select_endpoints(
            "WHERE container_id = ? ORDER BY host_veth",
            Some(container_id),
            "listing a container's endpoints",
        )
        .await
    }

    pub async fn delete_endpoint(
        &self,
        network_id: &str,
        container_id: &str,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM endpoints WHERE network_id = ? AND container_id = ?")
            .bind(network_id)
            .bind(container_id)
            .execute(&self.pool)
            .await
            .map_err(sql("releasing an address"))?;
        Ok(())
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

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PortRow {
    pub container_id: String,
    /// `0.0.0.0` for every address of the host.
    pub host_ip: String,
    pub host_port: i64,
    pub container_port: i64,
    /// `tcp` or `udp`.
    pub protocol: String,
}

const PORT_COLUMNS: &str = "container_id, host_ip, host_port, container_port, protocol";

impl Db {
    /// Records a published port; `Ok(false)` when another container holds that host port.
    pub async fn insert_port(&self, p: &PortRow) -> Result<bool, DbError> {
        let taken: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM port_mappings WHERE host_port = ? AND protocol = ? \
             AND (host_ip = ? OR host_ip = '0.0.0.0' OR ? = '0.0.0.0')",
        )
        .bind(p.host_port)
        .bind(&p.protocol)
        .bind(&p.host_ip)
        .bind(&p.host_ip)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("checking a host port"))?;
        if taken > 0 {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO port_mappings (container_id, host_ip, host_port, container_port, protocol) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&p.container_id)
        .bind(&p.host_ip)
        .bind(p.host_port)
        .bind(p.container_port)
        .bind(&p.protocol)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
            Err(e) => Err(DbError::Sql {
                action: "recording a published port",
                source: e,
            }),
        }
    }

    /// Every endpoint of every container (for lists: one query instead of one per row).
    pub async fn all_endpoints(&self) -> Result<Vec<EndpointRow>, DbError> {
        self.select_endpoints(
            "ORDER BY container_id, host_veth",
            None,
            "listing endpoints",
        )
        .await
    }

    /// Every published port of every container, by container and host port.
    pub async fn all_ports(&self) -> Result<Vec<PortRow>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PORT_COLUMNS} FROM port_mappings ORDER BY container_id, host_port"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing published ports"))
    }

    pub async fn ports_of_container(&self, container_id: &str) -> Result<Vec<PortRow>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PORT_COLUMNS} FROM port_mappings WHERE container_id = ? ORDER BY host_port"
        )))
        .bind(container_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing a container's ports"))
    }

    /// Every published port with the address of its container on its first network (eth0).
    pub async fn published_ports(&self) -> Result<Vec<(PortRow, String)>, DbError> {
        let rows: Vec<(String, String, i64, i64, String, String)> = sqlx::query_as(
            "SELECT p.container_id, p.host_ip, p.host_port, p.container_port, p.protocol, \
             (SELECT e.ip FROM endpoints e WHERE e.container_id = p.container_id \
              ORDER BY e.host_veth LIMIT 1) AS ip \
             FROM port_mappings p WHERE ip IS NOT NULL ORDER BY p.host_port",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing published ports"))?;
        Ok(rows
            .into_iter()
            .map(
                |(container_id, host_ip, host_port, container_port, protocol, ip)| {
                    (
                        PortRow {
                            container_id,
                            host_ip,
                            host_port,
                            container_port,
                            protocol,
                        },
                        ip,
                    )
                },
            )
            .collect())
    }

    pub async fn delete_ports_of_container(&self, container_id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM port_mappings WHERE container_id = ?")
            .bind(container_id)
            .execute(&self.pool)
            .await
            .map_err(sql("releasing a container's ports"))?;
        Ok(())
    }
}
