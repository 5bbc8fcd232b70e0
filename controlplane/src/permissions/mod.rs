//! Who may do what. [`table`] is the permission table (action → least role, RPC → action);
//! [`check`] is the one place it is enforced, for every RPC (the API's authentication layer
//! looks the action up, the domain services resolve projects and accounts through
//! [`check::project`] and [`check::account`]) and for the git endpoint.

pub mod check;
pub mod roles;
pub mod table;

pub use check::{account, effective_role, project, project_role, refuse_narrowed, upfront};
pub use roles::{AccountRole, ProjectRole, UnknownRole};
pub use table::{Action, Need, RPCS, rpc_action};
