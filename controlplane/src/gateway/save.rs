//! `SaveWork` and `LoadConversation`: what a winding-down agent saved for a resume (its
//! uncommitted work, already pushed to `refs/kortix/wip/<session>`, and OpenCode's export of
//! the conversation), and the conversation a resumed session's agent imports. The session
//! comes from the certificate; saving is allowed while the session is live (a stopping agent
//! saves before its final report).

use super::Gateway;
use crate::ca::SessionIdentity;
use crate::error::DomainError;
use crate::sessions::resume::WorkSaved;
use kortix_proto::v1::{LoadConversationResponse, SaveWorkRequest, SaveWorkResponse};
use tonic::Status;

impl Gateway {
    pub(super) async fn do_save_work(
        &self,
        who: &SessionIdentity,
        req: SaveWorkRequest,
    ) -> Result<SaveWorkResponse, Status> {
        let session = self.live_session(&who.session_id).await?;
        if req.wip_commit.len() > 64 || !req.wip_commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument("wip_commit is not a commit id"));
        }
        for (what, value, max) in [
            ("wip_note", &req.wip_note, 4096),
            ("conversation_note", &req.conversation_note, 4096),
            ("opencode_session_id", &req.opencode_session_id, 256),
        ] {
            if value.len() > max {
                return Err(Status::invalid_argument(format!(
                    "{what} longer than {max} bytes"
                )));
            }
        }
        self.sessions
            .save_work(
                &session.id,
                WorkSaved {
                    wip_commit: req.wip_commit,
                    wip_note: req.wip_note,
                    conversation: req.conversation,
                    conversation_note: req.conversation_note,
                    opencode_session: req.opencode_session_id,
                },
            )
            .await
            .map_err(Status::from)?;
        Ok(SaveWorkResponse {})
    }

    pub(super) async fn do_load_conversation(
        &self,
        who: &SessionIdentity,
    ) -> Result<LoadConversationResponse, Status> {
        let session = self.live_session(&who.session_id).await?;
        let (conversation, opencode_session_id) = self
            .sessions
            .store()
            .session_conversation(&session.id)
            .await
            .map_err(DomainError::from)?
            .ok_or_else(|| {
                Status::not_found(format!("session {} has no saved conversation", session.id))
            })?;
        Ok(LoadConversationResponse {
            conversation,
            opencode_session_id,
        })
    }
}
