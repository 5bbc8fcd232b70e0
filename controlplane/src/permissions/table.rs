//! The permission table: every action a person can take, the least role it needs, and which
//! action each public RPC is. This is the only place that says who may do what; the README
//! shows the same table.

use super::roles::{AccountRole, ProjectRole};

/// What an action needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    /// Any signed-in person, acting on what is their own (their tokens, what they can see).
    Person,
    /// The holder of the server's admin token.
    ServerAdmin,
    /// At least this role in the account the request names (default: the caller's
    /// personal account).
    Account(AccountRole),
    /// At least this role on the project the request names. A caller with no role there
    /// gets NOT_FOUND, not PERMISSION_DENIED, so a project's existence does not leak.
    Project(ProjectRole),
}

/// Everything a person can ask of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CreatePerson,
    WhoAmI,
    ManageOwnTokens,
    ListProjects,
    CreateProject,
    ListMembers,
    ManageMembers,
    ReadAudit,
    ViewProject,
    ViewSessions,
    ViewChangeRequests,
    ViewTriggers,
    ListSecretNames,
    ListAccess,
    GitClone,
    StartSession,
    ChatInSession,
    StopSession,
    OpenOrCloseChangeRequest,
    FireTrigger,
    GitPushBranch,
    MergeChangeRequest,
    DeleteSession,
    ChangeSecrets,
    GrantAccess,
    ViewSnapshots,
    BuildSnapshot,
    PruneSnapshots,
    ViewConnectors,
    SetConnectorCredential,
    DecideApproval,
    ViewApps,
    DeployApp,
}

impl Action {
    /// Every action, in the order of the table.
    pub const ALL: [Action; 33] = [
        Action::CreatePerson,
        Action::WhoAmI,
        Action::ManageOwnTokens,
        Action::ListProjects,
        Action::CreateProject,
        Action::ListMembers,
        Action::ManageMembers,
        Action::ReadAudit,
        Action::ViewProject,
        Action::ViewSessions,
        Action::ViewChangeRequests,
        Action::ViewTriggers,
        Action::ListSecretNames,
        Action::ListAccess,
        Action::GitClone,
        Action::StartSession,
        Action::ChatInSession,
        Action::StopSession,
        Action::OpenOrCloseChangeRequest,
        Action::FireTrigger,
        Action::GitPushBranch,
        Action::MergeChangeRequest,
        Action::DeleteSession,
        Action::ChangeSecrets,
        Action::GrantAccess,
        Action::ViewSnapshots,
        Action::BuildSnapshot,
        Action::PruneSnapshots,
        Action::ViewConnectors,
        Action::SetConnectorCredential,
        Action::DecideApproval,
        Action::ViewApps,
        Action::DeployApp,
    ];

    /// The least role the action needs: the permission table.
    pub fn need(self) -> Need {
        use AccountRole as A;
        use ProjectRole as P;
        match self {
            Action::CreatePerson => Need::ServerAdmin,
            Action::WhoAmI | Action::ManageOwnTokens | Action::ListProjects => Need::Person,
            Action::ListMembers => Need::Account(A::Member),
            Action::CreateProject | Action::ManageMembers | Action::ReadAudit => {
                Need::Account(A::Admin)
            }
            Action::ViewProject
            | Action::ViewSessions
            | Action::ViewChangeRequests
            | Action::ViewTriggers
            | Action::ListSecretNames
            | Action::ListAccess
            | Action::GitClone
            | Action::ViewSnapshots
            | Action::ViewConnectors
            | Action::ViewApps => Need::Project(P::Viewer),
            Action::StartSession
            | Action::ChatInSession
            | Action::StopSession
            | Action::OpenOrCloseChangeRequest
            | Action::FireTrigger
            | Action::GitPushBranch
            | Action::BuildSnapshot
            | Action::SetConnectorCredential
            | Action::DecideApproval => Need::Project(P::Editor),
            Action::MergeChangeRequest
            | Action::DeleteSession
            | Action::ChangeSecrets
            | Action::GrantAccess
            | Action::PruneSnapshots
            // Deploying publishes a site in the project's name, like changing its settings.
            | Action::DeployApp => Need::Project(P::Manager),
        }
    }

