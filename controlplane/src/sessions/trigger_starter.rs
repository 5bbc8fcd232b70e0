//! Triggers start sessions through the same lifecycle as people do, as the platform itself
//! (the trigger is the launcher) and idempotently on the firing key.

use super::Sessions;
use super::lifecycle::StartRequest;
use crate::triggers::{SessionStarter, TriggerStart};
use futures::future::BoxFuture;

impl SessionStarter for Sessions {
    fn start(&self, req: TriggerStart) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let project_id = req.project_id.clone();
            let origin = req.origin.clone();
            let session = Sessions::start(
                self,
                StartRequest {
                    project: req.project_id,
                    // The firing's origin is `trigger:<slug>`: the trigger is the launcher.
                    launched_by: req.origin.clone(),
                    prompt: req.prompt,
                    agent: req.agent,
                    idempotency_key: req.idempotency_key,
                    origin: req.origin,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            if let Ok(project) = self.store.find_project(&project_id).await {
                crate::audit::record_trigger(
                    &self.store,
                    &origin,
                    crate::audit::Event::in_project("session.start", &project, &session.id)
                        .with_detail(&origin),
                )
                .await;
            }
            Ok(session.id)
        })
    }
}
