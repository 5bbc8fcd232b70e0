//! Connector credentials: sealed under the master key like secrets (bound to the project,
//! the connector and whose they are), opened only here, and put on the outbound request by
//! [`apply`]. They never go to a sandbox.

use std::sync::Arc;

use base64::Engine as _;
use kortix_manifest::{AuthLocation, AuthType, Connector, Credential};

use super::upstream::AppliedAuth;
use crate::clock::now_ms;
use crate::error::{DomainError, DomainResult};
use crate::secrets::{MasterKey, ProjectSecrets, SecretValue};
use crate::store::Store;

/// Whose credential a call uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Shared,
    Person(String),
}

impl Owner {
    fn column(&self) -> &str {
        match self {
            Owner::Shared => "",
            Owner::Person(id) => id,
        }
    }
}

#[derive(Clone)]
pub struct Credentials {
    store: Store,
    key: Arc<MasterKey>,
    secrets: ProjectSecrets,
}

/// Whether the connector needs a credential at all.
pub fn needs_credential(c: &Connector) -> bool {
    c.auth.as_ref().is_some_and(|a| a.kind != AuthType::None)
}

impl Credentials {
    pub fn new(store: Store, key: Arc<MasterKey>, secrets: ProjectSecrets) -> Self {
        Self {
            store,
            key,
            secrets,
        }
    }

    /// Seals and stores a credential.
    pub async fn put(
        &self,
        project_id: &str,
        connector: &str,
        owner: &Owner,
        value: &str,
    ) -> DomainResult<()> {
        if value.is_empty() {
            return Err(DomainError::Invalid(format!(
                "the credential of connector {connector} is empty"
            )));
        }
        let sealed = self
            .key
            .seal_bound(project_id, &binding(connector, owner), value)
            .map_err(|e| DomainError::Invalid(e.to_string()))?;
        self.store
            .put_connector_credential(
                project_id,
                connector,
                owner.column(),
                &sealed.nonce,
                &sealed.ciphertext,
                now_ms(),
            )
            .await?;
        Ok(())
    }

    /// The credential a call of `connector` uses: the project secret `auth.secret` names,
    /// else the stored one of `owner`. `None` when the connector needs none.
    pub async fn value_for(
        &self,
        project_id: &str,
        connector: &Connector,
        owner: Option<&Owner>,
    ) -> DomainResult<Option<SecretValue>> {
        let Some(auth) = connector.auth.as_ref().filter(|a| a.kind != AuthType::None) else {
            return Ok(None);
        };
        if let Some(secret) = &auth.secret {
            return self.secrets.value(project_id, secret).await?.map(Some).ok_or_else(|| {
                DomainError::Precondition(format!(
                    "connector {} takes its credential from the project secret {secret}, which is not set",
                    connector.slug
                ))
            });
        }
        let Some(owner) = owner else {
            return Err(DomainError::Precondition(format!(
                "connector {} uses each person's own credential (per_user), and this session was not started by a person",
                connector.slug
            )));
        };
        let row = self
            .store
            .connector_credential(project_id, &connector.slug, owner.column())
            .await?;
        let Some(row) = row else {
            return Err(DomainError::Precondition(match owner {
                Owner::Shared => format!(
                    "connector {} has no credential: set it with `kortix connectors credential set {}`",
                    connector.slug, connector.slug
                ),
                Owner::Person(_) => format!(
                    "connector {} has no credential of the person who started this session: they set it with `kortix connectors credential set {} --mine`",
                    connector.slug, connector.slug
                ),
            }));
        };
        self.key
            .open(
                project_id,
                &binding(&connector.slug, owner),
                &row.nonce,
                &row.ciphertext,
            )
            .map(Some)
            .map_err(|e| DomainError::Internal(e.to_string()))
    }

