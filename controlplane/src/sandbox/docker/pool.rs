//! The warm pool (`kortix server --warm-pool N`): per snapshot and hardware, N containers
//! started ahead of any session, so a session's start skips the container's creation and
//! start — most of what a container engine adds to OpenCode's own start.
//!
//! Isolation is that of a fresh container. A member is started with the provider's own
//! environment only and its agent holds nothing: no session, no token, no certificate; it
//! waits for `/run/kortix/assignment.json` (`KORTIX_ASSIGNMENT_FILE`). Taking a member renames
//! it to the session's container name and copies the session's variables (its single-use
//! bootstrap token among them) into that file; from there the agent enrolls and boots as in a
//! container made for the session. A member serves one session and is removed with it, never
//! returned to the pool. Members live at most [`MEMBER_LIFETIME`] (replaced when still
//! wanted), and a snapshot no session asked for in [`IDLE_SNAPSHOT`] is no longer kept warm, so
//! a changed snapshot's old members go and a crashed replica's leftovers are bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sandbox::SandboxResources;

/// The label on every member: the pool key's digest, so a listing can tell members apart.
pub const LABEL_POOL: &str = "kortix.pool";

/// A member's container name starts so until a session takes it (then it is renamed).
pub const MEMBER_PREFIX: &str = "kortix-pool-";

/// Where a member's agent waits for its session's variables, and the variable naming it
/// (`kortix-agent`'s `assignment` module).
pub const ASSIGNMENT_FILE: &str = "/run/kortix/assignment.json";
pub const ASSIGNMENT_ENV: &str = "KORTIX_ASSIGNMENT_FILE";

/// Members are replaced after this long, whether or not they were used.
pub const MEMBER_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A snapshot whose sessions stopped coming is not kept warm past this.
pub const IDLE_SNAPSHOT: Duration = Duration::from_secs(30 * 60);

/// Snapshots kept warm at once (the least recently wanted goes first).
pub const MAX_WARM_SNAPSHOTS: usize = 16;

/// The largest pool per snapshot `--warm-pool` accepts.
pub const MAX_PER_SNAPSHOT: usize = 8;

/// What a member is made from: the snapshot and the hardware a session of it gets.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub image: String,
    pub resources: SandboxResources,
}

impl Recipe {
    /// Two sessions can share members exactly when their containers would be created alike.
    pub fn key(&self) -> String {
        let r = &self.resources;
        format!(
            "{}|cpu={:?}|mem={:?}|project={}",
            self.image, r.cpu, r.memory_gib, r.project_id
        )
    }
}

/// The value of [`LABEL_POOL`] for a recipe's members.
pub fn key_digest(recipe: &Recipe) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, recipe.key().as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The archive that, unpacked at the container's `/`, puts the session's variables where its
/// agent waits for them; readable by root only (the bootstrap token is in it).
pub fn assignment_archive(
    env: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(env).map_err(std::io::Error::other)?;
    let mut tar = tar::Builder::new(Vec::new());
    let (dir, file) = ASSIGNMENT_FILE
        .trim_start_matches('/')
        .rsplit_once('/')
        .ok_or_else(|| std::io::Error::other("the assignment file has no directory"))?;
    let mut parent = String::new();
    for part in dir.split('/') {
        parent.push_str(part);
        parent.push('/');
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, &parent, std::io::empty())?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(json.len() as u64);
    tar.append_data(&mut h, format!("{dir}/{file}"), json.as_slice())?;
    tar.into_inner()
}

#[derive(Debug)]
pub struct Member {
    pub name: String,
    born: Instant,
}

struct Slot {
    recipe: Recipe,
    ready: VecDeque<Member>,
    /// Members being created.
    filling: usize,
    last_wanted: Instant,
}

/// The pool's bookkeeping; the provider does the engine calls.
pub struct WarmPool {
    per_snapshot: usize,
    slots: Mutex<HashMap<String, Slot>>,
}

/// What housekeeping found: members to remove, and how many to create for which recipe.
#[derive(Debug, Default)]
pub struct Upkeep {
    pub remove: Vec<String>,
    pub create: Vec<(Recipe, usize)>,
}