    /// The action in words, for refusals ("merging a change request needs …").
    pub fn describe(self) -> &'static str {
        match self {
            Action::CreatePerson => "creating people",
            Action::WhoAmI => "showing who you are",
            Action::ManageOwnTokens => "managing your tokens",
            Action::ListProjects => "listing projects",
            Action::CreateProject => "creating a project",
            Action::ListMembers => "listing an account's members",
            Action::ManageMembers => "changing an account's members",
            Action::ReadAudit => "reading the audit log",
            Action::ViewProject => "viewing the project",
            Action::ViewSessions => "viewing sessions",
            Action::ViewChangeRequests => "viewing change requests",
            Action::ViewTriggers => "viewing triggers",
            Action::ListSecretNames => "listing secret names",
            Action::ListAccess => "listing who has access",
            Action::GitClone => "cloning",
            Action::StartSession => "starting a session",
            Action::ChatInSession => "prompting a session",
            Action::StopSession => "stopping a session",
            Action::OpenOrCloseChangeRequest => "opening, closing or reopening a change request",
            Action::FireTrigger => "firing a trigger",
            Action::GitPushBranch => "pushing a branch",
            Action::MergeChangeRequest => "merging a change request",
            Action::DeleteSession => "deleting a session",
            Action::ChangeSecrets => "setting or removing secrets",
            Action::GrantAccess => "granting or revoking access",
            Action::ViewSnapshots => "listing snapshots",
            Action::BuildSnapshot => "building a snapshot",
            Action::PruneSnapshots => "pruning snapshots",
            Action::ViewConnectors => "viewing connectors, their calls and approvals",
            Action::SetConnectorCredential => "setting a connector credential",
            Action::DecideApproval => "approving or denying a connector call",
            Action::ViewApps => "viewing apps and their deployments",
            Action::DeployApp => "deploying or rolling back an app",
        }
    }
}

