//! `TriggerService`: transport for [`crate::triggers::Triggers`] as people see it
//! (`triggers::access`): list triggers with their next fire time and last firing, fire one
//! now, list firings.

use kortix_manifest::TriggerKind;
use kortix_proto::v1 as pb;
use kortix_proto::v1::trigger_service_server::{TriggerService, TriggerServiceServer};
use tonic::{Request, Response, Status};

use super::authn::caller;
use crate::store::Firing;
use crate::triggers::{TriggerView, Triggers};

#[derive(Clone)]
pub struct TriggerServiceImpl {
    triggers: Triggers,
}

impl TriggerServiceImpl {
    pub fn new(triggers: Triggers) -> Self {
        TriggerServiceImpl { triggers }
    }

    /// The tonic service, ready for `Server::add_service` (behind the auth interceptor).
    pub fn into_server(self) -> TriggerServiceServer<Self> {
        TriggerServiceServer::new(self)
    }
}

pub fn firing_to_proto(f: &Firing) -> pb::Firing {
    pb::Firing {
        id: f.id.clone(),
        trigger_slug: f.trigger_slug.clone(),
        firing_key: f.firing_key.clone(),
        fired_unix_ms: f.fired_ms,
        scheduled_unix_ms: f.scheduled_ms.unwrap_or(0),
        outcome: f.outcome.as_str().to_owned(),
        session_id: f.session_id.clone().unwrap_or_default(),
        error: f.error.clone().unwrap_or_default(),
        catch_up: f.catch_up,
    }
}

fn trigger_to_proto(v: &TriggerView) -> pb::Trigger {
    let t = &v.trigger;
    pb::Trigger {
        slug: t.slug.clone(),
        name: t.name.clone(),
        r#type: t.kind.as_str().to_owned(),
        enabled: t.enabled,
        agent: t.agent.clone(),
        cron: t.cron.clone().unwrap_or_default(),
        timezone: t.timezone.clone().unwrap_or_default(),
        secret_env: t.secret_env.clone().unwrap_or_default(),
        next_fire_unix_ms: v.next_fire.map(|n| n.timestamp_millis()).unwrap_or(0),
        last_firing: v.last_firing.as_ref().map(firing_to_proto),
        webhook_path: match t.kind {
            TriggerKind::Webhook => v.webhook_path.clone(),
            TriggerKind::Cron => String::new(),
        },
    }
}

#[tonic::async_trait]
impl TriggerService for TriggerServiceImpl {
    async fn list_triggers(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::ListTriggersResponse>, Status> {
        let who = caller(&request)?;
        let listed = self
            .triggers
            .list_for(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(pb::ListTriggersResponse {
            triggers: listed.triggers.iter().map(trigger_to_proto).collect(),
            errors: listed.errors,
        }))
    }

    async fn fire_trigger(
        &self,
        request: Request<pb::FireTriggerRequest>,
    ) -> Result<Response<pb::Firing>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let firing = self
            .triggers
            .fire_for(&who, &req.project, &req.slug)
            .await?;
        Ok(Response::new(firing_to_proto(&firing)))
    }

