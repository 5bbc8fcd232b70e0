//! The Slack tables on both backends: bindings, claimed event ids, owned threads, outbox.

use super::tests::{TestDb, account_and_project, both_backends, session_in};
use super::*;
use crate::clock::now_ms;

both_backends!(
    slack_binding_upsert,
    slack_event_claimed_once,
    slack_threads_claimed_moved_and_listed,
    slack_outbox_claims_leases_and_retries,
    slack_links_codes_and_approval_prompts,
    slack_turns_and_follow_leases,
);

fn binding(project_id: &str, by: &str) -> SlackBinding {
    SlackBinding {
        project_id: project_id.into(),
        signing_nonce: vec![1; 12],
        signing_sealed: vec![2; 40],
        token_nonce: vec![3; 12],
        token_sealed: vec![4; 40],
        connected_by: by.into(),
        created_ms: 0,
        updated_ms: 0,
    }
}

async fn slack_binding_upsert(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    assert_eq!(store.slack_binding(&project.id).await.unwrap(), None);
    let first = store
        .put_slack_binding(&binding(&project.id, "person:a"))
        .await
        .unwrap();
    assert_eq!(first.signing_sealed, vec![2; 40]);
    let second = store
        .put_slack_binding(&SlackBinding {
            token_sealed: vec![9; 40],
            ..binding(&project.id, "person:b")
        })
        .await
        .unwrap();
    assert_eq!(
        second.created_ms, first.created_ms,
        "a rebind keeps the creation time"
    );
    assert_eq!(second.connected_by, "person:b");
    assert_eq!(
        store.slack_binding(&project.id).await.unwrap(),
        Some(second)
    );
    // The binding goes with its project.
    assert!(
        store
            .put_slack_binding(&binding("no-such-project", "person:a"))
            .await
            .is_err()
    );
}

async fn slack_event_claimed_once(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let (_, other) = account_and_project(store, "api").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let id = project.id.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_slack_event(&id, "Ev01").await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one claimer");
    // A second replica (another handle on the same database) loses too.
    let replica = db.reopen().await;
    assert!(
        !replica
            .claim_slack_event(&project.id, "Ev01")
            .await
            .unwrap()
    );
    assert!(store.claim_slack_event(&other.id, "Ev01").await.unwrap());
    assert!(store.claim_slack_event(&project.id, "").await.is_err());
    assert_eq!(
        store.prune_slack_events(now_ms() - 60_000).await.unwrap(),
        0
    );
    assert_eq!(store.prune_slack_events(now_ms() + 1).await.unwrap(), 2);
    assert!(store.claim_slack_event(&project.id, "Ev01").await.unwrap());
}

async fn slack_threads_claimed_moved_and_listed(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    assert_eq!(
        store
            .claim_slack_thread(&project.id, "C1", "10.1", "U1")
            .await
            .unwrap(),
        None,
        "the first claimer creates the thread"
    );
    let again = store
        .claim_slack_thread(&project.id, "C1", "10.1", "U2")
        .await
        .unwrap()
        .expect("the thread exists");
    assert_eq!(
        (again.asked_by.as_str(), again.session_id.as_str()),
        ("U1", "")
    );
    // Released while still without a session, it can be claimed again.
    store
        .release_slack_thread(&project.id, "C1", "10.1")
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_slack_thread(&project.id, "C1", "10.1", "U1")
            .await
            .unwrap(),
        None
    );
    let s1 = session_in(store, &project).await;
    assert!(
        store
            .set_slack_thread_session(&project.id, "C1", "10.1", "", &s1.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_slack_thread_session(&project.id, "C1", "10.1", "", "other")
            .await
            .unwrap(),
        "moves are conditional"
    );
    // A thread with a session is not released.
    store
        .release_slack_thread(&project.id, "C1", "10.1")
        .await
        .unwrap();
    assert_eq!(
        store
            .slack_thread_of_session(&s1.id)
            .await
            .unwrap()
            .unwrap()
            .thread_ts,
        "10.1"
    );
    store
        .claim_slack_thread(&project.id, "C2", "20.1", "U3")
        .await
        .unwrap();
    let s2 = session_in(store, &project).await;
    store
        .set_slack_thread_session(&project.id, "C2", "20.1", "", &s2.id)
        .await
        .unwrap();
    let live = store
        .live_slack_threads(&project.id, None, 0)
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    let in_c1 = store
        .live_slack_threads(&project.id, Some("C1"), 0)
        .await
        .unwrap();
    assert_eq!(in_c1.len(), 1);
    assert_eq!(in_c1[0].session_id, s1.id);
    assert_eq!(in_c1[0].status, "provisioning");
    // Ended sessions' threads are not live.
    assert!(
        store
            .transition_session(
                &s1.id,
                &[SessionStatus::Provisioning],
                SessionStatus::Failed,
                None
            )
            .await
            .unwrap()
    );
    let live = store
        .live_slack_threads(&project.id, None, 0)
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].session_id, s2.id);
    assert!(
        store
            .claim_slack_thread(&project.id, "", "1", "U")
            .await
            .is_err()
    );
}