impl WarmPool {
    pub fn new(per_snapshot: usize) -> Self {
        Self {
            per_snapshot: per_snapshot.min(MAX_PER_SNAPSHOT),
            slots: Mutex::default(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready member for `recipe`, out of the pool for good; `None` when there is none yet.
    pub fn take(&self, recipe: &Recipe) -> Option<Member> {
        let mut slots = self.slots();
        let slot = slots.get_mut(&recipe.key())?;
        slot.last_wanted = Instant::now();
        // One past its lifetime is left for upkeep to remove.
        let young = slot
            .ready
            .iter()
            .position(|m| m.born.elapsed() < MEMBER_LIFETIME)?;
        slot.ready.remove(young)
    }

    /// A session wanted `recipe`: how many members to start now so that `per_snapshot` are
    /// ready or on their way (counted as on their way until [`WarmPool::filled`]). Also the
    /// members of the least recently wanted snapshots when there are too many: to remove.
    pub fn want(&self, recipe: &Recipe) -> (usize, Vec<String>) {
        let mut slots = self.slots();
        let now = Instant::now();
        let key = recipe.key();
        let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
            recipe: recipe.clone(),
            ready: VecDeque::new(),
            filling: 0,
            last_wanted: now,
        });
        slot.last_wanted = now;
        let missing = self
            .per_snapshot
            .saturating_sub(slot.ready.len() + slot.filling);
        slot.filling += missing;
        let mut evicted = Vec::new();
        while slots.len() > MAX_WARM_SNAPSHOTS {
            let Some(oldest) = slots
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, s)| s.last_wanted)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(s) = slots.remove(&oldest) {
                evicted.extend(s.ready.into_iter().map(|m| m.name));
            }
        }
        (missing, evicted)
    }

    /// A member's creation ended: `Some(name)` is ready. `false`: the pool no longer wants it
    /// (its snapshot went cold meanwhile, or the pool was drained), so it must be removed.
    pub fn filled(&self, recipe: &Recipe, created: Option<String>) -> bool {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(&recipe.key()) else {
            return created.is_none();
        };
        slot.filling = slot.filling.saturating_sub(1);
        if let Some(name) = created {
            slot.ready.push_back(Member {
                name,
                born: Instant::now(),
            });
        }
        true
    }

    /// Whether `name` is a ready member of this pool.
    pub fn holds(&self, name: &str) -> bool {
        self.slots()
            .values()
            .any(|s| s.ready.iter().any(|m| m.name == name))
    }

    /// Members past their lifetime or of snapshots gone cold go; wanted snapshots are topped
    /// up again.
    pub fn upkeep(&self) -> Upkeep {
        let mut slots = self.slots();
        let mut out = Upkeep::default();
        slots.retain(|_, slot| {
            if slot.last_wanted.elapsed() >= IDLE_SNAPSHOT {
                out.remove.extend(slot.ready.drain(..).map(|m| m.name));
                return false;
            }
            let (old, young): (VecDeque<Member>, VecDeque<Member>) = slot
                .ready
                .drain(..)
                .partition(|m| m.born.elapsed() >= MEMBER_LIFETIME);
            out.remove.extend(old.into_iter().map(|m| m.name));
            slot.ready = young;
            let missing = self
                .per_snapshot
                .saturating_sub(slot.ready.len() + slot.filling);
            if missing > 0 {
                slot.filling += missing;
                out.create.push((slot.recipe.clone(), missing));
            }
            true
        });
        out
    }

    /// `recipe` is no longer kept warm (its image is gone): its ready members, to remove.
    /// A member still being created for it is disowned ([`WarmPool::filled`] says so).
    pub fn forget(&self, recipe: &Recipe) -> Vec<String> {
        self.slots()
            .remove(&recipe.key())
            .map(|s| s.ready.into_iter().map(|m| m.name).collect())
            .unwrap_or_default()
    }

    /// Every ready member, out of the pool (at shutdown).
    pub fn drain(&self) -> Vec<String> {
        self.slots()
            .drain()
            .flat_map(|(_, s)| s.ready.into_iter().map(|m| m.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(image: &str, cpu: u32) -> Recipe {
        Recipe {
            image: image.into(),
            resources: SandboxResources {
                cpu: Some(cpu),
                project_id: "p".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_assignment_unpacks_to_the_file_the_agent_waits_for() {
        let env =
            std::collections::BTreeMap::from([("KORTIX_SESSION_ID".to_string(), "s1".to_string())]);
        let bytes = assignment_archive(&env).unwrap();
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(bytes.as_slice())
            .unpack(dir.path())
            .unwrap();
        let file = dir.path().join(ASSIGNMENT_FILE.trim_start_matches('/'));
        let read: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(read, env);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_ne!(key_digest(&recipe("a", 1)), key_digest(&recipe("a", 2)));
    }

    #[test]
    fn a_member_serves_one_session_and_the_pool_is_topped_up() {
        let pool = WarmPool::new(2);
        let r = recipe("snap-a", 2);
        assert!(
            pool.take(&r).is_none(),
            "nothing is warm before a session asked"
        );
        assert_eq!(pool.want(&r).0, 2);
        assert_eq!(pool.want(&r).0, 0, "members on their way count");
        assert!(pool.filled(&r, Some("m1".into())));
        assert!(pool.filled(&r, Some("m2".into())));
        assert!(pool.holds("m1"));
        let m = pool.take(&r).unwrap();
        assert_eq!(m.name, "m1");
        assert!(!pool.holds("m1"), "a taken member never returns");
        assert_eq!(pool.want(&r).0, 1);
        // Other hardware is another pool.
        assert!(pool.take(&recipe("snap-a", 4)).is_none());
    }

    #[test]
    fn a_failed_creation_is_retried_by_upkeep() {
        let pool = WarmPool::new(1);
        let r = recipe("snap-a", 2);
        assert_eq!(pool.want(&r).0, 1);
        assert!(pool.filled(&r, None));
        let upkeep = pool.upkeep();
        assert!(upkeep.remove.is_empty());
        assert_eq!(upkeep.create.len(), 1);
        assert_eq!(upkeep.create[0].1, 1);
    }

    #[test]
    fn a_drained_pool_disowns_what_is_still_being_created() {
        let pool = WarmPool::new(1);
        let r = recipe("snap-a", 2);
        pool.want(&r);
        assert!(pool.filled(&r, Some("m1".into())));
        pool.take(&r).unwrap();
        pool.want(&r);
        assert!(pool.drain().is_empty());
        assert!(!pool.filled(&r, Some("late".into())), "must be removed");
    }

    #[test]
    fn a_forgotten_snapshot_is_no_longer_topped_up() {
        let pool = WarmPool::new(2);
        let (gone, kept) = (recipe("snap-gone", 1), recipe("snap-kept", 1));
        pool.want(&gone);
        pool.want(&kept);
        assert!(pool.filled(&gone, Some("m1".into())));
        // A failed creation for each: upkeep would start another of both.
        assert!(pool.filled(&gone, None));
        assert!(pool.filled(&kept, None));
        assert_eq!(pool.forget(&gone), vec!["m1".to_string()]);
        assert!(!pool.holds("m1"));
        assert!(!pool.filled(&gone, Some("late".into())), "must be removed");
        let upkeep = pool.upkeep();
        assert_eq!(upkeep.create.len(), 1);
        assert_eq!(
            (upkeep.create[0].0.image.as_str(), upkeep.create[0].1),
            ("snap-kept", 1)
        );
    }

    #[test]
    fn the_least_recently_wanted_snapshot_goes_past_the_limit() {
        let pool = WarmPool::new(1);
        for i in 0..MAX_WARM_SNAPSHOTS {
            let r = recipe(&format!("snap-{i}"), 1);
            pool.want(&r);
            pool.filled(&r, Some(format!("m{i}")));
        }
        let (_, evicted) = pool.want(&recipe("snap-new", 1));
        assert_eq!(evicted, vec!["m0".to_string()]);
        assert!(!pool.holds("m0"));
    }
}