    /// "set", "missing" or "none" for a connector as `kortix connectors ls` shows it; for
    /// per_user connectors, whether the caller has theirs.
    pub async fn state(
        &self,
        project_id: &str,
        connector: &Connector,
        person_id: &str,
        set: &[(String, String)],
    ) -> DomainResult<&'static str> {
        let Some(auth) = connector.auth.as_ref().filter(|a| a.kind != AuthType::None) else {
            return Ok("none");
        };
        let present = if let Some(secret) = &auth.secret {
            self.secrets.value(project_id, secret).await?.is_some()
        } else {
            let who = match connector.credential {
                Credential::Shared => "",
                Credential::PerUser => person_id,
            };
            set.iter().any(|(c, p)| c == &connector.slug && p == who)
        };
        Ok(if present { "set" } else { "missing" })
    }
}

/// What the sealed value is bound to, so it cannot be moved to another connector or person.
fn binding(connector: &str, owner: &Owner) -> String {
    format!("connector:{connector}:{}", owner.column())
}

/// The credential on the wire, as `[connectors.auth]` says: bearer (`Authorization: Bearer
/// …` unless `prefix` says otherwise), basic (`user:password` → base64), custom (header or
/// query parameter `name`); `in = query` puts it in the query (`name`, default
/// `access_token`).
pub fn apply(connector: &Connector, value: Option<&SecretValue>) -> AppliedAuth {
    let (Some(auth), Some(value)) = (connector.auth.as_ref(), value) else {
        return AppliedAuth::default();
    };
    let raw = value.expose();
    let token = match auth.kind {
        AuthType::None => return AppliedAuth::default(),
        AuthType::Basic => base64::engine::general_purpose::STANDARD.encode(raw),
        AuthType::Bearer | AuthType::Custom => raw.to_owned(),
    };
    let default_prefix = match auth.kind {
        AuthType::Bearer => "Bearer ",
        AuthType::Basic => "Basic ",
        _ => "",
    };
    let mut out = AppliedAuth::default();
    match auth.location {
        AuthLocation::Header => {
            let name = auth.name.clone().unwrap_or_else(|| "Authorization".into());
            let prefix = auth.prefix.as_deref().unwrap_or(default_prefix);
            out.headers.push((name, format!("{prefix}{token}")));
        }
        AuthLocation::Query => {
            let name = auth.name.clone().unwrap_or_else(|| "access_token".into());
            let prefix = auth.prefix.as_deref().unwrap_or("");
            out.query.push((name, format!("{prefix}{token}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_manifest::ConnectorAuth;

    fn connector(
        kind: AuthType,
        location: AuthLocation,
        name: Option<&str>,
        prefix: Option<&str>,
    ) -> Connector {
        let m = kortix_manifest::parse(
            "[[connectors]]\nslug = \"api\"\nprovider = \"http\"\nbase_url = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let mut c = m.connectors[0].clone();
        c.auth = Some(ConnectorAuth {
            kind,
            location,
            name: name.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
            secret: None,
        });
        c
    }

    #[test]
    fn auth_goes_where_the_manifest_says() {
        let v = SecretValue::new("s3cret".into());
        let a = apply(
            &connector(AuthType::Bearer, AuthLocation::Header, None, None),
            Some(&v),
        );
        assert_eq!(
            a.headers,
            [("Authorization".to_string(), "Bearer s3cret".to_string())]
        );
        let a = apply(
            &connector(AuthType::Basic, AuthLocation::Header, None, None),
            Some(&SecretValue::new("u:p".into())),
        );
        assert_eq!(a.headers[0].1, "Basic dTpw");
        let a = apply(
            &connector(
                AuthType::Custom,
                AuthLocation::Header,
                Some("X-Api-Key"),
                Some("k="),
            ),
            Some(&v),
        );
        assert_eq!(
            a.headers,
            [("X-Api-Key".to_string(), "k=s3cret".to_string())]
        );
        let a = apply(
            &connector(AuthType::Bearer, AuthLocation::Query, None, None),
            Some(&v),
        );
        assert_eq!(
            a.query,
            [("access_token".to_string(), "s3cret".to_string())]
        );
        assert!(a.headers.is_empty());
        assert!(!format!("{a:?}").contains("s3cret"));
        let none = apply(
            &connector(AuthType::None, AuthLocation::Header, None, None),
            Some(&v),
        );
        assert!(none.headers.is_empty() && none.query.is_empty());
    }
}
