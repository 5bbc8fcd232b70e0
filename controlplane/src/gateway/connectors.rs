//! The session's connectors and calls through the broker; the session is the certificate's.

use super::Gateway;
use crate::ca::SessionIdentity;
use kortix_proto::v1::{
    CallConnectorRequest, CallConnectorResponse, ListSessionConnectorsResponse,
};
use tonic::Status;

impl Gateway {
    pub(super) async fn do_list_connectors(
        &self,
        who: &SessionIdentity,
    ) -> Result<ListSessionConnectorsResponse, Status> {
        let connectors = self.connectors.session_connectors(&who.session_id).await?;
        Ok(ListSessionConnectorsResponse { connectors })
    }

    pub(super) async fn do_call_connector(
        &self,
        who: &SessionIdentity,
        req: CallConnectorRequest,
    ) -> Result<CallConnectorResponse, Status> {
        Ok(self
            .connectors
            .call(&who.session_id, &req.connector, &req.tool, &req.args_json)
            .await?)
    }
}