async fn slack_outbox_claims_leases_and_retries(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let first = store
        .enqueue_slack_call(
            &project.id,
            "chat.postMessage",
            r#"{"channel":"C1","text":"a"}"#,
        )
        .await
        .unwrap();
    let second = store
        .enqueue_slack_call(&project.id, "reactions.add", "{}")
        .await
        .unwrap();
    let big = "x".repeat(slack::MAX_OUTBOX_PAYLOAD + 1);
    assert!(
        store
            .enqueue_slack_call(&project.id, "m", &big)
            .await
            .is_err()
    );

    let replica = db.reopen().await;
    let (a, b) = tokio::join!(
        store.claim_due_slack_calls(10, 60_000),
        replica.claim_due_slack_calls(10, 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<_> = a.iter().chain(&b).map(|i| i.id.clone()).collect();
    ids.sort();
    let mut want = vec![first.clone(), second.clone()];
    want.sort();
    assert_eq!(ids, want, "each call is claimed by one replica");
    assert!(a.iter().chain(&b).all(|i| i.attempts == 1));
    assert!(
        store
            .claim_due_slack_calls(10, 60_000)
            .await
            .unwrap()
            .is_empty(),
        "leased calls are not due"
    );
    store
        .retry_slack_call(&first, now_ms() - 1, "ratelimited")
        .await
        .unwrap();
    store.finish_slack_call(&second).await.unwrap();
    let due = store.claim_due_slack_calls(10, 60_000).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].id.as_str(),
            due[0].attempts,
            due[0].last_error.as_str()
        ),
        (first.as_str(), 2, "ratelimited")
    );
    assert_eq!(due[0].method, "chat.postMessage");
    store.finish_slack_call(&first).await.unwrap();
    store.retry_slack_call(&first, 0, "gone").await.unwrap();
    assert!(store.claim_due_slack_calls(10, 0).await.unwrap().is_empty());
}

async fn slack_links_codes_and_approval_prompts(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let alice = store.create_person("alice", false).await.unwrap();
    let bob = store.create_person("bob", false).await.unwrap();
    assert_eq!(
        store.slack_linked_person(&project.id, "U1").await.unwrap(),
        None
    );

    // A new code replaces the user's earlier one; a code is taken once.
    let later = now_ms() + 60_000;
    store
        .put_slack_link_code("h1", &project.id, "U1", later)
        .await
        .unwrap();
    store
        .put_slack_link_code("h2", &project.id, "U1", later)
        .await
        .unwrap();
    assert_eq!(store.take_slack_link_code("h1").await.unwrap(), None);
    let code = store.take_slack_link_code("h2").await.unwrap().unwrap();
    assert_eq!(
        code,
        SlackLinkCode {
            project_id: project.id.clone(),
            slack_user: "U1".into(),
            expires_ms: later,
        }
    );
    assert_eq!(store.take_slack_link_code("h2").await.unwrap(), None);
    // Expired codes are dropped when another is made.
    store
        .put_slack_link_code("old", &project.id, "U2", now_ms() - 1)
        .await
        .unwrap();
    store
        .put_slack_link_code("h3", &project.id, "U3", later)
        .await
        .unwrap();
    assert_eq!(store.take_slack_link_code("old").await.unwrap(), None);

    // Linking replaces an earlier link of the same Slack user.
    store
        .put_slack_link(&project.id, "U1", &alice.id)
        .await
        .unwrap();
    store
        .put_slack_link(&project.id, "U1", &bob.id)
        .await
        .unwrap();
    assert_eq!(
        store.slack_linked_person(&project.id, "U1").await.unwrap(),
        Some(bob.id.clone())
    );
    assert!(
        store
            .put_slack_link(&project.id, "U9", "no-such-person")
            .await
            .is_err()
    );

    assert!(
        store
            .claim_slack_approval_prompt(&project.id, "a1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_slack_approval_prompt(&project.id, "a1")
            .await
            .unwrap()
    );
}

async fn slack_turns_and_follow_leases(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let session = session_in(store, &project).await;
    let key = (project.id.as_str(), "C1", "20.1");
    assert_eq!(
        store
            .claim_slack_thread(&project.id, "C1", "20.1", "U1")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .set_slack_thread_session(&project.id, "C1", "20.1", "", &session.id)
            .await
            .unwrap()
    );

    // Turns: recorded once, listed oldest first, closed.
    store
        .open_slack_turn(&session.id, "20.1", "20.2", 1)
        .await
        .unwrap();
    store
        .open_slack_turn(&session.id, "20.1", "other", 9)
        .await
        .unwrap();
    store
        .open_slack_turn(&session.id, "20.5", "", 7)
        .await
        .unwrap();
    let turns = store.slack_turns(&session.id).await.unwrap();
    let shape: Vec<_> = turns
        .iter()
        .map(|t| (t.user_ts.as_str(), t.progress_ts.as_str(), t.from_seq))
        .collect();
    assert_eq!(shape, [("20.1", "20.2", 1), ("20.5", "", 7)]);
    store.close_slack_turn(&session.id, "20.1").await.unwrap();
    assert_eq!(store.slack_turns(&session.id).await.unwrap().len(), 1);

    // Nobody follows the live session's thread yet; one replica leases it at a time.
    let unfollowed = store.unfollowed_slack_threads(10).await.unwrap();
    assert_eq!(unfollowed.len(), 1);
    assert_eq!(unfollowed[0].session_id, session.id);
    let later = now_ms() + 30_000;
    assert!(store.lease_slack_follow(key, "a", later).await.unwrap());
    assert!(!store.lease_slack_follow(key, "b", later).await.unwrap());
    assert!(
        store.lease_slack_follow(key, "a", later + 1).await.unwrap(),
        "renewed"
    );
    assert!(store.unfollowed_slack_threads(10).await.unwrap().is_empty());
    // Released (for another session: nothing), then taken over.
    store
        .release_slack_follows("a", Some("other-session"))
        .await
        .unwrap();
    assert!(!store.lease_slack_follow(key, "b", later).await.unwrap());
    store
        .release_slack_follows("a", Some(&session.id))
        .await
        .unwrap();
    assert_eq!(store.unfollowed_slack_threads(10).await.unwrap().len(), 1);
    assert!(store.lease_slack_follow(key, "b", later).await.unwrap());
    store.release_slack_follows("b", None).await.unwrap();
    assert!(store.lease_slack_follow(key, "a", later).await.unwrap());
}