    async fn list_firings(
        &self,
        request: Request<pb::ListFiringsRequest>,
    ) -> Result<Response<pb::ListFiringsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let firings = self
            .triggers
            .firings_for(&who, &req.project, &req.slug, req.limit)
            .await?;
        Ok(Response::new(pb::ListFiringsResponse {
            firings: firings.iter().map(firing_to_proto).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::triggers::testkit::{Fixture, utc};
    use tonic::Code;

    const MANIFEST: &str = r#"
[[triggers]]
slug = "digest"
name = "Daily digest"
type = "cron"
cron = "0 0 9 * * 1-5"
timezone = "America/Los_Angeles"
prompt = "Digest at {{ cron.fired_at }}"

[[triggers]]
slug = "paused"
type = "cron"
enabled = false
cron = "0 0 9 * * *"
prompt = "x"

[[triggers]]
slug = "hook"
type = "webhook"
secret_env = "HOOK_SECRET"
prompt = "hook {{ body.text }}"

[[triggers]]
slug = "Bad Slug"
type = "cron"
cron = "0 0 9 * * *"
prompt = "x"
"#;

    fn as_account<T>(account_id: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(Principal::Person {
            person_id: account_id.to_owned(),
            server_admin: false,
            token_id: String::new(),
            narrowed: None,
        });
        request
            .extensions_mut()
            .insert(crate::permissions::Action::FireTrigger);
        request
    }

    #[tokio::test]
    async fn list_fire_and_list_firings() {
        // Monday 2026-03-09 08:00 PDT.
        let fx = Fixture::sqlite(MANIFEST, utc(2026, 3, 9, 15, 0, 0)).await;
        let service = TriggerServiceImpl::new(fx.triggers.clone());
        let account = fx.project.account_id.clone();

        let listed = service
            .list_triggers(as_account(
                &account,
                pb::ListTriggersRequest {
                    project: "web".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let slugs: Vec<&str> = listed.triggers.iter().map(|t| t.slug.as_str()).collect();
        assert_eq!(slugs, ["digest", "hook", "paused"]);
        assert_eq!(listed.errors.len(), 1, "{:?}", listed.errors);
        assert!(
            listed.errors[0].starts_with("triggers[3]: ")
                || listed.errors[0].starts_with("Bad Slug: "),
            "{:?}",
            listed.errors
        );
        let digest = &listed.triggers[0];
        assert_eq!(digest.r#type, "cron");
        assert_eq!(
            digest.next_fire_unix_ms,
            utc(2026, 3, 9, 16, 0, 0).timestamp_millis()
        );
        assert_eq!(digest.timezone, "America/Los_Angeles");
        assert!(digest.last_firing.is_none());
        assert_eq!(digest.webhook_path, "");
        let hook = &listed.triggers[1];
        assert_eq!(hook.webhook_path, "/v1/webhooks/projects/web/hook");
        assert_eq!(hook.secret_env, "HOOK_SECRET");
        assert_eq!(hook.next_fire_unix_ms, 0);
        assert_eq!(
            listed.triggers[2].next_fire_unix_ms, 0,
            "disabled: no next fire"
        );

        let fired = service
            .fire_trigger(as_account(
                &account,
                pb::FireTriggerRequest {
                    project: fx.project.id.clone(),
                    slug: "digest".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(fired.firing_key.starts_with("manual:"), "{fired:?}");
        assert_eq!(fired.outcome, "started");
        assert_eq!(fired.session_id, "session-1");
        assert_eq!(
            fired.fired_unix_ms,
            utc(2026, 3, 9, 15, 0, 0).timestamp_millis()
        );
        assert!(!fired.catch_up);
        let call = &fx.starter.calls()[0];
        assert_eq!(call.prompt, "Digest at 2026-03-09T08:00:00-07:00");
        assert_eq!(call.idempotency_key, fired.firing_key);

        fx.clock.advance(chrono::TimeDelta::seconds(5));
        let hook_fired = service
            .fire_trigger(as_account(
                &account,
                pb::FireTriggerRequest {
                    project: "web".into(),
                    slug: "hook".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hook_fired.session_id, "session-2");
        assert_eq!(fx.starter.calls()[1].prompt, "hook ");

        let err = service
            .fire_trigger(as_account(
                &account,
                pb::FireTriggerRequest {
                    project: "web".into(),
                    slug: "paused".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = service
            .fire_trigger(as_account(
                &account,
                pb::FireTriggerRequest {
                    project: "web".into(),
                    slug: "nope".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        let relisted = service
            .list_triggers(as_account(
                &account,
                pb::ListTriggersRequest {
                    project: "web".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(relisted.triggers[0].last_firing.as_ref(), Some(&fired));

        let all = service
            .list_firings(as_account(
                &account,
                pb::ListFiringsRequest {
                    project: "web".into(),
                    slug: String::new(),
                    limit: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .firings;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], hook_fired, "newest first");
        let one = service
            .list_firings(as_account(
                &account,
                pb::ListFiringsRequest {
                    project: "web".into(),
                    slug: "digest".into(),
                    limit: 10,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .firings;
        assert_eq!(one, [fired]);
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn other_accounts_see_nothing() {
        let fx = Fixture::sqlite(MANIFEST, utc(2026, 3, 9, 15, 0, 0)).await;
        let service = TriggerServiceImpl::new(fx.triggers.clone());
        let other = fx.store.create_person("mallory", false).await.unwrap();

        let err = service
            .list_triggers(as_account(
                &other.id,
                pb::ListTriggersRequest {
                    project: "web".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = service
            .fire_trigger(as_account(
                &other.id,
                pb::FireTriggerRequest {
                    project: fx.project.id.clone(),
                    slug: "digest".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = service
            .list_firings(as_account(
                &other.id,
                pb::ListFiringsRequest {
                    project: "web".into(),
                    slug: String::new(),
                    limit: 5,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        let err = service
            .list_triggers(Request::new(pb::ListTriggersRequest {
                project: "web".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let mut git = Request::new(pb::ListTriggersRequest {
            project: "web".into(),
        });
        git.extensions_mut().insert(Principal::SessionGit {
            session_id: "s".into(),
            project_id: fx.project.id.clone(),
            branch: "s".into(),
        });
        assert_eq!(
            service.list_triggers(git).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        assert!(fx.starter.calls().is_empty());
        fx.cleanup().await;
    }
}