/// Which action each people-facing RPC is (`/package.Service/Method`). A method missing here
/// is refused for everyone, and the matrix test fails on it.
pub const RPCS: &[(&str, Action)] = &[
    (
        "/kortix.v1.AccountService/CreateAccount",
        Action::CreatePerson,
    ),
    ("/kortix.v1.AccountService/WhoAmI", Action::WhoAmI),
    (
        "/kortix.v1.AccountService/CreateToken",
        Action::ManageOwnTokens,
    ),
    (
        "/kortix.v1.AccountService/ListTokens",
        Action::ManageOwnTokens,
    ),
    (
        "/kortix.v1.AccountService/RevokeToken",
        Action::ManageOwnTokens,
    ),
    ("/kortix.v1.MemberService/ListMembers", Action::ListMembers),
    ("/kortix.v1.MemberService/AddMember", Action::ManageMembers),
    (
        "/kortix.v1.MemberService/RemoveMember",
        Action::ManageMembers,
    ),
    ("/kortix.v1.AccessService/ListAccess", Action::ListAccess),
    ("/kortix.v1.AccessService/GrantAccess", Action::GrantAccess),
    ("/kortix.v1.AccessService/RevokeAccess", Action::GrantAccess),
    (
        "/kortix.v1.ProjectService/CreateProject",
        Action::CreateProject,
    ),
    (
        "/kortix.v1.ProjectService/ListProjects",
        Action::ListProjects,
    ),
    ("/kortix.v1.ProjectService/GetProject", Action::ViewProject),
    ("/kortix.v1.SecretService/SetSecret", Action::ChangeSecrets),
    (
        "/kortix.v1.SecretService/ListSecrets",
        Action::ListSecretNames,
    ),
    (
        "/kortix.v1.SecretService/DeleteSecret",
        Action::ChangeSecrets,
    ),
    (
        "/kortix.v1.SessionService/StartSession",
        Action::StartSession,
    ),
    ("/kortix.v1.SessionService/GetSession", Action::ViewSessions),
    (
        "/kortix.v1.SessionService/ListSessions",
        Action::ViewSessions,
    ),
    ("/kortix.v1.SessionService/StopSession", Action::StopSession),
    (
        "/kortix.v1.SessionService/ResumeSession",
        Action::StartSession,
    ),
    (
        "/kortix.v1.SessionService/DeleteSession",
        Action::DeleteSession,
    ),
    ("/kortix.v1.SessionService/Attach", Action::ViewSessions),
    (
        "/kortix.v1.SessionService/SendPrompt",
        Action::ChatInSession,
    ),
    (
        "/kortix.v1.SessionService/WatchSession",
        Action::ViewSessions,
    ),
    ("/kortix.v1.SessionService/GetCommand", Action::ViewSessions),
    (
        "/kortix.v1.ChangeRequestService/OpenChangeRequest",
        Action::OpenOrCloseChangeRequest,
    ),
    (
        "/kortix.v1.ChangeRequestService/ListChangeRequests",
        Action::ViewChangeRequests,
    ),
    (
        "/kortix.v1.ChangeRequestService/GetChangeRequest",
        Action::ViewChangeRequests,
    ),
    (
        "/kortix.v1.ChangeRequestService/GetDiff",
        Action::ViewChangeRequests,
    ),
    (
        "/kortix.v1.ChangeRequestService/MergePreview",
        Action::ViewChangeRequests,
    ),
    (
        "/kortix.v1.ChangeRequestService/MergeChangeRequest",
        Action::MergeChangeRequest,
    ),
    (
        "/kortix.v1.ChangeRequestService/CloseChangeRequest",
        Action::OpenOrCloseChangeRequest,
    ),
    (
        "/kortix.v1.ChangeRequestService/ReopenChangeRequest",
        Action::OpenOrCloseChangeRequest,
    ),
    (
        "/kortix.v1.TriggerService/ListTriggers",
        Action::ViewTriggers,
    ),
    ("/kortix.v1.TriggerService/FireTrigger", Action::FireTrigger),
    (
        "/kortix.v1.TriggerService/ListFirings",
        Action::ViewTriggers,
    ),
    ("/kortix.v1.AuditService/ListAudit", Action::ReadAudit),
    (
        "/kortix.v1.SnapshotService/ListSnapshots",
        Action::ViewSnapshots,
    ),
    (
        "/kortix.v1.SnapshotService/BuildSnapshot",
        Action::BuildSnapshot,
    ),
    (
        "/kortix.v1.SnapshotService/PruneSnapshots",
        Action::PruneSnapshots,
    ),
    (
        "/kortix.v1.ConnectorService/ListConnectors",
        Action::ViewConnectors,
    ),
    (
        "/kortix.v1.ConnectorService/ListConnectorTools",
        Action::ViewConnectors,
    ),
    (
        "/kortix.v1.ConnectorService/SetConnectorCredential",
        Action::SetConnectorCredential,
    ),
    (
        "/kortix.v1.ConnectorService/ListConnectorCalls",
        Action::ViewConnectors,
    ),
    (
        "/kortix.v1.ApprovalService/ListApprovals",
        Action::ViewConnectors,
    ),
    (
        "/kortix.v1.ApprovalService/ApproveCall",
        Action::DecideApproval,
    ),
    (
        "/kortix.v1.ApprovalService/DenyCall",
        Action::DecideApproval,
    ),
    ("/kortix.v1.AppService/ListApps", Action::ViewApps),
    ("/kortix.v1.AppService/GetAppLogs", Action::ViewApps),
    ("/kortix.v1.AppService/DeployApp", Action::DeployApp),
    ("/kortix.v1.AppService/RollbackApp", Action::DeployApp),
    // Binding a Slack app stores its credentials, like setting secrets; its threads are
    // sessions.
    (
        "/kortix.v1.ChannelService/ConnectSlack",
        Action::ChangeSecrets,
    ),
    (
        "/kortix.v1.ChannelService/ListChannels",
        Action::ViewSessions,
    ),
    // Anyone who sees the project may link their own Slack user to themselves: the link
    // lends that Slack user the person's own rights, checked again on every use.
    (
        "/kortix.v1.ChannelService/LinkSlackUser",
        Action::ViewProject,
    ),
];

/// The action of an RPC path, if the table has it.
pub fn rpc_action(path: &str) -> Option<Action> {
    RPCS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_listed_once_and_rpcs_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a), "{a:?} twice in Action::ALL");
            assert!(!a.describe().is_empty());
        }
        let mut paths = std::collections::HashSet::new();
        for (p, _) in RPCS {
            assert!(paths.insert(*p), "{p} twice in RPCS");
        }
        assert_eq!(rpc_action("/kortix.v1.Nope/Nope"), None);
    }
}
