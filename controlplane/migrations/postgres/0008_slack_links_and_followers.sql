-- Slack users linked to Kortix people (per project binding), the one-time codes that link
-- them, the connector approvals already offered in a thread as buttons, and what a thread's
-- follower needs to go on after a restart or on another replica: its open turns and who
-- follows it.
-- Keep in step with ../sqlite/0008_slack_links_and_followers.sql.

-- A Slack user of the project's workspace acting as a Kortix person: the person's own
-- permissions decide what the Slack user may do (approve a connector call).
CREATE TABLE slack_links (
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    slack_user  TEXT    NOT NULL,
    person_id   TEXT    NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    linked_ms   BIGINT  NOT NULL,
    PRIMARY KEY (project_id, slack_user)
);

-- A code `/kortix link` gave a Slack user, redeemed once by a signed-in person
-- (`kortix channels slack link CODE`). Only its SHA-256 is kept.
CREATE TABLE slack_link_codes (
    code_hash   TEXT    NOT NULL PRIMARY KEY,
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    slack_user  TEXT    NOT NULL,
    expires_ms  BIGINT  NOT NULL
);
CREATE INDEX slack_link_codes_user ON slack_link_codes(project_id, slack_user);

-- An approval offered in its session's thread, claimed by an insert so a follower that
-- reads the record again (a restart, a second replica) does not offer it twice.
CREATE TABLE slack_approval_prompts (
    approval_id TEXT    NOT NULL PRIMARY KEY,
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created_ms  BIGINT  NOT NULL
);

-- A person's message whose answer the thread still waits for: the follower finishes it
-- (final answer, reactions) and deletes it. Read again by whichever follower takes the
-- thread over.
CREATE TABLE slack_turns (
    session_id   TEXT    NOT NULL,
    -- The person's message (its reactions show the turn's state).
    user_ts      TEXT    NOT NULL,
    -- The bot's progress message, empty when it could not be posted.
    progress_ts  TEXT    NOT NULL DEFAULT '',
    -- The first record of the session the turn can be in.
    from_seq     BIGINT  NOT NULL,
    created_ms   BIGINT  NOT NULL,
    PRIMARY KEY (session_id, user_ts)
);

-- The replica following the thread's session into Slack, while its lease runs; a thread
-- whose lease ran out (its replica restarted or died) is taken over by another.
ALTER TABLE slack_threads ADD COLUMN follower TEXT NOT NULL DEFAULT '';
ALTER TABLE slack_threads ADD COLUMN follow_until_ms BIGINT NOT NULL DEFAULT 0;
